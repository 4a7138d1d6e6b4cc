"""A stateful loopback Opsgenie: the Incident API's list, and the service and team look-ups that name its ids.

Validated against `loopback/specs/opsgenie.json` (hand-written from opsgenie/opsgenie-oas, the vendor's 2021
multi-file Swagger 2.0 description, completed from opsgenie/opsgenie-go-sdk-v2). Where each piece comes from:

- `GET /v1/incidents` with `query` (required), `offset` (from 0), `limit` (default 20, at most 100), `sort`
  (`createdAt`, `tinyId`, `message`, `status`, `isSeen`, `owner`; never `updatedAt`) and `order` (default
  `desc`): the description. The answer `{"data", "paging": {"first", "last", "next"?}, "totalCount", "took",
  "requestId"}`: the SDK's `ListResult` and Atlassian's Incident API page (the 2021 description lacks
  `totalCount`).
- The search (Atlassian's "Search syntax for incidents"): `field: value`, `field: (a OR b)`, `AND`, `OR`,
  parentheses; `createdAt` in Unix milliseconds with `<`, `<=`, `>`, `>=` is its only time field. Simulated
  fields: `status`, `priority`, `tag`, `createdAt`, `tinyId`; any other is a 422 as Opsgenie answers an invalid
  query ("not simulated" for a documented one, so that no test relies on a field ignored).
- Incident fields: `id` (a UUID), `tinyId` (a counter that rolls over: `tiny_id_limit`), `message`, `status`
  (`open` -> `resolved` -> `closed`; a resolved one may be reopened, keeping its `impactEndDate`), `priority`
  (`P1`...`P5`), `createdAt`, `updatedAt` (every change), `impactStartDate` (defaults to `createdAt`, editable),
  `impactEndDate` (set at the resolution, editable), `impactedServices` (service ids only), `ownerTeam` and
  `responders` (team ids), `tags`, `links.web`: the SDK's `incident.Incident` and the Incident API page.
- Date-times: UTC with milliseconds, trailing zeros dropped (`2023-09-26T17:49:10.17Z`, `...T15:37:31Z`), as the
  live service writes them (Atlassian's documented answers).
- `GET /v1/services/{id}` and `GET /v2/teams/{identifier}`: `{"data": {"id", "name", ...}, "took", "requestId"}`;
  an unknown id is a 404 (the SDK's service/ and team/ packages; Atlassian's Service and Team API pages).
- Errors `{"message", "took", "requestId"}`: 401 `Could not authenticate` (a key other than `GenieKey <token>`);
  429 with `X-RateLimit-State: THROTTLED`, `X-RateLimit-Reason` and `X-RateLimit-Period-In-Sec`, no
  `Retry-After` (Atlassian's "API rate limiting" page).
- `GET /v2/incident-timelines/{id}/entries`: `{"data": {"entries": [...], "nextOffset"?}}`, newest first, entries
  `{"id", "group", "type", "eventTime", ...}` of types `IncidentCreated`, `IncidentResolved`, `IncidentReopened`,
  `IncidentClosed` (Atlassian's Incident Timeline API page; the answer's shape as open-source clients read it).
- Opsgenie has no test or drill flag (teams tag those and use `query`): the one non-failure is an incident
  reopened after its resolution, still open, its stale `impactEndDate` kept.
"""

from __future__ import annotations

import copy
import itertools
import re
import uuid
from datetime import UTC, datetime
from typing import ClassVar

from .core import COMPARE, Invalid, Quota, RateLimit, ToolSimulator, iso
from .driver import SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

LIST_PATH = '/v1/incidents'
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
SERVICE_PATH = re.compile(r'/v1/services/([^/]+)')
TEAM_PATH = re.compile(r'/v2/teams/([^/]+)')
TIMELINE_PATH = re.compile(r'/v2/incident-timelines/([^/]+)/entries')
# Fields of Atlassian's "Search syntax for incidents": those simulated, and those refused as not simulated.
SIMULATED_FIELDS = frozenset({'status', 'priority', 'tag', 'createdAt', 'tinyId'})
UNSIMULATED = {
    'message',
    'description',
    'owner',
    'isSeen',
    'responders',
    'teams',
    'impactedServices',
    'extraProperties',
}
_COMPARISON = re.compile(r'(\w+)\s*(<=|>=|<|>)\s*(\d+)')
_MATCH = re.compile(r'(\w+)\s*:\s*(\([^()]*\)|"[^"]*"|[^\s()]+)')
TIMES = ('createdAt', 'updatedAt', 'impactStartDate')  # served always (`impactEndDate` once set)
THROTTLED = 'You are making too many requests! To avoid errors, we recommend you limit requests.'


def opsgenie_priority(severity: str) -> str:
    """The driver's `SEV1` as an Opsgenie priority: `P1` (P1 is the highest, P5 the lowest)."""
    match = re.fullmatch(r'SEV-?(\d)', severity.upper())
    return f'P{min(5, max(1, int(match.group(1))))}' if match else 'P3'


def _throttled(quota: Quota) -> dict:
    # The period's end, not the policy's: Opsgenie names no reset, and this is all the check can wait by.
    return {
        'X-RateLimit-State': 'THROTTLED',
        'X-RateLimit-Reason': 'INTEGRATION',
        'X-RateLimit-Period-In-Sec': str(quota.wait),
    }


class OpsgenieSimulator(ToolSimulator):
    source = 'opsgenie'
    list_path = LIST_PATH
    reveal_touches = False
    corrected, corrupted = ('impactStartDate', 'impactEndDate'), 'impactEndDate'
    max_page_size = MAX_PAGE_SIZE
    limits = RateLimit(429, _throttled, lambda quota: _body(message=THROTTLED))
    # Services and teams by their names (looked up by id); `P1` as `p1`; no environments.
    expected_tags: ClassVar[dict[str, str]] = {**ToolSimulator.expected_tags, 'severity': 'p1'}

    def __init__(self, token='sim-opsgenie-genie-key', rate_limit=None, tiny_id_limit=1_000_000, validate=True):
        super().__init__(validate, rate_limit)
        self.token = token
        self.incidents: dict[str, dict] = {}  # id -> fields, times as datetimes
        self.services: dict[str, str] = {}  # id -> name
        self.teams: dict[str, str] = {}  # id -> name
        self.timelines: dict[str, list[tuple[str, datetime]]] = {}  # id -> (entry type, event time), oldest first
        self._tiny_ids = itertools.cycle(range(1, tiny_id_limit + 1))

    # -- the driver interface ------------------------------------------------------------------------
    def open(self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=None, severity=SEVERITY):
        """Created at `started_at` (impact from then). Opsgenie has no environments."""
        with self._lock:
            incident_id = str(uuid.uuid4())
            at = _ms(started_at)
            team_id = self._id_of(self.teams, team) if team else None
            self.incidents[incident_id] = {
                'tinyId': str(next(self._tiny_ids)),
                'message': title,
                'status': 'open',
                'priority': opsgenie_priority(severity) if severity else 'P3',
                **dict.fromkeys(TIMES, at),
                'impactEndDate': None,
                'impactedServices': [self._id_of(self.services, service)] if service else [],
                'ownerTeam': team_id,
                'responders': [{'type': 'team', 'id': team_id}] if team_id else [],
                'tags': [],
            }
            self.timelines[incident_id] = [('IncidentCreated', at)]
            return incident_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        with self._lock:
            incident = self.incidents[incident_id]
            self.lag.hold(incident_id, incident, hidden, at)
            incident.update(status='resolved', impactEndDate=_ms(at), updatedAt=_ms(at))
            self.timelines[incident_id].append(('IncidentResolved', _ms(at)))

    def touch(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, updatedAt=_ms(at))

    # -- late and corrected resolutions (Opsgenie lets the impact start and end be edited afterwards) ----
    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """Created and resolved now, its impact start and end then edited back to when it really happened."""
        with self._lock:
            now = datetime.now(UTC)
            incident_id = self.open(now, **open_options)
            self.resolve(incident_id, now)
            self.update(incident_id, impactStartDate=_ms(started_at), impactEndDate=_ms(resolved_at))
            return incident_id

    def reopen(self, incident_id: str, at: datetime) -> None:
        """Back to `open`: `impactEndDate` keeps its stale value, as Opsgenie keeps it."""
        with self._lock:
            self.lag.show(incident_id)
            self.update(incident_id, status='open', updatedAt=_ms(at))
            self.timelines[incident_id].append(('IncidentReopened', _ms(at)))

    not_failures = ('an incident reopened after its resolution, still open (its old `impactEndDate` kept)',)

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            reopened = self.open(started_at, title='Not a failure: reopened, still open')
            self.resolve(reopened, resolved_at)
            self.reopen(reopened, resolved_at)
            return [reopened]

    # -- more of Opsgenie, for tool-specific tests ---------------------------------------------------
    def close(self, incident_id: str, at: datetime) -> None:
        """Closes a resolved incident: only `status` and `updatedAt` move."""
        with self._lock:
            self.update(incident_id, status='closed', updatedAt=_ms(at))
            self.timelines[incident_id].append(('IncidentClosed', _ms(at)))

    def service_id(self, name: str) -> str:
        with self._lock:
            return self._id_of(self.services, name)

    def team_id(self, name: str) -> str:
        with self._lock:
            return self._id_of(self.teams, name)

    # -- HTTP: Opsgenie's semantics --------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        if request.headers.get('authorization') != f'GenieKey {self.token}':
            return _error(401, 'Could not authenticate')
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _error(422, message)

    def route(self, request: Request) -> Response:
        query = dict(request.query)
        if request.path == LIST_PATH:
            return self._list(query)
        if request.path == '/v1/services':
            services = [{'id': i, 'name': name, 'description': '', 'tags': []} for i, name in self.services.items()]
            offset, limit = int(query.get('offset', 0)), int(query.get('limit', DEFAULT_PAGE_SIZE))
            return Response.json(
                200, {'data': services[offset : offset + limit], 'totalCount': len(services), **_body()}
            )
        if request.path == '/v2/teams':
            teams = [{'id': i, 'name': name, 'description': ''} for i, name in self.teams.items()]
            return Response.json(200, {'data': teams, **_body()})
        match = TIMELINE_PATH.fullmatch(request.path)
        if match:
            return self._timeline(match.group(1), int(query.get('limit', DEFAULT_PAGE_SIZE)))
        for pattern, names, kind in ((SERVICE_PATH, self.services, 'Service'), (TEAM_PATH, self.teams, 'Team')):
            match = pattern.fullmatch(request.path)
            if match and match.group(1) in names:
                named = {'id': match.group(1), 'name': names[match.group(1)], 'description': ''}
                return Response.json(200, {'data': named, **_body()})
            if match:
                return _error(404, f'{kind} with id [{match.group(1)}] not found')
        return _error(404, f'No such path: {request.path}')

    def _list(self, query: dict) -> Response:
        matches = _parse(query['query'])
        selected = [(incident_id, fields) for incident_id, fields in self.listed() if matches(fields)]
        sort = query.get('sort', 'createdAt')
        if sort != 'createdAt':
            raise Invalid(f'sort by {sort} is not simulated', 'sort')
        selected.sort(key=lambda item: (item[1]['createdAt'], item[0]), reverse=query.get('order', 'desc') == 'desc')
        offset, limit = int(query.get('offset', 0)), int(query.get('limit', DEFAULT_PAGE_SIZE))
        link = f'https://api.opsgenie.com{LIST_PATH}?query={query["query"]}&limit={limit}&sort={sort}'
        paging = {'first': f'{link}&offset=0', 'last': f'{link}&offset={max(0, (len(selected) - 1) // limit * limit)}'}
        if offset + limit < len(selected):
            paging['next'] = f'{link}&offset={offset + limit}'
        document = {
            'data': [self._served(i, fields) for i, fields in selected[offset : offset + limit]],
            'paging': paging,
            'totalCount': len(selected),
            **_body(),
        }
        return Response.json(200, document, {'X-Request-ID': document['requestId']})

    def _timeline(self, incident_id: str, limit: int) -> Response:
        if incident_id not in self.timelines:
            return _error(404, f'Incident with id [{incident_id}] not found')
        entries = [
            {'id': f'{incident_id}-{n}', 'group': 'incident', 'type': kind, 'eventTime': _iso(at), 'hidden': False}
            for n, (kind, at) in enumerate(self.timelines[incident_id])
        ][::-1]
        data = {'entries': entries[:limit], **({'nextOffset': str(limit)} if len(entries) > limit else {})}
        return Response.json(200, {'data': data, **_body()})

    def _served(self, incident_id: str, fields: dict) -> dict:
        served = {
            'id': incident_id,
            **{name: fields[name] for name in ('tinyId', 'message', 'status', 'priority')},
            'isSeen': True,
            **{name: list(fields[name]) for name in ('tags', 'impactedServices')},
            **{name: _iso(fields[name]) for name in TIMES},
            'source': 'sim@example.com',
            'owner': '',
            'responders': copy.deepcopy(fields['responders']),
            'extraProperties': {},
            'links': {
                'web': f'https://sim.app.opsgenie.com/incident/detail/{incident_id}',
                'api': f'https://api.opsgenie.com/v1/incidents/{incident_id}',
            },
            'actions': [],
        }
        if fields['ownerTeam']:
            served['ownerTeam'] = fields['ownerTeam']
        if fields['impactEndDate'] is not None:
            served['impactEndDate'] = _iso(fields['impactEndDate'])
        return self.served(incident_id, served)

    def _id_of(self, names: dict, name: str) -> str:
        """The id of the service or team named so, created on first use."""
        identifier = next((i for i, known in names.items() if known == name), None) or str(uuid.uuid4())
        names[identifier] = name
        return identifier


def _parse(text: str):
    """The search as a predicate over an incident's fields: `AND` binds tighter than `OR`, parentheses group."""
    tokens = [m.group() for m in re.finditer(rf'\(|\)|\bAND\b|\bOR\b|{_COMPARISON.pattern}|{_MATCH.pattern}', text)]
    if re.sub(r'\s+', '', ''.join(tokens)) != re.sub(r'\s+', '', text):
        raise Invalid(f'Invalid query: {text[:80]}', 'query')
    position = 0

    def either(word='OR', part=lambda: either('AND', term, all), combine=any):
        nonlocal position
        parts = [part()]
        while position < len(tokens) and tokens[position] == word:
            position += 1
            parts.append(part())
        return lambda fields: combine(p(fields) for p in parts)

    def term():
        nonlocal position
        if position >= len(tokens):
            raise Invalid(f'Invalid query: {text[:80]}', 'query')
        token = tokens[position]
        position += 1
        if token == '(':
            inner = either()  # parentheses group
            if position >= len(tokens) or tokens[position] != ')':
                raise Invalid(f'Invalid query: {text[:80]}', 'query')
            position += 1
            return inner
        return _condition(token)

    predicate = either()  # OR of ANDs: AND binds tighter
    if position != len(tokens):
        raise Invalid(f'Invalid query: {text[:80]}', 'query')
    return predicate


def _condition(token: str):
    compared = _COMPARISON.fullmatch(token)
    if compared:
        field, operator, value = compared.groups()
        _known(field)
        if field != 'createdAt':
            raise Invalid(f'Invalid query: {field} cannot be compared', 'query')
        moment = datetime.fromtimestamp(int(value) / 1000, UTC)
        return lambda fields: COMPARE[operator](fields['createdAt'], moment)
    field, values = _MATCH.fullmatch(token).groups()
    _known(field)
    wanted = {value.strip().strip('"').lower() for value in values.strip('()').split(' OR ')}

    def matches(fields):
        value = fields['tags'] if field == 'tag' else [str(fields[field])]
        return any(item.lower() in wanted for item in value)

    return matches


def _known(field: str) -> None:
    if field in UNSIMULATED:
        raise Invalid(f'Invalid query: field {field} is not simulated by the loopback Opsgenie', 'query')
    if field not in SIMULATED_FIELDS:
        raise Invalid(f'Invalid query: unknown field {field}', 'query')


def _body(**fields) -> dict:
    return {**fields, 'took': 0.004, 'requestId': str(uuid.uuid4())}


def _error(status: int, message: str) -> Response:
    return Response.json(status, _body(message=message))


def _ms(moment: datetime) -> datetime:
    """What Opsgenie keeps of a time: milliseconds."""
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


def _iso(moment: datetime) -> str:
    """UTC with milliseconds, trailing zeros dropped: `2023-09-26T17:49:10.17Z`, `2023-09-26T15:37:31Z`."""
    return iso(moment, 'milliseconds')[:-1].rstrip('0').rstrip('.') + 'Z'
