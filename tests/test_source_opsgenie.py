"""What is specific to Opsgenie: read over real HTTP from `loopback/opsgenie.py`."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
import yaml
from click.testing import CliRunner
from datadog_checks.base.stubs import datadog_agent as agent_stub
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.cli.app import main
from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from datadog_checks.dora_incidents.sources.opsgenie import OpsgenieSource, _OpsgenieApi
from loopback.opsgenie import LIST_PATH, OpsgenieSimulator
from loopback.server import Fault

from .common import NO_DEADLINE, TIMEOUT, counted, dora_ids, instance_config, reporting_instance, restores

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def sim():
    with OpsgenieSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, **options) -> OpsgenieSource:
    config = instance_config(**{'source': 'opsgenie', 'api_token': sim.token, 'api_url': sim.url, **options})
    return OpsgenieSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - DAY, until=None, reader=None, **options):
    reader = reader or source(sim, **options)
    batches = reader.resolved(since, until or NOW + timedelta(seconds=1), NO_DEADLINE)
    return [incident for batch in batches for incident in batch.incidents]


def searches(sim):
    return [dict(request.query) for request in sim.requests if request.path == LIST_PATH]


def resolved(sim, started_at=NOW - 3 * HOUR, at=NOW - HOUR, **options):
    incident = sim.open(started_at, **options)
    sim.resolve(incident, at)
    return incident


# -- fields -----------------------------------------------------------------------------------------------


def test_fields_map_to_the_source_incident_with_names_looked_up_by_id(sim):
    incident_id = resolved(sim, title='Checkout is down', severity='SEV2', service='Checkout API', team='Payments')

    [incident] = read(sim)

    assert incident.id == incident_id and incident.number == '#1' and incident.title == 'Checkout is down'
    assert incident.services == (Named(sim.service_id('Checkout API'), 'Checkout API'),)
    assert incident.teams == (Named(sim.team_id('Payments'), 'Payments'),) and incident.severity == 'P2'
    assert incident.url == f'https://sim.app.opsgenie.com/incident/detail/{incident_id}'
    assert (incident.started_at, incident.resolved_at, incident.restored_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)


def test_the_team_is_the_owner_team_else_the_first_responder_team(sim):
    owned = resolved(sim, team='Payments')
    responders_only = resolved(sim, team='Payments')
    sim.update(
        responders_only,
        ownerTeam=None,
        responders=[{'type': 'user', 'id': 'u1'}, {'type': 'team', 'id': sim.team_id('SRE')}],
    )

    teams = {incident.id: incident.teams for incident in read(sim)}

    assert teams == {
        owned: (Named(sim.team_id('Payments'), 'Payments'),),
        responders_only: (Named(sim.team_id('SRE'), 'SRE'),),
    }


def test_the_start_is_the_impact_start_and_the_resolution_the_impact_end_never_the_update(sim):
    edited = resolved(sim, started_at=NOW - 5 * HOUR, at=NOW - 2 * HOUR)
    sim.update(edited, impactStartDate=NOW - 4 * HOUR, updatedAt=NOW - HOUR)
    no_impact_start = resolved(sim, started_at=NOW - 5 * HOUR, at=NOW - 2 * HOUR)
    sim.serve_as(no_impact_start, impactStartDate=None)

    found = {incident.id: (incident.started_at, incident.resolved_at) for incident in read(sim)}

    assert found == {edited: (NOW - 4 * HOUR, NOW - 2 * HOUR), no_impact_start: (NOW - 5 * HOUR, NOW - 2 * HOUR)}


def test_without_an_impact_end_the_resolution_is_the_timelines_latest_resolve_action(sim):
    incident_id = resolved(sim, at=NOW - 3 * HOUR)
    sim.reopen(incident_id, NOW - 2 * HOUR)
    sim.resolve(incident_id, NOW - HOUR)  # resolved again: the newest `IncidentResolved` entry
    sim.update(incident_id, impactEndDate=None)
    no_resolve_action = resolved(sim)
    sim.update(no_resolve_action, impactEndDate=None)
    sim.timelines[no_resolve_action] = sim.timelines[no_resolve_action][:1]  # only `IncidentCreated`
    reader = source(sim)

    batches = list(reader.resolved(NOW - DAY, NOW + timedelta(seconds=1), NO_DEADLINE))
    read(sim, reader=reader)  # unchanged since: asked once per incident and update

    [incident] = [incident for batch in batches for incident in batch.incidents]
    [skipped] = [skipped for batch in batches for skipped in batch.skipped]
    assert incident.id == incident_id and incident.resolved_at == incident.restored_at == NOW - HOUR
    assert skipped.id == no_resolve_action and 'timeline' in skipped.reason
    timelines = [request.path for request in sim.requests if request.path.startswith('/v2/incident-timelines/')]
    assert sorted(timelines) == sorted(f'/v2/incident-timelines/{i}/entries' for i in (incident_id, no_resolve_action))


def test_a_service_deleted_since_keeps_its_id(sim):
    incident_id = resolved(sim, service='Legacy Billing')
    deleted = sim.service_id('Legacy Billing')
    del sim.services[deleted]  # the look-up by id answers 404

    [incident] = read(sim)

    assert incident.id == incident_id and incident.services == (Named(deleted, None),)


def test_times_in_opsgenies_format_keep_their_milliseconds(sim):
    at = NOW - HOUR + timedelta(milliseconds=170)
    resolved(sim, at=at)
    headers = {'Authorization': f'GenieKey {sim.token}'}

    listed = requests.get(
        f'{sim.url}{LIST_PATH}', params={'query': 'status: resolved'}, headers=headers, timeout=TIMEOUT
    )
    [incident] = read(sim)

    assert listed.json()['data'][0]['impactEndDate'].endswith('.17Z') and incident.resolved_at == at


def test_closing_a_resolved_incident_is_not_a_new_resolution(sim):
    incident_id = resolved(sim, at=NOW - 2 * HOUR)
    reader = source(sim)
    [first] = read(sim, reader=reader)
    sim.close(incident_id, NOW - HOUR)

    [again] = read(sim, reader=reader)

    assert again.resolved_at == first.resolved_at == NOW - 2 * HOUR  # re-listed (updatedAt moved), same resolution


def test_a_reopened_incident_keeps_its_old_impact_end_and_is_not_a_failure_until_resolved_again(sim):
    incident_id = resolved(sim, at=NOW - 2 * HOUR)
    sim.reopen(incident_id, NOW - HOUR)
    assert read(sim) == []  # open: not listed
    headers = {'Authorization': f'GenieKey {sim.token}'}
    [record] = requests.get(
        f'{sim.url}{LIST_PATH}', params={'query': 'status: open'}, headers=headers, timeout=TIMEOUT
    ).json()['data']
    assert record['impactEndDate'] and source(sim).incident(record) is None  # the status tells, not the field

    sim.resolve(incident_id, NOW - HOUR / 2)
    [incident] = read(sim)
    assert incident.resolved_at == NOW - HOUR / 2


def test_tiny_ids_roll_over_and_never_identify_an_incident():
    with OpsgenieSimulator(tiny_id_limit=1) as sim:
        first, second = resolved(sim), resolved(sim)

        found = read(sim)

        assert sorted(incident.id for incident in found) == sorted([first, second])
        assert [incident.number for incident in found] == ['#1', '#1']


# -- the search ---------------------------------------------------------------------------------------------


def test_the_search_asks_for_resolved_and_closed_incidents_by_creation_time_newest_first(sim):
    resolved(sim)
    reader = source(sim, query='tag: production')

    read(sim, reader=reader)

    [search] = searches(sim)
    horizon_ms = int((reader.horizon()).timestamp() * 1000)
    assert search['query'].startswith(f'status: (resolved OR closed) AND createdAt >= {horizon_ms} AND createdAt < ')
    assert search['query'].endswith(' AND (tag: production)')
    assert (search['sort'], search['order'], search['limit']) == ('createdAt', 'desc', '100')


def test_query_selects_incidents(sim):
    tagged = resolved(sim)
    sim.update(tagged, tags=['production'])
    resolved(sim)

    assert [incident.id for incident in read(sim, query='tag: production')] == [tagged]


def test_an_invalid_query_is_an_error_naming_the_option(sim):
    with pytest.raises(SourceError) as raised:
        read(sim, query='isSeen: true')

    assert '`query`' in str(raised.value) and 'HTTP 422' in str(raised.value)


def test_paging_costs_a_request_per_100_incidents_and_names_are_looked_up_once(sim):
    incidents = [resolved(sim, started_at=NOW - 3 * HOUR - n * timedelta(seconds=1)) for n in range(250)]
    reader = source(sim)

    assert sorted(incident.id for incident in read(sim, reader=reader)) == sorted(incidents)
    assert [search['offset'] for search in searches(sim)] == ['0', '100', '200']
    newcomer = resolved(sim, service='Search', team='Discovery')
    found = {incident.id: incident for incident in read(sim, reader=reader)}

    assert found[newcomer].services == (Named(sim.service_id('Search'), 'Search'),)
    paths = [request.path for request in sim.requests if request.path != LIST_PATH]
    # Every name listed once, then each one created since looked up once by its id.
    assert paths == [
        '/v1/services',
        '/v2/teams',
        f'/v1/services/{sim.service_id("Search")}',
        f'/v2/teams/{sim.team_id("Discovery")}',
    ]


def test_offsets_shifted_by_a_resolution_while_paging_are_read_again(sim):
    incidents = [resolved(sim, started_at=NOW - 3 * HOUR - n * timedelta(seconds=1)) for n in range(150)]
    newest = sim.open(NOW - 2 * HOUR)
    reader = source(sim)
    first_page = reader.page

    def resolved_after_the_first_page(answer, token):
        if sim.incidents[newest]['status'] == 'open':
            sim.resolve(newest, NOW - HOUR / 2)  # listed first from now on: every offset after it moves by one
        return first_page(answer, token)

    reader.page = resolved_after_the_first_page

    found = read(sim, reader=reader)

    assert sorted(incident.id for incident in found) == sorted([*incidents, newest])
    assert [search['offset'] for search in searches(sim)] == ['0', '100', '0', '100']  # read again from the start


def test_an_incident_created_before_the_horizon_is_not_read_but_a_backfill_reaches_it(sim):
    old = resolved(sim, started_at=NOW - 200 * DAY, at=NOW - 199 * DAY)
    old_resolved_lately = resolved(sim, started_at=NOW - 100 * DAY, at=NOW - HOUR)

    assert read(sim, since=NOW - DAY) == []  # created more than 90 days ago: outside every run
    assert [incident.id for incident in read(sim, since=NOW - DAY, creation_horizon=120 * 86400)] == [
        old_resolved_lately
    ]
    backfilled = read(sim, since=NOW - 365 * DAY)
    assert sorted(incident.id for incident in backfilled) == sorted([old, old_resolved_lately])


# -- errors and rate limits ---------------------------------------------------------------------------------


def test_a_wrong_key_is_refused_naming_the_option_never_the_key(sim):
    with pytest.raises(CredentialsRejected) as raised:
        read(sim, api_token='GenieKey wrong-key-123')

    assert '`api_token`' in str(raised.value) and 'Could not authenticate' in str(raised.value)
    assert 'wrong-key-123' not in str(raised.value)


@pytest.mark.parametrize(
    'status, named', [(402, 'Standard or Enterprise plan'), (403, 'Read Access')], ids=['plan', 'read access']
)
def test_a_plan_or_key_without_the_incident_api_says_so(sim, status, named):
    body = b'{"message": "Your plan does not allow this", "took": 0.001, "requestId": "r-1"}'
    sim.inject(Fault(status=status, body=body, path=LIST_PATH))

    with pytest.raises(SourceError) as raised:
        read(sim)

    assert named in str(raised.value) and 'Your plan does not allow this' in str(raised.value)


def test_a_throttled_answer_without_retry_after_waits_the_rate_limit_period(sim):
    resolved(sim)
    sim.inject(sim.rate_limited(seconds=1))

    assert len(read(sim)) == 1 and len(searches(sim)) == 2


@pytest.mark.parametrize('period, attempt, wait', [('2', 1, 2.0), ('60', 1, 1.0), ('60', 2, 2.0), (None, 1, 1.0)])
def test_the_wait_after_a_429_is_the_period_else_a_short_backoff(period, attempt, wait):
    response = requests.Response()
    response.status_code = 429
    if period is not None:
        response.headers.update({'X-RateLimit-State': 'THROTTLED', 'X-RateLimit-Period-In-Sec': period})

    assert _OpsgenieApi.wait(None, response, attempt) == wait


# -- the check, options and the CLI --------------------------------------------------------------------------


@pytest.fixture
def settings(sim, intake):
    return reporting_instance(sim, intake)


def test_services_map_by_id_and_unmapped_ones_keep_their_name(aggregator, make_check, run, sim, settings, now):
    mapped = resolved(sim, service='Billing API', started_at=now - 2 * HOUR, at=now - HOUR)
    unmapped = resolved(sim, service='Search Index', started_at=now - 2 * HOUR, at=now - HOUR)
    mapping = {sim.service_id('Billing API'): {'service': 'billing', 'team': 'finance'}}

    run(make_check({**settings, 'service_mapping': mapping}))

    tags = {point.tags[-1]: point.tags for point in aggregator.metrics('dora.time_to_restore')}
    by_incident = {incident: tags[f'incident_id:{incident}'] for incident in (mapped, unmapped)}
    assert {'service:billing', 'team:finance'} <= set(by_incident[mapped])
    assert {'service:search_index', 'team:payments_team', 'severity:p1'} <= set(by_incident[unmapped])


@pytest.mark.parametrize(
    'options, named',
    [
        ({'restored_at': 'mitigated'}, '`restored_at`'),
        ({'jql': 'issuetype = Incident'}, '`jql`'),
        ({'api_token': None}, '`api_token`'),
        ({'creation_horizon': 3600}, 'creation_horizon'),
    ],
    ids=['restored_at', 'jql', 'no api_token', 'horizon under a day'],
)
def test_options_of_other_tools_and_missing_or_bad_ones_stop_at_start(make_check, settings, options, named, caplog):
    error = make_check({**settings, **options}).run()

    assert named in error and settings['api_token'] not in error + caplog.text


def test_query_is_refused_with_another_tool(make_check, pagerduty, intake):
    from loopback.harness import instance_for

    error = make_check(instance_for(pagerduty, intake, query='tag: production')).run()

    assert '`query` is an option of opsgenie' in error


def test_a_refused_key_is_a_run_error_naming_the_option(aggregator, make_check, sim, settings, caplog):
    caplog.set_level(logging.DEBUG)

    error = make_check({**settings, 'api_token': 'wrong-key-0123456789'}).run()

    assert '`api_token`' in error and 'wrong-key-0123456789' not in error + caplog.text
    aggregator.assert_metric('dora.check.source.can_connect', value=0)


def test_the_cli_backfill_sends_history_older_than_the_horizon_once(
    sim, intake, tmp_path, monkeypatch, aggregator, now
):
    for method in ('read_persistent_cache', 'write_persistent_cache'):
        monkeypatch.setattr(agent_stub, method, getattr(agent_stub, method))  # the CLI rebinds them
    old = resolved(sim, started_at=now - 300 * DAY, at=now - 299 * DAY)
    recent = resolved(sim, started_at=now - 2 * HOUR, at=now - HOUR)
    instance = reporting_instance(sim, intake)
    config = tmp_path / 'conf.yaml'
    config.write_text(yaml.safe_dump({'init_config': {}, 'instances': [instance]}))

    def backfill():
        args = ['--state', str(tmp_path / 'state.json'), 'backfill', '-c', str(config), '--since', '400d']
        return CliRunner().invoke(main, args, standalone_mode=False, catch_exceptions=True)

    result = backfill()
    assert result.exception is None, result.output
    backfill()

    assert sorted(dora_ids(intake)) == sorted(f'opsgenie:{incident}' for incident in (old, recent))
    assert counted(aggregator) == 0 and restores(aggregator) == {}


def test_a_key_given_with_its_genie_key_prefix_is_scrubbed_bare_too(aggregator, make_check, run, sim, intake):
    instance = {
        'source': 'opsgenie',
        'api_token': f'GenieKey {sim.token}',  # as the header reads: the check sends the bare key
        'api_url': sim.url,
        'datadog_api_url': intake.url,
        'datadog_api_key': intake.api_key,
        'env': 'prod',
    }
    check = make_check(instance)
    assert run(check) == []

    check.warning('echoed: %s', sim.token)  # what an error page may echo back

    assert check.sanitize(f'echoed: {sim.token}') == 'echoed: ********'  # the Agent's log handler formats so
    assert sim.token not in ''.join(check.warnings) and 'echoed: ' in ''.join(check.warnings)
