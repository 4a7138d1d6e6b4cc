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
  reporting call): `reveal` shows a hidden resolution with its original time.
- `open` takes any start time, as the driver needs; on the live service an incident shows up in the
  reporting data at most 15 minutes after it started (the check relies on that after its first run).
- A resolved incident is never reopened: a new alert for the same entity opens a new incident (a new number,
  the same `entityId`): `realert`. `entityState` is the entity's state now: OK once a recovery alert resolved it.
- Errors: the file documents no error body; this one answers `{"message": ...}`. A rate limit (`rate_limit`,
  off by default) answers 429 without headers, as users report it (none are documented; the file's 403
  "or rate-limit reached" is left to tool-specific tests).
"""

from __future__ import annotations

import html
import itertools
import re
from datetime import datetime
from typing import ClassVar

from .core import Invalid, RateLimit, ToolSimulator, bounds, first, iso, whole, within
from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

LIST_PATH = '/api-reporting/v2/incidents'
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
UPPER_PHASES = {'triggered': 'UNACKED', 'acknowledged': 'ACKED', 'resolved': 'RESOLVED'}
PHASE_NAMES = {**{name: name for name in UPPER_PHASES}, **{upper.lower(): name for name, upper in UPPER_PHASES.items()}}
ORG = 'acme'
COMMA_LIST_FILTERS = ('entityId', 'host', 'service')  # filters that take comma lists; `routingKey` takes one key


class SplunkOnCallSimulator(ToolSimulator):
    source = 'splunk_oncall'
    list_path = LIST_PATH
    reveal_touches = False  # the reporting data has no update time
    max_page_size = MAX_LIMIT
    limits = RateLimit(429, lambda quota: {}, lambda quota: {'message': 'Rate limit exceeded'})
    reopens = False  # a resolved incident stays resolved: see `realert`
    edits_times = False  # nobody edits an incident's start or resolve time
    corrupted = 'startTime'
    # The driver's defaults: routing key `checkout_api`, the policy's team `Payments Team`, entity CRITICAL.
    expected_tags: ClassVar[dict[str, str]] = {**ToolSimulator.expected_tags, 'severity': 'critical'}

    def __init__(
        self,
        api_id: str = 'sim-vo-api-id-4f2a',
        token: str = 'sim-vo-api-key-read-only',
        validate: bool = True,
        rate_limit: tuple[int, float] | None = None,
        phase_case: str = 'lower',
    ):
        super().__init__(validate, rate_limit)
        self.api_id, self.token = api_id, token
        self.phase_case = phase_case
        self.incidents: dict[str, dict] = {}  # incidentNumber -> the incident as stored (and served)
        self._numbers = itertools.count(101)

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return super().instance(api_id=self.api_id, **options)

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
            incident = self.incidents[incident_id]
            self.lag.hold(incident_id, incident, hidden)
            incident['transitions'].append(_transition('resolved', at, None if recovery else 'jdoe'))
            incident.update(currentPhase='resolved', endTime=iso(at))
            if recovery:
                incident.update(entityState='OK', alertCount=incident['alertCount'] + 1, lastAlertTime=iso(at))

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

    def reopen(self, incident_id: str, at: datetime) -> None:
        raise NotImplementedError('Splunk On-Call never reopens a resolved incident: a new alert opens a new one')

    not_failures = ('triggered, never acknowledged or resolved', 'acknowledged, not resolved')

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        """Splunk On-Call has no cancelled, test or merged incidents: only the open phases are not failures."""
        triggered = self.open(started_at, title='Not a failure: triggered')
        acknowledged = self.open(started_at, title='Not a failure: acknowledged')
        self.acknowledge(acknowledged, resolved_at)
        return [triggered, acknowledged]

    # -- more of Splunk On-Call, for tool-specific tests -----------------------------------------------
    def alert(
        self, entity_id: str, started_at: datetime, *, title=TITLE, service=SERVICE, team=TEAM, severity=SEVERITY,
        routing: str | None = None,
    ) -> str:  # fmt: skip
        """A CRITICAL (or WARNING, for a severity below SEV1) alert opening an incident."""
        with self._lock:
            number = str(next(self._numbers))
            team_slug = f'team-{_slug(team)}'
            state = 'CRITICAL' if (severity or '').upper() in ('SEV0', 'SEV1', 'CRITICAL', 'P1') else 'WARNING'
            self.incidents[number] = {
                'incidentNumber': number,
                'startTime': iso(started_at),
                'currentPhase': 'triggered',
                'alertCount': 1,
                'lastAlertTime': iso(started_at),
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

    def realert(self, incident_id: str, at: datetime) -> str:
        """The entity of a resolved incident alerts again: a new incident (new number, same entity)."""
        old = self.incidents[incident_id]
        return self.alert(old['entityId'], at, title=html.unescape(old['entityDisplayName']), routing=old['routingKey'])

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        api_id, key = request.headers.get('x-vo-api-id'), request.headers.get('x-vo-api-key')
        if not api_id or not key:
            return _error(401, 'Authentication parameters missing')
        return _error(403, 'Authentication failed') if (api_id, key) != (self.api_id, self.token) else None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _error(400, message)

    def route(self, request: Request) -> Response:
        if request.method != 'GET' or request.path != LIST_PATH:
            return _error(404, 'Path not found')
        query = request.query
        offset = whole(first(query, 'offset', '0'), 'offset')
        limit = whole(first(query, 'limit', str(DEFAULT_LIMIT)), 'limit')
        if not 0 < limit <= MAX_LIMIT:
            raise Invalid(f'limit must be between 1 and {MAX_LIMIT}', 'limit')
        phases = {_phase(part) for part in first(query, 'currentPhase', 'resolved').split(',') if part.strip()}
        started = bounds(query, {'startedAfter': ('startTime', '>'), 'startedBefore': ('startTime', '<')})
        numbers = _numbers(first(query, 'incidentNumber'))
        wanted = {name: set(text.split(',')) for name in COMMA_LIST_FILTERS if (text := first(query, name))}
        if first(query, 'routingKey'):
            wanted['routingKey'] = {first(query, 'routingKey')}
        matched = []
        for number, shown in sorted(self.listed(), key=lambda listed: int(listed[0])):
            if shown['currentPhase'] not in phases or any(shown[name] not in values for name, values in wanted.items()):
                continue
            if not within(lambda field, i=shown: datetime.fromisoformat(i[field]), started) or not numbers(int(number)):
                continue
            matched.append(self.served(number, self._cased(shown)))
        page = matched[offset : offset + limit]
        return Response.json(200, {'total': len(matched), 'offset': offset, 'limit': limit, 'incidents': page})

    def _cased(self, incident: dict) -> dict:
        """The incident as served: a copy, its phase and transition names upper case with `phase_case='upper'`."""
        upper = UPPER_PHASES if self.phase_case == 'upper' else {name: name for name in UPPER_PHASES}
        transitions = [{**transition, 'name': upper[transition['name']]} for transition in incident['transitions']]
        return {**incident, 'currentPhase': upper[incident['currentPhase']], 'transitions': transitions}


def _transition(name: str, at: datetime, by: str | None) -> dict:
    transition = {'name': name, 'at': iso(at), 'manually': by is not None}
    return {**transition, 'by': by} if by else transition


def _phase(value: str) -> str:
    """A phase as `currentPhase` takes it, either spelling (`resolved`, `RESOLVED`, `ACKED`, ...)."""
    phase = PHASE_NAMES.get(value.strip().lower())
    if phase is None:
        raise Invalid(f'currentPhase must be among {", ".join(UPPER_PHASES)}', 'currentPhase')
    return phase


def _numbers(value: str | None):
    """`4,5,20:50` as a predicate on incident numbers (None: every number)."""
    if not value:
        return lambda number: True
    ranges = []
    for part in value.split(','):
        low, _, high = part.partition(':')
        if not low.isdigit() or (high and not high.isdigit()):
            raise Invalid('incidentNumber takes numbers and ranges: 4,5,20:50', 'incidentNumber')
        ranges.append((int(low), int(high or low)))
    return lambda number: any(low <= number <= high for low, high in ranges)


def _slug(name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')


def _error(status: int, message: str) -> Response:
    return Response.json(status, {'message': message})
