"""Install like a user: the wheel goes into a fresh virtual environment and runs from there.

This is what `datadog-agent integration install -w` does with the Agent's embedded Python: install the
wheel beside what the Agent ships, and copy the bundled `data/conf.yaml.example` into conf.d. It installs
with `pip install --no-deps --no-index`, so it never checks the wheel's `datadog-checks-base` floor: an
Agent whose base is older installs the wheel "successfully" and fails at run time. The floor tests below
install the wheel that way beside exactly the floor release of `datadog-checks-base`, and beside the
release just below it, and run the check in each.
"""

import json
import subprocess
import sys
import tomllib
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from .common import ago, dora_ids

ROOT = Path(__file__).resolve().parents[1]

RUN_INSTALLED_CHECK = '''
import json, os, sys
from importlib import resources
import yaml
os.environ["DDEV_SKIP_GENERIC_TAGS_CHECK"] = "1"
import datadog_checks.dora_incidents as package
from datadog_checks.dora_incidents import DoraIncidentsCheck
settings = json.loads(sys.argv[1])
example = yaml.safe_load(resources.files("datadog_checks.dora_incidents").joinpath("data/conf.yaml.example").read_text())
instance = {**example["instances"][0], **settings}
check = DoraIncidentsCheck("dora_incidents", example["init_config"] or {}, [instance])
check.check_id = "dora_incidents:wheel"
error = check.run()
print(json.dumps({"error": error, "warnings": check.warnings, "file": package.__file__,
                  "cli": [m for m in ("click", "rich") if m in sys.modules]}))
'''

# One run on a bare Agent-like Python: the check, the stub aggregator and datadog_agent of
# datadog-checks-base, and nothing of this repository (the loopback servers run in pytest's process).
RUN_ON_AGENT_BASE = '''
import json, os, sys
from importlib import metadata
os.environ["DDEV_SKIP_GENERIC_TAGS_CHECK"] = "1"
import certifi
from datadog_checks.base.stubs import aggregator
from datadog_checks.base.utils.http import RequestsWrapper
import datadog_checks.dora_incidents as package
from datadog_checks.dora_incidents import DoraIncidentsCheck
instance = {
    **json.loads(sys.argv[1]),
    # A file-path option and an HTTP option: the config models validate them with `validation.security`
    # (the reason for the floor), and `self.http` honours them.
    "tls_ca_cert": certifi.where(),
    "persist_connections": True,
}
check = DoraIncidentsCheck("dora_incidents", {}, [instance])
check.check_id = "dora_incidents:floor"
error = check.run()
RequestsWrapper(instance, {}, logger=check.log)  # the constructor the check's own HTTP clients use
print(json.dumps({
    "error": error,
    "warnings": check.warnings,
    "file": package.__file__,
    "base": metadata.version("datadog-checks-base"),
    "metrics": sorted(aggregator.metric_names),
}))
'''

BASE = 'datadog-checks-base'
# The newest release below the floor: the same procedure must fail with it. 37.32.0 has no
# `datadog_checks.base.utils.models.validation.security`, which the generated config models call.
BELOW_FLOOR = '37.32.0'
# What the Agent ships beside datadog-checks-base (its `deps` extra, pinned as the Agent pins them), less
# what this check never loads: ddtrace (only with `integration_tracing`) and protobuf.
NOT_LOADED = {'ddtrace', 'protobuf'}


def declared_floor() -> str:
    """The `datadog-checks-base>=X` lower bound the wheel declares."""
    dependencies = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
    [spec] = [Requirement(d).specifier for d in dependencies if Requirement(d).name == BASE]
    [bound] = [s.version for s in spec if s.operator == '>=']
    return bound


FLOOR = declared_floor()


def one_resolved_incident(pagerduty, intake, now) -> tuple[str, dict]:
    """An incident resolved an hour ago, and the instance that reports it from the loopback servers."""
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    instance = {
        'source': 'pagerduty',
        'api_token': pagerduty.token,
        'api_url': pagerduty.url,
        'datadog_api_url': intake.url,
        'datadog_api_key': intake.api_key,
    }
    return incident, instance


def pip(python, *args):
    out = subprocess.run(
        [str(python), '-m', 'pip', '--disable-pip-version-check', *map(str, args)],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, f'pip {" ".join(map(str, args))} failed:\n{out.stderr[-3000:]}'
    return out


def agent_deps(base_wheel: Path) -> list[str]:
    """The pins of a datadog-checks-base wheel's `deps` extra for this platform, less NOT_LOADED."""
    dist_info = base_wheel.name.split('-py')[0] + '.dist-info/METADATA'
    metadata = zipfile.ZipFile(base_wheel).read(dist_info).decode()
    lines = metadata.splitlines()
    requirements = [Requirement(line.split(':', 1)[1]) for line in lines if line.startswith('Requires-Dist:')]
    return sorted(
        f'{r.name}{r.specifier}'
        for r in requirements
        if r.marker and r.marker.evaluate({'extra': 'deps'}) and r.name not in NOT_LOADED
    )


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    dist = tmp_path_factory.mktemp('dist')
    subprocess.run(
        [sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir', str(dist), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [built] = dist.glob('datadog_dora_incidents-*-py3-none-any.whl')
    return built


@pytest.fixture(scope='session')
def agent_pythons(tmp_path_factory):
    """{base version: the python of a fresh venv holding that datadog-checks-base and what the Agent ships with it}.

    What they need is downloaded from PyPI once per session into a wheelhouse; the venvs install from there.
    """
    root = tmp_path_factory.mktemp('agent-pythons')
    wheelhouse = root / 'wheelhouse'
    versions = [FLOOR, BELOW_FLOOR]

    def download() -> dict[str, tuple[Path, list[str]]]:
        found, fetched = {}, set()
        for version in versions:
            pip(sys.executable, 'download', '--quiet', '--no-deps', '-d', wheelhouse, f'{BASE}=={version}')
            [base_wheel] = wheelhouse.glob(f'datadog_checks_base-{version}-*.whl')
            pins = agent_deps(base_wheel)
            if frozenset(pins) not in fetched:
                pip(sys.executable, 'download', '--quiet', '-d', wheelhouse, *pins)
                fetched.add(frozenset(pins))
            found[version] = base_wheel, pins
        return found

    def create(version) -> Path:
        env = root / f'base-{version}'
        venv.create(env, with_pip=True)
        return env / 'bin' / 'python'

    def install(version) -> None:
        base_wheel, pins = wheels[version]
        pip(pythons[version], 'install', '--quiet', '--no-index', '--find-links', wheelhouse, *pins)
        pip(pythons[version], 'install', '--quiet', '--no-deps', '--no-index', base_wheel)

    with ThreadPoolExecutor(max_workers=len(versions) + 1) as pool:  # download while the venvs are made
        downloading = pool.submit(download)
        creating = {version: pool.submit(create, version) for version in versions}
        wheels = downloading.result()
        pythons = {version: future.result() for version, future in creating.items()}
        list(pool.map(install, versions))
    return pythons


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_check(tmp_path, wheel, pagerduty, intake, now):
    names = zipfile.ZipFile(wheel).namelist()
    assert 'datadog_checks/dora_incidents/data/conf.yaml.example' in names
    assert not [name for name in names if name.startswith(('loopback/', 'tests/'))]

    env_dir = tmp_path / 'agent-python'
    venv.create(env_dir, with_pip=True)
    python = env_dir / 'bin' / 'python'
    subprocess.run([python, '-m', 'pip', 'install', '--quiet', f'{wheel}[agent]'], check=True, capture_output=True)

    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    settings = {
        'api_token': pagerduty.token,
        'api_url': pagerduty.url,
        'datadog_api_url': intake.url,
        'datadog_api_key': intake.api_key,
    }
    out = subprocess.run(
        [python, '-c', RUN_INSTALLED_CHECK, json.dumps(settings)],
        check=False, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['error'] == '' and result['warnings'] == []
    assert str(env_dir) in result['file'], 'the check must run from the installed wheel'
    assert result['cli'] == []
    assert [body['data']['attributes']['id'] for body in intake.failures] == [f'pagerduty:{incident}']


def test_the_release_below_the_floor_is_below_the_declared_floor():
    assert Version(BELOW_FLOOR) < Version(FLOOR)


@pytest.mark.parametrize('base', [FLOOR, BELOW_FLOOR], ids=['floor', 'below-floor'])
def test_installed_as_the_agent_installs_it_the_check_runs_on_the_floor_base_and_not_below(
    base, wheel, agent_pythons, tmp_path, pagerduty, intake, now
):
    python = agent_pythons[base]
    # `datadog-agent integration install -w`: no dependency check, no index. This succeeds below the floor too.
    pip(python, 'install', '--quiet', '--no-deps', '--no-index', wheel)

    incident, settings = one_resolved_incident(pagerduty, intake, now)
    out = subprocess.run(
        [python, '-c', RUN_ON_AGENT_BASE, json.dumps(settings)],
        check=False, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip

    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['base'] == base
    assert result['file'].startswith(str(python.parents[1])), 'the check must run from the installed wheel'
    if base == FLOOR:
        assert result['error'] == '' and result['warnings'] == []
        assert {'dora.time_to_restore', 'dora.incidents.count'} <= set(result['metrics'])
        assert [body['data']['attributes']['id'] for body in intake.failures] == [f'pagerduty:{incident}']
    else:
        assert "has no attribute 'security'" in result['error'], result['error'][-2000:]
        assert result['metrics'] == [] and intake.failures == []


def test_the_bundled_example_is_a_working_configuration_once_filled_in():
    example = yaml.safe_load((ROOT / 'datadog_checks/dora_incidents/data/conf.yaml.example').read_text())
    [instance] = example['instances']
    assert instance == {'source': 'pagerduty', 'api_token': '<API_TOKEN>'}


def test_the_wheel_with_the_cli_extra_in_a_fresh_venv_runs_every_command(tmp_path, wheel, pagerduty, intake, now):
    """docs/cli.md "Installing it": `pip install '<wheel>[cli]'` is all a newcomer needs (not `[cli,agent]`)."""
    env_dir = tmp_path / 'cli-python'
    venv.create(env_dir, with_pip=True)
    pip(env_dir / 'bin' / 'python', 'install', '--quiet', f'{wheel}[cli]')
    command = env_dir / 'bin' / 'dora-incidents'
    incident, instance = one_resolved_incident(pagerduty, intake, now)
    config = tmp_path / 'conf.yaml'
    config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [instance]}))
    state = ['--state', str(tmp_path / 'state.json')]

    def run(*args):
        return subprocess.run([command, *state, *args], capture_output=True, text=True, cwd=tmp_path, check=False)

    for args in (
        ['--help'],
        ['check', '--help'],
        ['backfill', '--help'],
        ['cursor', 'show', '--help'],
        ['assets', '--help'],
    ):
        out = run(*args)
        assert out.returncode == 0 and 'Usage' in out.stdout, (args, out.stderr[-2000:])
    checked = run('check', '-c', config, '--commit')
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert f'pagerduty:{incident}' in checked.stdout
    shown = run('cursor', 'show', '-c', config)
    assert shown.returncode == 0 and f'pagerduty:{incident}' in shown.stdout, shown.stderr[-2000:]
    backfilled = run('backfill', '-c', config, '--since', '1d')
    assert backfilled.returncode == 0, backfilled.stderr[-2000:]
    assert dora_ids(intake) == [f'pagerduty:{incident}']
    assets = run('assets', '--metric-namespace', 'dora_incidents', '--out', tmp_path / 'assets')
    assert assets.returncode == 0 and (tmp_path / 'assets' / 'dashboards').is_dir(), assets.stderr[-2000:]
    demo = run('demo')
    assert demo.returncode != 0 and 'source checkout' in demo.stderr and 'Traceback' not in demo.stderr
