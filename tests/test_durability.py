"""Three behaviours pinned: a full outbox drops its oldest write; a lost cursor with `restored_at: mitigated` counts
nothing twice; a crash between the outbox save and the cursor save while Datadog is down loses and doubles nothing."""

import itertools
from collections import Counter
from datetime import timedelta

import pytest

from datadog_checks.dora_incidents import cursor
from datadog_checks.dora_incidents.datadog import outbox
from loopback.harness import new_check
from loopback.server import Fault
from loopback.simulators import make_simulator

from .common import ago, counted, dora_ids, restores

PATH = '/api/v2/dora/failure'


@pytest.fixture(autouse=True)
def retry_at_once(monkeypatch):
    """What waits in the outbox is due again at once: the next run stands for one after the backoff."""
    monkeypatch.setattr(outbox, 'MIN_BACKOFF', 0)


OUTBOX_CAPACITY = 1_000  # docs/design.md "Outputs": a durable outbox of at most 1,000 writes


def resolved_in_order(pagerduty, now, count):
    """`count` incidents resolved one second apart, oldest first."""
    incidents = []
    for n in range(count):
        incident = pagerduty.trigger('PCHKOUT', ago(now, hours=5, seconds=n))
        pagerduty.resolve(incident, ago(now, hours=3) + timedelta(seconds=n))
        incidents.append(incident)
    return incidents


def test_a_full_outbox_drops_its_oldest_write(make_check, run, instance, pagerduty, intake, now, aggregator):
    incidents = resolved_in_order(pagerduty, now, OUTBOX_CAPACITY + 3)
    intake.inject(Fault(status=503, path=PATH))  # Datadog down for the whole first run

    warnings = run(make_check({**instance, 'send_events': False}))

    # The oldest go. (The very first write was being sent when Datadog failed: it re-enters the outbox as it fails,
    # so the three dropped are among the four oldest.)
    dropped = [warning.rsplit(' ', 1)[-1] for warning in warnings if 'DORA outbox full' in warning]
    assert len(dropped) == 3 and set(dropped) <= {f'pagerduty:{i}' for i in incidents[:4]}
    aggregator.assert_metric('dora.check.outbox.dropped', value=3)
    aggregator.assert_metric('dora.check.outbox.pending', value=OUTBOX_CAPACITY)
    assert counted(aggregator) == len(incidents)  # the metrics went out through the Agent all the same

    intake.clear_faults()
    aggregator.reset()
    run(make_check({**instance, 'send_events': False}))  # Datadog is back

    sent = Counter(dora_ids(intake))
    assert set(sent).isdisjoint(dropped) and sum(sent.values()) == len(sent) == OUTBOX_CAPACITY  # each once
    assert {f'pagerduty:{i}' for i in incidents[4:]} <= set(sent)  # the newest all kept
    aggregator.assert_metric('dora.check.outbox.pending', value=0)


@pytest.mark.parametrize('source', ['rootly', 'firehydrant'])
def test_a_lost_cursor_with_restored_at_mitigated_counts_nothing_twice(source, now, aggregator, datadog_agent, intake):
    with make_simulator(source) as tool:
        incidents = []
        for n in range(3):
            incident = tool.open(ago(now, hours=5, minutes=n))
            tool.mitigate(incident, ago(now, hours=4, minutes=n))  # the time to restore ends here
            tool.resolve(incident, ago(now, hours=2, minutes=n))
            incidents.append(incident)
        instance = tool.instance(
            datadog_api_url=intake.url,
            datadog_api_key=intake.api_key,
            datadog_app_key=intake.app_key,
            restored_at='mitigated',
            env='prod',
        )
        assert new_check(instance).run() == ''
        assert counted(aggregator) == 3 and sorted(restores(aggregator)) == sorted(incidents)
        assert {v for values in restores(aggregator).values() for v in values} == {3600.0}  # start to mitigation

        datadog_agent._cache.clear()  # the cursor is lost: a cluster check re-dispatched to another node
        aggregator.reset()
        assert new_check(instance).run() == ''

    assert counted(aggregator) == 0 and restores(aggregator) == {}, 'counted again after the cursor was lost'
    assert sorted(Counter(dora_ids(intake)).values()) == [1, 1, 1]


def test_a_crash_between_the_outbox_save_and_the_cursor_save_while_datadog_is_down(
    make_check, instance, pagerduty, intake, now, aggregator, monkeypatch, datadog_agent
):
    incidents = resolved_in_order(pagerduty, now, 5)
    intake.inject(Fault(status=503, path=PATH))
    saves = itertools.count(1)
    save = cursor.CursorStore.save

    def crash_at_the_cursor_save(self, *args, **kwargs):
        next(saves)
        raise RuntimeError('killed between the outbox save and the cursor save')

    with monkeypatch.context() as patch:
        patch.setattr(cursor.CursorStore, 'save', crash_at_the_cursor_save)
        error = make_check(instance).run()
    assert 'killed between the outbox save' in error and next(saves) == 2
    assert any('_dora_outbox_' in key for key in datadog_agent._cache), 'the outbox was saved before the crash'
    assert not any('_cursor_' in key for key in datadog_agent._cache)
    assert cursor.CursorStore.save is save
    aggregator.reset()  # the Agent never committed the crashed run's metrics

    intake.clear_faults()  # Datadog is back; the Agent restarts
    assert make_check(instance).run() == ''

    # Datadog holds each once: the outbox's write goes out first, and the re-read incident's write (the cursor had not
    # moved) updates it under the same DORA id. The metrics of the crashed run were never committed: counted once.
    assert set(intake.latest_by_id()) == {f'pagerduty:{i}' for i in incidents}
    assert set(Counter(dora_ids(intake)).values()) <= {1, 2}
    assert counted(aggregator) == 5 and all(len(values) == 1 for values in restores(aggregator).values())
    aggregator.assert_metric('dora.check.outbox.pending', value=0)
