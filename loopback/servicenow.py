"""A stateful loopback ServiceNow instance: the Table API's `GET /api/now/table/incident`, with its zone trap.

ServiceNow publishes no OpenAPI description we could find: this simulator and its minimal description
(`loopback/specs/servicenow.json`, hand-written) follow ServiceNow's Table API reference ("Table - GET
/now/table/{tableName}"), its encoded-query reference and the Table API FAQ (KB0534905). Every request, and
every answer with a documented status, is checked against that description (`spec_violations`).

- Auth: `Authorization: Basic` (a user's name and password) or `Bearer` (an OAuth access token); anything
  else is a 401 `{"error": {"message": "User Not Authenticated", ...}, "status": "failure"}`.
- OAuth: `POST /oauth_token.do` (form-encoded `grant_type=client_credentials`, `client_id`, `client_secret`),
  as ServiceNow's "OAuth inbound" documentation and its client credentials grant (Washington DC and later,
  `glide.oauth.inbound.client.credential.grant_type.enabled`) describe it: `{"access_token", "scope",
  "token_type": "Bearer", "expires_in": 1799}` (access tokens live 30 minutes by default). A wrong client is a
  401 `{"error_description": "access_denied", "error": "server_error"}`, as the live instance answers. Tokens
  expire by `clock` (injectable: a test's virtual clock); an expired one is a 401 like any unknown token.
- `sysparm_query`: an encoded query. Conditions `field<op>value` joined by `^` (and), `^OR` (or, with the
  previous condition), `^NQ` (a new query, or'ed with the others); `ORDERBY<field>` / `ORDERBYDESC<field>`.
  Operators `=`, `!=`, `>`, `>=`, `<`, `<=`, `IN`, `NOT IN`, `ISEMPTY`, `ISNOTEMPTY`, `LIKE`, `STARTSWITH`.
  A condition on a field the table does not have is dropped, as ServiceNow does by default
  (`glide.invalid_query.returns_no_rows` is false): the query then matches more than was meant. The
  simulator answers as ServiceNow would, and records the mistake as a violation.
- **Date literals are read in the instance's time zone** (`time_zone`, an IANA name with its DST rules;
  US/Pacific by default, as a new instance is): `resolved_at>=2026-11-30 14:00:00` on a US/Pacific instance
  means 22:00:00 UTC in winter. `javascript:gs.dateGenerate('2026-11-30','14:00:00')` is read in the same
  zone (the integration user has no zone of its own). A local time skipped by DST is read an hour later,
  a repeated one as its first occurrence (Java's rules). Stored and served date-times (`value`) are UTC,
  whole seconds: ServiceNow keeps no fraction.
- `sysparm_display_value`: `false` (default; a date-time is its UTC value, a reference `{link, value}` with
  the sys_id), `true` (display values: date-times in the instance's zone, references by name, choices by
  label) or `all` (every field `{display_value, value}`, references with `link` unless
  `sysparm_exclude_reference_link=true`). `sysparm_fields` picks fields; unknown ones are left out.
- Paging: `sysparm_limit` (default and most 10,000 rows: `glide.db.max_view_records`), `sysparm_offset`;
  `X-Total-Count` (unless `sysparm_no_count=true`) and a `Link` header with `first`, `prev`, `next`, `last`
  (unless `sysparm_suppress_pagination_header=true`).
- Rate limit (`rate_limit=(requests, seconds)`, off by default, as an instance has no REST rate limit rule
  until an admin adds one): 429 with `Retry-After` (seconds), `X-RateLimit-Limit`, `X-RateLimit-Reset`
  (UTC epoch seconds) and `X-RateLimit-Rule`.
- Lifecycle: closing keeps `resolved_at`; reopening (back to In Progress) clears it and counts `reopen_count`;
  every change moves `sys_updated_on` and `sys_mod_count`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from .core import COMPARE, Invalid, RateLimit, ToolSimulator, java_local, whole
from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

TABLE_PATH = '/api/now/table/'
OAUTH_PATH = '/oauth_token.do'
LIST_PATH = TABLE_PATH + 'incident'
MAX_ROWS = 10_000
PAGE_SIZE = 250  # what the check asks for; the conformance suite reads past one such page
STATES = {'1': 'New', '2': 'In Progress', '3': 'On Hold', '6': 'Resolved', '7': 'Closed', '8': 'Canceled'}
PRIORITIES = {'1': '1 - Critical', '2': '2 - High', '3': '3 - Moderate', '4': '4 - Low', '5': '5 - Planning'}
DATE_TIMES = frozenset({'opened_at', 'resolved_at', 'closed_at', 'sys_created_on', 'sys_updated_on', 'u_impact_start'})
REFERENCES = {  # field -> the table it refers to
    'business_service': 'cmdb_ci_service',
    'cmdb_ci': 'cmdb_ci',
    'assignment_group': 'sys_user_group',
    'u_environment': 'cmn_location',
    'caused_by': 'change_request',  # "Caused by Change"; its display value is the change's number
}
CHOICES = {'state': STATES, 'incident_state': STATES, 'priority': PRIORITIES}
FIELDS = (
    'sys_id', 'number', 'short_description', 'state', 'incident_state', 'priority', 'impact', 'urgency',
    'category', 'subcategory', 'close_code', 'active', 'reopen_count', 'sys_mod_count', *sorted(DATE_TIMES),
    *REFERENCES,
)  # fmt: skip
_PRIORITY_OF_SEVERITY = {'SEV0': '1', 'SEV1': '1', 'SEV2': '2', 'SEV3': '3', 'SEV4': '4', 'SEV5': '5'}
_OPERATORS = ('ISNOTEMPTY', 'ISEMPTY', 'NOT IN', 'IN', 'STARTSWITH', 'LIKE', '!=', '>=', '<=', '>', '<', '=')
_CONDITION = re.compile(r'([a-z_][a-z0-9_]*)(' + '|'.join(re.escape(op) for op in _OPERATORS) + r')(.*)', re.DOTALL)
_LITERAL = re.compile(r'(\d{4}-\d{2}-\d{2})(?: (\d{2}:\d{2}:\d{2}))?')
_DATE_GENERATE = re.compile(r"javascript:gs\.dateGenerate\('(\d{4}-\d{2}-\d{2})','(\d{2}:\d{2}:\d{2})'\)")
SN_TIME = '%Y-%m-%d %H:%M:%S'
_TOO_MANY = ('Too Many Requests', 'Rate limit rule exceeded: REST API rate limit for dora.reader')


class ServiceNowSimulator(ToolSimulator):
    source = 'servicenow'
    limits = RateLimit(429, lambda quota: _limit_headers(quota.wait), lambda quota: _error_document(*_TOO_MANY))
    check_without_served_as = False
    corrected = ('opened_at', 'resolved_at')
    list_path = LIST_PATH
    max_page_size = PAGE_SIZE
    # `expected_tags` are the core's: `Checkout API` (business service), `Payments Team` (assignment group), P1.

    def __init__(
        self,
        username: str = 'dora.reader',
        password: str = 'sim-servicenow-password',
        token: str = 'sim-servicenow-oauth-token',
        time_zone: str = 'America/Los_Angeles',
        rate_limit: tuple[int, float] | None = None,
        validate: bool = True,
    ):
        super().__init__(validate, rate_limit)
        self.username, self.password, self.token = username, password, token
        self.client_id, self.client_secret = 'sim-servicenow-client', 'sim-servicenow-client-secret'
        self.token_life = 1799  # seconds, as ServiceNow's default access token lifespan (1,800) answers
        self.clock = time.monotonic  # what OAuth tokens expire by
        self.issued: dict[str, float] = {}  # OAuth access token -> when it expires, by `clock`
        self.zone = ZoneInfo(time_zone)
        self.incidents: dict[str, dict] = {}  # sys_id -> fields as stored (date-times as UTC datetimes)
        self._references: dict[tuple[str, str], str] = {}  # (table, name) -> sys_id
        self._numbers = itertools.count(10001)

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, basic_auth: bool = False, oauth: bool = False, **options) -> dict:
        """With an OAuth access token in `api_token`, or `basic_auth` with the user's name and password, or
        `oauth` with an OAuth client (`client_id`, `client_secret`)."""
        auth = {'username': self.username, 'password': self.password} if basic_auth else {'api_token': self.token}
        if oauth:
            auth = {'client_id': self.client_id, 'client_secret': self.client_secret}
        return {'source': self.source, 'api_url': self.url, **auth, **options}

    def open(
        self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=ENVIRONMENT, severity=SEVERITY
    ) -> str:
        number = next(self._numbers)
        sys_id = hashlib.md5(f'incident-{number}'.encode()).hexdigest()
        priority = _PRIORITY_OF_SEVERITY.get((severity or '').upper(), '3')
        self.incidents[sys_id] = {
            'sys_id': sys_id,
            'number': f'INC{number:07d}',
            'short_description': title,
            'state': '2',
            'incident_state': '2',
            'priority': priority,
            **dict.fromkeys(('impact', 'urgency'), priority if priority in '123' else '3'),
            'category': 'software',
            'active': 'true',
            **dict.fromkeys(('subcategory', 'close_code', 'cmdb_ci', 'caused_by'), ''),
            **dict.fromkeys(('reopen_count', 'sys_mod_count'), '0'),
            **dict.fromkeys(('opened_at', 'sys_created_on', 'sys_updated_on'), _second(started_at)),
            **dict.fromkeys(('resolved_at', 'closed_at', 'u_impact_start')),
            'business_service': self._reference('business_service', service),
            'assignment_group': self._reference('assignment_group', team),
            'u_environment': self._reference('u_environment', environment),
        }
        return sys_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        self.lag.hold(incident_id, self.incidents[incident_id], hidden)
        self.update(incident_id, at, state='6', resolved_at=at, close_code='Solved (Permanently)')

    def touch(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, at)

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """Logged now, after the fact: `opened_at` and `resolved_at` set by hand, `sys_created_on` now."""
        incident_id = self.open(started_at, **open_options)
        self.update(incident_id, sys_created_on=datetime.now(UTC))
        self.resolve_backdated(incident_id, resolved_at)
        return incident_id

    def reopen(self, incident_id: str, at: datetime) -> None:
        reopened = str(int(self.incidents[incident_id]['reopen_count']) + 1)
        self.update(incident_id, at, state='2', resolved_at=None, closed_at=None, close_code='', reopen_count=reopened)

    def corrupt(self, incident_id: str) -> None:
        """Its `opened_at` is served as a value that is no date-time; the query still sees the real one."""
        self.serve_as(incident_id, opened_at={'display_value': 'last week', 'value': 'soon'})

    not_failures = (
        'canceled',
        'state New, with a resolve time',
        'state In Progress, with a resolve time',
        'state On Hold, with a resolve time',
    )

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        """Each with a resolve time (an import, a reopen that kept it): only the state tells."""
        ids = []
        for state in ('8', '1', '2', '3'):
            incident_id = self.open(started_at, title=f'Not a failure: {STATES[state]}')
            self.update(incident_id, resolved_at, state=state, resolved_at=resolved_at)
            ids.append(incident_id)
        return ids

    # -- more of ServiceNow, for tool-specific tests -------------------------------------------------
    def update(self, incident_id: str, at: datetime | None = None, **fields) -> None:
        """Sets fields as stored (date-times as datetimes, references by display name) at `at`."""
        with self._lock:
            incident = self.incidents[incident_id]
            for name, value in fields.items():
                if name in REFERENCES:
                    value = self._reference(name, value) if value else ''
                elif name in DATE_TIMES and value is not None:
                    value = _second(value)
                incident[name] = value
            if 'state' in fields:
                incident['incident_state'] = fields['state']
                incident['active'] = 'false' if fields['state'] in ('6', '7', '8') else 'true'
            if at is not None:
                incident['sys_updated_on'] = _second(at)
                incident['sys_mod_count'] = str(int(incident['sys_mod_count']) + 1)

    def relate_change(self, incident_id: str, number: str, at: datetime | None = None) -> None:
        """The incident was "Caused by Change" `number` (a change request, e.g. CHG0030042)."""
        self.update(incident_id, at, caused_by=number)

    def close(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, at, state='7', closed_at=at)

    def local_literal(self, moment: datetime) -> str:
        """How a date-time is written in an encoded query so that this instance reads it as `moment`."""
        return moment.astimezone(self.zone).strftime(SN_TIME)

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        if request.path == OAUTH_PATH:  # the client's own credentials are in the form (`_grant`)
            return None
        header = request.headers.get('authorization', '')
        if header.startswith('Bearer ') and self.issued.get(header[7:], 0) > self.clock():
            return None
        basic = base64.b64encode(f'{self.username}:{self.password}'.encode()).decode()
        if header not in (f'Basic {basic}', f'Bearer {self.token}'):
            return _error(401, 'User Not Authenticated', 'Required to provide Auth information')
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _error(400, 'Invalid request', message)

    def request_problem(self, request: Request) -> str | None:
        # The token endpoint is no part of the Table API the description covers: `_grant` checks its form.
        return None if request.path == OAUTH_PATH else super().request_problem(request)

    def route(self, request: Request) -> Response:
        if request.path == OAUTH_PATH:
            return self._grant(request)
        if request.method != 'GET' or not request.path.startswith(TABLE_PATH):
            return _error(400, 'Requested URI does not represent any resource', request.path)
        if request.path != LIST_PATH:
            return _error(400, 'Invalid table ' + request.path[len(TABLE_PATH) :], '')
        return self._list(request)

    def _grant(self, request: Request) -> Response:
        form = dict(parse_qsl(request.body.decode()))
        if request.method != 'POST' or form.get('grant_type') != 'client_credentials':
            return Response.json(400, {'error_description': 'invalid_request', 'error': 'invalid_request'})
        if (form.get('client_id'), form.get('client_secret')) != (self.client_id, self.client_secret):
            return Response.json(401, {'error_description': 'access_denied', 'error': 'server_error'})
        token = f'sim-oauth-access-{len(self.issued) + 1:04d}-{os.urandom(8).hex()}'
        self.issued[token] = self.clock() + self.token_life
        body = {'access_token': token, 'scope': 'useraccount', 'token_type': 'Bearer', 'expires_in': self.token_life}
        return Response.json(200, body)

    def _list(self, request: Request) -> Response:
        query = dict(request.query)
        display = query.get('sysparm_display_value', 'false')
        limit = min(whole(query.get('sysparm_limit', str(MAX_ROWS)), 'sysparm_limit'), MAX_ROWS)
        offset = whole(query.get('sysparm_offset', '0'), 'sysparm_offset')
        encoded = self._parse(query.get('sysparm_query', ''))
        selected = sorted((i for _, i in self.listed() if encoded.matches(i)), key=lambda i: i['sys_id'])
        for field, descending in reversed(encoded.order):
            selected.sort(key=lambda i, f=field: _sort_key(i.get(f)), reverse=descending)
        page = selected[offset : offset + limit]
        fields = [f for f in query.get('sysparm_fields', '').split(',') if f] or list(FIELDS)
        links = query.get('sysparm_exclude_reference_link') != 'true'
        result = [self._served(incident, fields, display, links) for incident in page]
        headers = {'Content-Type': 'application/json;charset=UTF-8'}
        if query.get('sysparm_no_count') != 'true':
            headers['X-Total-Count'] = str(len(selected))
        if query.get('sysparm_suppress_pagination_header') != 'true':
            headers['Link'] = self._links(request, offset, limit, len(selected))
        return Response(200, json.dumps({'result': result}).encode(), headers)

    def _parse(self, text: str) -> _EncodedQuery:
        encoded = _EncodedQuery(text, self.zone)
        for field in encoded.unknown_fields:
            self.spec_violations.append(f'{self.source}: sysparm_query names {field!r}, which the incident table lacks')
        return encoded

    def _served(self, incident: dict, fields: list[str], display: str, links: bool) -> dict:
        served = {}
        for name in fields:
            if name not in incident:
                continue
            value, shown = self._value(name, incident[name]), self._display(name, incident[name])
            if display == 'all':
                served[name] = {'display_value': shown, 'value': value}
                if name in REFERENCES and value and links:
                    served[name]['link'] = self._link(name, value)
            elif display == 'true':
                served[name] = shown
            elif name in REFERENCES and value:
                served[name] = value if not links else {'link': self._link(name, value), 'value': value}
            else:
                served[name] = value
        return self.served(incident['sys_id'], served, only_present=True)

    def _value(self, name: str, stored) -> str:
        if name in DATE_TIMES:
            return stored.strftime(SN_TIME) if stored else ''
        return stored or ''

    def _display(self, name: str, stored) -> str:
        if name in DATE_TIMES:
            return stored.astimezone(self.zone).strftime(SN_TIME) if stored else ''
        if name in REFERENCES:
            return next((n for (table, n), i in self._references.items() if i == stored), '') if stored else ''
        if name in CHOICES:
            return CHOICES[name].get(stored, stored)
        return stored or ''

    def _reference(self, field: str, name: str | None) -> str:
        if not name:
            return ''
        key = (REFERENCES[field], name)
        return self._references.setdefault(key, hashlib.md5(f'{key}'.encode()).hexdigest())

    def _link(self, field: str, sys_id: str) -> str:
        return f'{self.url}/api/now/table/{REFERENCES[field]}/{sys_id}'

    def _links(self, request: Request, offset: int, limit: int, total: int) -> str:
        prev, after = max(0, offset - limit) if offset > 0 else None, offset + limit if offset + limit < total else None
        rels = {'first': 0, 'prev': prev, 'next': after, 'last': max(0, (total - 1) // limit * limit)}
        return ','.join(
            f'<{self.link(request, sysparm_offset=at, sysparm_limit=limit)}>;rel="{rel}"'
            for rel, at in rels.items()
            if at is not None
        )


class _EncodedQuery:
    """An encoded query: or'ed queries (`^NQ`) of and'ed groups of or'ed conditions, and its order."""

    def __init__(self, text: str, zone: ZoneInfo):
        self.zone = zone
        self.order: list[tuple[str, bool]] = []
        self.unknown_fields: list[str] = []
        self.queries: list[list[list]] = []  # [query][and-term][or-condition] -> predicate
        for part in text.split('^NQ') if text else []:
            terms: list[list] = []
            for term in part.split('^'):
                if not term:
                    continue
                if term.startswith('ORDERBY'):
                    field = term.removeprefix('ORDERBY')
                    self.order.append((field.removeprefix('DESC'), field.startswith('DESC')))
                elif term.startswith('OR') and terms:
                    terms[-1].append(self._condition(term[2:]))
                else:
                    terms.append([self._condition(term)])
            self.queries.append(terms)

    def matches(self, incident: dict) -> bool:
        queries = [q for q in self.queries if q]
        return not queries or any(all(any(c(incident) for c in term) for term in q) for q in queries)

    def _condition(self, text: str):
        found = _CONDITION.fullmatch(text)
        if not found:
            raise Invalid(f'Invalid encoded query condition: {text[:80]}')
        field, operator, value = found.groups()
        if field not in FIELDS:
            self.unknown_fields.append(field)
            return lambda incident: True  # dropped, as ServiceNow drops a condition on an unknown field
        if operator in ('ISEMPTY', 'ISNOTEMPTY'):
            return lambda incident: (incident.get(field) in (None, '')) == (operator == 'ISEMPTY')
        if operator in ('IN', 'NOT IN'):
            wanted = set(value.split(','))
            return lambda incident: (incident.get(field) in wanted) == (operator == 'IN')
        if operator == 'LIKE':
            return lambda incident: value.lower() in str(incident.get(field) or '').lower()
        if operator == 'STARTSWITH':
            return lambda incident: str(incident.get(field) or '').lower().startswith(value.lower())
        bound = self._moment(value, field) if field in DATE_TIMES else value
        compare = COMPARE[operator]
        if field in DATE_TIMES:
            return lambda incident: incident.get(field) is not None and compare(incident[field], bound)
        if field in ('priority', 'state', 'incident_state', 'impact', 'urgency', 'reopen_count', 'sys_mod_count'):
            return lambda incident: compare(int(incident.get(field) or 0), int(bound))
        return lambda incident: compare(str(incident.get(field) or ''), bound)

    def _moment(self, value: str, field: str) -> datetime:
        """A literal in the instance's zone (Java's rules for skipped and repeated local times)."""
        found = _DATE_GENERATE.fullmatch(value) or _LITERAL.fullmatch(value)
        if not found:
            raise Invalid(f'Invalid date-time {value[:40]!r} for {field}')
        local = datetime.strptime(f'{found.group(1)} {found.group(2) or "00:00:00"}', SN_TIME)
        return java_local(local, self.zone)


def _second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _sort_key(value):
    if isinstance(value, datetime):
        return (1, value.timestamp())
    if value in (None, ''):
        return (0, 0)
    return (1, int(value)) if isinstance(value, str) and value.isdigit() else (2, str(value))


def _limit_headers(seconds: int) -> dict:
    limit = {'X-RateLimit-Limit': '100', 'X-RateLimit-Reset': str(int(time.time()) + seconds)}
    return {'Retry-After': str(seconds), **limit, 'X-RateLimit-Rule': '6e5d9b0a1b2c3d4e5f60718293a4b5c6'}


def _error_document(message: str, detail: str) -> dict:
    return {'error': {'message': message, 'detail': detail}, 'status': 'failure'}


def _error(status: int, message: str, detail: str) -> Response:
    return Response.json(status, _error_document(message, detail), {'Content-Type': 'application/json;charset=UTF-8'})
