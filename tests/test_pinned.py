"""Behaviours that were right but unguarded (issue 19's mutation sample): each test fails when the code that
guards it is reverted. Over HTTP against the loopback servers."""

import pytest

from loopback.intake import DEPLOYMENTS_PATH

from .common import ago
from .test_change_failures import deploy, marking, requests_to  # noqa: F401 (a fixture)
from .test_source_rootly import HOUR, NOW, incidents, read, resolved_incident, sim  # noqa: F401 (a fixture)


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
