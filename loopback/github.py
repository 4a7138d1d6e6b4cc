"""A stateful loopback GitHub REST API: `GET /repos/{owner}/{repo}/issues`, as its published description says.

What it does like GitHub (the derived description `loopback/specs/github.json`, from github/rest-api-description
as packaged by npm `@octokit/openapi` 23.0.2, plus GitHub's REST reference where the description is silent:
the `Link` header's `/repositories/{id}` URLs, the 404 for a repository the token cannot see, the secondary
rate limit; no recorded live answer was replayed):

- `Authorization: Bearer <token>` (or `token <token>`); a wrong or missing token is a 401
  `{"message": "Bad credentials", ...}`; a repository the token cannot see is a 404 `Not Found`, as GitHub
  answers for private repositories.
- The list is a top-level JSON array of issues, pull requests included (they carry `pull_request`).
  `state` (`open` default, `closed`, `all`), `labels` (comma-separated; an issue must carry every one, names
  compared ignoring case), `since` (the *updated* time: `updated_at >= since`), `sort` (`created` default,
  `updated`, `comments`), `direction` (`desc` default), `per_page` (default 30, at most 100), `page` from 1.
  Other described filters answer 422 "not simulated", so that no test relies on a filter silently ignored.
- Paging: a `Link` header with `next`, `last`, `first`, `prev` as GitHub writes them: absolute URLs on
  `/repositories/{repository id}/issues` keeping the request's query (that path is not in the description:
  a client should read the page number from it, not fetch it).
- Times: `YYYY-MM-DDTHH:MM:SSZ`, whole seconds, UTC. `closed_at` is when the issue was last closed; reopening
  clears it and sets `state_reason: reopened`; closing sets `state_reason` (`completed`, `not_planned`,
  `duplicate`). Every change (closing, reopening, labelling) moves `updated_at`.
- Rate limits: every answer carries `x-ratelimit-limit` / `-remaining` / `-used` / `-reset` (UTC epoch
  seconds) / `-resource: core`. Past the primary limit (5,000 an hour): 403 with `x-ratelimit-remaining: 0`
  and "API rate limit exceeded". A secondary limit: 403 (or 429) with `retry-after` in seconds.
- Time: a closure is listed from its `closed_at` on. A `hidden` closure (a lagging replica) is listed as the
  issue was before it, until `reveal`; then as it was written, `updated_at` and `closed_at` of the closure.
  (An issue that becomes an incident late, labelled after it was closed, is `label`: that moves `updated_at`.)

A request the description rejects is answered with a 422, as GitHub answers a request it cannot validate.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import replace
from datetime import UTC, datetime

from .core import Invalid, Quota, RateLimit, ToolSimulator, bounds, iso, within
from .driver import SERVICE, SEVERITY, TEAM, TITLE
from .server import Fault, Request, Response

REPOSITORY = 'acme/checkout'
LABEL = 'incident'
DEFAULT_PAGE_SIZE = 30
MAX_PAGE_SIZE = 100
RATE_LIMIT = (5000, 3600)  # requests per token per window of seconds (a fixed window)
DOCS = 'https://docs.github.com/rest'
_ISSUES = re.compile(r'/repos/([^/]+)/([^/]+)/issues')
_SIMULATED = {'state', 'labels', 'since', 'sort', 'direction', 'per_page', 'page'}
JSON = 'application/json; charset=utf-8'
# What this simulator leaves unset on every issue.
_UNUSED = {'locked': False, 'assignee': None, 'assignees': [], 'milestone': None, 'comments': 0,
           'author_association': 'MEMBER', 'active_lock_reason': None, 'body': None}  # fmt: skip


def _limit_headers(quota: Quota) -> dict:
    return {
        'x-ratelimit-limit': str(quota.limit),
        'x-ratelimit-remaining': str(quota.remaining),
        'x-ratelimit-used': str(quota.limit - quota.remaining),
        'x-ratelimit-reset': str(int(quota.reset + 0.999)),
        'x-ratelimit-resource': 'core',
    }


def _rate_limit_exceeded(quota: Quota) -> dict:
    return _error('API rate limit exceeded for user ID 1.', '403', f'{DOCS}/overview/rate-limits-for-the-rest-api')


class GitHubSimulator(ToolSimulator):
    source = 'github'
    # The primary limit: a fixed window per token, answered 403 with `x-ratelimit-remaining: 0`.
    limits = RateLimit(403, _limit_headers, _rate_limit_exceeded, window='fixed', every_answer=True, content_type=JSON)
    max_page_size = MAX_PAGE_SIZE
    edits_times = False  # `created_at` and `closed_at` are stamped when they happen: nobody edits them
    corrupted = 'created_at'
    reveal_touches = False

    def __init__(self, token='ghp_simGitHubToken0123456789', rate_limit=RATE_LIMIT, prefix='', validate=True):
        super().__init__(validate, rate_limit)
        self.token = token
        self.prefix = prefix  # GitHub Enterprise Server serves the REST API under `/api/v3`
        self.repositories: dict[str, int] = {}  # 'owner/name' (as created) -> repository id
        self.issues: dict[str, dict] = {}  # issue id -> the issue as stored, timestamps as datetimes
        self._ids = itertools.count(3_000_000_001)
        self._numbers: dict[str, itertools.count] = {}
        self.add_repository(REPOSITORY)

    @property
    def list_path(self) -> str:
        return f'{self.prefix}/repos/{REPOSITORY}/issues'

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return {**super().instance(), 'api_url': self.url + self.prefix, 'repositories': [REPOSITORY], **options}

    def open(self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=None, severity=SEVERITY):
        """An issue labelled `incident`, `service:<service>`, `team:<team>`, `severity:<severity>`.
        GitHub has no environments: `environment` is ignored."""
        labels = [LABEL] + [f'{prefix}:{value}' for prefix, value in (('service', service), ('team', team)) if value]
        return self.create(
            REPOSITORY, started_at, title=title, labels=labels + ([f'severity:{severity}'] * bool(severity))
        )

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        self.close(incident_id, at, hidden=hidden)

    # -- late and corrected resolutions --------------------------------------------------------------
    # GitHub stamps `created_at` and `closed_at` with the moment they happen and lets nobody edit them. What
    # reaches the check late is the label: an issue closed long ago that someone labels `incident` now.
    # `enter_resolved` (the core's) is then an issue opened and closed in the past, labelled an incident only now.
    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """GitHub cannot backdate a closure: the nearest thing is an issue closed at `at` without its label
        (taken off by mistake) and labelled again now."""
        with self._lock:
            self.issues[incident_id]['labels'].remove(LABEL)
            self.close(incident_id, at)
            self.label(incident_id, LABEL, datetime.now(UTC))

    def reopen(self, incident_id: str, at: datetime) -> None:
        with self._lock:
            self.lag.show(incident_id)
            issue = self.issues[incident_id]
            issue.update(state='open', state_reason='reopened', closed_at=None, closed_by=None, updated_at=_second(at))

    not_failures = ('closed as not planned', 'closed as duplicate', 'a pull request, not an issue')

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            labels = [LABEL, f'service:{SERVICE}']
            not_planned = self.create(REPOSITORY, started_at, title='Not a failure: not planned', labels=labels)
            self.close(not_planned, resolved_at, reason='not_planned')
            duplicate = self.create(REPOSITORY, started_at, title='Not a failure: duplicate', labels=labels)
            self.close(duplicate, resolved_at, reason='duplicate')
            pull = self.create(REPOSITORY, started_at, title='Not a failure: a pull request', labels=labels, pull=True)
            self.close(pull, resolved_at)
            self.issues[pull]['pull_request']['merged_at'] = resolved_at
            return [not_planned, duplicate, pull]

    # -- more of GitHub, for tool-specific tests -----------------------------------------------------
    def secondary_rate_limited(self, seconds: int = 1, status: int = 403) -> Fault:
        """A secondary limit: `retry-after` in seconds, the primary budget not spent."""
        headers = {**_limit_headers(Quota(5000, 3600, 4000, time.time() + 3600)), 'Retry-After': str(seconds)}
        message = 'You have exceeded a secondary rate limit. Please wait a few minutes before you try again.'
        body = _error(message, str(status), f'{DOCS}/overview/rate-limits-for-the-rest-api')
        answer = Response.json(status, body, {'Content-Type': JSON, **headers})
        return Fault(status=status, headers=answer.headers, body=answer.body, path=self.list_path)

    def add_repository(self, name: str) -> None:
        with self._lock:
            if name.lower() not in {known.lower() for known in self.repositories}:
                self.repositories[name] = 1_000 + len(self.repositories)
                self._numbers[name.lower()] = itertools.count(1)

    def create(
        self, repository: str, created_at: datetime, *, title: str = TITLE, labels=(LABEL,), pull: bool = False
    ) -> str:
        """Opens an issue (or a pull request) in a repository; returns its id."""
        with self._lock:
            self.add_repository(repository)
            issue_id = str(next(self._ids))
            self.issues[issue_id] = {
                'repository': repository,
                'number': next(self._numbers[repository.lower()]),
                'title': title,
                'labels': list(labels),
                'state': 'open',
                'state_reason': None,
                'created_at': _second(created_at),
                'updated_at': _second(created_at),
                'closed_at': None,
                'closed_by': None,
                'pull_request': {'merged_at': None} if pull else None,
            }
            return issue_id

    def close(self, issue_id: str, at: datetime, *, reason: str = 'completed', hidden: bool = False) -> None:
        with self._lock:
            issue = self.issues[issue_id]
            self.lag.hold(issue_id, issue, hidden, at)
            reason = None if issue['pull_request'] is not None else reason  # pull requests have no reason
            at = _second(at)
            issue.update(state='closed', state_reason=reason, closed_at=at, closed_by='octocat', updated_at=at)

    def label(self, issue_id: str, name: str, at: datetime) -> None:
        """Adds a label at `at` (say, `incident` on an issue closed hours ago): only `updated_at` moves."""
        with self._lock:
            self.issues[issue_id]['labels'].append(name)
            self.issues[issue_id]['updated_at'] = _second(at)

    # -- HTTP ----------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if not request.path.startswith(self.prefix + '/'):
            return Response.json(404, _error('Not Found', '404'))
        return super().handle(replace(request, path=request.path[len(self.prefix) :]))

    def request_problem(self, request: Request) -> str | None:
        return super().request_problem(replace(request, path=request.path.removeprefix(self.prefix)))

    def authorize(self, request: Request) -> Response | None:
        if request.headers.get('authorization', '') not in (f'Bearer {self.token}', f'token {self.token}'):
            return Response.json(401, _error('Bad credentials', '401'))
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        body = {'message': 'Validation Failed', 'errors': [message[:500]], 'documentation_url': DOCS, 'status': '422'}
        return Response.json(422, body)

    def route(self, request: Request) -> Response:
        match = _ISSUES.fullmatch(request.path)
        repository = self._repository(*match.groups()) if match and request.method == 'GET' else None
        if repository is None:
            return Response.json(404, _error('Not Found', '404'))
        return self._list(request, repository)

    def _repository(self, owner: str, name: str) -> str | None:
        wanted = f'{owner}/{name}'.lower()
        return next((known for known in self.repositories if known.lower() == wanted), None)

    def _list(self, request: Request, repository: str) -> Response:
        query = dict(request.query)
        unknown = sorted(set(query) - _SIMULATED)
        if unknown:
            raise Invalid(f'{", ".join(unknown)}: not simulated by the loopback GitHub')
        state = query.get('state', 'open')
        wanted = {name.strip().lower() for name in query.get('labels', '').split(',') if name.strip()}
        since = bounds(request.query, {'since': ('updated_at', '>=')})
        now = datetime.now(UTC)
        listed = ((issue_id, self.lag.listed(issue_id, issue, now)) for issue_id, issue in self.issues.items())
        selected = [
            (issue_id, issue)
            for issue_id, issue in listed
            if issue['repository'] == repository
            and state in ('all', issue['state'])
            and wanted <= {label.lower() for label in issue['labels']}
            and within(issue.get, since)
        ]
        field = 'updated_at' if query.get('sort') == 'updated' else 'created_at'  # `comments`: all have none
        selected.sort(key=lambda item: (item[1][field], int(item[0])), reverse=query.get('direction', 'desc') == 'desc')
        size = min(max(1, int(query.get('per_page', DEFAULT_PAGE_SIZE))), MAX_PAGE_SIZE)
        number = max(1, int(query.get('page', 1)))
        pages = max(1, -(-len(selected) // size))
        body = [self._served(issue_id, issue) for issue_id, issue in selected[(number - 1) * size : number * size]]
        # GitHub's `Link`: on `/repositories/{id}/issues`, only the relations that exist for this page.
        relations = [('prev', number - 1)] * (number > 1) + [('next', number + 1), ('last', pages)] * (number < pages)
        relations += [('first', 1)] * (number > 1)
        path = f'{self.prefix}/repositories/{self.repositories[repository]}/issues'
        link = ', '.join(f'<{self.link(request, path, page=page)}>; rel="{rel}"' for rel, page in relations)
        return Response.json(200, body, {'Content-Type': JSON, **({'Link': link} if link else {})})

    def _served(self, issue_id: str, issue: dict) -> dict:
        api = f'{self.url}{self.prefix}/repos/{issue["repository"]}'
        html = f'https://github.com/{issue["repository"]}'
        number = issue['number']
        kind = 'pull' if issue['pull_request'] is not None else 'issues'
        served = {
            'url': f'{api}/issues/{number}',
            'repository_url': api,
            'labels_url': f'{api}/issues/{number}/labels{{/name}}',
            'comments_url': f'{api}/issues/{number}/comments',
            'events_url': f'{api}/issues/{number}/events',
            'html_url': f'{html}/{kind}/{number}',
            'id': int(issue_id),
            'node_id': f'I_kwDO{issue_id}',
            'number': number,
            'title': issue['title'],
            'user': _user('octocat'),
            'labels': [self._label(issue['repository'], name) for name in issue['labels']],
            'state': issue['state'],
            'created_at': iso(issue['created_at']),
            'updated_at': iso(issue['updated_at']),
            'closed_at': iso(issue['closed_at']) if issue['closed_at'] else None,
            'closed_by': _user(issue['closed_by']) if issue['closed_by'] else None,
            **_UNUSED,
        }
        if issue['state_reason'] is not None:
            # GitHub serves null for an issue never closed and for a pull request; the description's enum
            # (nullable, without null among its values) rejects null, so the key is left out instead.
            served['state_reason'] = issue['state_reason']
        if issue['pull_request'] is not None:
            merged = issue['pull_request']['merged_at']
            pull = {'url': f'{api}/pulls/{number}', 'html_url': f'{html}/pull/{number}'}
            pull.update(diff_url=f'{html}/pull/{number}.diff', patch_url=f'{html}/pull/{number}.patch')
            served.update(draft=False, pull_request={**pull, 'merged_at': iso(merged) if merged else None})
        return self.served(issue_id, served)

    def _label(self, repository: str, name: str) -> dict:
        label_id = 208_045_946 + sum(map(ord, name))
        return {
            'id': label_id,
            'node_id': f'LA_kwDO{label_id}',
            'url': f'{self.url}{self.prefix}/repos/{repository}/labels/{name}',
            'name': name,
            'color': 'd73a4a' if name == LABEL else 'ededed',
            'default': False,
            'description': None,
        }


_USER_URLS = ('followers', 'following{/other_user}', 'gists{/gist_id}', 'starred{/owner}{/repo}', 'subscriptions',
              'organizations:orgs', 'repos', 'events{/privacy}', 'received_events')  # fmt: skip


def _user(login: str) -> dict:
    profile = f'https://api.github.com/users/{login}'
    urls = {}
    for url in _USER_URLS:
        name, _, path = url.partition(':')
        urls[f'{name.split("{")[0]}_url'] = f'{profile}/{path or name}'
    return {
        'login': login,
        'id': 583231,
        'node_id': 'MDQ6VXNlcjU4MzIzMQ==',
        'avatar_url': 'https://avatars.githubusercontent.com/u/583231?v=4',
        'gravatar_id': '',
        'url': profile,
        'html_url': f'https://github.com/{login}',
        **urls,
        'type': 'User',
        'user_view_type': 'public',
        'site_admin': False,
    }


def _error(message: str, status: str, documentation_url: str = DOCS) -> dict:
    return {'message': message, 'documentation_url': documentation_url, 'status': status}


def _second(moment: datetime) -> datetime:
    """GitHub keeps whole seconds."""
    return moment.replace(microsecond=0)
