"""The fault matrix: every fault the reliability issue names, injected at the first, a middle and the
last page of a multi-page read (or at the first, a middle and the last DORA post), then cleared.

    python -m loopback.faults          # prints the table that goes into docs/design.md

Each cell runs the real check against fresh loopback servers until the backlog is read and the DORA
outbox is empty (each run is a new check object: an Agent restart), resolving more incidents after
the first run, and counts: incidents resolved, reported, lost, duplicated, and DORA re-sends (a
failure posted again with the same id: an update on Datadog's side, not a duplicate). Retry backoff is
compressed to zero so that the matrix runs in seconds; its schedule is tested separately.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from datadog_checks.base.stubs import aggregator, datadog_agent

from datadog_checks.dora_incidents.datadog import outbox

from .harness import instance_for, new_check, tally
from .intake import DORA_FAILURE_PATH, DatadogIntake
from .pagerduty import PagerDutySimulator
from .server import Fault

LOG_ENTRIES = '/log_entries'
HTML = b'<html><body><h1>502 Bad Gateway</h1></body></html>'
OFFSET_ERROR = b'{"error":{"code":2001,"message":"Invalid Input Provided","errors":["Offset must be less than 9901."]}}'
INCIDENTS = 350  # 700 overview log entries (a trigger and a resolve each): one window of 7 pages
MAX_RUNS = 6
# Only a delay cell is about the HTTP timeout (its fault answers after twice that); elsewhere neither the timeout
# nor the run's budget may bind, however busy the machine: a cell that waits out a rate limit must end warning-free.
TIMEOUT, PATIENT_TIMEOUT, MAX_RUN_TIME = 1, 120, 600


@dataclass(frozen=True)
class Case:
    name: str
    target: str  # 'pagerduty' or 'datadog'
    fault: Fault
    cause: str | None  # what the warning must say; None: waited out within the run, no warning due


CASES = [
    Case('429 with ratelimit-reset 1s', 'pagerduty', Fault(status=429, headers={'ratelimit-reset': '1'}), None),
    Case(
        '429 with ratelimit-reset 600s',
        'pagerduty',
        Fault(status=429, headers={'ratelimit-reset': '600'}),
        'rate limit',
    ),
    *[
        Case(f'{status}', 'pagerduty', Fault(status=status, times=3), f'HTTP {status}')
        for status in (500, 502, 503, 504)
    ],
    Case('read timeout', 'pagerduty', Fault(delay=2 * TIMEOUT), 'did not answer in time'),
    Case('connection reset mid-body', 'pagerduty', Fault(reset=True), 'broke in the middle'),
    Case('truncated JSON body', 'pagerduty', Fault(truncate=True), 'not JSON'),
    Case(
        'HTML page from a proxy',
        'pagerduty',
        Fault(status=200, body=HTML, headers={'Content-Type': 'text/html'}),
        'not JSON',
    ),
    Case('401 bad token / wrong region', 'pagerduty', Fault(status=401), 'api.eu.pagerduty.com'),
    Case('403 token lacks access', 'pagerduty', Fault(status=403), 'read access'),
    Case('402 ability missing', 'pagerduty', Fault(status=402), 'team_ids'),
    Case('400 past the offset cap', 'pagerduty', Fault(status=400, body=OFFSET_ERROR), 'Offset must be less'),
    Case('DORA 429', 'datadog', Fault(status=429), 'wait to be sent'),
    *[Case(f'DORA {status}', 'datadog', Fault(status=status), 'wait to be sent') for status in (500, 503)],
    Case('DORA timeout', 'datadog', Fault(delay=2 * TIMEOUT), 'wait to be sent'),
    Case('DORA 403 bad API key', 'datadog', Fault(status=403), 'datadog_api_key'),
]


@dataclass
class Row:
    case: Case
    position: str
    runs: int
    counts: dict
    warned: bool
    leaked: bool

    @property
    def ok(self) -> bool:
        return self.counts['lost'] == 0 and self.counts['duplicated'] == 0 and self.warned and not self.leaked


def run_case(case: Case, position: str) -> Row:
    aggregator.reset()
    datadog_agent.reset()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with PagerDutySimulator() as pagerduty, DatadogIntake() as intake, _captured_logs() as logs:
        pagerduty.add_service('PSVC', 'Checkout', teams=[('PTEAM', 'Payments')])
        resolved = _resolve(pagerduty, INCIDENTS, now - timedelta(hours=6), now - timedelta(hours=1))
        server, path = (pagerduty, LOG_ENTRIES) if case.target == 'pagerduty' else (intake, DORA_FAILURE_PATH)
        skip = {'first': 0, 'middle': 4 if case.target == 'pagerduty' else INCIDENTS // 2, 'last': _last(case)}[
            position
        ]
        server.inject(Fault(**{**vars(case.fault), 'path': path, 'skip': skip}))
        timeout = TIMEOUT if case.fault.delay else PATIENT_TIMEOUT
        instance = instance_for(
            pagerduty, intake, timeout=timeout, max_run_time=MAX_RUN_TIME, send_events=False, log_requests=True
        )
        warnings, runs = [], 0
        while runs < MAX_RUNS:
            check = new_check(instance)
            error = check.run()
            runs += 1
            warnings += check.warnings + ([error] if error else [])
            if runs == 1:  # more incidents resolve while the fault is being recovered from
                resolved += _resolve(pagerduty, 25, now - timedelta(minutes=30), datetime.now(timezone.utc))
            if runs > 1 and not check.warnings and not _pending(intake, resolved):
                break
        time.sleep(case.fault.delay)  # a request the check gave up on still lands: count it
        output = logs.getvalue() + ''.join(warnings)
    leaked = pagerduty.token in output or intake.api_key in output
    warned = any(case.cause in warning for warning in warnings) if case.cause else not warnings
    return Row(case, position, runs, tally(resolved, aggregator, intake), warned, leaked)


def run_matrix(cases=CASES, positions=('first', 'middle', 'last')) -> list[Row]:
    original = outbox.MIN_BACKOFF
    outbox.MIN_BACKOFF = 0
    try:
        return [run_case(case, position) for case in cases for position in positions]
    finally:
        outbox.MIN_BACKOFF = original


def table(rows: list[Row]) -> str:
    header = '| fault | at | runs | resolved | reported | lost | duplicated | DORA re-sends | warning names cause | secrets in output |'
    lines = [header, '|' + '---|' * 10]
    for row in rows:
        c = row.counts
        lines.append(
            f'| {row.case.name} | {row.position} | {row.runs} | {c["resolved"]} | {c["reported"]} | {c["lost"]} '
            f'| {c["duplicated"]} | {c["dora_resends"]} | {"yes" if row.warned else "NO"} | {"YES" if row.leaked else "none"} |'
        )
    return '\n'.join(lines)


def _resolve(pagerduty, count, created, resolved_by) -> list[str]:
    incidents = []
    for n in range(count):
        incident = pagerduty.trigger('PSVC', created - timedelta(seconds=n))
        pagerduty.resolve(incident, resolved_by - timedelta(seconds=n + 1))
        incidents.append(incident)
    return incidents


def _last(case: Case) -> int:
    return 6 if case.target == 'pagerduty' else INCIDENTS - 1  # the 7th page, or the last post


def _pending(intake, resolved) -> bool:
    return len({body['data']['attributes']['id'] for body in intake.failures}) < len(resolved)


class _captured_logs:
    """Everything the check logs, at debug level, to search for secrets."""

    def __enter__(self):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.root = logging.getLogger()
        self.level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.DEBUG)
        return self.stream

    def __exit__(self, *exc):
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)


def main() -> None:
    rows = run_matrix()
    print(table(rows))
    failed = [row for row in rows if not row.ok]
    print(
        f'\n{len(rows) - len(failed)} of {len(rows)} cells: nothing lost, nothing duplicated, cause named, no secret.'
    )
    if failed:
        raise SystemExit(1)


if __name__ == '__main__':
    main()
