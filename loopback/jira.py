"""A stateful loopback Jira Cloud site (Jira Service Management incidents included): the enhanced JQL search.

Atlassian publishes an OpenAPI description of the Jira Cloud platform REST API at a URL, not in a public
repository we could pin; this simulator and its minimal description (`loopback/specs/jira.json`) are written
by hand from the REST API v3 reference ("Issue search": `GET`/`POST /rest/api/3/search/jql`; "Myself") and
the JQL reference. What the live site does beyond those pages (the old search's 410 Gone, fewer issues than
asked when many fields are) is what Atlassian's reference and changelog announce; no recorded live answer was
replayed.

- Auth: `Authorization: Basic base64(email:api_token)`; anything else is a 401 with Jira's plain-text body
  "Client must be authenticated to access this resource.".
- `GET /rest/api/3/myself`: the token owner, with the **`timeZone`** the site reads JQL date literals in.
- `GET|POST /rest/api/3/search/jql`: `jql`, `fields` (default `id` only; `*all`, `*navigable`, `-name`),
  `maxResults` (default 50; at most 100, or 5,000 when only `id`/`key` are asked for, and 50 past five
  fields: Jira returns fewer issues than asked when many fields are, without saying how many), `nextPageToken`
  (opaque; bound to its query: a token used with another JQL is a 400). The answer is `issues`,
  `nextPageToken` (absent on the last page) and `isLast`: no total. `GET /rest/api/3/search` (the old
  search) answers 410 Gone.
- JQL, as much as the check and the tests write: clauses joined by `AND` (parentheses allowed; `OR` and
  `NOT` are a 400 here), `=`, `!=`, `>`, `>=`, `<`, `<=`, `[not] in`, `is [not] EMPTY` on `project`,
  `issuetype`, `status`, `resolution`, `priority`, `key`, `created`, `updated`, `resolutiondate`; `ORDER BY
  field [ASC|DESC], ...`. A field it does not know is a 400 naming it, as Jira answers.
- **Date literals** (`"yyyy-MM-dd HH:mm"`, `"yyyy/MM/dd HH:mm"`, `"yyyy-MM-dd"`, `"yyyy/MM/dd"`) have
  minute precision and are read in the token owner's zone (an IANA name with its DST rules; a skipped local
  time moves forward, a repeated one is its first occurrence). Seconds are a 400 listing the valid formats,
  as Jira answers.
- Date-times are served in the token owner's zone with milliseconds and an offset without a colon
  (`2026-11-30T06:05:12.345-0800`), as Jira serves them.
- Rate limit (`rate_limit=(requests, seconds)`, off by default): 429 with `Retry-After` (seconds) and
  `X-RateLimit-Reset` as an ISO 8601 time, `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `RateLimit-Reason`.
- Workflow (Jira Service Management's incident workflow): Open, Work in progress (category "In Progress"),
  Resolved and Closed ("Done"), Canceled ("Done", resolution "Declined"). Resolving sets a resolution and
  `resolutiondate`; reopening clears both. Every change moves `updated`.
- Late visibility: a hidden resolution leaves the search showing the issue as it was until `reveal`,
  which shows its original `resolutiondate` and an `updated` of the reveal.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from .core import COMPARE, Invalid, RateLimit, ToolSimulator, iso, java_local
from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

SEARCH_PATH = '/rest/api/3/search/jql'
OLD_SEARCH_PATH = '/rest/api/3/search'
MYSELF_PATH = '/rest/api/3/myself'
DEFAULT_PAGE, MAX_PAGE, MAX_ID_PAGE = 50, 100, 5000
# Jira "may return fewer items per page where a large number of fields are requested"; how many is
# undocumented: here, past MANY_FIELDS fields a page holds at most MANY_FIELDS_PAGE issues.
MANY_FIELDS, MANY_FIELDS_PAGE = 5, 50
TEAM_FIELD = 'customfield_10001'  # Atlassian's Team field
IMPACT_START_FIELD = 'customfield_10120'  # a date-time custom field: "Impact start"
CATEGORIES = {'new': (2, 'To Do'), 'indeterminate': (4, 'In Progress'), 'done': (3, 'Done')}
STATUSES = {'Open': ('1', 'new'), 'Work in progress': ('3', 'indeterminate'), 'Resolved': ('5', 'done'),
            'Closed': ('6', 'done'), 'Canceled': ('10002', 'done')}  # fmt: skip
RESOLUTIONS = {'Done': '10000', "Won't Do": '10001', 'Duplicate': '10002', 'Cannot Reproduce': '10003',
               'Declined': '10004'}  # fmt: skip
INVALID_DATE = (
    "Date value '{value}' for field '{field}' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', "
    "'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."
)
GONE = (
    'The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full migration '
    'guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046'
)
UNAUTHENTICATED = b'Client must be authenticated to access this resource.'


class JiraSimulator(ToolSimulator):
    source = 'jira'
    limits = RateLimit(429, lambda quota: _limit_headers(quota.wait), lambda quota: _errors('Rate limit exceeded.'))
    check_without_served_as = False
    corrected = (IMPACT_START_FIELD, 'resolutiondate')  # a corrected start is the impact start (`created` stays)
    corrupted = 'created'
    list_path = SEARCH_PATH
    max_page_size = MAX_PAGE

    def __init__(self, email='dora-reader@example.com', token='ATATT3xFfGF0sim-jira-api-token-0123456789',
                 time_zone='Australia/Sydney', rate_limit: tuple[int, float] | None = None, validate=True):  # fmt: skip
        super().__init__(validate, rate_limit)
        self.email, self.token = email, token
        self.time_zone = time_zone
        self.zone = ZoneInfo(time_zone)
        # By issue id: a key changes when an issue moves to another project. The driver's ids are the ids the
        # check reports, `<site>:<issue id>` (numeric ids repeat from site to site).
        self.issues: dict[str, dict] = {}  # id -> issue, date-times as UTC datetimes
        self._numbers = itertools.count(1)

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return super().instance(**{'username': self.email, 'team_field': TEAM_FIELD, **options})

    def open(
        self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=ENVIRONMENT, severity=SEVERITY
    ) -> str:
        """An Incident issue; Jira has no environment field (`environment` is left out, `env` is the instance's)."""
        number = next(self._numbers)
        issue_id, key = str(10000 + number), f'INC-{number}'
        self.issues[issue_id] = {
            'id': issue_id,
            'key': key,
            'fields': {
                'summary': title,
                'issuetype': {'id': '10100', 'name': 'Incident', 'subtask': False},
                'project': {'id': '10000', 'key': 'INC', 'name': 'IT Incidents'},
                'status': _status('Open'),
                **dict.fromkeys(('resolution', 'resolutiondate', IMPACT_START_FIELD)),
                **dict.fromkeys(('created', 'updated'), _milli(started_at)),
                'priority': {'id': str(hash(severity) % 10 + 1), 'name': severity} if severity else None,
                'components': [_component(service)] if service else [],
                'labels': [],
                'versions': [],
                TEAM_FIELD: _team(team) if team else None,
            },
        }
        return self.reported_id(issue_id)

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False, resolution: str = 'Done') -> None:
        incident_id = _issue_id(incident_id)
        self.lag.hold(incident_id, self.issues[incident_id], hidden)
        self.update(incident_id, at, status=_status('Resolved'), resolution=_resolution(resolution), resolutiondate=at)

    def reveal(self, incident_id: str) -> None:
        self.lag.show(_issue_id(incident_id))
        self.touch(incident_id, datetime.now(UTC))

    # Entered or resolved late: Jira sets `resolutiondate` itself; an import (Jira's CSV importer takes the created
    # and resolved dates), or an app's post-function, writes an earlier one (the core's defaults).
    def touch(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, at)

    def reopen(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, at, status=_status('Work in progress'), resolution=None, resolutiondate=None)

    not_failures = (
        'resolved as Duplicate',
        "resolved as Won't Do",
        'resolved as Cannot Reproduce',
        'canceled (resolution Declined)',
        'a Task, not an Incident (outside the JQL)',
    )

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        ids = []
        for resolution in ('Duplicate', "Won't Do", 'Cannot Reproduce'):
            ids.append(self.open(started_at, title=f'Not a failure: {resolution}'))
            self.resolve(ids[-1], resolved_at, resolution=resolution)
        ids.append(self.open(started_at, title='Not a failure: canceled'))
        self.update(ids[-1], resolved_at, status=_status('Canceled'), resolution=_resolution('Declined'))
        self.update(ids[-1], None, resolutiondate=resolved_at)
        ids.append(self.open(started_at, title='Not a failure: a task'))
        self.update(ids[-1], None, issuetype={'id': '10002', 'name': 'Task', 'subtask': False})
        self.resolve(ids[-1], resolved_at)
        return ids

    # -- more of Jira, for tool-specific tests -------------------------------------------------------
    def update(self, issue_id: str, at: datetime | None = None, **fields) -> None:
        """Sets fields as stored (date-times as datetimes); `at` moves `updated`."""
        with self._lock:
            stored = self.issues[_issue_id(issue_id)]['fields']
            for name, value in fields.items():
                stored[name] = _milli(value) if isinstance(value, datetime) else value
            if at is not None:
                stored['updated'] = _milli(at)

    def relate_change(self, issue_id: str, *versions: str, at: datetime | None = None) -> None:
        """The issue's "Affects versions" (`versions`, the standard field): Version objects of project INC."""
        self.update(issue_id, at, versions=[_version(name) for name in versions])

    def close(self, issue_id: str, at: datetime) -> None:
        self.update(issue_id, at, status=_status('Closed'))

    def serve_as(self, issue_id: str, **fields) -> None:
        super().serve_as(_issue_id(issue_id), **fields)

    def reported_id(self, issue_id: str) -> str:
        """The id the check reports an issue under: the site and the issue's numeric id."""
        return f'{urlsplit(self.url).netloc}:{issue_id}'

    def local_literal(self, moment: datetime) -> str:
        """A JQL date literal for the minute of `moment`, as the token owner's zone writes it."""
        return moment.astimezone(self.zone).strftime('%Y-%m-%d %H:%M')

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        if request.path == OLD_SEARCH_PATH:
            return Response.json(410, _errors(GONE))
        expected = 'Basic ' + base64.b64encode(f'{self.email}:{self.token}'.encode()).decode()
        if request.headers.get('authorization') != expected:
            return Response(401, UNAUTHENTICATED, {'Content-Type': 'text/plain;charset=UTF-8'})
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return Response.json(400, _errors(message), {'Content-Type': 'application/json;charset=UTF-8'})

    def route(self, request: Request) -> Response:
        if request.path == MYSELF_PATH:
            return Response.json(200, self._myself())
        return Response.json(200, self._search(_search_parameters(request)))

    def _myself(self) -> dict:
        account = {'accountId': '5b10ac8d82e05b22cc7d4ef5', 'accountType': 'atlassian', 'active': True}
        user = {'emailAddress': self.email, 'displayName': 'DORA reader', 'timeZone': self.time_zone, 'locale': 'en_US'}
        return {'self': f'{self.url}/rest/api/3/user?accountId={account["accountId"]}', **account, **user}

    def _search(self, parameters: dict) -> dict:
        jql = parameters.get('jql') or ''
        query = _Jql(jql, self.zone)
        fields = parameters.get('fields') or ['id']
        most = MAX_ID_PAGE if set(fields) <= {'id', 'key'} else MAX_PAGE
        if len(set(fields) - {'id', 'key'}) > MANY_FIELDS:
            most = MANY_FIELDS_PAGE
        size = min(int(parameters.get('maxResults', DEFAULT_PAGE)), most)
        binding = hashlib.sha256(json.dumps([jql, sorted(fields)]).encode()).hexdigest()[:16]
        offset = _offset(parameters.get('nextPageToken'), binding)
        listed = [self.lag.listed(issue_id, issue) for issue_id, issue in self.issues.items()]
        selected = sorted((i for i in listed if query.matches(i)), key=lambda i: -int(i['id']))
        for field, descending in reversed(query.order):
            selected.sort(key=lambda i, f=field: _sort_key(i, f), reverse=descending)
        page = selected[offset : offset + size]
        answer = {'issues': [self._served(issue, fields) for issue in page], 'isLast': offset + size >= len(selected)}
        if not answer['isLast']:
            answer['nextPageToken'] = base64.urlsafe_b64encode(f'{binding}:{offset + size}'.encode()).decode()
        return answer

    def _served(self, issue: dict, wanted: list[str]) -> dict:
        stored = issue['fields']  # the system fields, and the custom fields the issue has a value for
        names = set(stored) if {'*all', '*navigable'} & set(wanted) else {f for f in wanted if f in stored}
        names -= {f[1:] for f in wanted if f.startswith('-')}
        fields = self.served(issue['id'], {name: self._value(stored[name]) for name in sorted(names)}, True)
        served = {'id': issue['id'], 'self': f'{self.url}/rest/api/3/issue/{issue["id"]}', 'expand': ''}
        if 'key' in wanted or names:
            served['key'] = issue['key']
        if names:
            served['fields'] = fields
        return served

    def _value(self, value):
        if isinstance(value, datetime):
            text = value.astimezone(self.zone).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]
            return text + value.astimezone(self.zone).strftime('%z')
        return copy.deepcopy(value)


def _issue_id(incident_id: str) -> str:
    return incident_id.rsplit(':', 1)[-1]


def _search_parameters(request: Request) -> dict:
    """GET's query or POST's body as one dict; `fields` as a list."""
    if request.method == 'POST':
        parameters = json.loads(request.body or b'{}')
        fields = parameters.get('fields')
    else:
        parameters = dict(request.query)
        fields = [f for value in (v for k, v in request.query if k == 'fields') for f in value.split(',')]
    parameters['fields'] = [f.strip() for f in fields or [] if f.strip()]
    return parameters


def _offset(token: str | None, binding: str) -> int:
    if not token:
        return 0
    try:
        bound, offset = base64.urlsafe_b64decode(token.encode()).decode().split(':')
        if bound == binding:
            return int(offset)
    except ValueError:
        pass
    raise Invalid('The provided next page token is invalid or expired.')


# -- JQL: what the check and the tests write ---------------------------------------------------------

_VALUE = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[^\s(),"\'=<>!]+'
_CLAUSE = re.compile(
    rf'(?P<field>{_VALUE})\s*(?:(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>{_VALUE})|(?P<empty>is(?:\s+not)?)\s+(?:empty|null)'
    rf'|(?P<among>(?:not\s+)?in)\s*\((?P<values>[^)]*)\))\s*\)*',
    re.IGNORECASE,
)
_ALIASES = {'type': 'issuetype', 'issuekey': 'key', 'resolved': 'resolutiondate'}
_FIELDS = {'project', 'issuetype', 'status', 'resolution', 'priority', 'key', 'created', 'updated', 'resolutiondate'}
DATE_FIELDS = {'created', 'updated', 'resolutiondate'}


class _Jql:
    """A JQL query in the subset the module's docstring lists: `matches`, a predicate over issues, and `order`."""

    def __init__(self, text: str, zone: ZoneInfo):
        self.zone = zone
        where, *order = re.split(r'\border\s+by\b', text, maxsplit=1, flags=re.IGNORECASE)
        parts = re.split(r'\band\b', where, flags=re.IGNORECASE) if where.strip() else []
        clauses = [self._clause(part) for part in parts]
        self.matches = lambda issue: all(clause(issue) for clause in clauses)
        self.order = []
        for term in order[0].split(',') if order else []:
            field, *direction = term.split() or ['']
            name = self._field(field, "Not able to sort using field '{}'.")
            self.order.append((name, [word.upper() for word in direction] == ['DESC']))

    @staticmethod
    def _field(text: str, refused: str) -> str:
        field = text.strip('"\'')
        name = _ALIASES.get(field.lower(), field.lower())
        if name not in _FIELDS:
            raise Invalid(refused.format(field))
        return name

    def _clause(self, part: str):
        found = _CLAUSE.fullmatch(part.lstrip(' (').rstrip())
        if not found:
            raise Invalid(
                f"Error in the JQL Query: the loopback Jira reads clauses joined by AND, not '{part.strip()}'."
            )
        name = self._field(found['field'], "Field '{}' does not exist or you do not have permission to view it.")
        if found['empty']:
            negated = found['empty'].lower() != 'is'
            return lambda issue: (name != 'key' and issue['fields'][name] in (None, [])) != negated
        if found['among']:
            values = {_unquoted(value).lower() for value in re.findall(_VALUE, found['values'])}
            negated = found['among'].lower() != 'in'
            return lambda issue: bool(_names(issue, name) & values) != negated
        operator, value, compare = found['op'], _unquoted(found['value']), COMPARE[found['op']]
        if name in DATE_FIELDS:
            bound = self._moment(value, name)
            return lambda issue: issue['fields'][name] is not None and compare(issue['fields'][name], bound)
        if operator not in ('=', '!='):
            raise Invalid(f"The operator '{operator}' is not supported by the '{name}' field.")
        return lambda issue: compare(value.lower() in _names(issue, name), True)

    def _moment(self, value: str, field: str) -> datetime:
        """A date literal in the token owner's zone, at minute precision."""
        for pattern in ('%Y-%m-%d %H:%M', '%Y/%m/%d %H:%M', '%Y-%m-%d', '%Y/%m/%d'):
            try:
                return java_local(datetime.strptime(value, pattern), self.zone)
            except ValueError:
                continue
        raise Invalid(INVALID_DATE.format(value=value, field=field))


def _unquoted(value: str) -> str:
    return value[1:-1] if value[0] in '"\'' else value


def _names(issue: dict, name: str) -> set[str]:
    """What `=`/`in` compare a clause's values with: the field's names and ids, lowercased."""
    if name == 'key':
        return {issue['key'].lower(), issue['id']}
    value = issue['fields'][name]
    return {str(value[k]).lower() for k in ('id', 'key', 'name') if value.get(k) is not None} if value else set()


def _sort_key(issue: dict, name: str):
    if name == 'key':
        return (1, int(issue['id']))
    value = issue['fields'][name]
    return (0, 0) if value is None else (1, value.timestamp() if name in DATE_FIELDS else min(_names(issue, name)))


def _status(name: str) -> dict:
    status_id, key = STATUSES[name]
    category_id, category = CATEGORIES[key]
    return {'id': status_id, 'name': name, 'statusCategory': {'id': category_id, 'key': key, 'name': category}}


def _resolution(name: str) -> dict:
    return {'id': RESOLUTIONS[name], 'name': name}


def _version(name: str) -> dict:
    version_id = str(10200 + int(hashlib.sha256(name.encode()).hexdigest()[:4], 16))
    url = f'https://acme.atlassian.net/rest/api/3/version/{version_id}'
    release = {'archived': False, 'released': True, 'releaseDate': '2026-11-30'}
    return {'self': url, 'id': version_id, 'name': name, **release}


def _component(name: str) -> dict:
    return {'id': str(10000 + int(hashlib.md5(name.encode()).hexdigest()[:4], 16)), 'name': name}


def _team(name: str) -> dict:
    team_id = hashlib.md5(name.encode()).hexdigest()
    return {'id': f'{team_id[:8]}-{team_id[8:12]}-{team_id[12:16]}-{team_id[16:20]}-{team_id[20:]}', 'name': name}


def _milli(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _limit_headers(seconds: int) -> dict:
    reset = iso(datetime.now(UTC) + timedelta(seconds=seconds))
    limit = {'X-RateLimit-Limit': '100', 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': reset}
    return {'Retry-After': str(seconds), **limit, 'RateLimit-Reason': 'jira-burst-based'}


def _errors(*messages: str) -> dict:
    return {'errorMessages': list(messages), 'errors': {}}
