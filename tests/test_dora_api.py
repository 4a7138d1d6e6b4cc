"""Datadog's DORA API failing must not lose a failure event, nor hold back anything else."""

import pytest

from datadog_checks.dora_incidents.datadog import outbox
from loopback.server import Fault

from .common import ago, counted, dora_ids, restores

PATH = '/api/v2/dora/failure'


@pytest.fixture
def resolved(pagerduty, now):
    incidents = [pagerduty.trigger('PCHKOUT', ago(now, hours=2, minutes=n)) for n in range(3)]
    for incident in incidents:
        pagerduty.resolve(incident, ago(now, hours=1))
    return incidents


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(outbox, 'MIN_BACKOFF', 0)


def test_bad_payload_is_dropped_naming_the_incident(aggregator, make_check, run, instance, intake, resolved):
    intake.inject(Fault(status=400, body=b'{"errors":["started_at is invalid"]}', path=PATH))

    warnings = run(make_check(instance))

    [dropped] = {f'pagerduty:{i}' for i in resolved} - set(dora_ids(intake))
    assert len(intake.failures) == 2
    [warning] = warnings
    assert dropped in warning and 'started_at is invalid' in warning
    aggregator.assert_metric('dora.check.outbox.pending', value=0)
    assert counted(aggregator) == 3


@pytest.mark.parametrize(
    'fault', [Fault(status=500, path=PATH), Fault(status=429, path=PATH), Fault(delay=10, path=PATH)]
)
def test_unavailable_api_queues_failures_and_later_runs_send_them(
    aggregator, make_check, run, instance, intake, resolved, pagerduty, now, no_backoff, fault
):
    intake.inject(fault)
    if fault.delay:  # only then is the timeout what is tested: half the delay, not so short that other requests miss it
        instance['timeout'] = fault.delay / 2

    run(make_check(instance))

    # Metrics and events for every incident went out; the cursor moved on.
    assert set(restores(aggregator)) == set(resolved) and counted(aggregator) == 3
    aggregator.assert_metric('dora.check.outbox.pending', value=3)
    assert intake.failures == []

    aggregator.reset()
    later = pagerduty.trigger('PSEARCH', ago(now, minutes=30))
    pagerduty.resolve(later, ago(now, seconds=1))
    run(make_check(instance))

    assert set(restores(aggregator)) == {later}
    # A timed-out post may still land late: a re-send with the same id, which Datadog treats as an update.
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in [*resolved, later]}
    aggregator.assert_metric('dora.check.outbox.pending', value=0)


def test_queued_failures_wait_for_their_backoff(aggregator, make_check, run, instance, intake, resolved):
    intake.inject(Fault(status=503, path=PATH))
    run(make_check(instance))
    aggregator.reset()

    run(make_check(instance))

    assert intake.failures == []
    aggregator.assert_metric('dora.check.outbox.pending', value=3)


def test_rejected_api_key_keeps_failures_queued_and_says_so(
    aggregator, make_check, run, instance, intake, resolved, no_backoff
):
    error = make_check({**instance, 'datadog_api_key': 'revoked-key'}).run()

    assert '403' in error and 'datadog_api_key' in error and 'revoked-key' not in error
    aggregator.assert_metric('dora.check.outbox.pending', value=3)  # health first, then the error
    assert len(restores(aggregator)) == 3  # the incidents are reported all the same

    run(make_check(instance))  # key fixed
    assert sorted(dora_ids(intake)) == sorted(f'pagerduty:{i}' for i in resolved)


def test_full_outbox_drops_the_oldest_and_counts_them(
    aggregator, make_check, run, instance, intake, resolved, monkeypatch
):
    monkeypatch.setattr(outbox, 'MAX_OUTBOX', 2)
    intake.inject(Fault(status=500, path=PATH))

    warnings = run(make_check(instance))

    aggregator.assert_metric('dora.check.outbox.pending', value=2)
    aggregator.assert_metric('dora.check.outbox.dropped', value=1)
    assert any('outbox full' in warning for warning in warnings)


def test_an_outbox_written_by_0_1_0_is_still_sent(
    datadog_agent, make_check, run, instance, intake, resolved, no_backoff
):
    import json

    intake.inject(Fault(status=500, path=PATH))
    run(make_check(instance))
    for key in [key for key in datadog_agent._cache if '_dora_outbox_' in key]:
        slot = json.loads(datadog_agent._cache[key])
        for item in slot['document']['items']:
            item['payload'] = item.pop('write')['body']  # the 0.1.0 shape: DORA failures only
        datadog_agent._cache[key] = json.dumps(slot)

    run(make_check(instance))  # the upgraded Agent restarts

    assert sorted(set(dora_ids(intake))) == sorted(f'pagerduty:{i}' for i in resolved)


def test_an_incident_without_service_or_team_is_counted_but_not_sent_as_a_dora_failure(
    aggregator, make_check, run, instance, intake, pagerduty, now
):
    orphan = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(orphan, ago(now, hours=1))
    pagerduty.corrupt(orphan, service=None, teams=None)  # Datadog answers 400 to a failure naming neither

    [warning] = run(make_check(instance))

    assert f'pagerduty:{orphan}' in warning and 'no service and no team' in warning
    assert intake.failures == [] and intake.problems == []
    assert counted(aggregator) == 1 and restores(aggregator) == {orphan: [3600]}
