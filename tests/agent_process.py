"""A stand-in Agent process for crash tests: runs the check in a loop until it is killed.

Like the Agent, it keeps the persistent cache in files written in place (one per key), and what the
check submits is "sent" the moment it is submitted: each metric, event and cursor save is appended to
a JSON-lines journal with one write per line, so a SIGKILL loses nothing that was already sent.

    python -m tests.agent_process '<json: instance, state_dir, journal, runs>'
"""

import json
import os
import sys
import time
from pathlib import Path

from datadog_checks.base.stubs import aggregator, datadog_agent

from loopback.harness import new_check


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

    def submit_metric(check, check_id, mtype, name, value, tags, hostname, flush_first_value):
        record(metric=name, value=value, tags=tags)
        time.sleep(settings.get('submit_delay', 0))  # widens the window in which a kill lands mid-emission

    def submit_event(check, check_id, event):
        record(event=event.get('aggregation_key'))

    datadog_agent.read_persistent_cache = read_cache
    datadog_agent.write_persistent_cache = write_cache
    aggregator.submit_metric = submit_metric
    aggregator.submit_event = submit_event

    check = new_check(settings['instance'])
    for _ in range(settings.get('runs', 10**9)):
        error = check.run()
        record(run_done=True, error=error[:200])
        time.sleep(settings.get('pause', 0.02))


if __name__ == '__main__':
    main(json.loads(sys.argv[1]))
