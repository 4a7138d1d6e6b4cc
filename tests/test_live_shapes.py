"""Answers as the services really send them (issue 19), where they differ from the published descriptions."""

from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.sources.rootly import RootlySource
from loopback.datadog_incidents import DatadogIncidentsSimulator
from loopback.rootly import LIST_PATH as ROOTLY_LIST_PATH
from loopback.rootly import RootlySimulator

from .common import NO_DEADLINE, TIMEOUT, instance_config
from .test_source_datadog_incidents import read as read_datadog

HOUR = timedelta(hours=1)


@pytest.fixture
def datadog():
    with DatadogIncidentsSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def test_a_datadog_incident_declared_resolved_is_reported_by_its_customer_impact(datadog):
    now = datetime.now(UTC).replace(microsecond=0)
    impact = (now - 5 * HOUR, now - 4 * HOUR)
    reported = datadog.declare_resolved(now - 5 * HOUR, impact=impact)
    datadog.declare_resolved(now - 5 * HOUR, impact=None)  # no impact recorded: not a failure, not malformed

    [incident] = read_datadog(datadog, since=now - 24 * HOUR, until=now + HOUR)

    assert incident.id == reported and (incident.started_at, incident.resolved_at) == impact
    assert incident.restored_at == impact[1]


def test_rootly_services_and_teams_come_from_relationships_and_included():
    with RootlySimulator() as rootly:
        now = datetime.now(UTC).replace(microsecond=0)
        incident = rootly.open(now - 3 * HOUR)
        rootly.resolve(incident, now - HOUR)
        config = instance_config(source='rootly', api_token=rootly.token, api_url=rootly.url, restored_at='resolved')
        source = RootlySource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), rootly.url)
        [batch] = list(source.resolved(now - 24 * HOUR, now, NO_DEADLINE))
        [read] = batch.incidents
        [listed] = [r for r in rootly.requests if r.path == ROOTLY_LIST_PATH]

        assert dict(listed.query)['include'] == 'services,groups,environments'
        assert [service.name for service in read.services] == ['Checkout API']
        assert read.services[0].id and read.teams[0].id  # ids from `relationships`, names from `included`
