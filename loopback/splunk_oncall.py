"""A stateful loopback Splunk On-Call (formerly VictorOps): the reporting API's `GET /api-reporting/v2/incidents`.

Where each piece of knowledge comes from:

- The vendor's Swagger 2.0 description (VictorOps 0.0.3, mirrored in APIs-guru/openapi-directory): the path,
  the `X-VO-Api-Id` and `X-VO-Api-Key` headers on every call, `offset` (default 0) / `limit` (default 20, 100
  at most), the filters `startedAfter`/`startedBefore` (ISO 8601, on the start only), `currentPhase` (comma
  list, resolved only by default), `incidentNumber` (`4,5,20:50`), `routingKey` (one), `entityId`, `host`,
  `service` (comma lists); 401 "Authentication parameters missing", 403 "Authentication failed or rate-limit
  reached"; "may be called a maximum of once a minute"; incident fields and transitions (`name`, `at`, ...).
  Its loopback/specs/splunk_oncall.json is hand-written from that file.
- What the answers hold beyond the file (which names ActiveIncidentList): `total`, `offset`, `limit`,
  `routingKey`, `entityDisplayName`, `endTime` (victorops/go-victorops, `reporting.go`); `entityState`,
  `entityType`, `incidentLink`, and the display name HTML-escaped (`&gt;`) as Splunk On-Call serves it
  (the vendor's reporting documentation, users' reports).
- Phases and transition names are lower case here (`triggered`, `acknowledged`, `resolved`); the public API
  and go-victorops' fixture spell them `UNACKED`/`ACKED`/`RESOLVED`: `phase_case` serves them upper case.
  Times are whole seconds, `2016-04-09T06:20:18Z`.
- The order of the list is not documented: this one serves by incident number.
- Lag: the reporting data "may be up to 15 minutes behind real-time" (the vendor's description of the v1
  reporting call): a hidden resolution leaves the incident as it was until `reveal`, which shows the
  resolution with its original time.
- `open` takes any start time, as the driver needs; on the live service an incident shows up in the
  reporting data at most 15 minutes after it started (the check relies on that after its first run).
- A resolved incident is never reopened: a new alert for the same entity opens a new incident (a new number,
  the same `entityId`): `realert`. `entityState` is the entity's state now: OK once a recovery alert resolved it.
- Errors: the file documents no error body; this one answers `{"message": ...}`. A rate limit (`rate_limit`,
  off by default) answers 429 without headers, as users report it (none are documented).
"""

from __future__ import annotations

import copy
import html
import itertools
import re
from datetime import UTC, datetime
from typing import ClassVar

from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .querying import SlidingWindow
from .server import Fault, LoopbackServer, Request, Response
from .spec import request_problem, response_problem

VENDOR = 'splunk_oncall'
LIST_PATH = '/api-reporting/v2/incidents'
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
PHASES = ('triggered', 'acknowledged', 'resolved')
UPPER_PHASES = {'triggered': 'UNACKED', 'acknowledged': 'ACKED', 'resolved': 'RESOLVED'}
DOCUMENTED = frozenset({200, 400, 401, 403, 404, 500})
ORG = 'acme'


class SplunkOnCallSimulator(LoopbackServer):
    source = 'splunk_oncall'
    list_path = LIST_PATH
    max_page_size = MAX_LIMIT
    credential = 'api_token'  # the Read-only API key; `api_id` is refused alike (tests/test_source_splunk_oncall.py)
    reopens = False  # a resolved incident stays resolved: see `realert`
    edits_times = False  # nobody edits an incident's start or resolve time
    # The driver's defaults: routing key `checkout_api`, the policy's team `Payments Team`, entity CRITICAL.
    expected_tags: ClassVar[dict[str, str]] = {
        'service': 'checkout_api',
        'team': 'payments_team',
        'severity': 'critical',
    }

    def __init__(
        self,
        api_id: str = 'sim-vo-api-id-4f2a',
        token: str = 'sim-vo-api-key-read-only',
        rate_limit: tuple[int, float] | None = None,
        phase_case: str = 'lower',
    ):
        super().__init__()
        self.api_id, self.token = api_id, token
        self.rate_limit = SlidingWindow(rate_limit)
        self.phase_case = phase_case
        self.spec_violations: list[str] = []
        self.incidents: dict[str, dict] = {}  # incidentNumber -> the incident as stored
        self._shown: dict[str, dict] = {}  # incidentNumber -> what the reporting data shows while it lags
        self._served_as: dict[str, dict] = {}  # incidentNumber -> raw values served in place of the stored ones
        self._numbers = itertools.count(101)

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return {'source': self.source, 'api_url': self.url, 'api_id': self.api_id, 'api_token': self.token, **options}

    def open(
        self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=ENVIRONMENT, severity=SEVERITY
    ) -> str:
        """A new alert on an entity (`title` is its display name) routed by the routing key of `service`."""
        del environment  # Splunk On-Call has no environments
        entity = f'{_slug(service)}/{_slug(title)}'
        return self.alert(entity, started_at, title=title, service=service, team=team, severity=severity)

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False, recovery: bool = False) -> None:
        """Resolved by a responder (the entity stays in its state), or by a `recovery` alert (entity OK)."""
        with self._lock:
            if hidden:
                self._shown.setdefault(incident_id, copy.deepcopy(self.incidents[incident_id]))
            incident = self.incidents[incident_id]
            by = None if recovery else 'jdoe'
            incident['transitions'].append(_transition('resolved', at, by))
            incident['currentPhase'] = 'resolved'
            incident['endTime'] = _time(at)
            if recovery:
                incident['entityState'] = 'OK'
                incident['alertCount'] += 1
                incident['lastAlertTime'] = _time(at)

    def reveal(self, incident_id: str) -> None:
        with self._lock:
            self._shown.pop(incident_id, None)

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """Splunk On-Call has no retrospective incidents; what comes closest is the reporting lag: an incident
        that started and resolved in the past shows up only now (on the live service, at most 15 minutes late)."""
        incident_id = self.open(started_at, **open_options)
        self.resolve(incident_id, resolved_at, hidden=True)
        self.reveal(incident_id)
        return incident_id

    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """Resolve times are stamped, never entered: a resolution at `at` that the reporting data shows only now."""
        self.resolve(incident_id, at)

    def correct(self, incident_id: str, *, started_at: datetime | None = None, resolved_at: datetime | None = None):
        raise NotImplementedError('Splunk On-Call lets nobody edit the times of an incident')

    def reopen(self, incident_id: str, at: datetime) -> None:
        raise NotImplementedError('Splunk On-Call never reopens a resolved incident: a new alert opens a new one')

    def realert(self, incident_id: str, at: datetime) -> str:
        """The entity of a resolved incident alerts again: a new incident (new number, same entity)."""
        old = self.incidents[incident_id]
        return self.alert(old['entityId'], at, title=html.unescape(old['entityDisplayName']), routing=old['routingKey'])

    def corrupt(self, incident_id: str) -> None:
        """Its `startTime` is served as a value that is no time; the filters still see the real one."""
        self.serve_as(incident_id, startTime='yesterday')

    # Why each incident `open_non_failures` makes is not a failure, in the order it returns them (the demo shows them).
    not_failures = ('triggered, never acknowledged or resolved', 'acknowledged, not resolved')

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        """Splunk On-Call has no cancelled, test or merged incidents: only the open phases are not failures."""
        triggered = self.open(started_at, title='Not a failure: triggered')
        acknowledged = self.open(started_at, title='Not a failure: acknowledged')
        self.acknowledge(acknowledged, resolved_at)
        return [triggered, acknowledged]

    def rate_limited(self, seconds: int = 1) -> Fault:
        del seconds  # no wait is announced
        return Fault(status=429, body=b'{"message":"Rate limit exceeded"}', path=LIST_PATH)

    # -- more of Splunk On-Call, for tool-specific tests -----------------------------------------------
    def alert(
        self,
        entity_id: str,
        started_at: datetime,
        *,
        title: str = TITLE,
        service: str = SERVICE,
        team: str = TEAM,
        severity: str = SEVERITY,
        routing: str | None = None,
    ) -> str:
        """A CRITICAL (or WARNING, for a severity below SEV1) alert opening an incident."""
        with self._lock:
            number = str(next(self._numbers))
            team_slug = f'team-{_slug(team)}'
            state = 'CRITICAL' if (severity or '').upper() in ('SEV0', 'SEV1', 'CRITICAL', 'P1') else 'WARNING'
            self.incidents[number] = {
                'incidentNumber': number,
                'startTime': _time(started_at),
                'currentPhase': 'triggered',
                'alertCount': 1,
                'lastAlertTime': _time(started_at),
                'lastAlertId': f'alert-{number}',
                'entityId': entity_id,
                'host': 'web-1',
                'service': title,  # the alert's entity display name: not a service
                'entityType': 'SERVICE',
                'entityDisplayName': html.escape(title, quote=False),
                'entityState': state,
                'routingKey': routing or _slug(service),
                'incidentLink': f'https://portal.victorops.com/ui/{ORG}/incident/{number}/details',
                'pagedUsers': [],
                'pagedTeams': [team_slug],
                'pagedPolicies': [
                    {
                        'policy': {'name': f'{team} escalation', 'slug': f'pol-{_slug(team)}'},
                        'team': {'name': team, 'slug': team_slug},
                    }
                ],
                'transitions': [_transition('triggered', started_at, None)],
            }
            return number

    def acknowledge(self, incident_id: str, at: datetime) -> None:
        with self._lock:
            incident = self.incidents[incident_id]
            incident['transitions'].append(_transition('acknowledged', at, 'jdoe'))
            incident['currentPhase'] = 'acknowledged'

    def serve_as(self, incident_id: str, **fields) -> None:
        """Serves these raw values (anything JSON) in place of the stored ones: a malformed record."""
        with self._lock:
            self._served_as.setdefault(incident_id, {}).update(fields)

    # -- HTTP: validate the request, authorize, rate-limit, route, validate the answer --------------------
    def handle(self, request: Request) -> Response:
        refused = self._authorize(request)  # before the description, which requires both headers
        if refused is not None:
            return refused
        problem = request_problem(VENDOR, request)
        if problem:
            self.spec_violations.append(problem)
            return _error(400, problem)
        response = self._limited() or self._route(request)
        if response.status in DOCUMENTED:
            problem = response_problem(VENDOR, request, response)
            if problem:
                self.spec_violations.append(problem)
        return response

    def _authorize(self, request: Request) -> Response | None:
        api_id, key = request.headers.get('x-vo-api-id'), request.headers.get('x-vo-api-key')
        if not api_id or not key:
            return _error(401, 'Authentication parameters missing')
        if (api_id, key) != (self.api_id, self.token):
            return _error(403, 'Authentication failed')
        return None

    def _limited(self) -> Response | None:
        return _error(429, 'Rate limit exceeded') if self.rate_limit.wait() is not None else None

    def _route(self, request: Request) -> Response:
        if request.method != 'GET' or request.path != LIST_PATH:
            return _error(404, 'Path not found')
        try:
            return self._list(dict(request.query))
        except _Invalid as e:
            return _error(400, str(e))

    # -- the reporting API's semantics ------------------------------------------------------------------
    def _list(self, query: dict[str, str]) -> Response:
        offset, limit = (
            _whole(query.get('offset', '0'), 'offset'),
            _whole(query.get('limit', str(DEFAULT_LIMIT)), 'limit'),
        )
        if not 0 < limit <= MAX_LIMIT:
            raise _Invalid(f'limit must be between 1 and {MAX_LIMIT}')
        wanted = _phases(query.get('currentPhase', 'resolved'))
        after, before = (
            _moment(query.get('startedAfter'), 'startedAfter'),
            _moment(query.get('startedBefore'), 'startedBefore'),
        )
        numbers = _numbers(query.get('incidentNumber'))
        lists = {name: set(query[name].split(',')) for name in ('entityId', 'host', 'service') if query.get(name)}
        routing = query.get('routingKey')
        matched = []
        for number in sorted(self.incidents, key=int):
            shown = self._shown.get(number, self.incidents[number])
            started = _parse(shown['startTime'])
            if shown['currentPhase'] not in wanted or (routing and shown['routingKey'] != routing):
                continue
            if (after and started <= after) or (before and started >= before):
                continue
            if numbers is not None and not numbers(int(number)):
                continue
            if any(shown[name] not in values for name, values in lists.items()):
                continue
            matched.append(self._served(shown))
        page = matched[offset : offset + limit]
        return Response.json(200, {'total': len(matched), 'offset': offset, 'limit': limit, 'incidents': page})

    def _served(self, incident: dict) -> dict:
        served = copy.deepcopy(incident)
        if self.phase_case == 'upper':
            served['currentPhase'] = UPPER_PHASES[served['currentPhase']]
            for transition in served['transitions']:
                transition['name'] = UPPER_PHASES[transition['name']]
        served.update(copy.deepcopy(self._served_as.get(incident['incidentNumber'], {})))
        return served


class _Invalid(ValueError):
    pass


def _transition(name: str, at: datetime, by: str | None) -> dict:
    transition = {'name': name, 'at': _time(at), 'manually': by is not None}
    return {**transition, 'by': by} if by else transition


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse(value: str) -> datetime:
    return datetime.strptime(value, '%Y-%m-%dT%H:%M:%SZ').replace(tzinfo=UTC)


def _moment(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(f'{name} is not an ISO 8601 timestamp') from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _whole(value: str, name: str) -> int:
    if not value.isdigit():
        raise _Invalid(f'{name} must be a non-negative integer')
    return int(value)


def _phases(value: str) -> set[str]:
    phases = {part.strip().lower() for part in value.split(',') if part.strip()}
    phases = {next((k for k, v in UPPER_PHASES.items() if v.lower() == p), p) for p in phases}  # ACKED, ...
    if not phases <= set(PHASES):
        raise _Invalid(f'currentPhase must be among {", ".join(PHASES)}')
    return phases


def _numbers(value: str | None):
    """`4,5,20:50` as a predicate on incident numbers."""
    if not value:
        return None
    ranges = []
    for part in value.split(','):
        low, _, high = part.partition(':')
        if not low.isdigit() or (high and not high.isdigit()):
            raise _Invalid('incidentNumber takes numbers and ranges: 4,5,20:50')
        ranges.append((int(low), int(high or low)))
    return lambda number: any(low <= number <= high for low, high in ranges)


def _slug(name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')


def _error(status: int, message: str) -> Response:
    return Response.json(status, {'message': message})
