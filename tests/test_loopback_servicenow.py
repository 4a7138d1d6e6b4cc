"""The loopback ServiceNow answers as the Table API does, traps included (over HTTP, checked by its description)."""

from datetime import UTC, datetime, timedelta

import pytest
import requests

from loopback.servicenow import LIST_PATH, ServiceNowSimulator

from .common import TIMEOUT, ZONES


@pytest.fixture
def servicenow(request):
    sim = ServiceNowSimulator(time_zone=getattr(request, 'param', 'America/Los_Angeles'))
    with sim:
        yield sim
    assert sim.spec_violations == []


def get(sim, auth=None, **params):
    auth = auth if auth is not None else (sim.username, sim.password)
    return requests.get(sim.url + LIST_PATH, params=params, auth=auth, timeout=TIMEOUT)


def numbers(response):
    return [record['number']['value'] for record in response.json()['result']]


def resolved_around(sim, moment, offsets=(-1, 0, 1)):
    numbers = {}
    for offset in offsets:
        incident = sim.open(moment - timedelta(hours=2))
        sim.resolve(incident, moment + timedelta(seconds=offset))
        numbers[offset] = sim.incidents[incident]['number']
    return numbers


@pytest.mark.parametrize('servicenow', ZONES, indirect=True)
def test_a_literal_written_in_the_instances_zone_cuts_exactly_there(servicenow):
    cut = datetime(2026, 11, 2, 9, 30, 15, tzinfo=UTC)
    by_offset = resolved_around(servicenow, cut)
    query = f'resolved_at>={servicenow.local_literal(cut)}^ORDERBYresolved_at'

    answer = get(servicenow, sysparm_query=query, sysparm_display_value='all', sysparm_fields='number,resolved_at')

    assert numbers(answer) == [by_offset[0], by_offset[1]]
    assert answer.json()['result'][0]['resolved_at']['value'] == '2026-11-02 09:30:15'  # the value is UTC


def test_a_literal_written_in_utc_is_read_in_the_instances_zone():
    with ServiceNowSimulator(time_zone='America/Los_Angeles') as sim:  # UTC-7 on 2026-10-01
        cut = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
        by_offset = resolved_around(sim, cut, offsets=(-3600, 3600, 6 * 3600, 8 * 3600))
        query = f'resolved_at>={cut:%Y-%m-%d %H:%M:%S}^ORDERBYresolved_at'  # 12:00 Pacific = 19:00 UTC

        assert numbers(get(sim, sysparm_query=query, sysparm_display_value='all')) == [by_offset[8 * 3600]]
        generated = "resolved_at>=javascript:gs.dateGenerate('2026-10-01','12:00:00')"
        assert numbers(get(sim, sysparm_query=generated, sysparm_display_value='all')) == [by_offset[8 * 3600]]


def test_local_times_dst_skips_or_repeats_are_read_as_java_reads_them():
    with ServiceNowSimulator(time_zone='America/New_York') as sim:
        repeated = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, the first of two 01:30s
        later = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
        skipped = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT; 02:30 local does not exist that day
        ids = {}
        for moment in (repeated, later, skipped):
            incident = sim.open(moment - timedelta(hours=1))
            sim.resolve(incident, moment)
            ids[moment] = sim.incidents[incident]['number']

        assert numbers(get(sim, sysparm_query='resolved_at=2026-11-01 01:30:00', sysparm_display_value='all')) == [
            ids[repeated]
        ]
        assert numbers(get(sim, sysparm_query='resolved_at=2026-03-08 02:30:00', sysparm_display_value='all')) == [
            ids[skipped]
        ]


def test_display_value_all_serves_utc_values_local_display_values_and_named_references(servicenow):
    opened = datetime(2026, 7, 1, 20, 0, 5, 900000, tzinfo=UTC)
    incident = servicenow.open(opened)
    servicenow.resolve(incident, opened + timedelta(hours=1))

    [record] = get(servicenow, sysparm_display_value='all').json()['result']
    [bare] = get(servicenow, sysparm_display_value='false', sysparm_exclude_reference_link='true').json()['result']

    assert record['opened_at'] == {'display_value': '2026-07-01 13:00:05', 'value': '2026-07-01 20:00:05'}
    assert record['state'] == {'display_value': 'Resolved', 'value': '6'}
    assert record['priority'] == {'display_value': '1 - Critical', 'value': '1'}
    service = record['business_service']
    assert service['display_value'] == 'Checkout API' and service['link'].endswith(
        '/cmdb_ci_service/' + service['value']
    )
    assert record['assignment_group']['display_value'] == 'Payments Team'
    assert record['cmdb_ci'] == {'display_value': '', 'value': ''}
    assert bare['business_service'] == service['value'] and bare['resolved_at'] == '2026-07-01 21:00:05'


def test_pages_carry_the_total_and_links(servicenow):
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for n in range(5):
        servicenow.resolve(servicenow.open(start), start + timedelta(minutes=n))

    first = get(servicenow, sysparm_query='ORDERBYresolved_at', sysparm_limit='2', sysparm_fields='number')
    last = requests.get(first.links['last']['url'], auth=(servicenow.username, servicenow.password), timeout=TIMEOUT)
    second = requests.get(first.links['next']['url'], auth=(servicenow.username, servicenow.password), timeout=TIMEOUT)

    assert first.headers['X-Total-Count'] == '5' and 'prev' not in first.links
    assert [r['number'] for r in second.json()['result']] == ['INC0010003', 'INC0010004']
    assert [r['number'] for r in last.json()['result']] == ['INC0010005'] and 'next' not in last.links


def test_credentials_basic_or_bearer_anything_else_is_a_401(servicenow):
    servicenow.open(datetime(2026, 6, 1, tzinfo=UTC))
    bearer = {'Authorization': f'Bearer {servicenow.token}'}

    assert requests.get(servicenow.url + LIST_PATH, headers=bearer, timeout=TIMEOUT).status_code == 200
    refused = get(servicenow, auth=(servicenow.username, 'wrong'))
    assert refused.status_code == 401
    assert refused.json() == {
        'error': {'message': 'User Not Authenticated', 'detail': 'Required to provide Auth information'},
        'status': 'failure',
    }


def test_a_condition_on_an_unknown_field_is_dropped_as_servicenow_does_and_recorded():
    with ServiceNowSimulator() as sim:
        sim.open(datetime(2026, 6, 1, tzinfo=UTC))

        answer = get(sim, sysparm_query='resolved_on>=2026-06-01 00:00:00')  # a misspelt field

        assert answer.status_code == 200 and len(answer.json()['result']) == 1
        assert sim.spec_violations == ["servicenow: sysparm_query names 'resolved_on', which the incident table lacks"]


def test_a_parameter_the_description_forbids_is_a_400_and_a_violation():
    with ServiceNowSimulator() as sim:
        answer = get(sim, sysparm_display_value='yes')

        assert answer.status_code == 400 and answer.json()['status'] == 'failure'
        assert len(sim.spec_violations) == 1 and 'sysparm_display_value' in sim.spec_violations[0]


def test_rate_limit_answers_429_with_its_headers():
    with ServiceNowSimulator(rate_limit=(1, 60)) as sim:
        assert get(sim).status_code == 200
        limited = get(sim)

        assert limited.status_code == 429 and sim.spec_violations == []
        assert int(limited.headers['Retry-After']) >= 1 and int(limited.headers['X-RateLimit-Reset']) > 0
        assert limited.json()['error']['message'] == 'Too Many Requests'


def test_reopen_clears_the_resolution_and_a_hidden_one_shows_only_when_revealed(servicenow):
    start = datetime.now(UTC) - timedelta(hours=3)
    reopened, hidden = servicenow.open(start), servicenow.open(start)
    servicenow.resolve(reopened, start + timedelta(hours=1))
    servicenow.reopen(reopened, start + timedelta(hours=2))
    servicenow.resolve(hidden, start + timedelta(hours=1), hidden=True)
    query = {'sysparm_query': 'resolved_atISNOTEMPTY', 'sysparm_display_value': 'all'}

    assert get(servicenow, **query).json()['result'] == []
    servicenow.reveal(hidden)
    [record] = get(servicenow, **query).json()['result']
    assert record['sys_id']['value'] == hidden
    assert record['sys_updated_on']['value'] > record['resolved_at']['value']
    assert servicenow.incidents[reopened]['reopen_count'] == '1'
