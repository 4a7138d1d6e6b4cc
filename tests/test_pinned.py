"""Behaviours that were right but unguarded (issue 19's mutation sample): each test fails when the code that
guards it is reverted. Over HTTP against the loopback servers."""

import pytest

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
