"""A stand-in Agent process for crash tests: runs the check in a loop until it is killed.

Like the Agent, it keeps the persistent cache in files written in place (one per key), and it commits
what a run submitted only once `run()` has returned (the Agent's `sender.Commit()`): the run's metrics
and events are buffered, then appended to a JSON-lines journal as ONE line, in one write. A SIGKILL
before that line is complete loses the whole run's metrics, exactly as it would in the Agent.
Journal lines: `{"run_started"}`, `{"emitting"}` (first submission of a run), `{"saved": key}` (cache
writes), `{"commit": [metrics...], "events": [...]}` and `{"run_done": ...}`.

    python -m loopback.agent_process '<json settings>'

settings: `instance`, `state_dir` (the cache files), `journal` (JSON lines), and optionally `runs` (how
many runs at most), `journal_submissions` (false: a commit line counts the metrics and events instead of
listing them, as the benchmark wants: the Agent's own commit costs the check's process nothing), `until_caught_up` (stop after a run that stopped for no budget and left no DORA
failure queued), `pause` between runs, `submit_delay` per metric (to widen a crash window) and `hold_at`
(`{"submissions": n}` or `{"saves": n}`): at the n-th metric submitted (before it is buffered) or right
after the n-th cache write, journal `{"holding": ...}` and stop there, so that a test's SIGKILL lands at
that very step, however fast the machine is.
Each run appends `{"run_done": ..., "seconds": ..., "peak_rss_kb": ...}` to the journal.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

from datadog_checks.base.stubs import aggregator, datadog_agent

from loopback.harness import new_check

CAUGHT_UP_WARNINGS = ('Stopped after `max_run_time`', 'wait to be sent')


def main(settings: dict) -> None:
    state = Path(settings['state_dir'])
    state.mkdir(parents=True, exist_ok=True)
    journal = open(settings['journal'], 'a', buffering=1)

    def record(**entry):
        journal.write(json.dumps({'pid': os.getpid(), **entry}) + '\n')

    def read_cache(key):
        path = state / key.replace(':', '_')
        return path.read_text() if path.exists() else ''

    def write_cache(key, value):
        (state / key.replace(':', '_')).write_text(value)  # in place, not atomic: as the Agent does
        record(saved=key)
        step('saves')

    pending = {'metrics': [], 'events': []}  # what the run submitted, not yet committed
    hold_at = settings.get('hold_at') or {}
    steps = {'submissions': 0, 'saves': 0}

    def step(kind):
        steps[kind] += 1
        if steps[kind] == hold_at.get(kind):
            record(holding=kind, at=steps[kind])
            threading.Event().wait()  # until killed

    def submit_metric(check, check_id, mtype, name, value, tags, hostname, flush_first_value):
        if not pending['metrics'] and not pending['events']:
            record(emitting=True)
        step('submissions')
        pending['metrics'].append({'metric': name, 'value': value, 'tags': tags})
        if settings.get('submit_delay'):  # widens the window in which a kill lands mid-emission
            time.sleep(settings['submit_delay'])

    def submit_event(check, check_id, event):
        pending['events'].append(event.get('aggregation_key'))

    datadog_agent.read_persistent_cache = read_cache
    datadog_agent.write_persistent_cache = write_cache
    aggregator.submit_metric = submit_metric
    aggregator.submit_event = submit_event

    check = new_check(settings['instance'])
    for _ in range(settings.get('runs', 10**9)):
        record(run_started=True)
        started = time.monotonic()
        error = check.run()
        seconds = time.monotonic() - started
        if settings.get('journal_submissions', True):  # the Agent commits after run() returns
            record(commit=pending['metrics'], events=pending['events'])
        else:
            record(committed=len(pending['metrics']), events=len(pending['events']))
        pending['metrics'], pending['events'] = [], []
        warnings = check.get_warnings()  # as the Agent collects them after each run
        record(run_done=True, error=error[:200], seconds=seconds, peak_rss_kb=_peak_rss_kb(), warnings=warnings)
        behind = any(marker in warning for warning in warnings for marker in CAUGHT_UP_WARNINGS)
        if settings.get('until_caught_up') and not behind and not error:
            return
        time.sleep(settings.get('pause', 0.02))


def _peak_rss_kb() -> int:
    """The process's peak resident memory so far (Linux), the figure the Agent's memory would show."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
    return 0


if __name__ == '__main__':
    main(json.loads(sys.argv[1]))
