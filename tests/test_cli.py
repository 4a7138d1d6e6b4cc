"""The `dora-incidents` command line, against the loopback servers."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from datadog_checks.base.stubs import datadog_agent as agent_stub
from rich.console import Console

from datadog_checks.dora_incidents.cli import app as cli_module
from datadog_checks.dora_incidents.cli.app import main
from loopback.harness import new_check
from loopback.server import Fault

from .common import ago, dora_ids

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli(tmp_path, instance, monkeypatch):
    """Runs `dora-incidents ARGS` in-process with a conf.yaml for `instance` and a state file in tmp_path."""
    for method in ('read_persistent_cache', 'write_persistent_cache'):
        monkeypatch.setattr(agent_stub, method, getattr(agent_stub, method))  # the CLI rebinds them
    for name in ('console', 'errors'):  # plain text, no wrapping
        monkeypatch.setattr(cli_module, name, Console(width=250, color_system=None, stderr=name == 'errors'))
    config = tmp_path / 'conf.yaml'
    config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [instance]}))
    state = tmp_path / 'state.json'

    def invoke(*args):
        result = CliRunner().invoke(main, ['--state', str(state), *args], standalone_mode=False, catch_exceptions=True)
        return result, state

    invoke.config = str(config)
    return invoke


def one_line_error(result):
    return result.exception.__class__.__name__ == 'CliError' and '\n' not in str(result.exception)


def test_check_is_a_dry_run_unless_committed(cli, pagerduty, intake, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2), title='Checkout down', priority='P1')
    pagerduty.resolve(incident, ago(now, hours=1))

    result, state = cli('check', '-c', cli.config)

    assert result.exception is None, result.output
    assert 'dora.time_to_restore' in result.output and 'Checkout down' in result.output
    assert f'pagerduty:{incident}' in result.output and 'not sent' in result.output
    assert intake.failures == [] and not state.exists()

    result, state = cli('check', '-c', cli.config, '--commit')
    assert state.exists() and 'Cursor saved' in result.output

    result, _ = cli('check', '-c', cli.config)
    assert 'dora.time_to_restore' not in result.output  # nothing new since the committed cursor


def test_check_with_a_bad_config_is_one_clear_line(cli, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump({'instances': [{'source': 'jira', 'api_token': 'secret-123'}]}))

    result, _ = cli('check', '-c', str(bad))

    assert one_line_error(result) and 'source' in str(result.exception) and 'secret-123' not in str(result.exception)


@pytest.mark.parametrize(
    'content, message',
    [
        ('instances: []', 'no `instances`'),
        (': : :', 'not valid YAML'),
        ('instances: [{api_token: "ENC[pd]"}]', 'Agent secret'),
    ],
)
def test_unusable_config_files_are_one_line(cli, tmp_path, content, message):
    path = tmp_path / 'conf.yaml'
    path.write_text(content)
    result, _ = cli('check', '-c', str(path))
    assert one_line_error(result) and message in str(result.exception)


def test_backfill_sends_history_once_and_resumes_after_an_interruption(cli, pagerduty, intake, now):
    incidents = []
    for days in range(1, 80):
        incident = pagerduty.trigger('PSEARCH', ago(now, days=days, hours=2))
        pagerduty.resolve(incident, ago(now, days=days))
        incidents.append(incident)
    too_old = pagerduty.trigger('PSEARCH', ago(now, days=120))
    pagerduty.resolve(too_old, ago(now, days=100))
    pagerduty.inject(Fault(status=503, times=3, path='/log_entries', skip=1))  # the second 30-day window

    result, _ = cli('backfill', '-c', cli.config, '--since', '90d')
    assert one_line_error(result) and 'Run the same command again' in str(result.exception)
    sent_before = len(intake.failures)
    assert 0 < sent_before < len(incidents)

    result, _ = cli('backfill', '-c', cli.config, '--since', '90d')
    assert result.exception is None, result.output
    assert 'Backfill summary' in result.output
    assert sorted(dora_ids(intake)) == sorted(f'pagerduty:{i}' for i in incidents)  # each exactly once

    result, _ = cli('backfill', '-c', cli.config, '--since', '90d')
    assert len(intake.failures) == len(incidents)


def test_backfill_help_explains_why_metrics_are_not_backdated(cli):
    result, _ = cli('backfill', '--help')
    assert 'cannot be back-dated' in result.output


def test_cursor_show_and_reset(cli, pagerduty, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    cli('check', '-c', cli.config, '--commit')

    result, _ = cli('cursor', 'show', '-c', cli.config)
    assert 'Watermark' in result.output and f'pagerduty:{incident}' in result.output

    result, state = cli('cursor', 'reset', '-c', cli.config, '--yes')
    assert 'Forgot' in result.output
    result, _ = cli('cursor', 'show', '-c', cli.config)
    assert 'No cursor yet' in result.output


def test_cursor_show_reads_the_agents_own_cache(cli, tmp_path, make_check, instance, pagerduty, now, dd_run_check):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    dd_run_check(make_check(instance))
    run_path = tmp_path / 'run'
    run_path.mkdir()
    for key, value in agent_stub._cache.items():  # lay the Agent's cache out as the Agent does on disk
        (run_path / key.replace(':', '_')).write_text(value)

    result, _ = cli('cursor', 'show', '-c', cli.config, '--agent', '--run-path', str(run_path))

    assert result.exception is None, result.output
    assert f'pagerduty:{incident}' in result.output


def test_cursor_show_reads_the_agents_cache_with_secrets_in_the_config(
    cli, tmp_path, make_check, instance, pagerduty, now, dd_run_check
):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    dd_run_check(make_check(instance))
    run_path = tmp_path / 'run'
    run_path.mkdir()
    for key, value in agent_stub._cache.items():
        (run_path / key.replace(':', '_')).write_text(value)
    secret_config = tmp_path / 'secret.yaml'
    with_secrets = {**instance, 'api_token': 'ENC[pd_token]', 'datadog_api_key': 'ENC[dd_key]'}
    secret_config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [with_secrets]}))

    result, _ = cli('cursor', 'show', '-c', str(secret_config), '--agent', '--run-path', str(run_path))

    assert result.exception is None, result.output
    assert f'pagerduty:{incident}' in result.output and 'ENC[]' in result.output


def test_the_command_without_the_cli_extra_says_how_to_get_it(tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / 'click.py'
    blocker.write_text('raise ImportError("no click in the Agent", name="click")')
    env = {'PYTHONPATH': str(tmp_path)}
    code = 'from datadog_checks.dora_incidents.cli import run; run()'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)

    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert out.stderr.strip().count('\n') == 0 and '[cli]' in out.stderr


def test_the_check_does_not_import_the_cli():
    import subprocess
    import sys

    code = 'import sys, datadog_checks.dora_incidents; print(json.dumps(sorted(m for m in sys.modules if m in ("click", "rich"))))'
    out = subprocess.run([sys.executable, '-c', 'import json; ' + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_corrupt_backfill_state_starts_over_with_a_warning(cli, pagerduty, intake, now):
    incident = pagerduty.trigger('PSEARCH', ago(now, days=3))
    pagerduty.resolve(incident, ago(now, days=2))
    cli('backfill', '-c', cli.config, '--since', '7d')
    _, state = cli('cursor', 'show', '-c', cli.config)
    values = json.loads(state.read_text())
    for key in [key for key in values if '_backfill_' in key]:
        values[key] = 'garbage{'
    state.write_text(json.dumps(values))

    result, _ = cli('backfill', '-c', cli.config, '--since', '7d')

    assert result.exception is None, result.output
    assert 'Starting over' in result.output and dora_ids(intake) == [f'pagerduty:{incident}'] * 2


def test_a_dry_run_with_change_failures_on_shows_the_deployment_it_would_mark(
    cli, tmp_path, instance, pagerduty, intake, now
):
    intake.deploy('checkout', 'prod', 'v41', ago(now, days=2, minutes=5), ago(now, days=2))
    failed = intake.deploy('checkout', 'prod', 'v42', ago(now, hours=4, minutes=5), ago(now, hours=4))
    fix = intake.deploy('checkout', 'prod', 'v41', ago(now, minutes=65), ago(now, minutes=60))
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, minutes=30))
    config = tmp_path / 'marking.yaml'
    marking = {
        **instance,
        'mark_change_failures': True,
        'datadog_app_key': intake.app_key,
        'service_mapping': {'PCHKOUT': {'service': 'checkout'}},
    }
    config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [marking]}))

    result, _ = cli('check', '-c', str(config))

    assert result.exception is None, result.output
    assert 'Datadog API key: valid' in result.output and 'Datadog application key: valid' in result.output
    assert f'pagerduty:{incident}' in result.output and 'warning' not in result.output
    assert 'Change failures (not marked)' in result.output
    assert re.search(rf'{failed}\s.*True\s.*{fix}', result.output), result.output
    assert intake.patches == [] and intake.failures == []


# -- exit codes and streams, as a shell sees them: a separate process, stdout and stderr apart, no terminal ----
@pytest.fixture
def command(tmp_path, instance):
    """Runs `python -m datadog_checks.dora_incidents ARGS -c conf.yaml`, the conf.yaml holding `instance` updated
    by `**options` (None removes one), its output piped, as in a script."""

    def run(*args, stdin=None, **options):
        settings = {key: value for key, value in {**instance, **options}.items() if value is not None}
        config = tmp_path / 'conf.yaml'
        config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [settings]}))
        argv = ['--state', str(tmp_path / 'state.json'), *args, '-c', str(config)]
        return subprocess.run(
            [sys.executable, '-m', 'datadog_checks.dora_incidents', *argv],
            input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip

    return run


def test_check_exits_non_zero_naming_the_source_it_cannot_read(command):
    out = command('check', api_url='http://127.0.0.1:9')

    assert out.returncode == 1 and 'Traceback' not in out.stderr
    assert 'error: Could not read PagerDuty' in out.stderr and 'http://127.0.0.1:9' in out.stderr
    assert 'error' not in out.stdout


@pytest.mark.parametrize(
    'options, cause',
    [
        (
            {'datadog_api_key': 'wrong-api-key-123'},
            '`datadog_api_key` (or the Agent api_key): Datadog refused it, HTTP 403',
        ),
        ({'datadog_app_key': 'wrong-app-key-123'}, '`datadog_app_key` (or the Agent app_key): HTTP 403'),
        ({'datadog_api_url': 'http://127.0.0.1:9'}, 'cannot reach the Datadog API at http://127.0.0.1:9'),
    ],
    ids=['api-key', 'app-key', 'unreachable'],
)
def test_check_validates_the_datadog_keys_before_running(command, intake, options, cause):
    out = command('check', **options)

    assert out.returncode == 1 and cause in out.stderr, out.stderr
    assert 'wrong-api-key-123' not in out.stderr + out.stdout and 'wrong-app-key-123' not in out.stderr + out.stdout
    assert intake.failures == []


def test_check_says_which_keys_it_validated(command, intake):
    out = command('check', datadog_app_key=intake.app_key)
    assert out.returncode == 0, out.stderr
    assert 'Datadog API key: valid' in out.stdout and 'Datadog application key: valid' in out.stdout

    out = command('check')
    assert 'Datadog application key: none configured' in out.stdout


@pytest.mark.parametrize(
    'options, cause',
    [
        ({'datadog_api_key': 'wrong-api-key-123'}, '`datadog_api_key`'),
        ({'datadog_api_url': 'http://127.0.0.1:9'}, 'cannot reach http://127.0.0.1:9'),
    ],
    ids=['refused', 'unreachable'],
)
def test_backfill_exits_non_zero_when_datadog_refuses_or_cannot_be_reached(
    command, pagerduty, intake, now, options, cause
):
    for days in (1, 2, 3):
        incident = pagerduty.trigger('PSEARCH', ago(now, days=days, hours=2))
        pagerduty.resolve(incident, ago(now, days=days))

    out = command('backfill', '--since', '7d', **options)

    assert out.returncode == 1 and cause in out.stderr, out.stderr
    assert '3 DORA failure(s) did not reach Datadog and stay queued' in out.stderr
    assert 'HTTP 403' in out.stderr or 'cannot reach' in out.stderr
    assert intake.failures == [] and 'wrong-api-key-123' not in out.stderr + out.stdout

    out = command('backfill', '--since', '7d')  # fixed: what stayed queued goes out first
    assert out.returncode == 0, out.stderr
    assert len(set(dora_ids(intake))) == 3


def test_cursor_reset_answered_no_changes_nothing_and_exits_0(command, pagerduty, now, tmp_path):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    assert command('check', '--commit').returncode == 0
    before = (tmp_path / 'state.json').read_text()

    out = command('cursor', 'reset', stdin='n\n')

    assert out.returncode == 0 and 'Nothing changed' in out.stdout
    assert (tmp_path / 'state.json').read_text() == before


def test_output_that_is_not_a_terminal_is_never_truncated(command, pagerduty, now):
    title = 'Checkout returns 500s for every customer in every region of the world'  # rows well past 80 columns
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2), title=title)
    pagerduty.resolve(incident, ago(now, hours=1))

    out = command('check')

    assert out.returncode == 0, out.stderr
    assert title in out.stdout and f'pagerduty:{incident}' in out.stdout and '…' not in out.stdout


def test_cursor_show_of_a_run_path_that_does_not_exist_is_an_error_naming_it(command):
    out = command('cursor', 'show', '--agent', '--run-path', '/nonexistent/run')
    assert out.returncode == 1 and '/nonexistent/run' in out.stderr and 'No cursor yet' not in out.stdout


def test_cursor_show_agent_with_the_readmes_minimal_instance_finds_the_agents_cursor(
    command, tmp_path, pagerduty, datadog_agent
):
    """The minimal instance names no Datadog key nor URL: the check takes the Agent's `api_key` and `site`."""
    minimal = {'source': 'pagerduty', 'api_token': pagerduty.token, 'api_url': pagerduty.url, 'env': 'prod',
               'min_collection_interval': 60, 'service_mapping': {'PCHKOUT': {'service': 'checkout'}}}  # fmt: skip
    datadog_agent._config.update({'api_key': 'agent-api-key-123', 'site': 'datadoghq.eu'})
    assert new_check(minimal).run() == ''  # nothing resolved yet: the Agent stores a cursor, sends nothing
    run_path = tmp_path / 'run'
    run_path.mkdir()
    for key, value in datadog_agent._cache.items():
        (run_path / key.replace(':', '_')).write_text(value)
    agent_config = tmp_path / 'datadog.yaml'
    overrides = dict.fromkeys(['datadog_api_url', 'datadog_api_key', 'tags', 'timeout'])
    shown = {}
    for site in ('datadoghq.eu', 'datadoghq.com'):
        agent_config.write_text(yaml.safe_dump({'api_key': 'agent-api-key-123', 'app_key': 'ENC[app]', 'site': site}))
        shown[site] = command('cursor', 'show', '--agent', '--run-path', str(run_path), '--agent-config',
                              str(agent_config), **minimal, **overrides)  # fmt: skip

    assert shown['datadoghq.eu'].returncode == 0, shown['datadoghq.eu'].stderr
    assert 'Watermark' in shown['datadoghq.eu'].stdout
    assert 'No cursor yet' in shown['datadoghq.com'].stdout  # another site, another organisation: another cursor
    assert 'agent-api-key-123' not in shown['datadoghq.eu'].stdout + shown['datadoghq.eu'].stderr

    missing = command('cursor', 'show', '--agent', '--run-path', str(run_path), '--agent-config',
                      str(tmp_path / 'nope.yaml'), **minimal, **overrides)  # fmt: skip
    assert missing.returncode == 1 and 'nope.yaml' in missing.stderr


def test_assets_for_a_metric_namespace_query_it_and_stay_valid(cli, tmp_path):
    from datadog_api_client import Configuration
    from datadog_api_client.model_utils import validate_and_convert_types
    from datadog_api_client.v1.model.dashboard import Dashboard
    from datadog_api_client.v1.model.monitor import Monitor

    out = tmp_path / 'assets-ns'
    result, _ = cli('assets', '--metric-namespace', 'dora_incidents', '--out', str(out))

    assert result.exception is None, result.output
    shipped = sorted(
        p.relative_to(ROOT / 'assets') for p in (ROOT / 'assets').glob('*/*.json') if p.parent.name != 'configuration'
    )
    assert sorted(p.relative_to(out) for p in out.glob('*/*.json')) == shipped
    queried = set()
    for path in out.glob('*/*.json'):
        document = json.loads(path.read_text())
        model, body = (Dashboard, document) if path.parent.name == 'dashboards' else (Monitor, document['definition'])
        validate_and_convert_types(body, (model,), ['asset'], True, True, Configuration())
        queried |= set(re.findall(r'(?:avg|sum|min|max):([a-z_][a-z0-9_.]*)\{', json.dumps(document)))
    dora_metrics = {
        'time_to_restore',
        'incidents.count',
        'change_failures.count',
        'failed_deployment_recovery_time',
        'deployments.rework',
        'deployments.count',
    }
    assert {f'dora_incidents.{name}' for name in dora_metrics} <= queried
    assert not {f'dora.{name}' for name in dora_metrics} & queried  # nothing left on the default namespace
    assert 'dora.check.source.can_connect' in queried  # health metrics keep their names


def test_assets_refuse_a_namespace_that_is_no_metric_prefix(cli, tmp_path):
    result, _ = cli('assets', '--metric-namespace', 'Dora Incidents', '--out', str(tmp_path / 'x'))
    assert one_line_error(result) and 'metric prefix' in str(result.exception) and not (tmp_path / 'x').exists()


def test_a_dry_run_leaves_the_failures_a_backfill_queued_queued(command, pagerduty, intake, now, tmp_path):
    for days in (1, 2, 3):
        incident = pagerduty.trigger('PSEARCH', ago(now, days=days, hours=2))
        pagerduty.resolve(incident, ago(now, days=days))
    intake.inject(Fault(status=500, path='/api/v2/dora/failure', times=1_000))
    assert command('backfill', '--since', '7d').returncode == 1  # queued: Datadog answered 500
    intake.clear_faults()
    received = len(intake.failures)
    queued = outbox_entries(tmp_path / 'state.json')
    assert len(queued) == 3
    backoff_passed(tmp_path / 'state.json')  # the queued writes are due again: the next run would send them

    assert command('check', '--commit').returncode == 0  # a dry run: it must not take the queue as sent

    assert len(intake.failures) == received
    assert outbox_entries(tmp_path / 'state.json') == queued


def outbox_entries(state_path):
    """The ids of the DORA writes queued in a CLI state file: the outbox's newest slot (durable.py)."""
    state = json.loads(state_path.read_text())
    slots = [json.loads(value) for key, value in state.items() if 'dora_outbox' in key]
    newest = max(slots, key=lambda slot: slot['sequence'])
    return sorted(item['write']['key'] for item in newest['document']['items'])


def backoff_passed(state_path):
    """Makes every write queued in a CLI state file due now, as if its backoff had run out."""
    state = json.loads(state_path.read_text())
    for key in [k for k in state if 'outbox' in k]:
        stored = json.loads(state[key])
        for item in stored['document']['items']:
            item['next_at'] = 0
        state[key] = json.dumps(stored)
    state_path.write_text(json.dumps(state))


def test_check_validates_the_keys_when_only_deployment_metrics_uses_them(command, intake):
    out = command('check', send_dora_failures=False, deployment_metrics=True, datadog_app_key=intake.app_key)

    assert out.returncode == 0, out.stderr
    assert 'Datadog API key: valid' in out.stdout and 'Datadog application key: valid' in out.stdout
