"""The loopback Jira answers the enhanced JQL search as Jira Cloud does, traps included (over HTTP)."""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests

from loopback.jira import MYSELF_PATH, OLD_SEARCH_PATH, SEARCH_PATH, JiraSimulator

from .common import TIMEOUT, ZONES


@pytest.fixture
def jira(request):
    sim = JiraSimulator(time_zone=getattr(request, 'param', 'Australia/Sydney'))
    with sim:
        yield sim
    assert sim.spec_violations == []


def search(sim, jql, *, post=False, auth=None, **params):
    auth = auth if auth is not None else (sim.email, sim.token)
    if post:
        return requests.post(sim.url + SEARCH_PATH, json={'jql': jql, **params}, auth=auth, timeout=TIMEOUT)
    return requests.get(sim.url + SEARCH_PATH, params={'jql': jql, **params}, auth=auth, timeout=TIMEOUT)


def keys(response):
    """The issues found, by the ids the simulator's driver methods name them by."""
    assert response.status_code == 200, response.text
    site = urlsplit(response.url).netloc
    return [f'{site}:{issue["id"]}' for issue in response.json()['issues']]


@pytest.mark.parametrize('jira', ZONES, indirect=True)
def test_a_minute_literal_is_read_in_the_token_owners_zone(jira):
    cut = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    ids = {}
    for seconds in (-1, 0, 59.999, 60):
        ids[seconds] = jira.open(cut - timedelta(hours=1))
        jira.resolve(ids[seconds], cut + timedelta(seconds=seconds))
    zone = requests.get(jira.url + MYSELF_PATH, auth=(jira.email, jira.token), timeout=TIMEOUT).json()['timeZone']
    assert zone == jira.time_zone
    after = jira.local_literal(cut + timedelta(minutes=1))
    window = f'resolutiondate >= "{jira.local_literal(cut)}" AND resolutiondate < "{after}"'

    found = keys(search(jira, f'{window} ORDER BY resolutiondate ASC', fields='key,resolutiondate'))

    assert found == [ids[0], ids[59.999]]


def test_a_literal_written_in_utc_is_read_in_the_owners_zone_and_seconds_are_refused():
    with JiraSimulator(time_zone='Asia/Kolkata') as jira:  # UTC+05:30
        at = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
        issue = jira.open(at - timedelta(hours=1))
        jira.resolve(issue, at)

        # Meant as UTC, 13:00 would include the 12:00 UTC resolution; read in Kolkata it is 07:30 UTC.
        assert keys(search(jira, 'resolutiondate <= "2026-06-01 13:00"', fields='key')) == []
        assert keys(search(jira, 'resolutiondate <= "2026-06-01 17:30"', fields='key')) == [issue]
        refused = search(jira, 'resolutiondate >= "2026-06-01 17:30:00"', fields='key')
        assert refused.status_code == 400 and "'yyyy-MM-dd HH:mm'" in refused.json()['errorMessages'][0]


def test_dst_repeated_and_skipped_minutes_are_read_as_java_reads_them():
    with JiraSimulator(time_zone='America/New_York') as jira:
        first, second = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
        one, two = jira.open(first - timedelta(hours=1)), jira.open(first - timedelta(hours=1))
        jira.resolve(one, first)  # 01:30 EDT
        jira.resolve(two, second)  # 01:30 EST, an hour later

        assert keys(search(jira, 'resolutiondate >= "2026-11-01 01:30" ORDER BY key', fields='key')) == [one, two]
        assert keys(search(jira, 'resolutiondate > "2026-11-01 01:30"', fields='key')) == [two]
        # 02:30 does not exist on 2026-03-08: read as 03:30 EDT (07:30 UTC)
        assert keys(search(jira, 'resolutiondate < "2026-03-08 02:30"', fields='key')) == []


def test_issues_are_served_with_jiras_shapes_in_the_owners_zone(jira):
    created = datetime(2026, 1, 10, 1, 2, 3, 456789, tzinfo=UTC)
    issue = jira.open(created)
    jira.resolve(issue, created + timedelta(hours=2))

    [served] = search(jira, 'issuetype = Incident', fields='*all').json()['issues']
    fields = served['fields']

    assert fields['created'] == '2026-01-10T12:02:03.456+1100'  # Sydney in summer, no colon in the offset
    assert fields['resolutiondate'] == '2026-01-10T14:02:03.456+1100'
    assert fields['components'][0]['name'] == 'Checkout API' and fields['customfield_10001']['name'] == 'Payments Team'
    assert fields['priority']['name'] == 'SEV1' and fields['status']['statusCategory']['key'] == 'done'
    assert fields['resolution']['name'] == 'Done'
    assert search(jira, 'issuetype = Incident').json()['issues'] == [
        {'id': served['id'], 'self': served['self'], 'expand': ''}
    ]  # `id` only by default


@pytest.mark.parametrize('post', [False, True], ids=['GET', 'POST'])
def test_pages_follow_next_page_token_until_is_last(jira, post):
    start = datetime(2026, 6, 1, tzinfo=UTC)
    for n in range(5):
        jira.resolve(jira.open(start), start + timedelta(minutes=n))
    jql = 'project = INC ORDER BY resolutiondate ASC'
    fields = ['key'] if post else 'key'

    first = search(jira, jql, post=post, fields=fields, maxResults=2).json()
    second = search(jira, jql, post=post, fields=fields, maxResults=2, nextPageToken=first['nextPageToken']).json()
    third = search(jira, jql, post=post, fields=fields, maxResults=2, nextPageToken=second['nextPageToken']).json()

    found = [i['key'] for i in first['issues'] + second['issues'] + third['issues']]
    assert found == [f'INC-{n}' for n in range(1, 6)]
    assert (first['isLast'], third['isLast'], 'nextPageToken' in third) == (False, True, False)
    other = search(jira, 'project = INC', post=post, fields=fields, nextPageToken=first['nextPageToken'])
    assert other.status_code == 400  # a token belongs to its query


def test_the_old_search_is_gone_and_an_unknown_field_is_a_400(jira):
    gone = requests.get(jira.url + OLD_SEARCH_PATH, params={'jql': 'project = INC'}, timeout=TIMEOUT)
    assert gone.status_code == 410 and '/rest/api/3/search/jql' in gone.json()['errorMessages'][0]

    unknown = search(jira, 'resolvedate >= "2026-01-01"')
    assert unknown.status_code == 400
    assert unknown.json()['errorMessages'] == [
        "Field 'resolvedate' does not exist or you do not have permission to view it."
    ]


def test_wrong_credentials_are_a_plain_text_401(jira):
    refused = search(jira, 'project = INC', auth=(jira.email, 'wrong'))
    assert refused.status_code == 401 and refused.text == 'Client must be authenticated to access this resource.'
    assert requests.get(jira.url + MYSELF_PATH, timeout=TIMEOUT).status_code == 401


def test_rate_limit_answers_429_with_an_iso_reset():
    with JiraSimulator(rate_limit=(1, 60)) as jira:
        assert search(jira, 'project = INC').status_code == 200
        limited = search(jira, 'project = INC')

        assert limited.status_code == 429 and int(limited.headers['Retry-After']) >= 1
        assert datetime.fromisoformat(limited.headers['X-RateLimit-Reset']) > datetime.now(UTC)
        assert jira.spec_violations == []


def test_not_failures_reopen_and_a_late_resolution(jira):
    start = datetime.now(UTC) - timedelta(hours=3)
    non_failures = jira.open_non_failures(start, start + timedelta(hours=1))
    reopened, hidden = jira.open(start), jira.open(start)
    jira.resolve(reopened, start + timedelta(hours=1))
    jira.reopen(reopened, start + timedelta(hours=2))
    jira.resolve(hidden, start + timedelta(hours=1), hidden=True)
    done = (
        'issuetype = Incident AND resolutiondate is not EMPTY'
        ' AND resolution not in (Duplicate, "Won\'t Do", "Cannot Reproduce", Declined)'
    )

    assert keys(search(jira, done, fields='key')) == []
    jira.reveal(hidden)
    [served] = search(jira, done, fields='key,updated,resolutiondate').json()['issues']
    assert jira.reported_id(served['id']) == hidden and served['fields']['updated'] > served['fields']['resolutiondate']
    assert len(keys(search(jira, 'resolutiondate is not EMPTY', fields='key'))) == len(non_failures) + 1
