"""`dora-incidents`: the check outside the Agent. Needs the `[cli]` extra (click, rich); the check never imports it."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from datadog_checks.base.stubs import aggregator

from ..cursor import CursorStore
from ..outputs import SOURCE_CAN_CONNECT
from ..sources import SOURCES, SourceError
from .runtime import (
    AGENT_CONFIG,
    AGENT_RUN_PATH,
    AgentCache,
    CliError,
    StateFile,
    default_state_path,
    has_secrets,
    load_agent_settings,
    load_instance,
    make_check,
)


def _console(stderr: bool = False) -> Console:
    # A pipe or a file gets every column: rich would otherwise cut tables to 80 columns (`pagerdut…`).
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 100_000)


console = _console()
errors = _console(stderr=True)  # errors and warnings
config_option = click.option(
    '-c', '--config', 'config_path', required=True, type=click.Path(dir_okay=False, path_type=Path),
    help='conf.yaml of the check (the Agent reads conf.d/dora_incidents.d/conf.yaml).',
)  # fmt: skip
instance_option = click.option('--instance', default=0, show_default=True, help='Which entry of `instances`.')


@click.group(context_settings={'help_option_names': ['-h', '--help']})
@click.option(
    '--state', 'state_path', type=click.Path(dir_okay=False, path_type=Path), default=default_state_path,
    show_default='$XDG_STATE_HOME/dora-incidents/state.json',
    help='Where the CLI keeps its cursor (outside the Agent there is no Agent cache).',
)  # fmt: skip
@click.pass_context
def main(ctx, state_path):
    """Report resolved incidents as DORA failures, time-to-restore and counts: the check outside the Agent."""
    ctx.obj = state_path


@main.command()
@click.option('--source', default='pagerduty', show_default=True, type=click.Choice(list(SOURCES)),
              help='Which tool to simulate.')  # fmt: skip
def demo(source):
    """Run the real check twice against a built-in incident tool simulator (needs a source checkout)."""
    try:
        from loopback.demo import main as run_demo
        from loopback.simulators import SIMULATORS
    except ImportError:
        raise CliError('the demo runs from a source checkout: `bash scripts/demo.sh`') from None
    if source not in SIMULATORS:
        raise CliError(f'--source {source}: no simulator for it yet (there are: {", ".join(SIMULATORS)})')
    run_demo(source)


@main.command('check')
@config_option
@instance_option
@click.option('--commit', is_flag=True, help='Save the cursor afterwards, so the next `check` shows only newer ones.')
@click.pass_obj
def check_command(state_path, config_path, instance, commit):
    """One dry run of the real check: prints what it would send, sends nothing to Datadog.

    Use it to validate a configuration before deploying it. Without --commit the cursor is left alone.
    """
    from .key_check import validate_keys

    state = StateFile(state_path)
    check = make_check(*load_instance(config_path, instance), state, dry_run=True)
    for line in validate_keys(check):
        console.print(f'[green]ok[/] {line}')
    error = check.run()
    if error:
        raise CliError(check.sanitize(_first_message(error)))
    _print_metrics()
    _print_events()
    recording = check.recording
    _print_failures(recording.failures if recording else [])
    if check.config.mark_change_failures and recording:
        _print_markings(recording.markings)
    warnings = check.get_warnings()
    if not _source_read():
        raise CliError(_unread_source(check, warnings))
    _print_warnings(warnings)
    if commit:
        state.save()
        console.print(f'[green]Cursor saved[/] to {state.path}')
    else:
        console.print('[dim]Dry run: nothing sent to Datadog, cursor not saved (add --commit to save it).[/]')


def _source_read() -> bool:
    return all(metric.value == 1 for metric in aggregator.metrics(SOURCE_CAN_CONNECT))


def _unread_source(check, warnings: list[str]) -> str:
    url = check.config.api_url or 'its default URL'
    cause = next((warning for warning in warnings if warning.startswith('Could not read')), 'Could not read it')
    return f'{cause} (`source: {check.config.source}`, `api_url`: {url}); nothing was reported, the cursor waits'


@main.command()
@config_option
@instance_option
@click.option('--since', required=True, help='How far back: e.g. 90d, 12h, 30m.')
@click.pass_obj
def backfill(state_path, config_path, instance, since):
    """Send historical resolved incidents to Datadog's DORA API, resumably, never twice.

    \b
    Why only DORA failures: the Agent stamps metrics when a run submits them, so
    `dora.time_to_restore` and `dora.incidents.count` cannot be back-dated. A DORA failure
    carries its own started_at/finished_at and Datadog accepts any age, so history goes
    there. Interrupted? Run the same command again: it resumes from its own cursor.
    """
    from .backfill import backfill as run_backfill

    state = StateFile(state_path)
    check = make_check(*load_instance(config_path, instance), state)
    until = datetime.now(timezone.utc).replace(microsecond=0)
    start = until - _duration(since)
    with Progress(TextColumn('{task.description}'), BarColumn(), TextColumn('{task.percentage:>3.0f}%'),
                  TimeRemainingColumn(), console=console) as progress:  # fmt: skip
        task = progress.add_task(f'Backfilling from {start:%Y-%m-%d %H:%M}Z', total=(until - start).total_seconds())

        def on_window(through):
            state.save()
            progress.update(task, completed=(through - start).total_seconds())

        try:
            summary = run_backfill(check, start, until, on_window)
        except SourceError as e:
            raise CliError(f'backfill stopped, progress saved: {e}. Run the same command again to resume.') from None
    state.save()
    table = Table(title='Backfill summary', show_header=False)
    table.add_row('resumed from', summary.resumed_from.isoformat() if summary.resumed_from else 'the start')
    table.add_row('resolutions read', str(summary.sent))
    table.add_row('already sent before', str(summary.already_sent))
    table.add_row('queued: not accepted by Datadog yet', str(summary.pending))
    table.add_row('skipped as malformed', str(summary.skipped))
    console.print(table)
    _print_warnings(check.get_warnings())
    if summary.undelivered:
        raise CliError(
            f'{summary.pending} DORA failure(s) did not reach Datadog and stay queued in {state.path}: '
            f'{check.sanitize(summary.undelivered)}. Fix it and run the command again: queued failures go first (a new '
            '`datadog_api_key` or `datadog_api_url` is a new destination: its backfill starts afresh and sends them all)'
        )


@main.group()
def cursor():
    """What the check has reported so far, for troubleshooting."""


@cursor.command('show')
@config_option
@instance_option
@click.option('--agent', 'agent_run', is_flag=True, help='Read the cursor the Agent keeps on this host instead.')
@click.option('--run-path', type=click.Path(file_okay=False, path_type=Path), default=AGENT_RUN_PATH, show_default=True,
              help="With --agent: the Agent's run path, where it keeps its persistent cache.")  # fmt: skip
@click.option('--agent-config', type=click.Path(dir_okay=False, path_type=Path), show_default=str(AGENT_CONFIG),
              help="With --agent: the Agent's datadog.yaml, for its api_key, app_key and site.")  # fmt: skip
@click.pass_obj
def cursor_show(state_path, config_path, instance, agent_run, run_path, agent_config):
    """Show the watermark, the lag and the incidents reported recently."""
    init_config, settings = load_instance(config_path, instance, secrets_allowed=agent_run)
    if agent_run:
        cache = AgentCache(run_path)
        check = make_check(init_config, settings, cache, agent_settings=_agent_settings(agent_config))
    else:
        cache = StateFile(state_path)
        check = make_check(init_config, settings, cache)
    if agent_run and has_secrets(settings):
        # The cursor's scope includes the Datadog key, which only the Agent can resolve: show every cursor here.
        prefixes = cache.cursor_prefixes()
        console.print(
            f'`ENC[]` secrets in the config: showing all {len(prefixes)} dora_incidents cursor(s) on this host.'
        )
        for prefix in prefixes:
            console.print(f'[bold]{prefix}[/]')
            _show_cursor(CursorStore(PrefixedCache(check, cache, prefix)).load())
    else:
        _show_cursor(CursorStore(check).load())
    _print_warnings(check.get_warnings())


def _agent_settings(path: Path | None) -> dict:
    """The Agent's settings from `--agent-config`; without it, from the Agent's datadog.yaml when there is one."""
    if path is None and not AGENT_CONFIG.is_file():
        errors.print(f'note: no {AGENT_CONFIG}: the Agent\'s defaults are assumed (site datadoghq.com, no keys)')
        return {}
    return load_agent_settings(path or AGENT_CONFIG)


def _show_cursor(cursor_state):
    if cursor_state.watermark is None:
        console.print('No cursor yet: the next run reads back `initial_lookback`.')
        return
    lag = datetime.now(timezone.utc) - cursor_state.watermark
    console.print(f'Watermark: {cursor_state.watermark.isoformat()} ({_human(lag)} ago)')
    remembered = f'resolved within {cursor_state.remember.days} days of the watermark'
    console.print(f'Incidents remembered: {len(cursor_state.reported)} ({remembered})')
    table = Table('incident', 'resolved at (reported)')
    for key, resolved_at in cursor_state.latest(10):
        table.add_row(key, resolved_at.isoformat())
    console.print(table)


class PrefixedCache:
    """A check's persistent-cache interface over a given key prefix: another instance's cursor, read-only."""

    def __init__(self, check, cache, prefix):
        self._check, self._cache, self._prefix = check, cache, prefix

    def read_persistent_cache(self, key):
        return self._cache.read(self._prefix + key)

    def warning(self, *args):
        self._check.warning(*args)


@cursor.command('reset')
@config_option
@instance_option
@click.option('--yes', is_flag=True, help='Do not ask for confirmation.')
@click.pass_obj
def cursor_reset(state_path, config_path, instance, yes):
    """Forget the CLI's cursor, backfill cursor and DORA outbox for this instance."""
    if not yes and not click.confirm('Forget what this instance reported (CLI state only)?'):
        console.print('Nothing changed.')
        return
    state = StateFile(state_path)
    check = make_check(*load_instance(config_path, instance), state)
    prefix = f'dora_incidents:{check.persistent_cache_id()}_'
    forgotten = state.forget(prefix)
    state.save()
    console.print(f'Forgot {forgotten} entries from {state.path}.')
    console.print(
        '[dim]The Agent keeps its own cursor: stop the Agent, delete the `*cursor_a`/`*cursor_b` files of this '
        'check under its run path, start it again.[/]'
    )


@main.command()
@click.option(
    '--metric-namespace', required=True, help='The `metric_namespace` of your instances, e.g. dora_incidents.'
)
@click.option('--out', 'out', required=True, type=click.Path(file_okay=False, path_type=Path),
              help='Where to write dashboards/ and monitors/.')  # fmt: skip
def assets(metric_namespace, out):
    """Write the dashboard and monitors querying `<metric-namespace>.*` instead of `dora.*`.

    For instances that set `metric_namespace`: import the files written into Datadog.
    """
    from .assets import write_assets

    for path in write_assets(metric_namespace, out):
        console.print(f'wrote {path}')


def _print_metrics():
    table = Table('metric', 'value', 'tags', title='Metrics')
    for name in sorted(aggregator.metric_names):
        for metric in aggregator.metrics(name):
            table.add_row(name, f'{metric.value:g}', ', '.join(metric.tags))
    console.print(table)


def _print_events():
    table = Table('resolved at', 'title', title='Events')
    for event in aggregator.events:
        table.add_row(datetime.fromtimestamp(event['timestamp'], timezone.utc).isoformat(), event['msg_title'])
    console.print(table)


def _print_failures(payloads):
    columns = ('id', 'services', 'team', 'env', 'severity', 'started_at', 'finished_at')
    table = Table(*columns, title='DORA failures (not sent)')
    for payload in payloads:
        attributes = dict(payload['data']['attributes'])
        attributes['services'] = ', '.join(attributes.get('services', []))
        for moment in ('started_at', 'finished_at'):
            attributes[moment] = datetime.fromtimestamp(attributes[moment] / 1e9, timezone.utc).isoformat()
        table.add_row(*(str(attributes.get(column, '')) for column in columns))
    console.print(table)


def _print_markings(markings):
    table = Table('deployment', 'change failure', 'remediated by', title='Change failures (not marked)')
    for path, body in markings:
        attributes = body['data']['attributes']
        remediation = attributes.get('remediation') or {}
        table.add_row(path.rsplit('/', 1)[-1], str(attributes.get('change_failure', '')), remediation.get('id', ''))
    console.print(table)


def _print_warnings(warnings):
    for warning in warnings:
        errors.print(f'[yellow]warning:[/] {warning}')


def _first_message(error_report: str) -> str:
    return json.loads(error_report)[0]['message'].replace('\n', ' ')


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r'(\d+)([dhm])', text.strip())
    if not match:
        raise CliError(f'--since {text!r}: use a number and d, h or m, e.g. 90d')
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{'d': 'days', 'h': 'hours', 'm': 'minutes'}[unit]: amount})


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f'{seconds // 3600}h {seconds % 3600 // 60}m' if seconds >= 3600 else f'{seconds // 60}m {seconds % 60}s'


def run():
    """CLI errors are one line on stderr, not a traceback, and exit non-zero."""
    try:
        result = main(standalone_mode=False)
    except CliError as e:
        errors.print(f'[red]error:[/] {e}', soft_wrap=True)
        raise SystemExit(1) from None
    except click.exceptions.Abort:
        errors.print('Aborted.')
        raise SystemExit(1) from None
    except click.ClickException as e:
        e.show()  # on stderr
        raise SystemExit(e.exit_code) from None
    raise SystemExit(result if isinstance(result, int) else 0)
