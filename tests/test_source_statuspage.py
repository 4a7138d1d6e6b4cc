"""What is specific to Atlassian Statuspage: read over real HTTP from `loopback/statuspage.py`."""

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
from datadog_checks.base import ConfigurationError
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from datadog_checks.dora_incidents.sources.statuspage import StatuspageSource
from loopback.server import Fault
from loopback.statuspage import StatuspageSimulator

from .common import (
    NO_DEADLINE,
    TIME_TO_RESTORE,
    TIMEOUT,
    ago,
    counted,
    dora_ids,
    instance_config,
    later,
    reporting_instance,
    restores,
)

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def sim():
    with StatuspageSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, **options) -> StatuspageSource:
    settings = {
        'api_token': sim.token,
        'api_url': sim.url + '/v1',
        'page_id': sim.page_id,
        'impacts': None,
        'restored_at': None,
        'creation_horizon': None,
        **options,
    }
    config = instance_config(source='statuspage', **settings)
    return StatuspageSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - DAY, until=None, **options):
    batches = source(sim, **options).resolved(since, until or later(), NO_DEADLINE)
    return [incident for batch in batches for incident in batch.incidents]


def lists(sim):
    return [request for request in sim.requests if request.path == sim.list_path]


def resolved(sim, started_at=NOW - 3 * HOUR, at=NOW - HOUR, **options):
    incident = sim.open(started_at, **options)
    sim.resolve(incident, at)
    return incident


# -- fields and times ---------------------------------------------------------------------------------------


def test_fields_map_to_the_source_incident(sim):
    incident_id = resolved(sim, title='Checkout is down', severity='SEV2', service='Billing API')
    sim.update(incident_id, components=[*sim.incidents[incident_id]['components'], sim._component('Checkout API')])

    [incident] = read(sim)

    assert (incident.id, incident.title, incident.url) == (
        incident_id,
        'Checkout is down',
        f'https://stspg.io/{incident_id}',
    )
    assert incident.services == (
        Named(sim.components['Billing API'], 'Billing API'),
        Named(sim.components['Checkout API'], 'Checkout API'),
    )
    assert incident.severity == 'major' and incident.teams == () and incident.number is None
    assert (incident.started_at, incident.restored_at, incident.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)


def test_times_in_the_pages_zone_with_milliseconds_are_read_exactly(sim):
    started, ended = NOW - 3 * HOUR + timedelta(milliseconds=123), NOW - HOUR + timedelta(milliseconds=7)
    resolved(sim, started_at=started, at=ended)
    answer = requests.get(sim.url + sim.list_path, headers={'Authorization': f'OAuth {sim.token}'}, timeout=TIMEOUT)

    [incident] = read(sim)

    assert answer.json()[0]['resolved_at'].endswith('.007-06:00')  # the page's offset, as Statuspage serves it
    assert (incident.started_at, incident.resolved_at) == (started, ended)


def test_a_backfilled_incident_starts_at_its_created_at_not_when_it_was_entered(sim):
    """Statuspage's own example incident: `created_at` is the backfilled start, `started_at` the entry."""
    incident_id = sim.enter_resolved(NOW - 5 * HOUR, NOW - 3 * HOUR)

    [incident] = read(sim)

    assert incident.id == incident_id and (incident.started_at, incident.resolved_at) == (
        NOW - 5 * HOUR,
        NOW - 3 * HOUR,
    )


def test_an_earlier_started_at_starts_the_incident(sim):
    incident_id = resolved(sim)
    sim.correct(incident_id, started_at=NOW - 4 * HOUR)

    [incident] = read(sim)

    assert incident.started_at == NOW - 4 * HOUR


@pytest.mark.parametrize(
    'monitoring, expected',
    [(NOW - 2 * HOUR, NOW - 2 * HOUR), (None, NOW - HOUR), (NOW - HOUR + timedelta(minutes=5), NOW - HOUR)],
    ids=['monitoring', 'never monitored', 'monitoring edited after the resolution'],
)
def test_restored_at_mitigated_ends_at_monitoring_at_unless_missing_or_after_the_resolution(sim, monitoring, expected):
    incident_id = sim.open(NOW - 3 * HOUR)
    if monitoring is not None:
        sim.monitor(incident_id, monitoring)
    sim.resolve(incident_id, NOW - HOUR)

    [mitigated] = read(sim, restored_at='mitigated')
    [default] = read(sim)

    assert (mitigated.restored_at, mitigated.resolved_at) == (expected, NOW - HOUR)
    assert default.restored_at == NOW - HOUR


# -- what is a failure --------------------------------------------------------------------------------------


def test_a_published_postmortem_is_still_resolved(sim):
    incident_id = resolved(sim)
    sim.publish_postmortem(incident_id, NOW - HOUR / 2)

    [incident] = read(sim)

    assert incident.id == incident_id and incident.resolved_at == NOW - HOUR


def test_open_and_monitoring_incidents_are_not_failures_yet(sim):
    sim.open(NOW - 3 * HOUR)
    identified = sim.open(NOW - 3 * HOUR)
    sim.update(identified, status='identified', updated_at=NOW - 2 * HOUR)
    monitoring = sim.open(NOW - 3 * HOUR)
    sim.monitor(monitoring, NOW - HOUR)

    assert read(sim) == []


def test_impact_none_and_maintenances_count_only_when_listed_in_impacts(sim):
    informational = resolved(sim, severity=None)
    maintenance = sim.schedule_maintenance(NOW - 3 * HOUR, NOW - HOUR)
    sim.update(maintenance, status='in_progress', updated_at=NOW - 2 * HOUR)
    assert read(sim) == []
    assert [i.id for i in read(sim, impacts=['none', 'maintenance'])] == [informational]  # not completed yet

    sim.complete_maintenance(maintenance, NOW - HOUR / 2)

    assert read(sim) == []
    found = {i.id: i for i in read(sim, impacts=['none', 'maintenance', 'minor'])}
    assert set(found) == {informational, maintenance}
    assert found[maintenance].resolved_at == NOW - HOUR / 2 and found[maintenance].severity == 'maintenance'
    assert [i.id for i in read(sim, impacts=['minor'])] == []
    sim.update(maintenance, resolved_at=None)  # the `completed` update's display time then says when it ended
    [completed] = read(sim, impacts=['maintenance'])
    assert completed.resolved_at == NOW - HOUR / 2


def test_an_incident_created_before_the_creation_horizon_is_not_read(sim):
    old = resolved(sim, started_at=NOW - 3 * DAY, at=NOW - HOUR)
    recent = resolved(sim)

    assert {i.id for i in read(sim)} == {old, recent}
    assert [i.id for i in read(sim, creation_horizon=2 * 86400)] == [recent]


# -- paging -------------------------------------------------------------------------------------------------


def test_pages_of_100_newest_created_first_stop_at_the_creation_horizon(sim):
    for n in range(150):
        resolved(sim, started_at=NOW - 3 * HOUR + timedelta(seconds=n))
    for n in range(120):
        resolved(sim, started_at=NOW - 3 * DAY + timedelta(seconds=n))
    del sim.requests[:]

    found = read(sim, creation_horizon=2 * 86400)

    assert len(found) == 150
    # Page 2 holds the first incident created before the horizon: page 3 is never asked for.
    assert [dict(request.query) for request in lists(sim)] == [
        {'limit': '100', 'page': '1'},
        {'limit': '100', 'page': '2'},
    ]
    assert all(request.headers['authorization'] == f'OAuth {sim.token}' for request in lists(sim))


def test_an_incident_created_while_the_list_is_paged_loses_and_doubles_nothing(sim):
    """A new incident shifts every later page by one: the record at the edge comes twice, and is kept once."""
    incidents = [resolved(sim, started_at=NOW - 3 * HOUR + timedelta(seconds=n)) for n in range(150)]

    original = sim._list

    def listing_with_an_insertion(request):
        if dict(request.query).get('page') == '2' and len(sim.incidents) == 150:
            resolved(sim, started_at=NOW - HOUR, at=NOW - HOUR / 2)
        return original(request)

    sim._list = listing_with_an_insertion

    found = read(sim)

    ids = [incident.id for incident in found]
    assert len(ids) == len(set(ids)) and set(incidents) <= set(ids)


@pytest.mark.parametrize(
    'body, named',
    [
        (json.dumps({'incidents': []}), 'no list of incidents'),
        (json.dumps([{'id': f'x{n:011d}'} for n in range(101)]), 'more than 100'),
    ],
    ids=['an object', 'past the limit'],
)
def test_an_answer_that_is_not_a_page_of_incidents_is_an_error_naming_statuspage(sim, body, named):
    resolved(sim)
    sim.inject(Fault(status=200, body=body.encode(), path=sim.list_path))

    with pytest.raises(SourceError) as raised:
        read(sim)

    assert 'Statuspage' in str(raised.value) and named in str(raised.value)


def test_a_malformed_incident_is_skipped_by_id_and_the_others_read(sim):
    bad, good = resolved(sim), resolved(sim)
    sim.serve_as(bad, updated_at=12345)
    batches = list(source(sim).resolved(NOW - DAY, later(), NO_DEADLINE))

    assert [i.id for b in batches for i in b.incidents] == [good]
    assert [(s.id, "updated_at" in s.reason) for b in batches for s in b.skipped] == [(bad, True)]


# -- answers: rate limits, errors, credentials ----------------------------------------------------------------


def test_420_and_429_are_rate_limits_waited_out(sim):
    resolved(sim)
    sim.inject(Fault(status=420, headers={'Retry-After': '0'}, body=b'{"error": "Rate limit"}', path=sim.list_path))
    sim.inject(Fault(status=429, headers={'Retry-After': '0'}, body=b'{"error": "Rate limit"}', path=sim.list_path))

    assert len(read(sim)) == 1 and len(lists(sim)) == 3


def test_a_rate_limit_longer_than_a_run_waits_is_an_error_for_the_next_run(sim):
    resolved(sim)
    sim.inject(sim.rate_limited(seconds=60))

    with pytest.raises(SourceError) as raised:
        read(sim)

    assert 'rate limit' in str(raised.value) and 'next run' in str(raised.value)


def test_the_simulators_sliding_window_answers_420_with_retry_after():
    with StatuspageSimulator(rate_limit=(2, 60)) as sim:
        headers = {'Authorization': f'OAuth {sim.token}'}
        answers = [requests.get(sim.url + sim.list_path, headers=headers, timeout=TIMEOUT) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 420]
    assert 1 <= int(answers[2].headers['Retry-After']) <= 60 and 'X-RateLimit-Limit' not in answers[2].headers


def test_a_wrong_key_is_refused_naming_the_api_key_never_the_key(sim):
    resolved(sim)

    with pytest.raises(CredentialsRejected) as raised:
        read(sim, api_token='wrong-key-0123456789')

    assert '`api_token`' in str(raised.value) and 'wrong-key-0123456789' not in str(raised.value)


def test_the_key_is_sent_as_oauth_never_in_the_url_and_a_pasted_scheme_is_dropped(sim):
    resolved(sim)

    assert len(read(sim, api_token=f'OAuth {sim.token}')) == 1
    assert all('api_key' not in dict(request.query) for request in sim.requests)
    refused = requests.get(sim.url + sim.list_path, headers={'Authorization': f'Bearer {sim.token}'}, timeout=TIMEOUT)
    assert refused.status_code == 401 and refused.json() == {'error': 'Could not authenticate'}


def test_a_key_in_the_url_which_statuspage_accepts_is_refused_by_the_simulator_as_a_violation():
    """`?api_key=` works on the live API but lands in access logs: the check must never send it."""
    with StatuspageSimulator() as sim:
        answer = requests.get(sim.url + sim.list_path, params={'api_key': sim.token}, timeout=TIMEOUT)

    assert answer.status_code == 400 and len(sim.spec_violations) == 1 and '`api_key`' in sim.spec_violations[0]


def test_an_unknown_page_is_an_error_naming_page_id(sim):
    with pytest.raises(SourceError) as raised:
        read(sim, page_id='nosuchpage12')

    assert '`page_id`' in str(raised.value) and 'nosuchpage12' in str(raised.value)


# -- options ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    'options, named',
    [({'page_id': None}, '`page_id`'), ({'page_id': 'a/b'}, '`page_id`'), ({'impacts': []}, '`impacts`')],
    ids=['missing page_id', 'not a page id', 'no impact'],
)
def test_a_wrong_option_stops_at_start_naming_it(sim, options, named):
    with pytest.raises(ConfigurationError) as raised:
        source(sim, **options)

    assert named in str(raised.value) and sim.requests == []


# -- through the check --------------------------------------------------------------------------------------


@pytest.fixture
def settings(sim, intake):
    return reporting_instance(sim, intake)


def test_a_postmortem_published_after_the_report_sends_nothing_new(aggregator, make_check, run, sim, settings, now):
    incident = resolved(sim, started_at=ago(now, hours=3), at=ago(now, hours=1))
    check = make_check(settings)
    run(check)
    sim.publish_postmortem(incident, ago(now, seconds=1))
    aggregator.reset()

    run(check)

    assert restores(aggregator) == {} and aggregator.events == [] and counted(aggregator) == 0


def test_teams_match_nothing_and_the_team_comes_from_service_mapping(
    aggregator, make_check, run, sim, settings, intake, now
):
    incident = resolved(sim, started_at=ago(now, hours=3), at=ago(now, hours=1))

    run(make_check({**settings, 'teams': ['Payments Team']}))
    assert counted(aggregator) == 0

    mapping = {sim.components['Checkout API']: {'service': 'checkout', 'team': 'payments'}}
    run(make_check({**settings, 'service_mapping': mapping}))
    assert dora_ids(intake) == [f'statuspage:{incident}']
    [point] = aggregator.metrics(TIME_TO_RESTORE)
    assert {'service:checkout', 'team:payments', 'severity:critical'} <= set(point.tags)


def test_an_unknown_page_is_a_warning_naming_page_id(aggregator, make_check, run, sim, settings, caplog):
    caplog.set_level(logging.DEBUG)

    [warning] = run(make_check({**settings, 'page_id': 'nosuchpage12'}))

    assert '`page_id`' in warning and "'nosuchpage12'" in warning and sim.token not in warning + caplog.text
    aggregator.assert_metric('dora.check.source.can_connect', value=0)


@pytest.mark.parametrize(
    'options, named',
    [
        ({'page_id': None}, '`page_id`'),
        ({'source': 'pagerduty', 'api_url': None}, '`page_id`'),
        ({'jql': 'project = OPS'}, '`jql`'),
        ({'impacts': ['sev1']}, 'impacts'),
    ],
    ids=['missing', 'refused with another tool', "another tool's option", 'unknown impact'],
)
def test_options_are_checked_at_start(make_check, sim, settings, options, named):
    instance = {key: value for key, value in {**settings, **options}.items() if value is not None}

    [report] = json.loads(make_check(instance).run())

    assert named in report['message'] and sim.requests == []
