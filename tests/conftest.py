from datetime import datetime, timezone

import pytest

from loopback.harness import instance_for, new_check
from loopback.intake import DatadogIntake
from loopback.pagerduty import PagerDutySimulator

from .common import MAX_RUN_TIME, TIMEOUT


@pytest.fixture
def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def pagerduty():
    sim = PagerDutySimulator(validate=True)
    sim.add_service('PCHKOUT', 'Checkout API', teams=[('PTEAM01', 'Payments Team')])
    sim.add_service('PSEARCH', 'Search', teams=[('PTEAM02', 'Discovery')])
    sim.add_service('PLEGACY', 'Legacy Billing')
    with sim:
        yield sim
    assert sim.spec_violations == [], 'the check sent requests that PagerDuty\'s OpenAPI spec rejects'


@pytest.fixture
def intake():
    with DatadogIntake() as server:
        yield server
    assert server.problems == [], 'the check sent DORA failures that Datadog would reject'


@pytest.fixture
def instance(pagerduty, intake):
    """Neither the HTTP timeout nor the run's budget binds unless a test sets it: on a busy machine a request
    must not time out, nor a backlog spill into a run the test does not make."""
    return instance_for(
        pagerduty, intake, env='prod', tags=['team_owner:sre'], timeout=TIMEOUT, max_run_time=MAX_RUN_TIME
    )


@pytest.fixture
def make_check(datadog_agent):
    """A check object as the Agent makes one; calling it again over the same cache is an Agent restart."""
    return new_check


@pytest.fixture
def run(dd_run_check):
    """One run that must not fail; returns the warnings it raised."""

    def run_once(check):
        check.warnings.clear()
        dd_run_check(check)
        return list(check.warnings)

    return run_once
