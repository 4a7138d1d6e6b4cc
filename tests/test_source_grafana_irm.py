"""What is specific to Grafana IRM: read over real HTTP from the loopback stack (`loopback/grafana_irm.py`)."""

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from datadog_checks.base import ConfigurationError
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources import scope_filters
from datadog_checks.dora_incidents.sources.grafana_irm import PAGE_SIZE, GrafanaIrmSource, irm_time
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from loopback.grafana_irm import LIST_PATH, RPC_PATH, STATUSES_PATH, GrafanaIrmSimulator
from loopback.server import Fault

from .common import NO_DEADLINE, TIME_TO_RESTORE, TIMEOUT, instance_config, reporting_instance, restores

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


@pytest.fixture
def sim():
    with GrafanaIrmSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, **options) -> GrafanaIrmSource:
    config = instance_config(**{'source': 'grafana_irm', 'api_token': sim.token, 'api_url': sim.url, **options})
    return GrafanaIrmSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - 24 * HOUR, until=NOW, **options):
    batches = source(sim, **options).resolved(since, until, NO_DEADLINE)
    return [incident for batch in batches for incident in batch.incidents]


def resolved(sim, resolved_at, started_at=None, **fields):
    incident_id = sim.open(started_at or resolved_at - HOUR, **fields)
    sim.resolve(incident_id, resolved_at)
    return incident_id


def list_bodies(sim):
    return [json.loads(request.body) for request in sim.requests if request.path == LIST_PATH]


def test_fields_map_to_the_source_incident(sim):
    incident_id = resolved(sim, NOW - HOUR, started_at=NOW - 3 * HOUR, service='Billing API', severity='P1')
    sim.update(incident_id, labels=[*sim.incidents['1']['labels'], {'key': 'service', 'label': 'Ledger'}])

    [incident] = read(sim)

    host = urlsplit(sim.url).netloc
    assert incident.id == f'{host}:1' and incident.number == '#1'
    assert incident.url == f'{sim.url}/a/grafana-irm-app/incidents/1/checkout-is-down'
    assert (incident.started_at, incident.restored_at, incident.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)
    assert incident.services == (Named(None, 'Billing API'), Named(None, 'Ledger'))
    assert incident.teams == (Named(None, 'Payments Team'),)  # the plain label (`tags`) is neither
    assert incident.severity == 'P1'


def test_the_same_incident_id_on_two_stacks_is_two_incidents(sim):
    resolved(sim, NOW - HOUR)
    with GrafanaIrmSimulator() as other:
        resolved(other, NOW - HOUR)
        [mine], [theirs] = read(sim), read(other)
    assert mine.number == theirs.number == '#1' and mine.id != theirs.id


def test_the_entered_start_and_end_win_over_creation_and_closing(sim):
    entered = sim.open(NOW - 5 * HOUR)
    sim.update(entered, createdTime=NOW - 2 * HOUR, incidentStart=NOW - 4 * HOUR, incidentEnd=NOW - 3 * HOUR)
    sim.resolve(entered, NOW - HOUR)  # closed an hour ago; its end was entered as 3 hours ago
    bare = sim.open(NOW - 6 * HOUR)
    sim.update(bare, incidentStart=None)  # `""`: the creation starts it
    sim.resolve(bare, NOW - 2 * HOUR)
    sim.update(bare, incidentEnd=None)  # `""`: the closing ends it

    found = {incident.id.rpartition(':')[2]: incident for incident in read(sim)}

    assert (found['1'].started_at, found['1'].restored_at) == (NOW - 4 * HOUR, NOW - 3 * HOUR)
    assert found['1'].resolved_at == NOW - 3 * HOUR  # the end, not `closedTime`: it can be entered and corrected
    assert (found['2'].started_at, found['2'].restored_at) == (NOW - 6 * HOUR, NOW - 2 * HOUR)


def test_drills_active_incidents_and_pending_severities(sim):
    drill = resolved(sim, NOW - HOUR)
    sim.update(drill, isDrill=True)
    sim.open(NOW - HOUR)  # active
    pending = resolved(sim, NOW - HOUR, severity=None)

    [incident] = read(sim)

    assert incident.id == pending and incident.severity is None  # `Pending` is IRM's "not set yet"


def test_a_stacks_own_status_counts_by_its_category(sim):
    fixed = sim.add_status('Fixed', 'resolved')
    monitoring = sim.add_status('Monitoring', 'active')
    counted, watched = resolved(sim, NOW - HOUR), resolved(sim, NOW - HOUR)
    sim.update(counted, status=fixed)
    sim.update(watched, status=monitoring)

    assert [incident.id for incident in read(sim)] == [counted]
    assert [r.path for r in sim.requests] == [STATUSES_PATH, LIST_PATH]  # one look-up a run


def test_label_keys_name_services_and_teams(sim):
    incident_id = resolved(sim, NOW - HOUR)
    sim.update(incident_id, labels=[{'key': 'service_name', 'label': 'Search'}, {'key': 'squad', 'label': 'Find'}])

    [incident] = read(sim, service_label_key='service_name', team_label_key='squad')

    assert incident.services == (Named(None, 'Search'),) and incident.teams == (Named(None, 'Find'),)


def test_the_list_is_ordered_by_modification_newest_first_and_stops_past_the_window(sim):
    for n in range(PAGE_SIZE + 50):
        resolved(sim, NOW - 30 * HOUR - n * timedelta(seconds=10))  # before the window
    inside = [resolved(sim, NOW - HOUR - n * timedelta(seconds=10)) for n in range(2 * PAGE_SIZE + 5)]

    found = read(sim)

    assert sorted(incident.id for incident in found) == sorted(inside)
    bodies = list_bodies(sim)
    assert len(bodies) == 3  # the third page reaches past the window's start: no fourth
    assert bodies[0]['query'] == {
        'limit': PAGE_SIZE,
        'orderField': 'modifiedTime',
        'orderDirection': 'DESC',
        'queryString': '',
    }
    assert 'cursor' not in bodies[0] and bodies[1]['cursor']['nextValue'] and bodies[2]['cursor']['nextValue']


def test_a_quiet_stack_costs_one_list_request(sim):
    for n in range(3 * PAGE_SIZE):
        resolved(sim, NOW - 30 * HOUR - n * timedelta(seconds=10))

    assert read(sim, since=NOW - timedelta(minutes=10)) == []
    assert len(list_bodies(sim)) == 1


def test_late_and_corrected_resolutions_are_read_by_their_modification(sim):
    corrected = resolved(sim, NOW - 40 * HOUR)
    late = sim.enter_resolved(NOW - 50 * HOUR, NOW - 48 * HOUR)  # declared now, over two days ago
    sim.correct(corrected, resolved_at=NOW - 41 * HOUR)  # the review moves its end
    now = datetime.now(UTC)  # the changes are stamped now (NOW is when the module was collected)

    found = {
        incident.id: incident
        for incident in read(sim, since=now - timedelta(minutes=1), until=now + timedelta(minutes=1))
    }

    assert set(found) == {late, corrected}
    assert found[late].restored_at == NOW - 48 * HOUR and found[corrected].restored_at == NOW - 41 * HOUR


def test_incident_query_is_sent_and_scopes_the_cursor(sim):
    chosen = resolved(sim, NOW - HOUR)
    sim.update(chosen, labels=[*sim.incidents['1']['labels'], {'key': 'env', 'label': 'prod'}])
    resolved(sim, NOW - HOUR)

    assert [incident.id for incident in read(sim, incident_query=' label:env:prod ')] == [chosen]
    assert list_bodies(sim)[0]['query']['queryString'] == 'label:env:prod'
    scoped = instance_config(source='grafana_irm', incident_query='label:env:prod')
    assert scope_filters(scoped)['incident_query'] == ['label:env:prod']


@pytest.mark.parametrize(
    'raw, expected',
    [
        ('2026-03-01T12:00:00Z', datetime(2026, 3, 1, 12, tzinfo=UTC)),
        ('2026-03-01T12:00:00.5Z', datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ('2026-03-01T12:00:00.123456789Z', datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ('2026-03-01T14:00:00.1+02:00', datetime(2026, 3, 1, 12, 0, 0, 100000, tzinfo=UTC)),
        ('2022-02-11 00:50:20.574137', datetime(2022, 2, 11, 0, 50, 20, 574137, tzinfo=UTC)),  # the Go client's
    ],
)
def test_times_with_any_number_of_fractional_digits(raw, expected):
    assert irm_time(raw, 'closedTime') == expected


@pytest.mark.parametrize('raw', ['', 'yesterday', None, 1700000000, '2026-13-01T00:00:00Z'])
def test_a_time_that_is_not_one_is_malformed(raw):
    with pytest.raises(ValueError, match='closedTime'):
        irm_time(raw, 'closedTime')


def test_a_malformed_time_is_skipped_by_name(sim):
    bad, good = resolved(sim, NOW - 2 * HOUR), resolved(sim, NOW - HOUR)
    sim.corrupt(bad, incidentEnd='2026-02-30T00:00:00Z')

    batches = list(source(sim).resolved(NOW - 24 * HOUR, NOW, NO_DEADLINE))

    assert [incident.id for batch in batches for incident in batch.incidents] == [good]
    assert [skipped.id for batch in batches for skipped in batch.skipped] == [bad]


def test_answers_are_asked_for_gzipped_and_an_empty_list_may_be_null(sim):
    assert read(sim) == []  # the stack answers `"incidentPreviews": null`
    assert all('gzip' in request.headers.get('accept-encoding', '') for request in sim.requests)


def test_a_refused_token_names_the_option_never_the_token(sim):
    wrong = 'glsa_wrongToken_0123456789abcdef'
    with pytest.raises(CredentialsRejected) as refused:
        read(sim, api_token=wrong)
    assert '`api_token`' in str(refused.value) and 'Invalid API key' in str(refused.value)
    assert wrong not in str(refused.value)


def test_an_rpc_error_is_named(sim):
    sim.inject(Fault(status=500, body=json.dumps({'error': 'database is locked'}).encode(), path=LIST_PATH, times=3))
    with pytest.raises(SourceError, match='Grafana IRM.*database is locked'):
        read(sim)


def test_an_answer_without_its_cursor_is_an_error_naming_it(sim):
    sim.inject(Fault(status=200, body=json.dumps({'incidentPreviews': []}).encode(), path=LIST_PATH))
    with pytest.raises(SourceError, match='Grafana IRM answered .*`cursor`'):
        read(sim)


def test_the_rpc_path_in_api_url_names_the_same_stack(sim):
    resolved(sim, NOW - HOUR)
    [incident] = read(sim, api_url=f'{sim.url}{RPC_PATH}/')
    assert incident.url.startswith(f'{sim.url}/a/grafana-irm-app/')


def test_both_spellings_of_the_stack_share_one_cursor(make_check, sim):
    def cache_id(api_url):
        check = make_check({**sim.instance(), 'api_url': api_url})
        check.load_configuration_models()
        return check.persistent_cache_id()

    stack = cache_id(sim.url)
    assert cache_id(f'{sim.url}{RPC_PATH}') == cache_id(f'{sim.url.upper()}{RPC_PATH}/') == stack
    with GrafanaIrmSimulator() as other:
        assert cache_id(f'{other.url}{RPC_PATH}') != stack


@pytest.mark.parametrize(
    'api_url, named',
    [
        (None, '`api_url` is required'),
        ('https://acme.grafana.net/api/plugins/grafana-incident-app/resources/api/v1', 'old Grafana Incident'),
    ],
)
def test_a_missing_or_old_api_url_is_a_configuration_error(sim, api_url, named):
    with pytest.raises(ConfigurationError, match=named):
        source(sim, api_url=api_url)


@pytest.mark.parametrize('query', ['ended:2026-01-01T00:00:00Z,2026-02-01T00:00:00Z', 'label:a (declared:x,y)'])
def test_a_date_range_in_incident_query_is_a_configuration_error(sim, query):
    with pytest.raises(ConfigurationError, match='`incident_query` must not hold a date range'):
        source(sim, incident_query=query)


@pytest.mark.parametrize(
    'options, named',
    [
        ({'restored_at': 'mitigated'}, '`restored_at` is an option of'),
        ({'encoded_query': 'x=1'}, '`encoded_query` is an option of servicenow'),
    ],
)
def test_other_tools_options_are_refused(make_check, sim, options, named):
    error = make_check({**sim.instance(), 'send_dora_failures': False, **options}).run()
    assert named in error and 'source: grafana_irm' in error


@pytest.mark.parametrize('option', ['service_label_key', 'team_label_key', 'incident_query'])
def test_its_options_are_refused_with_other_tools(make_check, option):
    error = make_check({'source': 'rootly', 'api_token': 'secret-token-xyz', option: 'x'}).run()
    assert f'`{option}` is an option of grafana_irm' in error and 'secret-token-xyz' not in error


def test_a_missing_token_names_the_option(make_check, sim):
    error = make_check({'source': 'grafana_irm', 'api_url': sim.url}).run()
    assert '`api_token` is required with `source: grafana_irm`' in error and 'Viewer' in error


def test_end_to_end_tags_and_times(aggregator, make_check, run, sim, intake):
    incident_id = resolved(sim, NOW - HOUR, started_at=NOW - 3 * HOUR, service='Billing API', severity='P1')
    settings = reporting_instance(sim, intake)

    assert run(make_check(settings)) == []

    assert restores(aggregator) == {incident_id: [2 * 3600]}
    [point] = aggregator.metrics(TIME_TO_RESTORE)
    assert {'service:billing_api', 'team:payments_team', 'severity:p1', 'source:grafana_irm'} <= set(point.tags)
