"""Install like a user: the wheel goes into a fresh virtual environment and runs from there.

This is what `datadog-agent integration install -w` does with the Agent's embedded Python: install the
wheel beside what the Agent ships, and copy the bundled `data/conf.yaml.example` into conf.d.
"""

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import yaml

from .common import ago

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


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_check(tmp_path, pagerduty, intake, now):
    dist = tmp_path / 'dist'
    subprocess.run(
        [sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir', str(dist), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    [wheel] = dist.glob('datadog_dora_incidents-*-py3-none-any.whl')
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
        [python, '-c', RUN_INSTALLED_CHECK, json.dumps(settings)], capture_output=True, text=True, cwd=tmp_path
    )

    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result['error'] == '' and result['warnings'] == []
    assert str(env_dir) in result['file'], 'the check must run from the installed wheel'
    assert result['cli'] == []
    assert [body['data']['attributes']['id'] for body in intake.failures] == [f'pagerduty:{incident}']


def test_the_bundled_example_is_a_working_configuration_once_filled_in():
    example = yaml.safe_load((ROOT / 'datadog_checks/dora_incidents/data/conf.yaml.example').read_text())
    [instance] = example['instances']
    assert instance == {'source': 'pagerduty', 'api_token': '<PAGERDUTY_API_TOKEN>'}
