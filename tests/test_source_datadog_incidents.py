"""What is specific to Datadog Incident Management: read over real HTTP from `loopback/datadog_incidents.py`."""

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
from datadog_checks.base import ConfigurationError
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources.datadog_incidents import DatadogIncidentsSource, _app_url
from datadog_checks.dora_incidents.sources.http import CredentialsRejected
from loopback.datadog_incidents import LIST_PATH, DatadogIncidentsSimulator

from .common import (
    INCIDENTS_COUNT,
    MAX_RUN_TIME,
    NO_DEADLINE,
    TIMEOUT,
    ago,
    counted,
    dora_ids,
    instance_config,
    reporting_instance,
    restores,
)

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
HALF_HOUR = timedelta(minutes=30)


@pytest.fixture
def sim():
    with DatadogIncidentsSimulator() as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, **options) -> DatadogIncidentsSource:
    settings = {
        'api_token': None,
        'api_url': sim.url,
        'datadog_api_url': None,
        'datadog_api_key': sim.api_key,
        'datadog_app_key': sim.app_key,
        'creation_horizon': None,
        **options,
    }
    config = instance_config(source='datadog_incidents', **settings)
    return DatadogIncidentsSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - DAY, until=None, **options):
    batches = source(sim, **options).resolved(since, until or NOW + timedelta(seconds=1), NO_DEADLINE)
    return [incident for batch in batches for incident in batch.incidents]


def searches(sim):
    return [dict(request.query) for request in sim.requests if request.path == LIST_PATH]


def resolved(sim, started_at=NOW - 3 * HOUR, at=NOW - HOUR, **options):
    incident = sim.open(started_at, **options)
    sim.resolve(incident, at)
    return incident


# -- fields -----------------------------------------------------------------------------------------------


def test_fields_map_to_the_source_incident(sim):
    incident_id = resolved(sim, title='Checkout is down', severity='SEV2')
    sim.update(incident_id, services=['Checkout API', 'Payments API'], teams=['Payments', 'SRE'])

    [incident] = read(sim)

    assert incident.id == incident_id and incident.number == '#1' and incident.title == 'Checkout is down'
    assert incident.services == (Named(None, 'Checkout API'), Named(None, 'Payments API'))
    assert incident.teams == (Named(None, 'Payments'), Named(None, 'SRE')) and incident.severity == 'SEV-2'
    assert (incident.started_at, incident.resolved_at, incident.restored_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)


def test_an_unknown_severity_is_no_severity(sim):
    resolved(sim, severity='')

    [incident] = read(sim)

    assert incident.severity is None


def test_the_start_is_the_customer_impact_start_else_the_declaration_never_the_import(sim):
    impacted = resolved(sim, started_at=NOW - 5 * HOUR)
    sim.update(impacted, customer_impact_start=NOW - 4 * HOUR)
    internal = resolved(sim, started_at=NOW - 5 * HOUR)
    sim.update(internal, customer_impacted=False, customer_impact_start=None, customer_impact_end=None)
    imported = resolved(sim, started_at=NOW - 6 * HOUR)
    sim.update(imported, created=NOW - 2 * HOUR, customer_impacted=False, customer_impact_start=None)  # imported now

    starts = {incident.id: incident.started_at for incident in read(sim)}

    assert starts == {impacted: NOW - 4 * HOUR, internal: NOW - 5 * HOUR, imported: NOW - 6 * HOUR}


def test_the_resolution_is_resolved_never_modified_and_completing_keeps_it(sim):
    incident_id = resolved(sim, at=NOW - 2 * HOUR)
    sim.complete(incident_id, NOW - HOUR)
    sim.update(incident_id, modified=NOW - HALF_HOUR)  # a postmortem edit

    [incident] = read(sim)

    assert incident.resolved_at == NOW - 2 * HOUR


def test_a_reopened_incident_keeps_a_stale_resolved_and_is_not_a_failure_until_resolved_again(sim):
    incident_id = resolved(sim, at=NOW - 2 * HOUR)
    sim.reopen(incident_id, NOW - HOUR)

    assert read(sim) == []

    sim.resolve(incident_id, NOW - HALF_HOUR)
    assert [incident.resolved_at for incident in read(sim)] == [NOW - HALF_HOUR]


def test_test_incidents_are_not_failures_even_when_listed(sim):
    test = resolved(sim)
    sim.update(test, is_test=True, listed=True)

    assert read(sim) == []


def test_app_links_follow_the_site():
    assert _app_url('https://api.datadoghq.com', 42) == 'https://app.datadoghq.com/incidents/42'
    assert _app_url('https://api.datadoghq.eu', 42) == 'https://app.datadoghq.eu/incidents/42'
    assert _app_url('https://api.us5.datadoghq.com', 42) == 'https://us5.datadoghq.com/incidents/42'
    assert _app_url('http://127.0.0.1:8080', 42) is None


# -- how the search is read -------------------------------------------------------------------------------


def test_the_search_sends_only_a_documented_facet_newest_first_100_a_page(sim):
    resolved(sim)

    read(sim)

    assert searches(sim) == [
        {'query': 'state:(resolved OR completed)', 'sort': '-created', 'page[size]': '100', 'page[offset]': '0'}
    ]


def test_paging_stops_at_the_creation_horizon_and_costs_a_request_per_100_incidents(sim):
    for n in range(250):
        resolved(sim, started_at=NOW - 10 * DAY + timedelta(minutes=n), at=NOW - HOUR)
    for n in range(150):  # created before the horizon, resolved within the window: never read
        resolved(sim, started_at=NOW - 40 * DAY + timedelta(minutes=n), at=NOW - HOUR)

    found = read(sim, creation_horizon=30 * 86400)

    assert len(found) == 250
    assert [search['page[offset]'] for search in searches(sim)] == ['0', '100', '200']


class ResolvingDatadog(DatadogIncidentsSimulator):
    """Resolves the newest incident right after serving the first page: every later offset shifts by one."""

    late: str | None = None

    def handle(self, request):
        response = super().handle(request)
        if request.path == LIST_PATH and self.late and self.incidents[self.late]['state'] == 'active':
            self.resolve(self.late, NOW - HALF_HOUR)
        return response


def test_a_search_whose_total_moves_while_paged_is_read_again():
    with ResolvingDatadog() as sim:
        incidents = [resolved(sim, started_at=NOW - 5 * HOUR + timedelta(seconds=n)) for n in range(150)]
        sim.late = sim.open(NOW - 2 * HOUR)

        found = read(sim)

        assert sorted(incident.id for incident in found) == sorted([*incidents, sim.late])
        assert [search['page[offset]'] for search in searches(sim)] == ['0', '100', '0', '100']
        assert sim.spec_violations == []


def test_a_refused_key_is_an_error_naming_both_keys(sim):
    with pytest.raises(CredentialsRejected) as raised:
        read(sim, datadog_app_key='wrong-app-key-123456')

    message = str(raised.value)
    assert '`datadog_api_key`' in message and '`datadog_app_key`' in message and 'incident_read' in message
    assert 'wrong-app-key-123456' not in message


@pytest.mark.parametrize(
    'options, named',
    [
        ({'datadog_app_key': None}, '`datadog_app_key`'),
        ({'datadog_api_key': None}, '`datadog_api_key`'),
        ({'api_token': 'some-token'}, '`api_token`'),
    ],
)
def test_missing_keys_or_an_api_token_stop_at_start_naming_the_option(sim, datadog_agent, options, named):
    with pytest.raises(ConfigurationError) as raised:
        source(sim, **options)

    assert named in str(raised.value)


def test_the_keys_and_the_url_default_to_the_agents_and_to_where_dora_writes_go(sim, datadog_agent):
    datadog_agent._config.update(api_key=sim.api_key, app_key=sim.app_key)
    resolved(sim)

    found = read(sim, api_url=None, datadog_api_url=sim.url, datadog_api_key=None, datadog_app_key=None)

    assert len(found) == 1


def test_the_simulator_answers_like_datadog(sim):
    """An undocumented facet is a 400; `next_offset` is set even on the last page; 403 names no key."""
    resolved(sim)
    headers = {'DD-API-KEY': sim.api_key, 'DD-APPLICATION-KEY': sim.app_key}

    def search(query, keys=headers, **params):
        return requests.get(sim.url + LIST_PATH, params={'query': query, **params}, headers=keys, timeout=TIMEOUT)

    assert search('state:resolved AND from_ts:1700000000').status_code == 400
    last = search('state:(resolved OR completed)', **{'page[size]': 10}).json()
    assert last['data']['attributes']['total'] == 1 and last['meta']['pagination']['next_offset'] == 10
    assert search('state:resolved', **{'page[size]': 101}).status_code == 400
    refused = search('state:resolved', keys={'DD-API-KEY': sim.api_key})
    assert refused.status_code == 403 and refused.json() == {'errors': ['Forbidden']}


# -- through the check --------------------------------------------------------------------------------------


@pytest.fixture
def settings(sim, intake):
    return reporting_instance(sim, intake, max_run_time=MAX_RUN_TIME)


def test_no_dora_failures_by_default_but_metrics_events_and_change_failures_flow(
    aggregator, make_check, run, sim, settings, intake, now
):
    intake.deploy('checkout_api', 'prod', 'v42', ago(now, hours=4, minutes=5), ago(now, hours=4))
    intake.deploy('checkout_api', 'prod', 'v41', ago(now, hours=2, minutes=5), ago(now, hours=2))
    incident = sim.open(ago(now, hours=3))
    sim.resolve(incident, ago(now, hours=1))

    assert run(make_check({**settings, 'mark_change_failures': True})) == []

    assert intake.failures == [] and restores(aggregator) == {incident: [2 * 3600]}
    aggregator.assert_metric(INCIDENTS_COUNT, value=1)
    assert len(aggregator.events) == 1
    assert list(intake.markings()) == [next(d for d, v in intake.deployments.items() if v['version'] == 'v42')]


def test_send_dora_failures_true_sends_them(make_check, run, sim, settings, intake, now):
    incident = resolved(sim, started_at=ago(now, hours=3), at=ago(now, hours=1))

    run(make_check({**settings, 'send_dora_failures': True}))

    assert dora_ids(intake) == [f'datadog_incidents:{incident}']


def test_a_resolution_entered_late_and_one_corrected_are_reported_once_each(
    aggregator, make_check, run, sim, settings, now
):
    reported = resolved(sim, started_at=ago(now, hours=4), at=ago(now, hours=2))
    check = make_check(settings)
    run(check)
    late = sim.open(ago(now, hours=5))
    sim.resolve(late, ago(now, hours=3))
    sim.update(late, modified=ago(now, minutes=1))  # entered now, resolved 3 hours ago
    sim.update(reported, resolved=ago(now, hours=2, minutes=30), modified=ago(now, minutes=1))  # corrected

    run(check)
    run(check)

    assert restores(aggregator) == {reported: [2 * 3600, 90 * 60], late: [2 * 3600]}
    assert counted(aggregator) == 2


def test_a_refused_application_key_is_a_run_error_naming_both_keys(aggregator, make_check, sim, settings, caplog):
    caplog.set_level(logging.DEBUG)

    error = make_check({**settings, 'datadog_app_key': 'wrong-app-key-123456'}).run()

    [report] = json.loads(error)
    assert '`datadog_app_key`' in report['message'] and '`datadog_api_key`' in report['message']
    assert 'wrong-app-key-123456' not in error + caplog.text
    aggregator.assert_metric('dora.check.source.can_connect', value=0)


def test_no_application_key_anywhere_is_an_error_naming_it(make_check, sim, settings, datadog_agent):
    datadog_agent._config.pop('app_key', None)
    instance = {key: value for key, value in settings.items() if key != 'datadog_app_key'}

    [report] = json.loads(make_check(instance).run())

    assert '`datadog_app_key`' in report['message'] and 'incident_read' in report['message']
    assert sim.requests == []
