"""A run killed at any step: afterwards nothing is missing, and only what was in flight repeats."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from datadog_checks.dora_incidents import cursor, outputs
from datadog_checks.dora_incidents.check import DoraIncidentsCheck

from loopback.harness import instance_for

from .common import ago, dora_ids, restores

ROOT = Path(__file__).resolve().parents[1]


class Crash(Exception):
    pass


def crash_on_call(monkeypatch, owner, name, call=1, after=False):
    """Make `owner.name` raise on its `call`-th call, before doing its work or (`after`) once it is done."""
    original = getattr(owner, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call and not after:
            raise Crash(name)
        result = original(*args, **kwargs)
        if len(calls) == call:
            raise Crash(name)
        return result

    monkeypatch.setattr(owner, name, crashing)


CRASH_POINTS = {
    'after reading, before emitting': lambda mp: crash_on_call(mp, DoraIncidentsCheck, '_emit'),
    'mid-emission': lambda mp: crash_on_call(mp, outputs.Outputs, 'emit', call=3),
    'right after a DORA post': lambda mp: crash_on_call(mp, outputs.DoraApi, '_post', call=2, after=True),
    'before the cursor write': lambda mp: crash_on_call(mp, cursor.CursorStore, 'save'),
    'after the cursor write': lambda mp: crash_on_call(mp, cursor.CursorStore, 'save', after=True),
}


@pytest.mark.parametrize('point', CRASH_POINTS)
def test_a_crash_at_each_step_loses_nothing(aggregator, make_check, instance, pagerduty, intake, now, monkeypatch, point):
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


def test_sigkill_of_a_process_running_the_check_in_a_loop(tmp_path, pagerduty, intake, now):
    """Kill -9 a real process mid-emission, right after a cursor save, and between runs; then let it catch up."""
    rng = random.Random(20261126)
    journal_path = tmp_path / 'journal.jsonl'
    settings = {
        'instance': instance_for(pagerduty, intake, send_events=False),
        'state_dir': str(tmp_path / 'cache'),
        'journal': str(journal_path),
        'submit_delay': 0.002,
    }
    resolved, killed = [], set()
    for kill_after in [1, 0, 57, 110, 3, 0, rng.randint(1, 110), rng.randint(1, 110)]:
        for _ in range(120):
            incident = pagerduty.trigger('PSEARCH', ago(now, hours=5, seconds=len(resolved)))
            pagerduty.resolve(incident, _now_minus(seconds=1))
            resolved.append(incident)
        agent = _start_agent(settings)
        _wait_for_emissions_since_last_save(agent, journal_path, kill_after)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        killed.add(agent.pid)
    agent = _start_agent({**settings, 'runs': 3, 'submit_delay': 0})
    assert agent.wait(timeout=120) == 0

    journal = _read_journal(journal_path)
    emitted = Counter(_incident_id(entry) for entry in journal if entry.get('metric') == 'dora.time_to_restore')
    assert set(emitted) == set(resolved), f'lost: {sorted(set(resolved) - set(emitted))[:5]}'
    assert {f'pagerduty:{incident}' for incident in resolved} <= set(dora_ids(intake))
    in_flight = _emitted_after_last_cursor_save(journal, killed)
    repeated = {incident for incident, times in emitted.items() if times > 1}
    assert in_flight, 'no kill landed mid-emission: the test proved nothing'
    assert repeated <= in_flight, f'repeated without being in flight: {sorted(repeated - in_flight)[:5]}'


def _wait_for_emissions_since_last_save(agent, journal_path, count, timeout=30):
    """Returns once the process has emitted `count` restores since its last cursor save (0: just saved)."""
    deadline = time.monotonic() + timeout
    offset, saved, emitted = 0, False, 0
    while time.monotonic() < deadline and agent.poll() is None:
        with open(journal_path, 'a+') as journal:
            journal.seek(offset)
            chunk = journal.read()
        complete = chunk[: chunk.rfind('\n') + 1]
        offset += len(complete)
        for entry in map(json.loads, complete.splitlines()):
            if entry['pid'] != agent.pid:
                continue
            if '_cursor_' in entry.get('saved', ''):
                saved, emitted = True, 0
            elif entry.get('metric') == 'dora.time_to_restore':
                emitted += 1
        if (count == 0 and saved and not emitted) or (count and emitted >= count):
            return
        time.sleep(0.002)
    raise AssertionError(f'the process never emitted {count} restores since a cursor save')


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


def _emitted_after_last_cursor_save(journal, killed_pids):
    """Incidents a killed process emitted after its last cursor save: those were in flight."""
    in_flight = set()
    for pid in killed_pids:
        entries = [entry for entry in journal if entry['pid'] == pid]
        saves = [i for i, entry in enumerate(entries) if '_cursor_' in entry.get('saved', '')]
        tail = entries[saves[-1] + 1 :] if saves else entries
        in_flight |= {_incident_id(e) for e in tail if e.get('metric') == 'dora.time_to_restore'}
    return in_flight
