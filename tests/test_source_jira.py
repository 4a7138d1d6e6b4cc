"""What is specific to Jira: read over real HTTP from the loopback Jira Cloud site (`loopback/jira.py`)."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.base import ConfigurationError
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import Named
from datadog_checks.dora_incidents.sources.http import CredentialsRejected, SourceError
from datadog_checks.dora_incidents.sources.jira import JiraSource
from loopback.jira import IMPACT_START_FIELD, MYSELF_PATH, SEARCH_PATH, TEAM_FIELD, JiraSimulator
from loopback.server import Fault

from .common import NO_DEADLINE, TIMEOUT, ZONES, instance_config

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
MILLI = timedelta(milliseconds=1)


@pytest.fixture
def sim(request):
    with JiraSimulator(time_zone=getattr(request, 'param', 'Australia/Sydney')) as simulator:
        yield simulator
        assert simulator.spec_violations == []


def source(sim, **options) -> JiraSource:
    settings = {'username': sim.email, 'api_token': sim.token, 'api_url': sim.url, 'team_field': TEAM_FIELD}
    config = instance_config(source='jira', **{**settings, **options})
    return JiraSource(config, RequestsWrapper({'timeout': TIMEOUT}, {}), config.api_url)


def read(sim, since=NOW - 24 * HOUR, until=NOW, reader=None, **options):
    batches = (reader or source(sim, **options)).resolved(since, until, NO_DEADLINE)
    return [incident for batch in batches for incident in batch.incidents]


def resolved(sim, resolved_at, started_at=None, **fields):
    incident_id = sim.open(started_at or resolved_at - HOUR, **fields)
    sim.resolve(incident_id, resolved_at)
    return incident_id


def searches(sim):
    return [request for request in sim.requests if request.path == SEARCH_PATH]


@pytest.mark.parametrize('sim', ZONES, indirect=True)
@pytest.mark.parametrize(
    'since, until',
    [
        # New York's fall back: 01:00-02:00 happens twice; the window ends in its second occurrence.
        (datetime(2026, 11, 1, 4, 30, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 15, 10, tzinfo=UTC)),
        # New York's spring forward: 02:00-03:00 does not exist.
        (datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC), datetime(2026, 3, 8, 7, 0, 1, tzinfo=UTC)),
        # Lord Howe's half-hour fall back (02:00 -> 01:30), a window inside the repeated half hour.
        (datetime(2026, 4, 4, 14, 40, 20, tzinfo=UTC), datetime(2026, 4, 4, 14, 50, 40, tzinfo=UTC)),
        (datetime(2026, 7, 15, 12, 34, 56, tzinfo=UTC), datetime(2026, 7, 15, 13, 0, 0, tzinfo=UTC)),
    ],
    ids=['ny-fall', 'ny-spring', 'lord-howe-fall', 'summer'],
)
def test_nothing_is_missed_or_doubled_at_window_edges_in_any_zone(sim, since, until):
    middle = since + (until - since) / 2
    inside = [resolved(sim, at) for at in (since, since + MILLI, until - MILLI)]
    for at in (since - MILLI, until, until + MILLI):
        resolved(sim, at)
    straddling = resolved(sim, middle)

    first = read(sim, since, middle)
    second = read(sim, middle, until)

    assert sorted(i.id for i in first + second) == sorted([*inside, straddling])  # each once, none outside
    assert len({i.id for i in first} & {i.id for i in second}) == 0


def test_the_literals_are_written_in_the_owners_zone_at_minute_precision():
    with JiraSimulator(time_zone='Asia/Kolkata') as sim:
        read(sim, datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC), datetime(2026, 6, 1, 13, 0, 0, 1, tzinfo=UTC))

        [search] = searches(sim)
        jql = json.loads(search.body)['jql']
        assert 'updated >= "2026-06-01 17:30" AND updated < "2026-06-01 18:31"' in jql
        assert sim.spec_violations == []


def test_fields_map_to_the_source_incident(sim):
    incident_id = resolved(sim, NOW - HOUR, started_at=NOW - 3 * HOUR, severity='P1')
    issue = sim.issues[incident_id.rsplit(':', 1)[1]]

    [incident] = read(sim)

    assert incident.id == incident_id and incident.number == issue['key'] == 'INC-1'
    assert incident.title == 'Checkout is down' and incident.url == f'{sim.url}/browse/INC-1'
    assert (incident.started_at, incident.restored_at, incident.resolved_at) == (NOW - 3 * HOUR, NOW - HOUR, NOW - HOUR)
    assert incident.services == (Named(issue['fields']['components'][0]['id'], 'Checkout API'),)
    assert incident.teams == (Named(issue['fields'][TEAM_FIELD]['id'], 'Payments Team'),)
    assert incident.severity == 'P1'


@pytest.mark.parametrize(
    'value, names',
    [
        ({'id': '10070', 'value': 'Checkout API'}, ['Checkout API']),  # a select
        ([{'id': '10070', 'value': 'Checkout API'}, {'id': '10071', 'value': 'Search'}], ['Checkout API', 'Search']),
        (['checkout', 'search'], ['checkout', 'search']),  # labels
        ('Checkout API', ['Checkout API']),  # a text field
        (None, []),
    ],
    ids=['select', 'multi-select', 'labels', 'text', 'empty'],
)
def test_service_field_reads_selects_labels_and_text(sim, value, names):
    incident_id = resolved(sim, NOW - HOUR)
    sim.update(incident_id, customfield_10050=value)

    [incident] = read(sim, service_field='customfield_10050')

    assert [service.name for service in incident.services] == names


def test_started_field_moves_the_start_and_a_corrected_start_is_read(sim):
    incident_id = resolved(sim, NOW - HOUR, started_at=NOW - 2 * HOUR)
    sim.correct(incident_id, started_at=NOW - 5 * HOUR)  # now: the issue is updated

    [incident] = read(sim, until=datetime.now(UTC) + timedelta(seconds=1), started_field=IMPACT_START_FIELD)

    assert incident.started_at == NOW - 5 * HOUR


def test_resolutions_that_are_not_failures_and_the_jql(sim):
    done = resolved(sim, NOW - HOUR)
    sim.open_non_failures(NOW - 3 * HOUR, NOW - 2 * HOUR)  # duplicate, won't do, cannot reproduce, canceled, a task
    still_open = sim.open(NOW - HOUR)

    assert [i.id for i in read(sim)] == [done] and still_open != done
    assert len(read(sim, jql='project = INC')) == 2  # the Task too, when the JQL asks for it
    body = searches(sim)[0].body.decode()
    assert body.startswith('{"jql": "(issuetype = Incident) AND updated >= ')
    assert 'ORDER BY updated DESC, key DESC' in body


@pytest.mark.parametrize(
    'options, named',
    [
        ({'jql': 'project = OPS order  by created'}, '`jql`'),
        ({'username': None}, '`username`'),
        ({'api_token': None}, '`api_token`'),
        ({'api_url': None}, '`api_url`'),
    ],
)
def test_wrong_options_are_configuration_errors_naming_them(sim, options, named):
    with pytest.raises(ConfigurationError, match=named):
        source(sim, **options)


def test_invalid_jql_is_an_error_naming_jql_and_jiras_message(sim):
    with pytest.raises(SourceError) as refused:
        read(sim, jql='resolvedate >= "2026-01-01"')

    assert '`jql`' in str(refused.value) and "Field 'resolvedate' does not exist" in str(refused.value)


def test_rejected_credentials_name_the_options_not_the_token(sim):
    with pytest.raises(CredentialsRejected) as refused:
        read(sim, api_token='ATATT-wrong-token-0123456789')

    assert '`username`' in str(refused.value) and '`api_token`' in str(refused.value)
    assert 'ATATT-wrong-token' not in str(refused.value)


def test_an_error_page_echoing_the_basic_credential_never_shows_it(sim):
    basic = base64.b64encode(f'{sim.email}:{sim.token}'.encode()).decode()
    echo = json.dumps({'errorMessages': [f'Authorization: Basic {basic} is not allowed here']}).encode()
    sim.inject(Fault(status=400, body=echo, path=SEARCH_PATH))

    with pytest.raises(SourceError) as failed:
        read(sim)

    assert 'is not allowed here' in str(failed.value) and basic not in str(failed.value)
    assert basic in source(sim).secrets  # registered with the check, so its logs scrub it too


def test_the_owners_zone_is_read_once_an_hour_and_an_unknown_one_is_an_error(sim):
    reader = source(sim)
    read(sim, reader=reader)
    read(sim, reader=reader)
    assert len([r for r in sim.requests if r.path == MYSELF_PATH]) == 1
    assert len(searches(sim)) == 2  # a quiet site: one search a run

    sim.time_zone = 'Mars/Olympus_Mons'
    with pytest.raises(SourceError, match='Mars/Olympus_Mons'):
        read(sim)


def test_pages_follow_next_page_token_even_when_jira_sends_fewer_issues_than_asked(sim):
    incidents = [resolved(sim, NOW - HOUR - n * timedelta(seconds=1)) for n in range(105)]

    found = read(sim)  # 8 fields asked for: the simulator's Jira sends 50 issues a page, not 100

    assert sorted(i.id for i in found) == sorted(incidents)
    tokens = [b'nextPageToken' in request.body for request in searches(sim)]
    assert tokens == [False, True, True]


def test_late_and_corrected_resolutions_are_read_by_their_update_time(sim):
    backdated, corrected = sim.open(NOW - 40 * HOUR), sim.open(NOW - 40 * HOUR)
    sim.resolve_backdated(backdated, NOW - 30 * HOUR)  # resolved now, its resolution date of when it ended
    imported = sim.enter_resolved(NOW - 50 * HOUR, NOW - 48 * HOUR)  # imported once it was over
    sim.resolve(corrected, NOW - 20 * HOUR)
    sim.correct(corrected, resolved_at=NOW - 21 * HOUR)

    found = {i.id: i for i in read(sim, NOW - HOUR, datetime.now(UTC) + timedelta(seconds=1))}

    assert {i: found[i].resolved_at for i in (backdated, imported, corrected)} == {
        backdated: NOW - 30 * HOUR,
        imported: NOW - 48 * HOUR,
        corrected: NOW - 21 * HOUR,
    }
