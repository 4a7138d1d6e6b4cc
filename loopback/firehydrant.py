"""A stateful loopback FireHydrant API: `GET /v1/incidents`, `GET /v1/incidents/{incident_id}` and its
`/related_change_events` (changes `relate_change` attached as `caused`, `fixed`, `suspect` or `dismissed`:
`Incidents_RelatedChangeEventEntity`, paged like the list, filtered by `type`).

Follows FireHydrant's published description (its derived copy, `loopback/specs/firehydrant.json`) and docs.
No recorded answer of the live service was available: where the description and docs are silent, the choice
made here says so below (`updated_after`'s bounds, unknown parameters ignored as Grape, its API framework, does).

- Auth: `Authorization: Bearer <token>` (the description's example); anything else is a 401.
- Paging: `page` from 1, `per_page` 20 by default and at most 200 (`max_page_size`, lower in tests);
  newest incident first. A page past the last is empty.
- Filters: `resolved_at_or_after` / `resolved_at_or_before` (inclusive) on the incident's latest
  resolution, which a reopen does not clear (the description warns that reopened incidents still match);
  a resolution is listed only once its time has come. Also `created_at_or_after/_or_before`, `archived`,
  `current_milestones`, `services`, `environments`, `functionalities`, `teams` (ids), `severities`. Any
  other parameter of the description is answered 400 "not simulated", so no test passes on a filter the
  simulator would silently ignore; parameters outside the description are ignored, as Grape does.
- Rate limit (`rate_limit=(requests, seconds)`, off by default): 429 `{"error": "rate limit exceeded"}`
  with `Retry-After` (seconds) and `RateLimit-Limit`, as the description documents.
- Lifecycle: FireHydrant's default phases and milestones. Resolving sets the `resolved` milestone;
  reopening moves back to `investigating` and clears the milestones after it (milestones must stay in
  order); archiving sets `discarded_at` and hides the incident from the list unless `archived=true`.
- `updated_after` / `updated_before` ([after, before): the description does not say) filter on when the
  incident last changed, which the incident entity does not serve.
- After the fact: `enter_resolved` is "Create Resolved Incident" (created now with milestones up to
  Resolved, which the description allows on create); `resolve_backdated` and `correct` edit milestones now.
- Late visibility: a hidden resolution leaves the incident served as it was (active, its old milestones,
  its old resolution time if any) until `reveal`, which counts as a change now.

A request the description rejects is answered 400 with FireHydrant's ErrorEntity. The description declares
no incident field nullable, so unset values are omitted rather than sent as null.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import ClassVar

from . import spec
from .core import RateLimit, ToolSimulator, bounds, first, iso, within
from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

VENDOR = 'firehydrant'
LIST_PATH = '/v1/incidents'
RELATED = 'related_change_events'
APP_URL = 'https://app.firehydrant.io'
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 200
RATE_LIMIT_POOL = 50  # requests per 10 seconds per account, as documented
_NAMESPACE = uuid.UUID('6f1c1e2a-5d0b-4c7e-9a43-0f6c2f7d9b10')
ORGANIZATION_ID = str(uuid.uuid5(_NAMESPACE, 'organization'))

# FireHydrant's default lifecycle: (phase type, phase name, milestone slugs in order).
PHASES = (
    ('started', 'Started', ('started', 'detected')),
    ('active', 'Active', ('acknowledged', 'investigating', 'identified', 'mitigated')),
    ('post_incident', 'Post-Incident', ('resolved', 'postmortem_started', 'postmortem_completed')),
    ('closed', 'Closed', ('closed',)),
)
ORDER = [slug for _, _, slugs in PHASES for slug in slugs]
ACTIVE = frozenset(ORDER[: ORDER.index('resolved')])
# The description's list filters this simulator applies (the others are refused rather than ignored):
# times, as (the state's time, how it compares with the parameter's), and ids (comma-separated, any matching).
TIME_FILTERS = {
    'resolved_at_or_after': ('resolved_at', '>='), 'resolved_at_or_before': ('resolved_at', '<='),
    'created_at_or_after': ('created_at', '>='), 'created_at_or_before': ('created_at', '<='),
    'updated_after': ('updated_at', '>='), 'updated_before': ('updated_at', '<'),  # the description does not say
}  # fmt: skip
ID_FILTERS = {
    'current_milestones': lambda state: [state.current],
    'services': lambda state: [ref_id('service', name) for name in state.services],
    'environments': lambda state: [ref_id('environment', name) for name in state.environments],
    'functionalities': lambda state: [ref_id('functionality', name) for name in state.functionalities],
    'teams': lambda state: [ref_id('team', name) for name in state.teams],
    'severities': lambda state: [state.severity],
}
SIMULATED = {'page', 'per_page', 'archived', *TIME_FILTERS, *ID_FILTERS}


@lru_cache(maxsize=65536)
def ref_id(kind: str, name: str) -> str:
    """The catalog id FireHydrant would hold for a service/team/environment of that name (stable per name)."""
    return str(uuid.uuid5(_NAMESPACE, f'{kind}:{name}'))


@dataclass
class _State:
    """One incident as FireHydrant holds it."""

    id: str
    number: int
    title: str
    created_at: datetime
    started_at: datetime
    severity: str
    services: list[str]
    functionalities: list[str]
    environments: list[str]
    teams: list[str]
    current: str = 'started'
    reached: dict[str, datetime] = field(default_factory=dict)  # milestone slug -> when, in lifecycle order
    history: list[tuple[str, datetime]] = field(default_factory=list)  # every transition (`milestones`)
    resolved_at: datetime | None = None  # what `resolved_at_or_*` filter on
    updated_at: datetime | None = None  # what `updated_after`/`updated_before` filter on: not served
    discarded_at: datetime | None = None

    def move(self, slug: str, at: datetime) -> None:
        # Milestones stay in lifecycle order: moving back clears every later one.
        for later in ORDER[ORDER.index(slug) + 1 :]:
            self.reached.pop(later, None)
        self.reached[slug] = at
        self.current = slug
        self.history.append((slug, at))
        if slug == 'resolved':  # the latest resolution: a reopen does not clear it
            self.resolved_at = at

    @property
    def active(self) -> bool:
        return self.current in ACTIVE


class FireHydrantSimulator(ToolSimulator):
    source = VENDOR
    list_path = LIST_PATH
    corrupted = 'started_at'
    limits = RateLimit(
        429,
        lambda quota: {'Retry-After': str(quota.wait), 'RateLimit-Limit': str(RATE_LIMIT_POOL)},
        lambda quota: {'error': 'rate limit exceeded'},
    )
    expected_tags: ClassVar[dict[str, str]] = {**ToolSimulator.expected_tags, 'env': 'production'}

    def __init__(self, token: str = 'fhb-sim-firehydrant-token', max_page_size: int = MAX_PAGE_SIZE, validate=True):
        super().__init__(validate)
        self.token = token
        self.max_page_size = max_page_size
        self._incidents: dict[str, _State] = {}  # as they are; the list lags while a resolution is hidden
        self._numbers = itertools.count(1)
        self._related: dict[str, list[dict]] = {}  # incident id -> its related changes, oldest first

    # -- the driver interface (loopback/driver.py) -----------------------------------------------------

    def open(self, started_at: datetime, *, title=TITLE, service=SERVICE, team=TEAM, environment=ENVIRONMENT,
             severity=SEVERITY, services=None, functionalities=None, teams=None) -> str:  # fmt: skip
        """Declares an incident whose impact started at `started_at`; `services`/`teams` replace `service`/`team`."""
        number = next(self._numbers)
        state = _State(
            id=str(uuid.uuid5(_NAMESPACE, f'incident:{number}:{time.time_ns()}')),
            number=number,
            title=title,
            created_at=started_at,
            started_at=started_at,
            severity=severity or '',
            services=list(services if services is not None else [service] if service else []),
            functionalities=list(functionalities or []),
            environments=[environment] if environment else [],
            teams=list(teams if teams is not None else [team] if team else []),
            updated_at=started_at,
        )
        state.move('started', started_at)
        state.reached['detected'] = started_at
        with self._lock:
            self._incidents[state.id] = state
        return state.id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        self._change(incident_id, at, lambda state: state.move('resolved', at), hidden=hidden)

    def touch(self, incident_id: str, at: datetime) -> None:
        with self._lock:
            self._incidents[incident_id].updated_at = at

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """ "Create Resolved Incident": created now with its milestones, the Resolved one in the past."""
        incident_id = super().enter_resolved(started_at, resolved_at, **open_options)
        self._incidents[incident_id].created_at = self._incidents[incident_id].updated_at
        return incident_id

    def correct(self, incident_id: str, *, started_at=None, resolved_at=None) -> None:
        """Edits milestones (FireHydrant lets responders edit when each was reached)."""

        def edit(state: _State) -> None:
            for slug, at in (('started', started_at), ('resolved', resolved_at)):
                if at is not None:
                    state.reached[slug] = at
                    state.history = [(s, at if s == slug else when) for s, when in state.history]
                    setattr(state, f'{slug}_at', at)

        self._change(incident_id, started_at or resolved_at, edit, updated_at=datetime.now(UTC))

    def reopen(self, incident_id: str, at: datetime) -> None:
        self._change(incident_id, at, lambda state: state.move('investigating', at))

    not_failures = ('archived (declared by mistake)', 'resolved, then reopened: not resolved any more')

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        """An archived incident, and one resolved then reopened (the resolved-time filter still lists it)."""
        archived = self.open(started_at, title='Declared by mistake')
        self.resolve(archived, resolved_at)
        self.archive(archived, resolved_at)
        reopened = self.open(started_at, title='Resolved too early')
        self.resolve(reopened, resolved_at)
        self.reopen(reopened, resolved_at + timedelta(seconds=1))
        return [archived, reopened]

    # -- more of FireHydrant, for tool-specific tests --------------------------------------------------
    def mitigate(self, incident_id: str, at: datetime) -> None:
        self._change(incident_id, at, lambda state: state.move('mitigated', at))

    def archive(self, incident_id: str, at: datetime) -> None:
        self._change(incident_id, at, lambda state: setattr(state, 'discarded_at', at))

    def record(self, incident_id: str) -> dict:
        """The incident as the API serves it now."""
        with self._lock:
            return self._render(incident_id)

    def _change(self, incident_id: str, at: datetime, change, hidden: bool = False, updated_at=None) -> None:
        """`updated_at`: when the change was made (default `at`, as if made when it happened)."""
        with self._lock:
            state = self._incidents[incident_id]
            if at < state.started_at:
                raise ValueError(f'{at.isoformat()} is before the incident started: FireHydrant answers 422')
            self.lag.hold(incident_id, state, hidden)
            change(state)
            state.updated_at = updated_at or at

    def relate_change(
        self, incident_id: str, relation: str = 'caused', *, identities=(), labels=None, links=(), summary='Deploy'
    ) -> dict:
        """A change event related to the incident as `relation`; `identities` are (type, value) pairs, `links`
        the hrefs of its link attachments."""
        number = sum(map(len, self._related.values())) + 1
        change_id = f'change-{number:04d}'
        entry = {
            'id': f'related-{number:04d}',
            'type': relation,
            'why': f'{relation} by {summary}',
            'incident_id': incident_id,
            'created_at': iso(datetime.now(UTC)),
            'change_event': {
                'id': change_id,
                'summary': summary,
                'external_id': f'deploy-{number}',
                'identities': [
                    {'id': f'{change_id}-{n}', 'change_id': change_id, 'type': kind, 'value': value}
                    for n, (kind, value) in enumerate(identities)
                ],
                'labels': dict(labels or {}),
                'attachments': [{'type': 'link', 'href_url': href, 'display_text': 'commit'} for href in links],
                'services': [],
                'environments': [],
            },
        }
        self._related.setdefault(incident_id, []).append(entry)
        return entry

    # -- HTTP ------------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        if request.headers.get('authorization') != f'Bearer {self.token}':
            return Response.json(401, {'detail': 'Unauthorized'})
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _error(400, message)

    def route(self, request: Request) -> Response:
        if request.method != 'GET':
            return _error(405, '405 Not Allowed')
        if request.path == LIST_PATH:
            return self._list(request)
        incident_id, _, rest = request.path.removeprefix(LIST_PATH + '/').partition('/')
        if not request.path.startswith(LIST_PATH + '/') or not incident_id or rest not in ('', RELATED):
            return _error(404, 'Not Found')
        if incident_id not in self._incidents:
            return _error(404, 'Record not found')
        if rest:  # `Incidents_RelatedChangeEventEntity`s of the incident, oldest first, paged like the list
            kind = first(request.query, 'type')
            return self._page(request, [r for r in self._related.get(incident_id, []) if kind in (None, r['type'])])
        return Response.json(200, self._render(incident_id))

    def _list(self, request: Request) -> Response:
        operation = spec.document(VENDOR)['paths'][LIST_PATH]['get']
        described = {parameter['name'] for parameter in operation.get('parameters', [])}
        unsimulated = sorted((described & {key for key, _ in request.query}) - SIMULATED)
        if unsimulated:
            raise ValueError(f'parameter {unsimulated[0]} is not simulated')
        times = bounds(request.query, TIME_FILTERS)  # Rails' zone is UTC
        ids = {
            name: {i.strip() for i in value.split(',')} - {''}
            for name in ID_FILTERS
            if (value := first(request.query, name))
        }
        archived = (first(request.query, 'archived') or 'false').lower() == 'true'
        resolved_only = any(field == 'resolved_at' for field, _, _ in times)  # a resolution to come is not listed
        now = datetime.now(UTC)

        def selects(state: _State) -> bool:
            return (
                (state.discarded_at is not None) == archived
                and within(lambda field: getattr(state, field), times)
                and not (resolved_only and state.resolved_at > now)
                and all(set(ID_FILTERS[name](state)) & wanted for name, wanted in ids.items())
            )

        shown = {i: self.lag.listed(i, state) for i, state in self._incidents.items()}
        selected = sorted((i for i, state in shown.items() if selects(state)), reverse=True,
                          key=lambda i: (shown[i].created_at, shown[i].number))  # fmt: skip
        return self._page(request, selected, self._render)

    def _page(self, request: Request, selected: list, render=copy.deepcopy) -> Response:
        """FireHydrant's page (`page` from 1, `per_page`) of `selected` with its PaginationEntity."""
        per_page = min(max(_int(request, 'per_page', DEFAULT_PAGE_SIZE), 1), self.max_page_size)
        page = _int(request, 'page', 1)
        if page < 1:
            raise ValueError('page is invalid')
        pages = max(1, math.ceil(len(selected) / per_page))
        pagination = {'count': len(selected), 'page': page, 'items': per_page, 'pages': pages, 'last': pages}
        pagination.update(prev=page - 1 if 1 < page <= pages + 1 else None, next=page + 1 if page < pages else None)
        data = [render(item) for item in selected[(page - 1) * per_page : page * per_page]]
        return Response.json(200, {'data': data, 'pagination': pagination})

    def _render(self, incident_id: str) -> dict:
        return self.served(incident_id, _entity(self.lag.listed(incident_id, self._incidents[incident_id])))


def _int(request: Request, name: str, default: int) -> int:
    value = first(request.query, name)
    try:
        return default if value in (None, '') else int(value)
    except ValueError:
        raise ValueError(f'{name} is invalid') from None


# What this simulator leaves empty on every incident.
_BLANK = {'summary': '', 'description': '', 'customer_impact_summary': '', 'priority': '', 'tag_list': [],
          'labels': {}, 'role_assignments': [], 'custom_fields': []}  # fmt: skip


def _entity(state: _State) -> dict:
    """The incident as FireHydrant's IncidentEntity, unset values omitted."""
    kinds = {'service': state.services, 'environment': state.environments, 'functionality': state.functionalities}
    succinct = {kind: [{'id': ref_id(kind, name), 'name': name} for name in names] for kind, names in kinds.items()}
    entity = {
        'id': state.id,
        'name': state.title,
        'number': state.number,
        'created_at': iso(state.created_at, 'milliseconds'),
        'started_at': iso(state.reached.get('started', state.started_at), 'milliseconds'),
        'current_milestone': state.current,
        'severity': state.severity,
        'organization_id': ORGANIZATION_ID,
        'milestones': [_milestone(state, n) for n in range(len(state.history))],
        'lifecycle_phases': [_phase(state, position, *phase) for position, phase in enumerate(PHASES)],
        'active': state.active,
        'incident_url': f'{APP_URL}/incidents/{state.id}',
        'services': succinct['service'],
        'environments': succinct['environment'],
        'functionalities': succinct['functionality'],
        'impacts': [
            {'id': ref_id(f'impact:{state.id}:{kind}', entry['name']), 'type': kind, 'impact': entry}
            for kind in ('service', 'functionality', 'environment')
            for entry in succinct[kind]
        ],
        'team_assignments': [_team_assignment(state, name) for name in state.teams],
        **_BLANK,
    }
    if state.discarded_at is not None:
        entity['discarded_at'] = iso(state.discarded_at, 'milliseconds')
    return entity


_STAMPS = ('occurred_at', 'created_at', 'updated_at')


def _milestone(state: _State, n: int) -> dict:
    slug, at = state.history[n]
    stamps = dict.fromkeys(_STAMPS, iso(at, 'milliseconds'))
    entry = {'id': ref_id(f'milestone:{state.id}', str(n)), 'type': slug, **stamps}
    if n + 1 < len(state.history):  # null (omitted) for the current milestone
        entry['duration'] = f'PT{max(0, int((state.history[n + 1][1] - at).total_seconds()))}S'
    return entry


def _phase(state: _State, position: int, kind: str, name: str, slugs: tuple[str, ...]) -> dict:
    milestones = [
        {'id': ref_id('lifecycle', slug), 'name': slug.replace('_', ' ').title(), 'slug': slug, 'position': n}
        | ({'occurred_at': iso(state.reached[slug], 'milliseconds')} if slug in state.reached else {})
        for n, slug in enumerate(slugs)
    ]
    return {'id': ref_id('phase', kind), 'name': name, 'type': kind, 'position': position, 'milestones': milestones}


def _team_assignment(state: _State, name: str) -> dict:
    team = {'id': ref_id('team', name), 'name': name, 'slug': name.lower().replace(' ', '-')}
    assignment = {'id': ref_id(f'assignment:{state.id}', name), 'status': 'active', 'team': team}
    return {**assignment, **dict.fromkeys(_STAMPS[1:], iso(state.created_at, 'milliseconds'))}


def _error(status: int, detail: str) -> Response:
    return Response.json(status, {'detail': detail, 'messages': [detail]})
