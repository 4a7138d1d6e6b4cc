"""The reading loop with what the next tools need: a top-level array paged by `Link` with the total in
`X-Total-Count` (GitHub, ServiceNow), and a POST search with a JSON body paged by a cursor token (Jira).

A minimal tool over a loopback server, read through the real `Source.resolved` and `JsonApi`.
"""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from datadog_checks.base.utils.http import RequestsWrapper

from datadog_checks.dora_incidents.incident import SourceIncident
from datadog_checks.dora_incidents.sources.base import Page, Request, Source, parse_time
from datadog_checks.dora_incidents.sources.http import JsonApi, SourceError
from datadog_checks.dora_incidents.sources.reader import Resume
from loopback.server import LoopbackServer, Response

from .common import NO_DEADLINE, TIMEOUT, instance_config

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PAGE = 2


class Tracker(LoopbackServer):
    """`GET /issues?since&until&page` answers an array with `Link` and `X-Total-Count`; `POST /search` takes
    `{"from", "to", "cursor"}` and answers `{"issues": [...], "next": cursor|null}`."""

    def __init__(self, issues):
        super().__init__()
        self.issues = issues  # [{id, opened, closed}], ISO times

    def handle(self, request):
        if request.method == 'POST' and request.path == '/search':
            query = json.loads(request.body)
            matches = self._between(query['from'], query['to'])
            start = int(query.get('cursor') or 0)
            following = str(start + PAGE) if start + PAGE < len(matches) else None
            return Response.json(200, {'issues': matches[start : start + PAGE], 'next': following})
        query = dict(request.query)
        matches = self._between(query['since'], query['until'])
        number = int(query.get('page', 1))
        headers = {'X-Total-Count': str(len(matches))}
        if number * PAGE < len(matches):
            headers['Link'] = f'<{self.url}/issues?page={number + 1}>; rel="next", <{self.url}/issues>; rel="first"'
        return Response.json(200, matches[(number - 1) * PAGE : number * PAGE], headers)

    def _between(self, since, until):
        return [issue for issue in self.issues if since <= issue['closed'] < until]


class LinkTool(Source):
    name, display_name, default_api_url = 'links', 'Links', 'http://localhost'

    def make_api(self, http, api_url, token):
        return JsonApi(http, api_url, {}, lambda response: f'HTTP {response.status_code}')

    def request(self, start, end, token):
        if token:  # the `Link` URL keeps the page; the window goes along as parameters
            return Request(token, [('since', _iso(start)), ('until', _iso(end))])
        return Request('/issues', [('since', _iso(start)), ('until', _iso(end))])

    def page(self, answer, token):
        return Page(answer.body, answer.links.get('next'), int(answer.headers['X-Total-Count']))

    def incident(self, record):
        opened, closed = parse_time(record['opened'], 'opened'), parse_time(record['closed'], 'closed')
        return SourceIncident(self.name, record['id'], None, record['id'], None, opened, closed, closed)

    def listed_at(self, record, incident):
        return incident.resolved_at


class SearchTool(LinkTool):
    name = 'search'

    def request(self, start, end, token):
        return Request('/search', method='POST', json={'from': _iso(start), 'to': _iso(end), 'cursor': token})

    def page(self, answer, token):
        return Page(answer.body['issues'], answer.body['next'])


def _iso(moment):
    return moment.astimezone(UTC).isoformat().replace('+00:00', 'Z')


def issues(count):
    return [
        {'id': f'I{n}', 'opened': _iso(NOW - timedelta(hours=5)), 'closed': _iso(NOW - timedelta(hours=4, seconds=n))}
        for n in range(count)
    ]


@pytest.fixture
def tracker():
    with Tracker(issues(5)) as server:
        yield server


def make(cls, server, monotonic=time.monotonic):
    config = instance_config(source='pagerduty', api_token='t')
    return cls(config, RequestsWrapper({'timeout': TIMEOUT}, {}), server.url, monotonic=monotonic)


@pytest.mark.parametrize('cls', [LinkTool, SearchTool])
def test_a_window_is_read_page_by_page_whatever_the_paging(tracker, cls):
    [batch] = list(make(cls, tracker).resolved(NOW - timedelta(days=1), NOW, NO_DEADLINE))

    assert sorted(incident.id for incident in batch.incidents) == [f'I{n}' for n in range(5)]
    assert len(tracker.requests) == 3 and all(
        r.method == ('POST' if cls is SearchTool else 'GET') for r in tracker.requests
    )


def test_a_run_out_of_budget_resumes_from_its_next_page(tracker):
    clock = iter(range(100))  # each check of the clock is a second; the budget allows two requests
    source = make(LinkTool, tracker, monotonic=lambda: next(clock))

    [first] = list(source.resolved(NOW - timedelta(days=1), NOW, deadline=2))
    assert first.cut and first.through == NOW - timedelta(days=1) and len(first.incidents) == 4
    assert first.resume.token.endswith('page=3')
    resume = Resume.from_document(json.loads(json.dumps(first.resume.to_document())))  # as the cursor keeps it

    [second] = list(make(LinkTool, tracker).resolved(NOW - timedelta(days=1), NOW, NO_DEADLINE, resume))
    assert not second.cut and [incident.id for incident in second.incidents] == ['I4'] and second.through == NOW
    assert len(tracker.requests) == 3  # nothing read twice


def test_a_link_to_another_host_is_not_followed_with_the_credential(tracker):
    class Elsewhere(LinkTool):
        def page(self, answer, token):
            return Page(answer.body, 'https://elsewhere.example/issues?page=2', 5)

    with pytest.raises(SourceError, match='another host'):
        list(make(Elsewhere, tracker).resolved(NOW - timedelta(days=1), NOW, NO_DEADLINE))
    assert len(tracker.requests) == 1
