"""The `dora-incidents` command line, against the loopback servers."""

import json

import pytest
import yaml
from click.testing import CliRunner

from datadog_checks.base.stubs import datadog_agent as agent_stub
from rich.console import Console

from datadog_checks.dora_incidents.cli import app as cli_module
from datadog_checks.dora_incidents.cli.app import main
from loopback.server import Fault

from .common import ago, dora_ids


@pytest.fixture
def cli(tmp_path, instance, monkeypatch):
    """Runs `dora-incidents ARGS` in-process with a conf.yaml for `instance` and a state file in tmp_path."""
    for method in ('read_persistent_cache', 'write_persistent_cache'):
        monkeypatch.setattr(agent_stub, method, getattr(agent_stub, method))  # the CLI rebinds them
    monkeypatch.setattr(cli_module, 'console', Console(width=250, color_system=None))  # plain text, no wrapping
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


def test_a_dry_run_with_change_failures_on_prints_the_failures_only(cli, tmp_path, instance, pagerduty, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    config = tmp_path / 'marking.yaml'
    marking = {**instance, 'mark_change_failures': True, 'datadog_app_key': 'some-app-key-123'}
    config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [marking]}))

    result, _ = cli('check', '-c', str(config))

    assert result.exception is None, result.output
    assert f'pagerduty:{incident}' in result.output and 'warning' not in result.output
