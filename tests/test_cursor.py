"""The cursor: bounded, scoped, and a broken one restarts from the lookback instead of crash-looping."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from datadog_checks.dora_incidents import cursor as cursor_module
from datadog_checks.dora_incidents.cursor import Cursor, Resolution
from datadog_checks.dora_incidents.incident import SourceIncident

from .common import ago, cursor_keys, restores, stored_cursor

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def incident(n, resolved_at):
    return SourceIncident(
        'pagerduty', f'P{n:06d}', None, 't', None, resolved_at - timedelta(hours=1), resolved_at, resolved_at
    )


def test_classifies_new_seen_and_resolved_again():
    cursor = Cursor()
    first = incident(1, T0)
    assert cursor.classify(first) is Resolution.NEW
    cursor.record(first)
    assert cursor.classify(first) is Resolution.SEEN
    assert cursor.classify(incident(1, T0 + timedelta(hours=2))) is Resolution.AGAIN


def test_stays_bounded_however_many_incidents_pass(monkeypatch):
    monkeypatch.setattr(cursor_module, 'MAX_REMEMBERED', 100)
    cursor = Cursor()
    for n in range(1_000):
        cursor.record(incident(n, T0 + timedelta(seconds=n)))
        cursor.advance(T0 + timedelta(seconds=n))
    assert len(cursor.reported) == 100
    assert min(times[0] for times in cursor.reported.values()) == int((T0 + timedelta(seconds=900)).timestamp() * 1000)


def test_a_version_1_cursor_is_read_and_its_incidents_are_recognised():
    first = incident(1, T0)
    stored = {'version': 1, 'watermark': T0.isoformat(), 'reported': {first.key: int(T0.timestamp() * 1000)}}
    cursor = Cursor.from_document(json.loads(json.dumps(stored)))
    assert cursor.watermark == T0 and cursor.resume is None
    assert cursor.classify(first) is Resolution.SEEN
    assert cursor.classify(incident(1, T0 + timedelta(hours=2))) is Resolution.AGAIN
    assert cursor.to_document()['version'] == 2


def test_a_changed_start_or_resolve_time_is_a_correction_and_an_old_unknown_one_too_late():
    cursor = Cursor()
    cursor.record(incident(1, T0))
    moved_back = incident(1, T0 - timedelta(minutes=30))
    assert cursor.classify(moved_back) is Resolution.CORRECTED
    started_earlier = SourceIncident('pagerduty', 'P000001', None, 't', None, T0 - timedelta(hours=3), T0, T0)
    assert cursor.classify(started_earlier) is Resolution.CORRECTED
    assert cursor.classify(incident(2, T0 - timedelta(days=2)), horizon=T0 - timedelta(days=1)) is Resolution.TOO_OLD
    assert cursor.classify(incident(2, T0), horizon=T0 - timedelta(days=1)) is Resolution.NEW


def test_forgets_incidents_resolved_long_before_the_watermark():
    cursor = Cursor()
    cursor.record(incident(1, T0))
    cursor.record(incident(2, T0 + timedelta(days=20)))
    cursor.advance(T0 + cursor_module.REMEMBER + timedelta(days=1))
    assert list(cursor.reported) == ['pagerduty:P000002']


def test_round_trips_through_json():
    cursor = Cursor()
    cursor.record(incident(1, T0))
    cursor.advance(T0)
    assert Cursor.from_document(json.loads(json.dumps(cursor.to_document()))) == cursor


def test_window_starts_at_the_lookback_then_overlaps_the_watermark():
    assert Cursor().window(T0, 3600) == (T0 - timedelta(hours=1), T0)
    assert Cursor(watermark=T0).window(T0 + timedelta(hours=1), 3600) == (
        T0 - cursor_module.OVERLAP,
        T0 + timedelta(hours=1),
    )


@pytest.mark.parametrize(
    'stored',
    [
        'garbage{',
        '[]',
        '{"sequence": 1}',
        '{"sequence": 9, "document": {"version": 1, "reported": []}}',
        '{"sequence": 9, "document": {"version": 99}}',
        '{"sequence": 9, "document": {"version": 1, "watermark": "yesterday", "reported": {}}}',
    ],
)
def test_unreadable_cursor_restarts_from_the_lookback(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, now, stored
):
    incident_id = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident_id, ago(now, hours=1))
    check = make_check(instance)
    run(check)
    for key in cursor_keys(datadog_agent):
        datadog_agent._cache[key] = stored
    aggregator.reset()

    warnings = run(make_check(instance))  # the cursor is read from the cache when the Agent restarts

    assert len(warnings) == 1 and 'Starting over from `initial_lookback`' in warnings[0]
    assert set(restores(aggregator)) == {incident_id}  # re-reported: its DORA failure id makes that an update
    assert stored_cursor(datadog_agent)['version'] == 2


def test_cache_read_error_restarts_from_the_lookback(
    aggregator, make_check, run, instance, pagerduty, now, monkeypatch
):
    incident_id = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident_id, ago(now, hours=1))
    check = make_check(instance)

    def broken(key):
        raise RuntimeError('disk on fire')

    monkeypatch.setattr(check, 'read_persistent_cache', broken)
    warnings = run(check)

    assert any('could not be read (disk on fire)' in warning for warning in warnings)
    assert set(restores(aggregator)) == {incident_id}
