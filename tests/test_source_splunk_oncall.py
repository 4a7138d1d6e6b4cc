"""What is specific to Splunk On-Call: read over real HTTP from the loopback reporting API (`loopback/splunk_oncall.py`)."""

import logging
from datetime import UTC, datetime, timedelta

import pytest

from loopback.server import Fault
from loopback.splunk_oncall import LIST_PATH, SplunkOnCallSimulator

from .common import TIME_TO_RESTORE, ago, counted, dora_ids, reporting_instance, restores

HOUR = timedelta(hours=1)


@pytest.fixture
def sim(request):
    with SplunkOnCallSimulator(**getattr(request, 'param', {})) as simulator:
        yield simulator
        assert simulator.spec_violations == []


@pytest.fixture
def settings(sim, intake):
    return reporting_instance(sim, intake)


def list_queries(sim):
    return [dict(request.query) for request in sim.requests if request.path == LIST_PATH]


def tags_of(aggregator) -> set[str]:
    [point] = aggregator.metrics(TIME_TO_RESTORE)
    return {tag for tag in point.tags if not tag.startswith('incident_id:')}


def test_fields_become_the_failure_restore_ends_at_the_resolved_transition(
    aggregator, make_check, run, sim, settings, intake, now
):
    incident = sim.open(ago(now, hours=3), title='p99 latency > 2s on checkout')
    sim.acknowledge(incident, ago(now, hours=2, minutes=50))
    sim.resolve(incident, ago(now, hours=1))
    sim.serve_as(incident, lastAlertTime=sim.incidents[incident]['startTime'])  # never the restore time

    assert run(make_check(settings)) == []

    assert restores(aggregator) == {incident: [2 * 3600]}
    assert tags_of(aggregator) == {
        'env:prod', 'service:checkout_api', 'team:payments_team', 'severity:critical', 'source:splunk_oncall',
    }  # fmt: skip
    [failure] = intake.failures
    attributes = failure['data']['attributes']
    assert dora_ids(intake) == [f'splunk_oncall:{incident}']
    assert attributes['name'] == 'p99 latency > 2s on checkout'  # served as `&gt;`
    [event] = aggregator.events
    assert f'#{incident}' in event['msg_title'] + event['msg_text']
    assert sim.incidents[incident]['incidentLink'] in event['msg_text']


def test_an_entity_resolved_by_a_recovery_is_ok_now_which_is_no_severity(aggregator, make_check, run, sim, settings):
    incident = sim.open(ago(datetime.now(UTC), hours=2))
    sim.resolve(incident, ago(datetime.now(UTC), hours=1), recovery=True)

    run(make_check(settings))

    assert not any(tag.startswith('severity:') for tag in tags_of(aggregator))


@pytest.mark.parametrize('sim', [{'phase_case': 'upper'}], indirect=True)
def test_phases_and_transitions_in_upper_case_are_the_same(aggregator, make_check, run, sim, settings, now):
    incident = sim.open(ago(now, hours=2))
    sim.resolve(incident, ago(now, minutes=30))

    run(make_check(settings))

    assert restores(aggregator) == {incident: [90 * 60]}


def test_a_new_alert_after_a_resolution_is_a_new_incident_and_a_new_failure(aggregator, make_check, run, sim, settings):
    now = datetime.now(UTC)
    first = sim.open(ago(now, hours=3))
    sim.resolve(first, ago(now, hours=2))
    check = make_check(settings)
    run(check)
    second = sim.realert(first, ago(now, minutes=10))  # after the first run: it shows within the reporting lag
    sim.resolve(second, ago(now, minutes=1))

    run(check)

    assert second != first and sim.incidents[second]['entityId'] == sim.incidents[first]['entityId']
    assert counted(aggregator) == 2 and set(restores(aggregator)) == {first, second}


def test_a_resolution_the_reporting_data_shows_15_minutes_late_counts_once(aggregator, make_check, run, sim, settings):
    now = datetime.now(UTC)
    incident = sim.open(ago(now, hours=1))
    sim.resolve(incident, ago(now, minutes=16), hidden=True)  # behind the 5-minute overlap by the next run
    check = make_check(settings)
    run(check)
    run(check)
    assert restores(aggregator) == {}

    sim.reveal(incident)
    run(check)
    run(check)

    assert counted(aggregator) == 1 and set(restores(aggregator)) == {incident}


def test_an_incident_open_40_days_counts_and_one_started_before_the_horizon_does_not(
    aggregator, make_check, run, sim, settings, now
):
    long_open = sim.open(ago(now, days=40))
    sim.resolve(long_open, ago(now, hours=1))
    run(make_check(settings))
    assert set(restores(aggregator)) == {long_open}
    query = list_queries(sim)[-1]
    horizon = datetime.fromisoformat(query['startedAfter'])
    assert abs(horizon - (now - timedelta(days=90))) < timedelta(minutes=1)
    assert (query['currentPhase'], query['limit']) == ('triggered,acknowledged,resolved', '100')

    aggregator.reset()
    run(make_check({**settings, 'start_horizon': 30 * 86400}, 'dora_incidents:shorter'))  # another cursor
    assert restores(aggregator) == {}


def test_routing_keys_one_is_asked_for_several_are_filtered(aggregator, make_check, run, sim, settings, now):
    incidents = {}
    for service in ('Checkout API', 'Search', 'Sandbox'):
        incidents[service] = sim.open(ago(now, hours=2), service=service, title=f'{service} down')
        sim.resolve(incidents[service], ago(now, hours=1))

    run(make_check({**settings, 'routing_keys': ['search']}))
    assert set(restores(aggregator)) == {incidents['Search']}
    assert list_queries(sim)[-1]['routingKey'] == 'search'

    aggregator.reset()
    run(make_check({**settings, 'routing_keys': ['search', 'checkout_api']}, 'dora_incidents:two'))
    assert set(restores(aggregator)) == {incidents['Search'], incidents['Checkout API']}
    assert 'routingKey' not in list_queries(sim)[-1]


def test_the_first_run_reads_the_horizon_then_runs_ask_for_the_open_incidents_and_the_new_ones(
    aggregator, make_check, run, sim, settings, now
):
    incidents = [sim.open(ago(now, days=30, seconds=n)) for n in range(105)]
    for n, incident in enumerate(incidents):
        sim.resolve(incident, ago(now, hours=2, seconds=n))
    long_open = [sim.open(ago(now, days=50)), sim.open(ago(now, days=49)), sim.open(ago(now, days=48))]
    check = make_check(settings)
    run(check)
    assert [q['offset'] for q in list_queries(sim)] == ['0', '100']  # the horizon: 108 incidents, all phases
    assert counted(aggregator) == 105

    sim.requests.clear()
    sim.resolve(long_open[1], datetime.now(UTC))  # open for 49 days
    run(check)
    asked, recent = list_queries(sim)
    assert asked['incidentNumber'] == f'{long_open[0]}:{long_open[2]}' and 'startedAfter' not in asked  # 4,5,6
    assert datetime.fromisoformat(recent['startedAfter']) > now - timedelta(hours=1)  # since the last run
    assert counted(aggregator) == 106 and long_open[1] in restores(aggregator)

    sim.requests.clear()
    run(check)
    asked, recent = list_queries(sim)  # steady state: two calls, whatever the horizon holds
    assert asked['incidentNumber'] == f'{long_open[0]},{long_open[2]}'
    assert counted(aggregator) == 106


def test_after_a_run_that_did_not_read_everything_the_next_one_reads_the_whole_horizon(
    make_check, run, sim, settings, now
):
    incident = sim.open(ago(now, days=30))
    sim.resolve(incident, ago(now, hours=2))
    check = make_check(settings)
    run(check)
    sim.inject(Fault(status=500, path=LIST_PATH, times=3))  # the next run reads nothing
    run(check)

    sim.requests.clear()
    run(check)

    assert [q.get('startedAfter', '')[:10] for q in list_queries(sim)] == [utc_day(now - timedelta(days=90))]


def utc_day(moment):
    return moment.strftime('%Y-%m-%d')


def test_both_headers_go_on_every_call_and_the_api_id_is_never_shown(make_check, sim, settings, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = 'wrong-api-id-0123456789'

    error = make_check({**settings, 'api_id': wrong, 'log_requests': True}).run()

    assert '`api_id`' in error and '`api_token`' in error and 'Authentication failed' in error
    assert wrong not in error + caplog.text and sim.token not in error + caplog.text
    assert all({'x-vo-api-id', 'x-vo-api-key'} <= set(request.headers) for request in sim.requests)


def test_a_403_naming_a_wait_is_the_rate_limit_not_a_refusal(aggregator, make_check, run, sim, settings, now):
    incident = sim.open(ago(now, hours=2))
    sim.resolve(incident, ago(now, hours=1))
    sim.inject(Fault(status=403, headers={'Retry-After': '1'}, body=b'{"message":"rate limit"}', path=LIST_PATH))

    assert run(make_check(settings)) == []

    assert set(restores(aggregator)) == {incident}


def test_a_redirect_to_another_host_is_not_followed_with_the_credentials(make_check, run, sim, settings):
    with SplunkOnCallSimulator() as elsewhere:
        location = f'{elsewhere.url.replace("127.0.0.1", "localhost")}{LIST_PATH}'
        sim.inject(Fault(status=302, headers={'Location': location}, body=b'', path=LIST_PATH, times=5))

        [warning] = run(make_check(settings))

        assert elsewhere.requests == []
    assert 'redirect' in warning and sim.api_id not in warning and sim.token not in warning


@pytest.mark.parametrize(
    'options, named',
    [
        ({'api_id': None}, '`api_id` is required'),
        ({'restored_at': 'mitigated'}, 'not of `source: splunk_oncall`'),
        ({'encoded_query': 'active=true'}, '`encoded_query` is an option of servicenow'),
    ],
)
def test_options_are_checked_naming_the_option(make_check, sim, settings, options, named):
    error = make_check({**settings, **options}).run()

    assert named in error


@pytest.mark.parametrize('option', ['api_id', 'routing_keys', 'start_horizon'])
def test_its_options_are_refused_with_another_tool(make_check, option):
    value = {'api_id': 'x', 'routing_keys': ['a'], 'start_horizon': 86400}[option]
    instance = {'source': 'pagerduty', 'api_token': 'pagerduty-token-0123456789', option: value}

    error = make_check(instance).run()

    assert f'`{option}` is an option of splunk_oncall' in error


def test_an_odd_number_or_an_unreadable_time_never_breaks_the_next_run(aggregator, make_check, run, sim, settings, now):
    odd, untimed, good = (sim.open(ago(now, hours=3)) for _ in range(3))
    for incident in (odd, untimed, good):
        sim.resolve(incident, ago(now, hours=1))
    sim.serve_as(odd, incidentNumber='INC-odd')
    sim.serve_as(untimed, transitions=[{'name': 'RESOLVED', 'at': 'later'}])
    check = make_check(settings)

    [warning] = run(check)
    run(check)  # the malformed one is asked for again by number: still skipped, not warned about twice

    assert untimed in warning
    assert set(restores(aggregator)) == {good, 'INC-odd'}  # a number that is no number: its id, never asked for
