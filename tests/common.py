"""Helpers shared by the test modules."""

import base64
import json
import math
import time
from datetime import UTC, datetime, timedelta

from datadog_checks.dora_incidents.config_models.instance import InstanceConfig
from datadog_checks.dora_incidents.cursor import CACHE_KEY
from loopback.harness import INCIDENTS_COUNT, TIME_TO_RESTORE, counted, dora_ids, restores  # noqa: F401

# What a test that is not about a time limit sets instead of it: on a machine whose cores other jobs keep busy an
# answer may take seconds, and a real limit would race the machine's speed. Tests about a limit set their own
# (the run's budget on a virtual clock: run_on_virtual_clock).
TIMEOUT = 120  # seconds: the HTTP `timeout` option
MAX_RUN_TIME = 600  # seconds: the `max_run_time` option
NO_DEADLINE = math.inf  # a deadline: of a source's `resolved(since, until, deadline)`, of `DatadogApi.begin`


def read_within(source, since, until, left: float | None = None) -> list:
    """The batches `source` reads for the window: with `left` seconds of the run on a clock that stands still (the
    wait a rate limit names is then all that can outlast them, whatever this machine's speed), or no deadline."""
    if left is None:
        return list(source.resolved(since, until, NO_DEADLINE))
    source.api.monotonic = lambda: 0.0
    return list(source.resolved(since, until, left))


def reporting_instance(tool, intake, **options) -> dict:
    """The check instance reading `tool` (a simulator) and reporting to the loopback Datadog `intake`, `env:prod`,
    with the generous HTTP `timeout` (tests/common.py's TIMEOUT); `options` add to it or replace."""
    return tool.instance(
        **{
            'datadog_api_url': intake.url,
            'datadog_api_key': intake.api_key,
            'env': 'prod',
            'timeout': TIMEOUT,
            **options,
        }
    )


def instance_config(**options) -> InstanceConfig:
    """The configuration model as the check builds it from an instance with these options (None: unset): every
    option is an attribute, so that a misspelt one is an AttributeError."""
    instance = {name: value for name, value in options.items() if value is not None}
    return InstanceConfig.model_validate(instance, context={'configured_fields': frozenset(instance)})


def ago(now, **delta):
    return now - timedelta(**delta)


def later():
    """The next whole second: past what a simulator stamps as changed now (a reveal, an entry after the fact)."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)


def cursor_keys(datadog_agent):
    return [key for key in datadog_agent._cache if f'_{CACHE_KEY}_' in key]


def stored_cursor(datadog_agent):
    """The newest cursor document the check left in the Agent's persistent cache, or None."""
    stored = []
    for key in cursor_keys(datadog_agent):
        try:
            slot = json.loads(datadog_agent._cache[key])
            stored.append((int(slot['sequence']), slot['document']))
        except (ValueError, TypeError, KeyError):
            continue  # a torn or corrupted slot; the other one holds the cursor
    return max(stored, key=lambda s: s[0])[1] if stored else None


LATENCY = 0.2  # seconds each answer of a tool takes, on the check's virtual clock (run_on_virtual_clock)


def run_on_virtual_clock(make_check, run, tool, settings, aggregator, expected: int, most: int = 40):
    """Runs the check over a backlog until caught up (or until everything is reported and one more run went
    by), each run on a virtual clock on which every request to `tool` costs LATENCY and nothing else costs
    anything, whatever this machine's speed. Returns the requests each run sent and how many runs stopped
    for `max_run_time`."""
    per_run, stopped, complete = [], 0, 0
    for _ in range(most):
        check = make_check(settings)
        before = len(tool.requests)
        origin = time.monotonic() - LATENCY * before  # each run starts at the host's time
        check.monotonic = lambda origin=origin: origin + LATENCY * len(tool.requests)
        warnings = run(check)
        per_run.append(len(tool.requests) - before)
        out_of_time = any('Stopped after `max_run_time`' in warning for warning in warnings)
        stopped += out_of_time
        complete += len(restores(aggregator)) >= expected
        if not out_of_time or complete > 1:
            break
    return per_run, stopped


# Every offset from UTC-12 to UTC+14, half and three-quarter hours, and daylight saving with its changes
# (ServiceNow's and Jira's date literals are read in a zone: their windows are proven in each).
ZONES = [
    'Etc/GMT+12',
    'America/Los_Angeles',
    'America/New_York',
    'America/St_Johns',
    'UTC',
    'Asia/Kolkata',
    'Australia/Lord_Howe',
    'Pacific/Chatham',
    'Pacific/Kiritimati',
]


SECRET_ATTRIBUTES = ('token', 'password', 'client_secret', 'api_id', 'api_key', 'app_key')


def secrets(tool, intake) -> set[str]:
    """Every secret the simulator holds (and the intake's key), with what Basic auth makes of them, and the OAuth
    access tokens it issued."""
    found = {getattr(tool, name, None) for name in SECRET_ATTRIBUTES} | {intake.api_key, *getattr(tool, 'issued', ())}
    user = getattr(tool, 'username', None) or getattr(tool, 'email', None)
    for secret in (getattr(tool, 'password', None), getattr(tool, 'token', None)):
        if user and secret:
            found.add(base64.b64encode(f'{user}:{secret}'.encode()).decode())
    return {secret for secret in found if secret}
