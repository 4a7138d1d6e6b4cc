"""What is specific to FireHydrant: the source read over real HTTP from `loopback/firehydrant.py`."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named, Skipped
from datadog_checks.dora_incidents.mapping import Mapper
from datadog_checks.dora_incidents.sources import firehydrant
from datadog_checks.dora_incidents.sources.base import utc
from datadog_checks.dora_incidents.sources.firehydrant import FireHydrantSource
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from loopback.driver import SourceSimulator
from loopback.firehydrant import LIST_PATH, FireHydrantSimulator, ref_id
from loopback.server import Fault

from .common import NO_DEADLINE, TIMEOUT, instance_config, later, read_within

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def sim():
    with FireHydrantSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, token=None, **options) -> FireHydrantSource:
    options = {'restored_at': 'resolved', **options}
    config = instance_config(source='firehydrant', api_token=token or sim.token, api_url=sim.url, **options)
    return FireHydrantSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - DAY, until=NOW, **options):
    return read_within(source(sim, **options), since, until)


def incidents(batches):
    return [incident for batch in batches for incident in batch.incidents]


def list_queries(sim):
    return [dict(request.query) for request in sim.requests if request.path == LIST_PATH]


def resolved_incident(sim, started_at=None, resolved_at=NOW - HOUR, **fields):
    incident_id = sim.open(started_at or resolved_at - 2 * HOUR, **fields)
    sim.resolve(incident_id, resolved_at)
    return incident_id


def test_fields_map_to_the_source_incident(sim):
    incident_id = sim.open(NOW - 5 * HOUR)
    sim.mitigate(incident_id, NOW - 3 * HOUR)
    sim.resolve(incident_id, NOW - 2 * HOUR)

    [batch] = read(sim)
    [incident] = batch.incidents
    record = sim.record(incident_id)
    assert incident.source == 'firehydrant' and incident.id == incident_id
    assert incident.key == f'firehydrant:{incident_id}'
    assert incident.number == f'#{record["number"]}'
    assert incident.title == 'Checkout is down'
    assert incident.url == record['incident_url'] == f'https://app.firehydrant.io/incidents/{incident_id}'
    assert incident.started_at == NOW - 5 * HOUR
    assert incident.restored_at == incident.resolved_at == NOW - 2 * HOUR  # `restored_at: resolved`
    assert incident.services == (Named(ref_id('service', 'Checkout API'), 'Checkout API'),)
    assert incident.teams == (Named(ref_id('team', 'Payments Team'), 'Payments Team'),)
    assert incident.environments == (Named(ref_id('environment', 'Production'), 'Production'),)
    assert incident.severity == 'SEV1'
    assert batch.through == NOW and batch.skipped == []


def test_start_falls_back_to_creation_and_names_may_be_absent(sim):
    incident_id = resolved_incident(sim, service=None, team=None, environment=None, severity=None)
    sim.corrupt(incident_id, started_at=None, created_at=utc(NOW - 2 * HOUR))
    [incident] = incidents(read(sim))
    assert incident.started_at == NOW - 2 * HOUR
    assert incident.services == incident.teams == incident.environments == ()
    assert incident.severity is None  # FireHydrant's unset severity is an empty string


def test_functionalities_stand_in_for_services_only_when_no_service_is_named(sim):
    alone = resolved_incident(sim, services=[], functionalities=['Card payments'])
    both = resolved_incident(sim, services=['Checkout API'], functionalities=['Card payments'])
    found = {incident.id: incident for incident in incidents(read(sim))}
    assert found[alone].services == (Named(ref_id('functionality', 'Card payments'), 'Card payments'),)
    assert [service.name for service in found[both].services] == ['Checkout API']


def test_every_team_assigned_and_every_service_named(sim):
    incident_id = resolved_incident(sim, services=['Checkout API', 'Payments API'], teams=['Payments Team', 'SRE'])
    [incident] = incidents(read(sim))
    assert incident.id == incident_id
    assert [service.name for service in incident.services] == ['Checkout API', 'Payments API']
    assert [team.name for team in incident.teams] == ['Payments Team', 'SRE']


def test_restored_at_mitigated_uses_the_mitigated_milestone_else_the_resolution(sim):
    mitigated = sim.open(NOW - 5 * HOUR)
    sim.mitigate(mitigated, NOW - 4 * HOUR)
    sim.resolve(mitigated, NOW - 2 * HOUR)
    unmitigated = resolved_incident(sim, resolved_at=NOW - HOUR)

    found = {incident.id: incident for incident in incidents(read(sim, restored_at='mitigated'))}
    assert found[mitigated].restored_at == NOW - 4 * HOUR
    assert found[mitigated].resolved_at == NOW - 2 * HOUR  # the cursor still tracks the resolution
    assert found[unmitigated].restored_at == found[unmitigated].resolved_at == NOW - HOUR


def test_the_api_filters_on_the_update_time_with_no_other_filter(sim):
    old = resolved_incident(sim, started_at=NOW - 40 * DAY, resolved_at=NOW - HOUR)  # opened long ago
    resolved_incident(sim, started_at=NOW - 30 * HOUR, resolved_at=NOW - 25 * HOUR)  # before `since`

    assert [incident.id for incident in incidents(read(sim))] == [old]
    [query] = list_queries(sim)
    assert query == {
        'updated_after': utc(NOW - DAY),
        'updated_before': utc(NOW),
        'page': '1',
        'per_page': '200',
    }
    assert sim.requests[0].headers['authorization'] == f'Bearer {sim.token}'


def test_the_window_is_half_open_on_the_update_time(sim):
    at_start = resolved_incident(sim, resolved_at=NOW - DAY)
    resolved_incident(sim, resolved_at=NOW)  # at `until`: the next window's

    assert [incident.id for incident in incidents(read(sim))] == [at_start]
    query = list_queries(sim)[0]
    assert (query['updated_after'], query['updated_before']) == (utc(NOW - DAY), utc(NOW))


def test_archived_and_reopened_incidents_are_not_failures(sim):
    excluded = sim.open_non_failures(NOW - 3 * HOUR, NOW - 2 * HOUR)
    failure = resolved_incident(sim)
    assert len(excluded) == 2
    assert [incident.id for incident in incidents(read(sim))] == [failure]
    assert all('archived' not in query for query in list_queries(sim))


def test_a_reopened_incident_resolved_again_is_a_new_resolution_of_the_same_id(sim):
    incident_id = resolved_incident(sim, resolved_at=NOW - 3 * HOUR)
    [first] = incidents(read(sim))
    sim.reopen(incident_id, NOW - 2 * HOUR)
    assert incidents(read(sim)) == []  # listed (it changed), but active again
    sim.resolve(incident_id, NOW - HOUR)
    [second] = incidents(read(sim))
    assert first.id == second.id == incident_id
    assert (first.resolved_at, second.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR)


def test_a_hidden_resolution_appears_at_its_own_time_once_revealed(sim):
    incident_id = sim.open(NOW - 3 * HOUR)
    sim.resolve(incident_id, NOW - 2 * HOUR, hidden=True)
    assert incidents(read(sim)) == []
    sim.reveal(incident_id)
    [incident] = incidents(read(sim, until=later()))
    assert incident.resolved_at == NOW - 2 * HOUR


def test_pages_are_followed_to_the_last(sim):
    sim.max_page_size = 2
    ids = {resolved_incident(sim, resolved_at=NOW - (n + 1) * HOUR) for n in range(5)}
    [batch] = read(sim)
    assert {incident.id for incident in batch.incidents} == ids
    assert [incident.resolved_at for incident in batch.incidents] == sorted(i.resolved_at for i in batch.incidents)
    assert [query['page'] for query in list_queries(sim)] == ['1', '2', '3']


def test_a_long_lookback_is_read_in_windows_of_30_days_oldest_first(sim):
    ids = [resolved_incident(sim, resolved_at=NOW - days * DAY) for days in (65, 35, 1)]
    batches = read(sim, since=NOW - 70 * DAY)
    assert [batch.through for batch in batches] == [NOW - 40 * DAY, NOW - 10 * DAY, NOW]
    assert [incident.id for incident in incidents(batches)] == ids
    assert [query['updated_after'] for query in list_queries(sim)] == [
        utc(NOW - 70 * DAY),
        utc(NOW - 40 * DAY),
        utc(NOW - 10 * DAY),
    ]


def test_a_window_with_more_than_a_batch_is_halved(sim, monkeypatch):
    monkeypatch.setattr(
        firehydrant.FireHydrantSource, 'reading', replace(firehydrant.FireHydrantSource.reading, max_per_batch=2)
    )
    ids = [resolved_incident(sim, resolved_at=NOW - DAY + n * 4 * HOUR + HOUR) for n in range(5)]
    batches = read(sim)
    assert all(len(batch.incidents) <= 2 for batch in batches)
    assert [incident.id for incident in incidents(batches)] == ids
    assert [batch.through for batch in batches] == sorted(batch.through for batch in batches)
    assert batches[-1].through == NOW


def test_a_window_whose_matches_change_while_paging_is_read_again():
    class ArchivesDuringPaging(FireHydrantSimulator):
        victim = None

        def handle(self, request):
            response = super().handle(request)
            if request.path == LIST_PATH and dict(request.query).get('page') == '1' and self.victim:
                self.archive(self.victim, NOW - HOUR)  # page 2 now starts one item later
                self.victim = None
            return response

    with ArchivesDuringPaging(max_page_size=2) as sim:
        ids = [resolved_incident(sim, resolved_at=NOW - (n + 1) * HOUR) for n in range(4)]
        sim.victim = ids[0]
        found = {incident.id for incident in incidents(read(sim))}
        assert found == set(ids[1:])
        assert [query['page'] for query in list_queries(sim)] == ['1', '2', '1', '2']
        assert sim.spec_violations == []


def test_a_malformed_record_is_skipped_by_id_and_the_others_are_read(sim):
    bad_time = resolved_incident(sim)
    sim.corrupt(bad_time)
    bad_active = resolved_incident(sim)
    sim.corrupt(bad_active, active='no')
    bad_services = resolved_incident(sim)
    sim.corrupt(bad_services, services={'id': 'x'})
    early = sim.open(NOW - 3 * HOUR)
    sim.mitigate(early, NOW - 2 * HOUR)
    sim.resolve(early, NOW - HOUR)
    sim.corrupt(early, started_at=utc(NOW - timedelta(minutes=90)))  # after its mitigation
    good = resolved_incident(sim)

    [batch] = read(sim, restored_at='mitigated')
    assert [incident.id for incident in batch.incidents] == [good]
    reasons = {skip.id: skip.reason for skip in batch.skipped}
    assert set(reasons) == {bad_time, bad_active, bad_services, early}
    assert 'started_at' in reasons[bad_time] and 'not an ISO 8601 timestamp' in reasons[bad_time]
    assert 'active' in reasons[bad_active]
    assert 'services' in reasons[bad_services]
    assert 'before it started' in reasons[early]
    assert all(skip.source == 'firehydrant' for skip in batch.skipped)


def test_a_record_without_an_id_is_skipped_by_position(sim):
    incident_id = resolved_incident(sim)
    sim.corrupt(incident_id, id=None)
    [batch] = read(sim)
    assert batch.incidents == []
    reason = "`id` is not a FireHydrant id: 'None'"
    assert batch.skipped == [Skipped('firehydrant', f'record 1 of the window from {utc(NOW - DAY)}', reason)]


@pytest.mark.parametrize(
    'body, message',
    [
        (b'<html>Bad gateway</html>', 'not JSON'),
        (b'{"pagination": {"count": 0}}', '`data` list'),
        (b'{"data": {}, "pagination": {"count": 0}}', '`data` list'),
        (b'{"data": []}', '`pagination` count'),
        (b'{"data": [], "pagination": {"count": "1"}}', '`pagination` count'),
        (b'{"data": [], "pagination": {"count": 1, "next": "2"}}', '`pagination.next`'),
        (b'{"data": [], "pagination": {"count": 3, "next": 7}}', 'names page 7 next'),
    ],
)
def test_a_malformed_page_is_a_source_error_naming_firehydrant_and_the_endpoint(sim, body, message):
    resolved_incident(sim)
    sim.inject(Fault(status=200, body=body, path=LIST_PATH))
    with pytest.raises(SourceError) as error:
        read(sim)
    assert message in str(error.value)
    assert 'FireHydrant' in str(error.value) and LIST_PATH in str(error.value)


def test_a_rejected_token_names_the_option_never_the_token(sim):
    wrong = 'fhb-wrong-secret-1234'
    with pytest.raises(CredentialsRejected) as error:
        read(sim, token=wrong)
    message = str(error.value)
    assert '`api_token`' in message and 'API key' in message and 'HTTP 401' in message
    assert wrong not in message and sim.token not in message


def test_a_forbidden_token_says_what_it_needs(sim):
    sim.inject(Fault(status=403, body=b'{"detail": "Forbidden"}', path=LIST_PATH))
    with pytest.raises(CredentialsRejected, match='`api_token` needs an API key or bot token'):
        read(sim)


def test_a_bearer_prefix_in_the_option_is_not_doubled(sim):
    incident_id = resolved_incident(sim)
    assert [incident.id for incident in incidents(read(sim, token=f'Bearer {sim.token}'))] == [incident_id]


def test_the_rate_limit_answer_is_waited_out(sim):
    incident_id = resolved_incident(sim)
    sim.inject(sim.rate_limited(1))
    started = time.monotonic()
    assert [incident.id for incident in incidents(read(sim))] == [incident_id]
    assert time.monotonic() - started >= 0.9  # `Retry-After: 1` honoured
    assert len(list_queries(sim)) == 2


def test_the_simulators_own_rate_limit_and_request_validation(sim):
    sim.rate_limit = (1, 60.0)
    api = source(sim).api
    api.monotonic = lambda: 0.0  # a run's clock on which no time passes: the simulator's reset is what counts
    api.get(LIST_PATH, [('page', 1)], 5)
    with pytest.raises(SourceError, match='rate limit'):
        api.get(LIST_PATH, [('page', 1)], 0.5)
    sent = len(sim.requests)
    with pytest.raises(SourceError, match=r'wait \d+ s more'):  # the reset the simulator named
        api.get(LIST_PATH, [('page', 1)], 5)
    assert len(sim.requests) == sent  # nothing is sent before the reset
    sim.rate_limit = None
    api = source(sim).api  # a check that starts afresh (the reset passed)
    with pytest.raises(SourceError, match='HTTP 400'):
        api.get(LIST_PATH, [('per_page', 'many')], NO_DEADLINE)
    assert len(sim.spec_violations) == 1 and 'per_page' in sim.spec_violations[0]
    with pytest.raises(SourceError, match='not simulated'):
        api.get(LIST_PATH, [('tags', 'drill')], NO_DEADLINE)
    sim.spec_violations.clear()


def test_the_driver_interface_once_each(sim):
    """A quick self-check of every `SourceSimulator` method, as the shared conformance suite uses them."""
    driver: SourceSimulator = sim
    assert driver.source == 'firehydrant' and driver.list_path == LIST_PATH and driver.max_page_size == 200
    expected = {'source': 'firehydrant', 'api_token': sim.token, 'api_url': sim.url, 'env': 'prod'}
    assert driver.instance(env='prod') == expected

    incident_id = driver.open(NOW - 3 * HOUR)
    driver.resolve(incident_id, NOW - 2 * HOUR, hidden=True)
    assert incidents(read(sim)) == []
    driver.reveal(incident_id)
    [incident] = incidents(read(sim, until=later()))
    assert incident.resolved_at == NOW - 2 * HOUR

    filters = {'services': None, 'service_ids': None, 'teams': None, 'severities': None}
    config = SimpleNamespace(service_mapping=None, env=None, **filters)
    mapped = Mapper(config).to_datadog(incident)
    tags = {'service': mapped.services[0], 'team': mapped.team, 'env': mapped.env, 'severity': mapped.severity}
    assert tags == driver.expected_tags

    driver.reopen(incident_id, NOW - HOUR)
    assert incidents(read(sim)) == []
    driver.resolve(incident_id, NOW - HOUR + timedelta(minutes=5))
    assert [i.resolved_at for i in incidents(read(sim))] == [NOW - HOUR + timedelta(minutes=5)]

    driver.corrupt(incident_id)
    assert [skip.id for batch in read(sim) for skip in batch.skipped] == [incident_id]

    excluded = driver.open_non_failures(NOW - 3 * HOUR, NOW - 2 * HOUR)
    assert excluded and not {i.id for i in incidents(read(sim))} & set(excluded)

    fault = driver.rate_limited(2)
    assert (fault.status, fault.headers['Retry-After'], fault.path) == (429, '2', LIST_PATH)
