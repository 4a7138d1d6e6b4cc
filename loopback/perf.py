"""Performance: the check against the script a new user would write, over a backlog, with network latency.

    python -m loopback.perf [--backlog 2000 10000] [--latency 0 20] [--concurrency 1 8] [--budget 10]

For each backlog size N and added latency (milliseconds per response, on both the loopback PagerDuty and
the loopback Datadog API), it seeds the loopback PagerDuty with N incidents resolved within the last 20
hours, opened before `initial_lookback` (a day), so the window holds exactly N log entries: the floor
is ceil(N / 100) pages for anyone reading them. Then, each on fresh servers, in its own process:

- the check, in the stand-in Agent (`loopback.agent_process`, the cache in files, each run's commit
  journaled as counts: the Agent's commit is not the check's CPU), run after run until it has caught up
  (default options, `max_run_time: 10`, events on), once per `dora_concurrency`;
- `loopback.naive`: the official `pagerduty` client's `iter_all` and `datadog-api-client`'s
  `create_dora_failure`, one post after the other.

It prints, side by side: wall time (process start to drained), the speed-up, PagerDuty requests (and
the floor), TCP connections opened to both servers, CPU per resolution (the process's CPU less what its
imports alone cost, measured apart) and peak RSS of the process, then for the check its runs, their sum
against the floor N x latency / dora_concurrency + pages x latency (what posting k at a time and reading
page after page cannot go below), its longest run and its stored cursor. Every row checks that each incident reached
the DORA API. Last, the size of a stored cursor remembering 20,000 incidents (its cap).

Each is run as `python -m loopback.perf --child check|naive ...`, which notes the child's own peak RSS.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .harness import instance_for
from .intake import DatadogIntake
from .pagerduty import PagerDutySimulator

ROOT = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, '-m', 'loopback.perf', '--child']
# What each side imports before its first request: its import CPU is measured apart and subtracted.
IMPORTED = {
    'check': [
        'loopback.agent_process',
        'datadog_checks.dora_incidents',
        'datadog_checks.dora_incidents.sources.pagerduty',
    ],
    'naive': ['loopback.naive'],
}
PEAK_RSS_FILE = 'DORA_INCIDENTS_PEAK_RSS_FILE'
PAGE = 100
LOOKBACK = 86_400


@dataclass
class Measure:
    wall: float
    cpu: float
    peak_rss_mb: float
    requests: int
    connections: int
    posted: int  # distinct DORA failure ids the intake holds
    runs: int = 1
    run_seconds: float = 0.0  # the check's runs, summed (the naive script: its wall time)
    longest_run: float = 0.0
    cursor_bytes: int = 0


def seeded(backlog: int, latency_ms: float) -> tuple[PagerDutySimulator, DatadogIntake, list[str]]:
    # The intake checks every DORA failure with datadog-api-client's model, for both; not against the OpenAPI
    # description too (the tests do), whose CPU on the shared cores would be measured as the clients'.
    pagerduty, intake = PagerDutySimulator(), DatadogIntake(validate=False)
    pagerduty.add_service('PSVC', 'Checkout', teams=[('PTEAM', 'Payments')])
    now = datetime.now(timezone.utc).replace(microsecond=0)
    spacing = timedelta(hours=20) / backlog
    incidents = []
    for n in range(backlog):
        incident = pagerduty.trigger('PSVC', now - timedelta(hours=25, seconds=n))
        pagerduty.resolve(incident, now - timedelta(hours=20) + n * spacing)
        incidents.append(incident)
    for server in (pagerduty, intake):
        server.latency = latency_ms / 1000
        server.start()
    return pagerduty, intake, incidents


def run_process(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of a child process (`python -m loopback.perf --child ...`), which
    must succeed. The peak is the child's own high-water mark after `exec`: `ru_maxrss` would count the
    pages it shared with this process, which holds the simulators, between `fork` and `exec`."""
    with tempfile.TemporaryDirectory() as scratch:
        peak = Path(scratch) / 'peak_rss_kb'
        started = time.monotonic()
        child = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, PEAK_RSS_FILE: str(peak)}
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f'{" ".join(args[2:5])} failed with exit code {child.returncode}')
        return wall, usage.ru_utime + usage.ru_stime, int(peak.read_text()) / 1024


def child(kind: str, args: list[str]) -> None:
    """Run the check (in the stand-in Agent) or the naive script, and note the peak RSS when it ends."""
    atexit.register(lambda: Path(os.environ[PEAK_RSS_FILE]).write_text(str(_peak_rss_kb())))
    if kind == 'check':
        stand_in(json.loads(args[0]))
    elif kind == 'imports':  # what the check or the script costs before it does anything
        import importlib

        for module in args:
            importlib.import_module(module)
    else:
        from . import naive

        sys.argv = ['loopback.naive', *args]
        naive.main()


def measure_check(backlog: int, latency_ms: float, budget: int, concurrency: int) -> Measure:
    pagerduty, intake, incidents = seeded(backlog, latency_ms)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            journal = Path(scratch) / 'journal.jsonl'
            settings = {
                'instance': instance_for(pagerduty, intake, max_run_time=budget, dora_concurrency=concurrency),
                'state_dir': str(Path(scratch) / 'cache'),
                'journal': str(journal),
                'until_caught_up': True,
                'runs': 200,
                'pause': 0,
                'journal_submissions': False,
            }
            wall, cpu, rss = run_process([*CHILD, 'check', json.dumps(settings)])
            runs = [json.loads(line) for line in journal.read_text().splitlines() if '"run_done"' in line]
            cursor = max((path.stat().st_size for path in Path(scratch, 'cache').glob('*_cursor_*')), default=0)
        return Measure(
            wall, cpu, rss, len(pagerduty.requests), pagerduty.connections + intake.connections,
            _posted(intake, incidents), len(runs), sum(run['seconds'] for run in runs),
            max(run['seconds'] for run in runs), cursor,
        )  # fmt: skip
    finally:
        pagerduty.stop()
        intake.stop()


def measure_naive(backlog: int, latency_ms: float) -> Measure:
    pagerduty, intake, incidents = seeded(backlog, latency_ms)
    try:
        args = [*CHILD, 'naive', pagerduty.url, pagerduty.token, intake.url, intake.api_key]
        wall, cpu, rss = run_process([*args, '--lookback', str(LOOKBACK)])
        return Measure(
            wall, cpu, rss, len(pagerduty.requests), pagerduty.connections + intake.connections,
            _posted(intake, incidents), run_seconds=wall, longest_run=wall,
        )  # fmt: skip
    finally:
        pagerduty.stop()
        intake.stop()


def import_cpu(modules: list[str]) -> float:
    """CPU seconds a process spends importing `modules` (the check, its tool's module and the stand-in Agent, or
    the naive script) and starting up: subtracted from each side's CPU, which then is what it spent on the backlog."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, PEAK_RSS_FILE: str(Path(scratch) / 'peak_rss_kb')}
        started = os.times()
        subprocess.run([*CHILD, 'imports', *modules], cwd=ROOT, env=env, check=True)
        ended = os.times()
    return (ended.children_user - started.children_user) + (ended.children_system - started.children_system)


def _posted(intake: DatadogIntake, incidents: list[str]) -> int:
    posted = {body['data']['attributes']['id'] for body in intake.failures}
    missing = {f'pagerduty:{incident}' for incident in incidents} - posted
    if missing:
        raise SystemExit(f'{len(missing)} incidents never reached the DORA API')
    return len(posted)


def cursor_bytes(remembered: int = 20_000) -> int:
    """A stored cursor slot remembering `remembered` PagerDuty incidents, as DurableJson writes it."""
    from datadog_checks.dora_incidents.cursor import Cursor

    now = datetime.now(timezone.utc)
    start = int(now.timestamp() * 1000) - remembered * 1000
    cursor = Cursor(now, {f'pagerduty:Q{n:013d}': start + n * 1000 for n in range(remembered)})
    return len(json.dumps({'sequence': 1, 'document': cursor.to_document()}, separators=(',', ':')))


def stand_in(settings: dict) -> None:
    """`loopback.agent_process`, without its `time.sleep(submit_delay)` per metric when the delay is 0 (a hook
    of the crash tests): with worker threads running, each such sleep hands the GIL over and waits up to
    the 5 ms switch interval to get it back, which the Agent's own metric submission never does."""
    import types

    from . import agent_process

    agent_process.time = types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: s and time.sleep(s))
    agent_process.main(settings)


def main() -> None:
    if sys.argv[1:2] == ['--child']:
        return child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backlog', type=int, nargs='+', default=[2_000, 10_000])
    parser.add_argument('--latency', type=float, nargs='+', default=[0, 20], help='milliseconds added per response')
    parser.add_argument('--concurrency', type=int, nargs='+', default=[1, 8], help='dora_concurrency of the check')
    parser.add_argument('--budget', type=int, default=10, help='max_run_time, seconds')
    args = parser.parse_args()
    print(
        f'Measured on {platform.machine()}, {os.cpu_count()} CPUs, {_cpu_model()}, Python {platform.python_version()}'
    )
    print()
    imports = {side: min(import_cpu(modules) for _ in range(3)) for side, modules in IMPORTED.items()}
    print(f'CPU of the imports alone (subtracted): check {imports["check"]:.2f} s, naive {imports["naive"]:.2f} s')
    print()
    print(
        '| backlog | latency | dora_concurrency | wall: check / naive | speed-up '
        '| check runs (sum) / floor | PagerDuty requests: check / naive (floor) | connections: check / naive '
        '| CPU per resolution: check / naive | peak RSS: check / naive | runs | longest run | cursor |'
    )
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for backlog in args.backlog:
        for latency in args.latency:
            naive = measure_naive(backlog, latency)
            for concurrency in args.concurrency:
                check = measure_check(backlog, latency, args.budget, concurrency)
                _row(backlog, latency, concurrency, check, naive, imports)
    print()
    print(
        f'A stored cursor remembering 20,000 incidents (the cap): {cursor_bytes() / 1024:.0f} KB per slot, two slots.'
    )


def floor_seconds(backlog: int, latency_ms: float, concurrency: int) -> float:
    """The least time any reader-and-poster can take: every post at `concurrency` at a time, every page one after
    the other, each a round trip."""
    return (backlog / concurrency + math.ceil(backlog / PAGE)) * latency_ms / 1000


def _row(backlog: int, latency: float, concurrency: int, check: Measure, naive: Measure, imports: dict) -> None:
    pages, floor = math.ceil(backlog / PAGE), floor_seconds(backlog, latency, concurrency)
    against_floor = f'{check.run_seconds:.1f} s / {floor:.1f} s = {check.run_seconds / floor:.2f}x' if floor else '—'
    per_resolution = {
        side: (measure.cpu - imports[side]) / measure.posted * 1000
        for side, measure in (('check', check), ('naive', naive))
    }
    print(
        f'| {backlog:,} | {latency:g} ms | {concurrency} | {check.wall:.1f} s / {naive.wall:.1f} s '
        f'| {naive.wall / check.wall:.1f}x | {against_floor} | {check.requests} / {naive.requests} ({pages}) '
        f'| {check.connections} / {naive.connections} '
        f'| {per_resolution["check"]:.2f} ms / {per_resolution["naive"]:.2f} ms '
        f'| {check.peak_rss_mb:.0f} MB / {naive.peak_rss_mb:.0f} MB '
        f'| {check.runs} | {check.longest_run:.1f} s | {check.cursor_bytes / 1024:.0f} KB |',
        flush=True,
    )


def _peak_rss_kb() -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


if __name__ == '__main__':
    main()
