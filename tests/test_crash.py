"""A run killed at any step: afterwards nothing is missing, and only what was in flight repeats."""

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from datadog_checks.dora_incidents import cursor, outputs
from datadog_checks.dora_incidents.datadog.client import DatadogHttp
from datadog_checks.dora_incidents.reporting import Reporter
from loopback.harness import instance_for

from .common import ago, dora_ids, restores

ROOT = Path(__file__).resolve().parents[1]
ONE_MINUTE = timedelta(minutes=1)


class Crash(Exception):
    pass


def crash_on_call(monkeypatch, owner, name, call=1, after=False):
    """Make `owner.name` raise on its `call`-th call, before doing its work or (`after`) once it is done."""
    original = getattr(owner, name)
    calls = itertools.count(1)

    def crashing(*args, **kwargs):
        number = next(calls)  # atomic: DORA posts run on several threads at once
        if number == call and not after:
            raise Crash(name)
        result = original(*args, **kwargs)
        if number == call:
            raise Crash(name)
        return result

    monkeypatch.setattr(owner, name, crashing)


CRASH_POINTS = {
    'after reading, before emitting': lambda mp: crash_on_call(mp, Reporter, '_emit'),
    'mid-emission': lambda mp: crash_on_call(mp, outputs.Outputs, 'emit', call=3),
    'right after a DORA post': lambda mp: crash_on_call(mp, DatadogHttp, 'send', call=2, after=True),
    'before the cursor write': lambda mp: crash_on_call(mp, cursor.CursorStore, 'save'),
    'after the cursor write': lambda mp: crash_on_call(mp, cursor.CursorStore, 'save', after=True),
}


@pytest.mark.parametrize('point', CRASH_POINTS)
def test_a_crash_at_each_step_loses_nothing(
    aggregator, make_check, instance, pagerduty, intake, now, monkeypatch, point
):
    incidents = [pagerduty.trigger('PCHKOUT', ago(now, hours=3, minutes=n)) for n in range(5)]
    for incident in incidents:
        pagerduty.resolve(incident, ago(now, hours=1))

    with monkeypatch.context() as patch:
        CRASH_POINTS[point](patch)
        error = make_check(instance).run()
    assert 'Crash' in error
    in_flight = set(restores(aggregator))

    assert make_check(instance).run() == ''  # the Agent restarted

    points = restores(aggregator)
    assert set(points) == set(incidents), 'a resolution was lost'
    repeated = {incident for incident, values in points.items() if len(values) > 1}
    assert repeated <= in_flight and all(len(values) <= 2 for values in points.values())
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents}


def test_sigkill_mid_run_over_a_backlog_spanning_batches_loses_and_doubles_nothing(tmp_path, pagerduty, intake, now):
    """Kill -9 a stand-in Agent at random steps of runs that read several batches; then let it catch up.

    Each process stops itself at a step drawn at random (its n-th metric submission, or right after its n-th
    cache write) and says so; the kill lands there: at the step, not at a moment, so however fast the machine
    is. The stand-in commits a run's metrics only when `run()` returns, as the Agent does: counted is committed.
    """
    rng = random.Random(20261126)
    journal_path = tmp_path / 'journal.jsonl'
    settings = {
        'instance': instance_for(pagerduty, intake, send_events=False, max_run_time=120),
        'state_dir': str(tmp_path / 'cache'),
        'journal': str(journal_path),
    }
    resolved, killed = [], set()
    for round_ in range(8):
        new = 1_500 if round_ == 0 else 150  # > 1,000 log entries: a run reads several batches
        # Later rounds resolve within the last minute: after what an earlier round's run may have read up to
        # (the cursor re-reads 5 minutes back), as new resolutions are.
        first, step = (
            (ago(now, hours=5), timedelta(seconds=5)) if round_ == 0 else (_now_minus(60), ONE_MINUTE / 2 / new)
        )
        for n in range(new):
            incident = pagerduty.trigger('PSEARCH', ago(now, hours=6, seconds=len(resolved)))
            pagerduty.resolve(incident, first + n * step)
            resolved.append(incident)
        # Mid-emission (two points per incident) in most rounds, else after a cache write (cursor, outbox).
        hold_at = {'submissions': rng.randint(1, 2 * new)} if round_ % 4 != 3 else {'saves': rng.randint(1, 3)}
        agent = _start_agent({**settings, 'hold_at': hold_at})
        _wait_for(journal_path, agent.pid, 'holding')
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        killed.add(agent.pid)
    agent = _start_agent({**settings, 'runs': 20, 'until_caught_up': True})
    assert agent.wait(timeout=600) == 0

    journal = _read_journal(journal_path)
    committed = [metric for entry in journal for metric in entry.get('commit', ())]
    points = Counter(_incident_id(m) for m in committed if m['metric'] == 'dora.time_to_restore')
    counted = sum(m['value'] for m in committed if m['metric'] == 'dora.incidents.count')
    assert set(resolved) - set(points) == set(), 'lost'
    assert [incident for incident, times in points.items() if times > 1] == [], 'counted twice'
    assert counted == len(resolved)
    assert {f'pagerduty:{incident}' for incident in resolved} <= set(dora_ids(intake))
    assert _killed_mid_run(journal, killed) >= 6, 'the kills did not land mid-emission: the test proved little'


def _wait_for(journal_path, pid, marker, timeout=600):
    """Until process `pid` journals `marker`; the timeout only keeps a broken stand-in from hanging the suite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(entry['pid'] == pid and marker in entry for entry in _read_journal(journal_path)):
            return
        time.sleep(0.01)
    raise AssertionError(f'process {pid} never journalled {marker}')


def _killed_mid_run(journal, killed_pids) -> int:
    """How many killed processes had submitted metrics that were never committed."""
    landed = 0
    for pid in killed_pids:
        entries = [entry for entry in journal if entry['pid'] == pid]
        last_commit = max((i for i, entry in enumerate(entries) if 'commit' in entry), default=-1)
        landed += any('emitting' in entry for entry in entries[last_commit + 1 :])
    return landed


def _read_journal(path):
    if not path.exists():
        return []
    # The last line may be half-written by a killed process.
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith('}')]


def _now_minus(seconds):
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(seconds=seconds)


def _start_agent(settings):
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.Popen([sys.executable, '-m', 'loopback.agent_process', json.dumps(settings)], cwd=ROOT, env=env)


def _incident_id(entry):
    return next(tag.split(':', 1)[1] for tag in entry['tags'] if tag.startswith('incident_id:'))
