"""Backlog benchmark: a first run facing a large backlog of resolved incidents, within a time budget.

    python -m loopback.bench [--backlog 5000 50000] [--budget 10]

For each backlog size it seeds the loopback PagerDuty with that many incidents resolved within the
last 20 hours (inside `initial_lookback`), then runs the real check in a separate process (the
stand-in Agent of `loopback.agent_process`, with the cache in files) until it has caught up. It prints
per backlog: runs needed, the longest and mean run against the `max_run_time` budget, the process's peak
memory, and the exactly-once tally. The check's memory should not grow with the backlog: it holds one
window of at most 1,000 log entries at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .harness import instance_for
from .intake import DatadogIntake
from .pagerduty import PagerDutySimulator

ROOT = Path(__file__).resolve().parents[1]


def measure(backlog: int, budget: int) -> dict:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with PagerDutySimulator() as pagerduty, DatadogIntake() as intake, tempfile.TemporaryDirectory() as scratch:
        pagerduty.add_service('PSVC', 'Checkout', teams=[('PTEAM', 'Payments')])
        spacing = timedelta(hours=20) / backlog
        resolved = []
        for n in range(backlog):
            incident = pagerduty.trigger('PSVC', now - timedelta(hours=22) + n * spacing)
            pagerduty.resolve(incident, now - timedelta(hours=20) + n * spacing)
            resolved.append(incident)
        journal = Path(scratch) / 'journal.jsonl'
        settings = {
            'instance': instance_for(pagerduty, intake, max_run_time=budget, send_events=False),
            'state_dir': str(Path(scratch) / 'cache'),
            'journal': str(journal),
            'until_caught_up': True,
            'runs': 200,
        }
        started = time.monotonic()
        subprocess.run([sys.executable, '-m', 'loopback.agent_process', json.dumps(settings)], cwd=ROOT, check=True)
        elapsed = time.monotonic() - started
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        posted = {body['data']['attributes']['id'] for body in intake.failures}
    runs = [entry for entry in entries if entry.get('run_done')]
    committed = [metric for entry in entries for metric in entry.get('commit', ())]
    restores = [_incident_id(m) for m in committed if m['metric'] == 'dora.time_to_restore']
    return {
        'backlog': backlog,
        'budget': budget,
        'runs': len(runs),
        'longest_run': max(run['seconds'] for run in runs),
        'mean_run': sum(run['seconds'] for run in runs) / len(runs),
        'peak_rss_mb': max(run['peak_rss_kb'] for run in runs) / 1024,
        'reported': len(set(restores)),
        'lost': len(set(resolved) - set(restores)) + len({f'pagerduty:{i}' for i in resolved} - posted),
        'duplicated': len(restores) - len(set(restores)),
        'elapsed': elapsed,
    }


def _incident_id(entry: dict) -> str:
    return next(tag.split(':', 1)[1] for tag in entry['tags'] if tag.startswith('incident_id:'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backlog', type=int, nargs='+', default=[5_000, 50_000])
    parser.add_argument('--budget', type=int, default=10, help='max_run_time, seconds')
    args = parser.parse_args()
    print('| backlog | max_run_time | runs | longest run | mean run | peak RSS | reported | lost | duplicated |')
    print('|---|---|---|---|---|---|---|---|---|')
    for backlog in args.backlog:
        r = measure(backlog, args.budget)
        print(
            f'| {r["backlog"]:,} | {r["budget"]} s | {r["runs"]} | {r["longest_run"]:.1f} s | {r["mean_run"]:.1f} s '
            f'| {r["peak_rss_mb"]:.0f} MB | {r["reported"]:,} | {r["lost"]} | {r["duplicated"]} |',
            flush=True,
        )


if __name__ == '__main__':
    main()
