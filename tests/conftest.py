import os
from datetime import datetime, timezone

import pytest

from loopback.intake import DatadogIntake
from loopback.pagerduty import PagerDutySimulator
from loopback.spec import pagerduty_request_problem

# `dora.*` metrics carry `service` and `env` on purpose, exactly like Datadog's own DORA metrics; the stub
# aggregator would refuse these "generic" tags. Users can still opt out with `disable_generic_tags`.
os.environ.setdefault('DDEV_SKIP_GENERIC_TAGS_CHECK', '1')

CHECK_ID = 'dora_incidents:test'


@pytest.fixture
def now():
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def pagerduty():
    sim = PagerDutySimulator(spec_validator=pagerduty_request_problem)
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
    return {
        'source': 'pagerduty',
        'api_token': pagerduty.token,
        'api_url': pagerduty.url,
        'datadog_api_url': intake.url,
        'datadog_api_key': intake.api_key,
        'env': 'prod',
        'tags': ['team_owner:sre'],
        'timeout': 5,
    }


@pytest.fixture
def make_check(datadog_agent):
    """A check object as the Agent makes one; calling it again over the same cache is an Agent restart."""
    from datadog_checks.dora_incidents import DoraIncidentsCheck

    def make(instance):
        check = DoraIncidentsCheck('dora_incidents', {}, [instance])
        check.check_id = CHECK_ID
        return check

    return make


@pytest.fixture
def run(dd_run_check):
    """One run that must not fail; returns the warnings it raised."""

    def run_once(check):
        check.warnings.clear()
        dd_run_check(check)
        return list(check.warnings)

    return run_once
