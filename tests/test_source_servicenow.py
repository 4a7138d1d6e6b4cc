"""What is specific to ServiceNow: read over real HTTP from the loopback instance (`loopback/servicenow.py`)."""

from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.base import ConfigurationError
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources.http import CredentialsRejected
from datadog_checks.dora_incidents.sources.servicenow import PAGE_SIZE, ServiceNowSource
from loopback.servicenow import LIST_PATH, ServiceNowSimulator

from .common import TIMEOUT, ZONES, instance_config, read_within

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


@pytest.fixture
def sim(request):
    with ServiceNowSimulator(time_zone=getattr(request, 'param', 'America/Los_Angeles')) as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, basic=True, **options) -> ServiceNowSource:
    credentials = {'username': sim.username, 'password': sim.password} if basic else {'api_token': sim.token}
    settings = {'api_token': None, 'username': None, 'password': None, 'api_url': sim.url, **credentials, **options}
    config = instance_config(source='servicenow', **settings)
    http = RequestsWrapper({'timeout': TIMEOUT, 'username': config.username, 'password': config.password}, {})
    return ServiceNowSource(config, http, config.api_url)


def read(sim, since=NOW - 24 * HOUR, until=NOW, **options):
    return [incident for batch in read_within(source(sim, **options), since, until) for incident in batch.incidents]


def resolved(sim, resolved_at, started_at=None, **fields):
    incident_id = sim.open(started_at or resolved_at - HOUR, **fields)
    sim.resolve(incident_id, resolved_at)
    return incident_id


def list_queries(sim):
    return [dict(request.query) for request in sim.requests if request.path == LIST_PATH]


@pytest.mark.parametrize('sim', ZONES, indirect=True)
@pytest.mark.parametrize(
    'since',
    [
        datetime(2026, 3, 8, 10, 0, 0, tzinfo=UTC),  # the US spring forward (02:00 PST -> 03:00 PDT)
        datetime(2026, 11, 1, 9, 0, 0, tzinfo=UTC),  # the US fall back: 01:00-02:00 Pacific happens twice
        datetime(2026, 4, 4, 15, 0, 0, tzinfo=UTC),  # Lord Howe's half-hour fall back
        datetime(2026, 7, 15, 12, 34, 56, tzinfo=UTC),
    ],
    ids=['us-spring', 'us-fall', 'lord-howe-fall', 'summer'],
)
def test_the_window_is_exact_in_utc_whatever_the_instances_zone(sim, since):
    until = since + 6 * HOUR
    inside = [resolved(sim, at) for at in (since, since + SECOND, until - SECOND)]
    for at in (since - SECOND, until, until + SECOND, since - 11 * HOUR, until + 13 * HOUR):
        resolved(sim, at)  # outside, some within the zone margins the query reads

    found = read(sim, since, until)

    assert sorted(incident.id for incident in found) == sorted(inside)


def test_fields_map_to_the_source_incident(sim):
    incident_id = resolved(sim, NOW - HOUR, started_at=NOW - 3 * HOUR, severity='SEV2')
    stored = sim.incidents[incident_id]

    [incident] = read(sim)

    assert incident.id == incident_id and incident.number == stored['number'] and incident.title == 'Checkout is down'
    assert incident.url == f'{sim.url}/nav_to.do?uri=incident.do?sys_id={incident_id}'
    assert (incident.started_at, incident.restored_at, incident.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)
    assert incident.services == (Named(stored['business_service'], 'Checkout API'),)
    assert incident.teams == (Named(stored['assignment_group'], 'Payments Team'),)
    assert incident.severity == 'SEV2'
    query = list_queries(sim)[0]
    assert query['sysparm_display_value'] == 'all' and query['sysparm_exclude_reference_link'] == 'true'
    assert 'short_description' in query['sysparm_fields'] and 'work_notes' not in query['sysparm_fields']


def test_the_ci_stands_in_for_a_missing_business_service_and_started_field_for_opened_at(sim):
    incident_id = resolved(sim, NOW - HOUR, started_at=NOW - 5 * HOUR, service=None)
    sim.update(incident_id, cmdb_ci='Checkout DB', u_impact_start=NOW - 4 * HOUR)
    without_start = resolved(sim, NOW - HOUR, started_at=NOW - 2 * HOUR)

    found = {incident.id: incident for incident in read(sim, started_field='u_impact_start')}

    assert [s.name for s in found[incident_id].services] == ['Checkout DB']
    assert found[incident_id].started_at == NOW - 4 * HOUR  # the impact start, not opened_at
    assert found[without_start].started_at == NOW - 2 * HOUR  # empty field: opened_at


def test_only_resolved_and_closed_incidents_are_failures(sim):
    closed = resolved(sim, NOW - HOUR)
    sim.close(closed, NOW - HOUR / 2)
    sim.open_non_failures(NOW - 3 * HOUR, NOW - 2 * HOUR)

    assert [incident.id for incident in read(sim)] == [closed]


def test_encoded_query_is_anded_to_each_of_its_parts(sim):
    software, network, database = (resolved(sim, NOW - HOUR) for _ in range(3))
    sim.update(network, category='network')
    sim.update(database, category='database')
    old_network = resolved(sim, NOW - 30 * HOUR)  # matches a part, but resolved before the window
    sim.update(old_network, category='network')

    found = read(sim, encoded_query='category=software^NQcategory=network^EQ')  # as a list filter copies it

    assert sorted(incident.id for incident in found) == sorted([software, network])
    query = list_queries(sim)[0]['sysparm_query']
    assert query.count('sys_updated_on>=') == 2 and query.endswith('^ORDERBYDESCsys_updated_on^ORDERBYsys_id')


@pytest.mark.parametrize(
    'options, named',
    [
        ({'encoded_query': 'category=software^ORDERBYnumber'}, 'encoded_query'),
        ({'api_token': 'also-a-token'}, 'api_token'),
        ({'api_url': None}, 'api_url'),
    ],
)
def test_wrong_options_are_configuration_errors_naming_them(sim, options, named):
    with pytest.raises(ConfigurationError, match=named):
        source(sim, **options)


def test_an_oauth_token_or_basic_credentials_and_a_refusal_names_them_not_the_secret(sim):
    incident_id = resolved(sim, NOW - HOUR)
    assert [i.id for i in read(sim, basic=False)] == [incident_id]

    with pytest.raises(CredentialsRejected) as refused:
        read(sim, password='wrong-password-123')

    assert '`username` and `password`' in str(refused.value) and 'wrong-password-123' not in str(refused.value)
    assert 'User Not Authenticated' in str(refused.value)


def test_a_quiet_instance_costs_one_request_and_pages_follow_offsets(sim):
    assert read(sim) == [] and len(list_queries(sim)) == 1
    incidents = [resolved(sim, NOW - HOUR - n * SECOND) for n in range(PAGE_SIZE + 5)]

    found = read(sim)

    assert sorted(incident.id for incident in found) == sorted(incidents)
    assert [q['sysparm_offset'] for q in list_queries(sim)[1:]] == ['0', str(PAGE_SIZE)]


def test_late_and_corrected_resolutions_are_read_by_their_update_time(sim):
    backdated, corrected = sim.open(NOW - 40 * HOUR), sim.open(NOW - 40 * HOUR)
    sim.resolve_backdated(backdated, NOW - 30 * HOUR)  # resolved now, its resolve time set back
    logged = sim.enter_resolved(NOW - 50 * HOUR, NOW - 48 * HOUR)  # an incident logged once it was over
    sim.resolve(corrected, NOW - 20 * HOUR)
    sim.correct(corrected, resolved_at=NOW - 21 * HOUR)  # its review moves the resolution

    found = {i.id: i for i in read(sim, NOW - HOUR, datetime.now(UTC) + SECOND)}

    assert {i: found[i].resolved_at for i in (backdated, logged, corrected)} == {
        backdated: NOW - 30 * HOUR,
        logged: NOW - 48 * HOUR,
        corrected: NOW - 21 * HOUR,
    }


def test_a_busy_instance_is_read_in_pages_not_cut_into_second_long_windows(sim):
    """X-Total-Count counts the zone margins (hours either side of the window) too: thousands of incidents
    updated there are no reason to cut the window, and reading it costs its pages, once."""
    for n in range(5_100):  # more than a batch, all in the margin after the window (read first: newest first)
        resolved(sim, NOW - 18 * HOUR + n * SECOND)
    inside = resolved(sim, NOW - 19 * HOUR - 30 * 60 * SECOND)

    found = read(sim, NOW - 20 * HOUR, NOW - 19 * HOUR)

    assert [incident.id for incident in found] == [inside]
    assert len([r for r in sim.requests if r.path == LIST_PATH]) <= 5_101 // 250 + 2
