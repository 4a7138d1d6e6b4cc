"""Behaviours that were right but unguarded (issue 19's mutation sample): each test fails when the code that
guards it is reverted. Over HTTP against the loopback servers."""

import threading
import time

import pytest

from datadog_checks.dora_incidents.datadog import DORA_PATH, DatadogApi, Write
from loopback.firehydrant import FireHydrantSimulator
from loopback.intake import DEPLOYMENTS_PATH, DatadogIntake
from loopback.rootly import RootlySimulator

from .common import NO_DEADLINE, ago
from .test_change_failures import deploy, requests_to
from .test_source_firehydrant import incidents as firehydrant_incidents
from .test_source_firehydrant import resolved_incident as firehydrant_incident
from .test_source_firehydrant import source as firehydrant_source
from .test_source_rootly import HOUR, NOW, incidents, read, resolved_incident


@pytest.fixture
def sim():
    with RootlySimulator() as simulator:
        yield simulator
    assert simulator.spec_violations == []


@pytest.fixture
def marking(instance, intake):
    return {**instance, 'mark_change_failures': True, 'datadog_app_key': intake.app_key}


@pytest.mark.parametrize('kind', ['scheduled', 'scheduled_sub'])
def test_rootly_scheduled_maintenance_resolved_rather_than_completed_is_not_a_failure(sim, kind):
    # Maintenance usually ends `completed` (which the status check rejects anyway); one set to `resolved` must
    # still be told apart by its kind alone.
    failure = resolved_incident(sim)
    maintenance = resolved_incident(sim, started_at=NOW - 4 * HOUR, resolved_at=NOW - 2 * HOUR)
    sim.update(maintenance, kind=kind)
    assert sim.incidents[maintenance]['status'] == 'resolved'

    assert [incident.id for incident in incidents(read(sim))] == [failure]


def test_two_incidents_of_one_cause_patch_its_deployment_once_with_one_writer(
    make_check, run, marking, intake, pagerduty, now
):
    # One writer (`dora_concurrency: 1`): nothing in flight for the pool to coalesce the second marking with.
    failed = deploy(intake, now, 'v2', 5)
    for n in range(2):
        incident = pagerduty.trigger('PCHKOUT', ago(now, hours=4, minutes=10 * n))
        pagerduty.resolve(incident, ago(now, hours=1, minutes=n))

    run(make_check({**marking, 'dora_concurrency': 1}))

    assert intake.markings() == {failed: {'change_failure': True}}
    assert [r.path for r in requests_to(intake, 'PATCH', DEPLOYMENTS_PATH)] == [f'{DEPLOYMENTS_PATH}/{failed}']


def test_an_offset_paged_window_cut_by_the_budget_resumes_after_the_list_moved():
    with FireHydrantSimulator(max_page_size=2) as sim:
        ids = [firehydrant_incident(sim, resolved_at=NOW - (n + 1) * HOUR) for n in range(4)]
        first = firehydrant_source(sim)
        first.api.monotonic = lambda: len(sim.requests)  # one request's worth of budget: page 1, then cut
        [batch] = first.resolved(NOW - 24 * HOUR, NOW, deadline=1)
        assert batch.cut and batch.resume is not None and len(batch.incidents) == 2
        sim.archive(batch.incidents[0].id, NOW - HOUR)  # page 2 of the list now starts one incident later

        batches = list(firehydrant_source(sim).resolved(NOW - 24 * HOUR, NOW, NO_DEADLINE, batch.resume))

        read_then = {incident.id for incident in batch.incidents}
        read_now = {incident.id for incident in firehydrant_incidents(batches)}
        assert read_then | read_now == set(ids)  # the archived one was read before it moved the list
        assert sim.spec_violations == []


class HoldingIntake(DatadogIntake):
    """Holds the first DORA failure it receives (outside the server's lock) until `release` is set; notes the
    arrival of the next one (which the pool must not send while the first is in flight)."""

    def __init__(self):
        super().__init__()
        self.held, self.release, self.newer = threading.Event(), threading.Event(), threading.Event()

    def _serve(self, request):
        if self._held(request):
            if not self.held.is_set():
                self.held.set()
                self.release.wait(60)
            else:
                self.newer.set()
        return super()._serve(request)

    def _held(self, request) -> bool:
        return request.path == DORA_PATH and b'"first"' not in request.body


def dora_failure(key: str, name: str) -> Write:
    body = {'data': {'attributes': {'id': key, 'name': name, 'started_at': 1, 'finished_at': 2, 'services': ['s']}}}
    return Write(key, 'POST', DORA_PATH, body, f'the DORA failure {key}')


def test_a_newer_write_never_overtakes_an_older_one_in_flight_and_save_waits_for_both(make_check, instance):
    check = make_check({**instance, 'dora_concurrency': 4})
    check.load_configuration_models()
    key = 'pagerduty:Q000000000000001'
    with HoldingIntake() as intake:
        api = DatadogApi(check, intake.url, intake.api_key)
        api.begin(time.monotonic() + 3_600)
        # A first write answered: the pool now keeps up to `dora_concurrency` writes in flight.
        api.send(dora_failure('pagerduty:Q000000000000000', 'first'))
        api.save()
        api.send(dora_failure(key, 'older'))
        assert intake.held.wait(60)  # in flight, held by the intake
        api.send(dora_failure(key, 'newer'))
        saved = threading.Event()
        threading.Thread(target=lambda: (api.save(), saved.set()), daemon=True).start()

        # A free worker could send the newer write now; it must wait behind the older one. (A bounded wait:
        # it can only let a faulty pool show itself, never make a correct one fail.)
        assert not intake.newer.wait(1) and not saved.is_set()
        intake.release.set()
        assert saved.wait(60)

        assert intake.problems == [] and [b['data']['attributes']['name'] for b in intake.failures] == [
            'first',
            'older',
            'newer',
        ]
        assert intake.latest_by_id()[key]['name'] == 'newer'
        api.finish()
