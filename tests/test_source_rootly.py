"""What is specific to Rootly: the source read over real HTTP from the loopback Rootly (`loopback/rootly.py`)."""

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources import rootly
from datadog_checks.dora_incidents.sources.base import utc
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from datadog_checks.dora_incidents.sources.rootly import RootlySource
from loopback.driver import SourceSimulator
from loopback.rootly import LIST_PATH, RootlySimulator
from loopback.server import Fault

from .common import TIMEOUT, instance_config, later, read_within

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


@pytest.fixture
def sim():
    with RootlySimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, token=None, **options) -> RootlySource:
    settings = {'api_token': token or sim.token, 'api_url': sim.url, 'restored_at': 'resolved', **options}
    config = instance_config(source='rootly', **settings)
    return RootlySource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - 24 * HOUR, until=NOW, left=None, **options):
    return read_within(source(sim, **options), since, until, left)


def incidents(batches):
    return [incident for batch in batches for incident in batch.incidents]


def list_queries(sim):
    return [dict(request.query) for request in sim.requests if request.path == LIST_PATH]


def resolved_incident(sim, started_at=NOW - 3 * HOUR, resolved_at=NOW - HOUR, **fields):
    incident_id = sim.open(started_at, **fields)
    sim.resolve(incident_id, resolved_at)
    return incident_id


def test_fields_map_to_the_source_incident(sim):
    incident_id = sim.open(NOW - 5 * HOUR)
    sim.update(incident_id, created_at=NOW - 4 * HOUR, services=['Checkout API', 'Payments API'])
    sim.mitigate(incident_id, NOW - 3 * HOUR)
    sim.resolve(incident_id, NOW - 2 * HOUR)

    [batch] = read(sim)
    [incident] = batch.incidents
    attributes = sim.incidents[incident_id]
    assert incident.source == 'rootly' and incident.id == incident_id and incident.key == f'rootly:{incident_id}'
    assert incident.number == f'INC-{attributes["sequential_id"]}'
    assert incident.title == 'Checkout is down'
    assert incident.url == attributes['url']
    assert incident.started_at == NOW - 5 * HOUR  # the impact start, not the creation
    assert incident.restored_at == incident.resolved_at == NOW - 2 * HOUR
    assert [s.name for s in incident.services] == ['Checkout API', 'Payments API']
    assert incident.services[0] == Named(attributes['services'][0]['data']['id'], 'Checkout API')
    assert incident.teams == (Named(attributes['groups'][0]['data']['id'], 'Payments Team'),)
    assert incident.environments == (Named(attributes['environments'][0]['data']['id'], 'Production'),)
    assert incident.severity == 'SEV1'
    assert batch.through == NOW and batch.skipped == []


def test_start_falls_back_to_creation_and_names_may_be_absent(sim):
    incident_id = resolved_incident(sim, service=None, team=None, environment=None, severity=None)
    sim.update(incident_id, started_at=None, created_at=NOW - 2 * HOUR)
    [incident] = incidents(read(sim))
    assert incident.started_at == NOW - 2 * HOUR
    assert (incident.services, incident.teams, incident.environments, incident.severity) == ((), (), (), None)


@pytest.mark.parametrize('severity', [None, {'data': None}])
def test_an_empty_severity_is_no_severity(sim, severity):
    incident_id = resolved_incident(sim)
    sim.serve_as(incident_id, severity=severity)
    [incident] = incidents(read(sim))
    assert incident.severity is None
    # The description says `nullable`, but beside `allOf` openapi-core reads it as not nullable (OpenAPI 3.0).
    assert sim.spec_violations and all('attributes/severity' in v for v in sim.spec_violations)
    sim.spec_violations.clear()


def test_times_in_another_zone_are_the_same_moments():
    with RootlySimulator(utc_offset=timedelta(hours=-8)) as sim:
        resolved_incident(sim, started_at=NOW - 3 * HOUR, resolved_at=NOW - HOUR)
        [incident] = incidents(read(sim))
        assert sim._served('x', {'t': NOW})['attributes']['t'].endswith('-08:00')
        assert (incident.started_at, incident.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR)


@pytest.mark.parametrize('mitigated', [True, False])
def test_restored_at_mitigated_uses_mitigation_else_resolution(sim, mitigated):
    incident_id = sim.open(NOW - 5 * HOUR)
    if mitigated:
        sim.mitigate(incident_id, NOW - 4 * HOUR)
    sim.resolve(incident_id, NOW - 2 * HOUR)
    [incident] = incidents(read(sim, restored_at='mitigated'))
    assert incident.restored_at == (NOW - 4 * HOUR if mitigated else NOW - 2 * HOUR)
    assert incident.resolved_at == NOW - 2 * HOUR


def test_resolved_at_option_ignores_mitigation(sim):
    incident_id = sim.open(NOW - 5 * HOUR)
    sim.mitigate(incident_id, NOW - 4 * HOUR)
    sim.resolve(incident_id, NOW - 2 * HOUR)
    [incident] = incidents(read(sim))
    assert incident.restored_at == NOW - 2 * HOUR


def test_non_failures_are_not_reported(sim):
    failure = resolved_incident(sim)
    others = sim.open_non_failures(NOW - 3 * HOUR, NOW - HOUR)
    kinds = {sim.incidents[i]['kind'] for i in others}
    statuses = {sim.incidents[i]['status'] for i in others}
    assert {'test', 'test_sub', 'example', 'example_sub', 'scheduled'} <= kinds and 'cancelled' in statuses
    assert any(sim.incidents[i]['duplicate_incident_id'] for i in others)
    batches = read(sim)
    assert [i.id for i in incidents(batches)] == [failure]
    assert batches[0].skipped == []
    # ... although the API did list every one of them: only the source tells them apart.
    assert len(sim.requests) == 1


def test_a_restarted_incident_waits_for_its_next_resolution(sim):
    incident_id = resolved_incident(sim, resolved_at=NOW - 3 * HOUR)
    assert [i.resolved_at for i in incidents(read(sim))] == [NOW - 3 * HOUR]
    sim.reopen(incident_id, NOW - 2 * HOUR)
    assert incidents(read(sim)) == []
    sim.resolve(incident_id, NOW - HOUR)
    [again] = incidents(read(sim))
    assert (again.id, again.resolved_at) == (incident_id, NOW - HOUR)


def test_a_record_listed_but_restarted_since_is_not_reported(sim):
    incident_id = resolved_incident(sim)
    sim.serve_as(incident_id, status='started')  # a stale `resolved_at` next to the current status
    assert incidents(read(sim)) == []


def test_the_query_filters_on_update_time_in_utc_with_full_pages(sim):
    since, until = NOW - 2 * HOUR, NOW - HOUR
    read(sim, since, until)
    [query] = list_queries(sim)
    assert query == {
        'filter[updated_at][gte]': utc(since),
        'filter[updated_at][lt]': utc(until),
        'sort': 'created_at',
        'page[size]': '100',
        'page[number]': '1',
        'include': 'services,groups,environments',  # the live API names them only as relationships
    }
    request = sim.requests[0]
    assert request.headers['authorization'] == f'Bearer {sim.token}'
    assert request.headers['accept'] == 'application/vnd.api+json'


def test_created_long_ago_resolved_now_is_read_and_old_resolutions_are_not(sim):
    old_resolution = resolved_incident(sim, started_at=NOW - 50 * 24 * HOUR, resolved_at=NOW - 45 * 24 * HOUR)
    long_running = resolved_incident(sim, started_at=NOW - 40 * 24 * HOUR, resolved_at=NOW - HOUR)
    assert [i.id for i in incidents(read(sim))] == [long_running]
    assert old_resolution not in str([r.query for r in sim.requests])


def test_window_bounds_are_half_open(sim):
    at_start = resolved_incident(sim, resolved_at=NOW - 2 * HOUR)
    resolved_incident(sim, resolved_at=NOW - HOUR)
    assert [i.id for i in incidents(read(sim, NOW - 2 * HOUR, NOW - HOUR))] == [at_start]


def test_a_long_lookback_is_read_in_windows_of_30_days_oldest_first(sim):
    first = resolved_incident(sim, started_at=NOW - 71 * 24 * HOUR, resolved_at=NOW - 70 * 24 * HOUR)
    last = resolved_incident(sim, started_at=NOW - 3 * HOUR, resolved_at=NOW - HOUR)
    batches = read(sim, NOW - 75 * 24 * HOUR, NOW)
    assert [b.through for b in batches] == [NOW - 45 * 24 * HOUR, NOW - 15 * 24 * HOUR, NOW]
    assert [[i.id for i in b.incidents] for b in batches] == [[first], [], [last]]
    windows = [(q['filter[updated_at][gte]'], q['filter[updated_at][lt]']) for q in list_queries(sim)]
    assert windows == [
        (utc(NOW - 75 * 24 * HOUR), utc(NOW - 45 * 24 * HOUR)),
        (utc(NOW - 45 * 24 * HOUR), utc(NOW - 15 * 24 * HOUR)),
        (utc(NOW - 15 * 24 * HOUR), utc(NOW)),
    ]


def test_pages_follow_links_next(sim, monkeypatch):
    monkeypatch.setattr(rootly, 'PAGE_SIZE', 2)
    ids = [resolved_incident(sim, resolved_at=NOW - HOUR + timedelta(minutes=i)) for i in range(5)]
    [batch] = read(sim)
    assert sorted(i.id for i in batch.incidents) == sorted(ids)
    assert [i.resolved_at for i in batch.incidents] == sorted(i.resolved_at for i in batch.incidents)
    assert [(q['page[number]'], q['page[size]']) for q in list_queries(sim)] == [('1', '2'), ('2', '2'), ('3', '2')]


def test_a_window_larger_than_a_batch_is_halved_until_each_half_fits(sim, monkeypatch):
    monkeypatch.setattr(rootly, 'PAGE_SIZE', 2)
    monkeypatch.setattr(rootly.RootlySource, 'reading', replace(rootly.RootlySource.reading, max_per_batch=4))
    ids = [resolved_incident(sim, NOW - 30 * HOUR, NOW - 20 * HOUR + i * HOUR) for i in range(10)]
    batches = read(sim)
    assert sorted(i.id for i in incidents(batches)) == sorted(ids)
    assert all(len(b.incidents) <= 4 for b in batches)
    assert [b.through for b in batches] == sorted(b.through for b in batches) and batches[-1].through == NOW
    assert max(int(q['page[number]']) for q in list_queries(sim)) <= 2


def test_without_meta_a_window_too_large_is_found_by_paging(sim, monkeypatch):
    monkeypatch.setattr(rootly, 'PAGE_SIZE', 2)
    monkeypatch.setattr(rootly.RootlySource, 'reading', replace(rootly.RootlySource.reading, max_per_batch=4))
    monkeypatch.setattr(rootly, '_total', lambda page: None)  # as the 2025-04 description, which has no `meta`
    ids = [resolved_incident(sim, NOW - 30 * HOUR, NOW - 20 * HOUR + i * HOUR) for i in range(10)]
    batches = read(sim)
    assert sorted(i.id for i in incidents(batches)) == sorted(ids)
    assert all(len(b.incidents) <= 4 for b in batches)


def test_a_window_that_changes_while_paged_is_read_again(monkeypatch):
    monkeypatch.setattr(rootly, 'PAGE_SIZE', 2)

    class Restarting(RootlySimulator):
        """Restarts the oldest incident while the check reads the second page: offsets shift."""

        restarted = False

        def handle(self, request):
            if dict(request.query).get('page[number]') == '2' and not self.restarted:
                self.restarted = True
                self.reopen(ids[0], NOW + HOUR)  # updated after the window: it leaves it
            return super().handle(request)

    with Restarting() as sim:
        ids = [
            resolved_incident(sim, started_at=NOW - 10 * HOUR + i * HOUR, resolved_at=NOW - 2 * HOUR) for i in range(5)
        ]
        assert sorted(i.id for i in incidents(read(sim))) == sorted(ids[1:])
        assert sim.spec_violations == []


def test_a_malformed_record_is_skipped_by_id_and_the_others_are_read(sim):
    good = resolved_incident(sim)
    bad = resolved_incident(sim)
    sim.corrupt(bad)
    wrong_shape = resolved_incident(sim)
    sim.serve_as(wrong_shape, services={'data': 'not a list'})
    [batch] = read(sim)
    assert [i.id for i in batch.incidents] == [good]
    reasons = {s.id: s.reason for s in batch.skipped}
    assert set(reasons) == {bad, wrong_shape} and all(s.source == 'rootly' for s in batch.skipped)
    assert 'started_at' in reasons[bad] and 'services' in reasons[wrong_shape]
    assert len(sim.spec_violations) == 1 and 'services' in sim.spec_violations[0]  # a record off the description
    sim.spec_violations.clear()


@pytest.mark.parametrize(
    'fields, reason',
    [
        ({'status': 'exploded'}, 'unknown status'),
        ({'resolved_at': None}, 'resolved_at'),
        ({'resolved_at': '2024-01-01T00:00:00'}, 'no time zone'),
        ({'kind': 7}, 'kind'),
        ({'severity': 'SEV1'}, 'severity'),
    ],
)
def test_each_malformed_field_is_named(sim, fields, reason):
    incident_id = resolved_incident(sim)
    sim.serve_as(incident_id, **fields)
    [batch] = read(sim)
    assert batch.incidents == [] and len(batch.skipped) == 1
    assert batch.skipped[0].id == incident_id and reason in batch.skipped[0].reason
    sim.spec_violations.clear()  # some of these records are off the description too: that is the point


def test_resolved_before_it_started_is_malformed(sim):
    incident_id = resolved_incident(sim, started_at=NOW - HOUR, resolved_at=NOW - 2 * HOUR)
    [skipped] = read(sim)[0].skipped
    assert skipped.id == incident_id and 'before it started' in skipped.reason


@pytest.mark.parametrize(
    'body, message',
    [
        (b'{"links": {"next": null}}', 'without a `data` list'),
        (b'{"data": [], "links": {"next": 3}}', 'without valid `links`'),
        (b'{"data": []}', 'without valid `links`'),
        (b'<html>502 Bad Gateway</html>', 'not JSON'),
    ],
)
def test_a_malformed_page_is_a_source_error(sim, body, message):
    resolved_incident(sim)
    sim.inject(Fault(status=200, body=body, path=LIST_PATH))
    with pytest.raises(SourceError, match=message) as raised:
        read(sim)
    assert LIST_PATH in str(raised.value)
    assert 'Rootly' in str(raised.value) or sim.url in str(raised.value)


def test_a_rejected_key_names_the_option_not_the_key(sim):
    with pytest.raises(CredentialsRejected) as raised:
        read(sim, token='rootly-secret-key-123')
    message = str(raised.value)
    assert '`api_token`' in message and 'API Keys' in message and 'HTTP 401' in message
    assert 'rootly-secret-key-123' not in message


def test_forbidden_says_which_key_is_needed_and_never_echoes_it(sim):
    echo = b'{"errors": [{"title": "Forbidden", "status": "403", "detail": "Bearer sim-rootly-token may not"}]}'
    sim.inject(Fault(status=403, body=echo, path=LIST_PATH))
    with pytest.raises(CredentialsRejected) as raised:
        read(sim)
    assert 'may not list incidents' in str(raised.value) and '`api_token`' in str(raised.value)
    assert sim.token not in str(raised.value)


def test_a_rate_limit_is_waited_out_by_its_reset_header(sim):
    incident_id = resolved_incident(sim)
    sim.inject(sim.rate_limited(1))
    started = time.monotonic()
    assert [i.id for i in incidents(read(sim))] == [incident_id]
    assert time.monotonic() - started >= 0.5
    assert len(list_queries(sim)) == 2


def test_a_long_rate_limit_ends_the_run_with_a_clear_error(sim):
    sim.inject(sim.rate_limited(600))
    with pytest.raises(SourceError, match='Rootly rate limit reached'):
        read(sim)


def test_the_simulator_enforces_its_own_rate_limit():
    with RootlySimulator(rate_limit=(2, 60)) as sim:
        read(sim)
        read(sim)
        with pytest.raises(SourceError, match='rate limit'):
            read(sim, left=1)
        assert sim.spec_violations == []


def test_a_hidden_resolution_shows_up_with_its_own_time_once_revealed(sim):
    incident_id = sim.open(NOW - 3 * HOUR)
    sim.resolve(incident_id, NOW - 2 * HOUR, hidden=True)
    assert incidents(read(sim)) == []
    sim.reveal(incident_id)
    [incident] = incidents(read(sim, until=later()))
    assert incident.resolved_at == NOW - 2 * HOUR
    assert sim.incidents[incident_id]['updated_at'] > NOW - timedelta(minutes=1)


def test_the_simulator_rejects_what_its_description_does_not_allow(sim):
    import requests

    headers = {'Authorization': f'Bearer {sim.token}'}
    answer = requests.get(sim.url + LIST_PATH, params={'page[size]': 'many'}, headers=headers, timeout=TIMEOUT)
    assert answer.status_code == 400 and answer.json()['errors'][0]['status'] == '400'
    assert len(sim.spec_violations) == 1 and 'page[size]' in sim.spec_violations[0]
    sim.spec_violations.clear()


def test_the_simulator_implements_the_driver_interface(sim):
    """Each driver method once, as the shared conformance suite uses them."""
    driver: SourceSimulator = sim
    assert (driver.source, driver.list_path, driver.max_page_size) == ('rootly', '/v1/incidents', 100)
    assert driver.instance(restored_at='mitigated') == {
        'source': 'rootly',
        'api_token': driver.token,
        'api_url': driver.url,
        'restored_at': 'mitigated',
    }
    assert set(driver.expected_tags) == {'service', 'team', 'env', 'severity'}

    plain = driver.open(NOW - 10 * HOUR)
    driver.resolve(plain, NOW - 9 * HOUR)
    late = driver.open(
        NOW - 10 * HOUR, title='Late', service='Search', team='Core', environment='Staging', severity='SEV2'
    )
    driver.resolve(late, NOW - 8 * HOUR, hidden=True)
    reopened = driver.open(NOW - 10 * HOUR)
    driver.resolve(reopened, NOW - 7 * HOUR)
    driver.reopen(reopened, NOW - 6 * HOUR)
    broken = driver.open(NOW - 10 * HOUR)
    driver.resolve(broken, NOW - 5 * HOUR)
    driver.corrupt(broken)
    ignored = driver.open_non_failures(NOW - 10 * HOUR, NOW - 4 * HOUR)
    assert len(ignored) == len(set(ignored)) >= 7

    [batch] = read(sim)
    assert [i.id for i in batch.incidents] == [plain]
    assert [s.id for s in batch.skipped] == [broken]
    driver.reveal(late)
    driver.resolve(reopened, NOW - 3 * HOUR)
    [batch] = read(sim, until=later())
    assert [(i.id, i.resolved_at) for i in batch.incidents] == [
        (plain, NOW - 9 * HOUR),
        (late, NOW - 8 * HOUR),
        (reopened, NOW - 3 * HOUR),
    ]
    late_incident = batch.incidents[1]
    assert (late_incident.title, late_incident.services[0].name) == ('Late', 'Search')
    assert late_incident.teams[0].name == 'Core'
    assert (late_incident.environments[0].name, late_incident.severity) == ('Staging', 'SEV2')

    before = time.time()
    fault = driver.rate_limited(2)
    after = time.time()
    assert fault.status == 429 and fault.path == driver.list_path
    reset = int(fault.headers['X-RateLimit-Reset'])
    assert before + 2 <= reset < after + 3  # two seconds from when it was made, rounded up to a whole second


def test_the_simulator_lists_a_resolution_from_its_resolve_time_on(sim):
    import requests

    later = sim.open(NOW - HOUR, title='Resolved in a minute')
    sim.resolve(later, datetime.now(UTC) + timedelta(minutes=1))
    done = sim.open(NOW - HOUR, title='Resolved a moment ago')
    sim.resolve(done, datetime.now(UTC) - timedelta(milliseconds=1))
    headers = {'Authorization': f'Bearer {sim.token}'}

    records = requests.get(sim.url + LIST_PATH, headers=headers, timeout=TIMEOUT).json()['data']
    listed = {record['attributes']['title']: record['attributes'] for record in records}

    later_record = listed['Resolved in a minute']
    assert (later_record['status'], later_record['resolved_at']) == ('started', None)
    assert listed['Resolved a moment ago']['status'] == 'resolved'
