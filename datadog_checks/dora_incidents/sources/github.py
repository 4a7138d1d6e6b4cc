"""GitHub issues labelled as incidents: `GET /repos/{owner}/{repo}/issues` of each listed repository.

Listing: `state=closed&labels=<label>&since=<updated since>&sort=updated&direction=asc&per_page=100`. `since`
is the *updated* time (every closing, reopening, labelling moves it), so the reader's windows are on
`updated_at` (`Reading`'s default listing) and the cursor keeps the resolutions by their `closed_at`: an issue
closed hours ago and labelled only now is a late resolution, a reopened and closed again one a corrected one.

Paging: the `Link` header says whether there is a next page. The next page is asked for on the same path
with our own parameters (GitHub's `Link` URLs point at `/repositories/{id}/issues`; the token only ever goes
to `api_url`), by keyset: `since` = the last issue's `updated_at`, page 1 (the repeated issues of that
second are dropped as duplicates); only when a whole page shares one second does the page number advance.
An issue updated while a window is paged moves to the end of the list instead of shifting the pages, so
none is skipped. A repository read past the window's end (or to its last page) hands over to the next
repository. GitHub gives no total: a window holding more than a batch is halved by the reader.

Not failures: pull requests (the issues list includes them, with `pull_request`); issues closed as
`not_planned` or `duplicate`; open (reopened) issues. Times: start `created_at`, restore and resolution
`closed_at`. Identity: services = `service:<name>` labels, else the repository's name; team = the first
`team:<name>` label; severity = the first `severity:<name>` label; number `owner/repo#N`; url `html_url`.
Rate limits: GitHub answers 403 (or 429) when a limit is reached, with `x-ratelimit-remaining: 0` and
`x-ratelimit-reset` (primary) or `retry-after` (secondary): those are waited out, not taken as a refused
token.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import unquote, urlsplit

import requests

from datadog_checks.base import ConfigurationError

from ..incident import Named, SourceIncident
from .base import Credentials, Page, Request, Source, checked_times, parse_time, text, title, utc
from .http import Answer, JsonApi, SourceError, error_text, json_object

PAGE_SIZE = 100
DEFAULT_LABEL = 'incident'
NOT_FAILURES = frozenset({'not_planned', 'duplicate'})
# When GitHub names no wait for a rate limit, it asks for at least a minute: past one run's retry wait.
RATE_LIMIT_WAIT = 60.0
_REPOSITORY = re.compile(r'[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}')
_PREFIXES = ('service', 'team', 'severity')

TOKEN_HELP = 'a fine-grained token with "Issues: Read-only" access to the repositories of `repositories`'
HINTS = {
    401: 'GitHub rejected the token (wrong, revoked or expired): check `api_token`, which must be ' + TOKEN_HELP,
    403: 'the GitHub token may not read these issues: `api_token` must be ' + TOKEN_HELP,
    404: 'GitHub repository {repository} not found, or not visible to the token: check `repositories` and the '
    "token's repository access",
    429: 'GitHub rate limit reached (5,000 requests an hour per token, and secondary limits)',
}


class GitHubApi(JsonApi):
    """GitHub answers a spent rate limit with 403 as well as 429: those are waited out like a 429."""

    def retried(self, response: requests.Response) -> bool:
        return super().retried(response) or is_rate_limited(response)

    def wait(self, response: requests.Response, attempt: int) -> float:
        headers = response.headers
        if 'retry-after' in headers or headers.get('x-ratelimit-remaining') == '0':
            return super().wait(response, attempt)
        return RATE_LIMIT_WAIT if is_rate_limited(response) else super().wait(response, attempt)


def is_rate_limited(response: requests.Response) -> bool:
    if response.status_code not in (403, 429):
        return False
    headers = response.headers
    return 'retry-after' in headers or headers.get('x-ratelimit-remaining') == '0' or 'rate limit' in response.text


class GitHubSource(Source):
    name = 'github'
    display_name = 'GitHub'
    default_api_url = 'https://api.github.com'
    options = frozenset({'repositories', 'label'})
    scope_options = frozenset({'repositories', 'label'})
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        # Not beside the others (13 MB): `npm pack @octokit/openapi@23.0.2`, which packages
        # github/rest-api-description with the `x-octokit` extension; pass its directory with `--from`.
        'file': 'github-api.github.com.json',
        'from': (
            'github/rest-api-description (npm @octokit/openapi@23.0.2)',
            'package/generated/api.github.com.json',
            '23.0.2',
        ),
        'operations': [('GET', '/repos/{owner}/{repo}/issues')],
    }
    credentials = Credentials(api_token_help=TOKEN_HELP)

    def __init__(self, config, http, api_url: str, **clock):
        self.repositories = _repositories(config.repositories)
        self.label = text(config.label) or DEFAULT_LABEL
        super().__init__(config, http, api_url, **clock)
        self._window: tuple[datetime, datetime] | None = None  # the window being read (for the next page)

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {
            'Authorization': f'Bearer {token}',
            'Accept': 'application/vnd.github+json',
            'X-GitHub-Api-Version': '2022-11-28',
        }
        return GitHubApi(http, api_url.rstrip('/'), headers, _describer(token))

    # -- reading -------------------------------------------------------------------------------------
    def request(self, start: datetime, end: datetime, token) -> Request:
        self._window = (start, end)
        repository, since, number = _position(token) if token else (0, utc(start), 1)
        params = [
            ('state', 'closed'),
            ('labels', self.label),
            ('since', since),
            ('sort', 'updated'),
            ('direction', 'asc'),
            ('per_page', PAGE_SIZE),
            ('page', number),
        ]
        return Request(f'/repos/{self.repositories[repository]}/issues', params)

    def page(self, answer: Answer, token) -> Page:
        records = answer.body
        if not isinstance(records, list):
            raise SourceError('GitHub answered the issues list with something that is not a list')
        start, end = self._window
        repository, since, number = _position(token) if token else (0, utc(start), 1)
        updated = [_updated(record) for record in records]
        if records and 'next' in answer.links and (updated[-1] is None or updated[-1] < end):
            if None in (updated[0], updated[-1]):  # no time to go on from: the next page number
                return Page(records, _token(repository, since, number + 1))
            if updated[0] == updated[-1]:  # a whole page in one second: the next page of the same second
                return Page(records, _token(repository, since if number > 1 else utc(updated[0]), number + 1))
            return Page(records, _token(repository, utc(updated[-1]), 1))
        if repository + 1 < len(self.repositories):
            return Page(records, _token(repository + 1, utc(start), 1))
        return Page(records)

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(record.get('updated_at'), 'updated_at')

    def record_id(self, record) -> str | None:
        issue_id = record.get('id') if isinstance(record, dict) else None
        return str(issue_id) if type(issue_id) is int else None

    def incident(self, record) -> SourceIncident | None:
        """The resolution an issue describes, or None when it is not a failure (yet)."""
        if not isinstance(record, dict):
            raise TypeError(f'the record is a {type(record).__name__}, not an object')
        issue_id = self.record_id(record)
        if issue_id is None:
            raise ValueError(f'`id` is not a GitHub issue id: {str(record.get("id"))[:64]!r}')
        if record.get('pull_request') is not None or record.get('state') != 'closed':
            return None
        if record.get('state_reason') in NOT_FAILURES:
            return None
        labels = _labels(record)
        if self.label.lower() not in {label.lower() for label in labels}:
            return None  # unlabelled since: no longer an incident
        started_at = parse_time(record.get('created_at'), 'created_at')
        closed_at = parse_time(record.get('closed_at'), 'closed_at')
        checked_times(started_at, closed_at, closed_at)
        repository = _repository_of(record)
        number = f'{repository}#{record["number"]}' if type(record.get('number')) is int else None
        services = _prefixed(labels, 'service') or (repository.split('/')[1],)
        return SourceIncident(
            source=self.name,
            id=issue_id,
            number=number,
            title=title(record.get('title'), f'GitHub issue {number or issue_id}'),
            url=text(record.get('html_url')),
            started_at=started_at,
            restored_at=closed_at,
            resolved_at=closed_at,
            services=tuple(Named(None, name) for name in services),
            teams=tuple(Named(None, name) for name in _prefixed(labels, 'team')[:1]),
            severity=next(iter(_prefixed(labels, 'severity')), None),
        )


def _repositories(value) -> tuple[str, ...]:
    if not value:
        raise ConfigurationError('`repositories` is required with `source: github`: list them as `owner/name`')
    wrong = [name for name in value if not isinstance(name, str) or not _REPOSITORY.fullmatch(name)]
    if wrong:
        raise ConfigurationError(f'`repositories` must be `owner/name` values, got {wrong[0]!r}')
    return tuple(dict.fromkeys(value))


def _position(token: str) -> tuple[int, str, int]:
    """A page token: the repository's index, the `since` it is read from, the page number."""
    repository, since, number = token.split('|')
    return int(repository), since, int(number)


def _token(repository: int, since: str, number: int) -> str:
    return f'{repository}|{since}|{number}'


def _updated(record) -> datetime | None:
    try:
        return parse_time(record.get('updated_at'), 'updated_at')
    except (AttributeError, ValueError):
        return None


def _labels(record: dict) -> list[str]:
    """Label names: GitHub serves objects with a `name` (its description also allows plain strings)."""
    labels = record.get('labels') or []
    if not isinstance(labels, list):
        raise TypeError('`labels` is not a list')
    names = [label.get('name') if isinstance(label, dict) else label for label in labels]
    return [name for name in names if isinstance(name, str) and name]


def _prefixed(labels: list[str], prefix: str) -> tuple[str, ...]:
    """The values of `prefix:value` labels, prefix matched ignoring case, in label order."""
    values = []
    for label in labels:
        head, _, value = label.partition(':')
        if head.strip().lower() == prefix and value.strip():
            values.append(value.strip())
    return tuple(dict.fromkeys(values))


def _repository_of(record: dict) -> str:
    """`owner/name` from the issue's `repository_url` (`.../repos/owner/name`)."""
    path = urlsplit(text(record.get('repository_url')) or '').path.rstrip('/').split('/')
    if len(path) < 3 or path[-3] != 'repos':
        raise ValueError(f'`repository_url` is not a repository URL: {str(record.get("repository_url"))[:64]!r}')
    return f'{unquote(path[-2])}/{unquote(path[-1])}'


def _describer(token: str):
    def describe_error(response: requests.Response) -> str:
        status = 429 if is_rate_limited(response) else response.status_code
        repository = '/'.join(urlsplit(response.url or '').path.split('/')[2:4]) or 'of `repositories`'
        hint = HINTS.get(status, 'GitHub answered HTTP {status}').format(status=status, repository=repository)
        return error_text(hint, response, _message(response), [token])

    return describe_error


def _message(response: requests.Response) -> str:
    """GitHub's error body: `{"message": ..., "errors": [...]}`."""
    body = json_object(response)
    parts = [body.get('message')] + [str(error)[:100] for error in body.get('errors') or [] if error]
    return '; '.join(part for part in parts if isinstance(part, str) and part)
