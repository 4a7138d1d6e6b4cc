"""The loopback PagerDuty behaves like PagerDuty where it matters: the traps the check is built around."""

import pytest
import requests

from loopback.pagerduty import PagerDutySimulator

from .common import TIMEOUT, ago

HEADERS = {'Accept': 'application/vnd.pagerduty+json;version=2', 'Content-Type': 'application/json'}


def get(pagerduty, path, **params):
    headers = {**HEADERS, 'Authorization': f'Token token={pagerduty.token}'}
    return requests.get(pagerduty.url + path, params=params, headers=headers, timeout=TIMEOUT)


def test_since_on_incidents_filters_on_created_at_which_is_why_the_check_reads_log_entries(pagerduty, now):
    old = pagerduty.trigger('PCHKOUT', ago(now, days=40))
    pagerduty.resolve(old, ago(now, minutes=5))
    since = ago(now, hours=1).isoformat()

    incidents = get(pagerduty, '/incidents', since=since, **{'statuses[]': 'resolved', 'time_zone': 'UTC'}).json()
    entries = get(pagerduty, '/log_entries', since=since, time_zone='UTC', **{'include[]': 'incidents'}).json()

    assert incidents['incidents'] == []
    assert [e['incident']['id'] for e in entries['log_entries'] if e['type'] == 'resolve_log_entry'] == [old]


def test_offset_past_ten_thousand_is_refused(pagerduty):
    response = get(pagerduty, '/log_entries', limit=100, offset=9_901)
    assert response.status_code == 400 and 'Offset' in response.text


@pytest.fixture
def unchecked_pagerduty():
    """Without the spec check: some requests below are ones the spec itself forbids."""
    with PagerDutySimulator() as sim:
        sim.add_service('PCHKOUT', 'Checkout API', teams=[('PTEAM01', 'Payments Team')])
        yield sim


def test_since_without_a_zone_is_read_in_the_account_time_zone(unchecked_pagerduty, now):
    pagerduty = unchecked_pagerduty
    incident = pagerduty.trigger('PCHKOUT', ago(now, minutes=30))
    naive_utc = ago(now, hours=1).replace(tzinfo=None).isoformat()

    as_utc = get(pagerduty, '/log_entries', since=naive_utc, time_zone='UTC').json()['log_entries']
    as_account = get(pagerduty, '/log_entries', since=naive_utc).json()['log_entries']  # America/Los_Angeles

    assert incident in {e['incident']['id'] for e in as_utc}
    assert as_account == []  # 1 hour ago in UTC read as Pacific time lies hours in the future


def test_rate_limit_answers_429_with_ratelimit_reset(pagerduty):
    pagerduty.rate_limit = (2, 60)
    statuses = [get(pagerduty, '/log_entries').status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert int(get(pagerduty, '/log_entries').headers['ratelimit-reset']) > 0


def test_wrong_token_is_401_and_team_filter_without_the_ability_is_402(unchecked_pagerduty):
    pagerduty = unchecked_pagerduty
    pagerduty.abilities.clear()
    assert requests.get(pagerduty.url + '/log_entries', headers=HEADERS, timeout=TIMEOUT).status_code == 401
    assert get(pagerduty, '/incidents', **{'team_ids[]': 'PTEAM01'}).status_code == 402
