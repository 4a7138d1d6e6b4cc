"""A stateful loopback Rootly REST API (JSON:API): `GET /v1/incidents`, as its published description says.

What it does like Rootly (the derived description `loopback/specs/rootly.json`, from rootlyhq/rootly-go, plus
Rootly's API overview and its own MCP server where the description is silent):

- `Authorization: Bearer <key>`; a wrong or missing key is a 401 with a JSON:API `errors` list.
- JSON:API documents: `data[]` of `{id, type: incidents, attributes}`; `links` (`self`, `first`, `prev`,
  `next`, `last`: absolute URLs keeping the request's query); `meta` (`current_page`, `next_page`,
  `prev_page`, `total_count`, `total_pages`: in Rootly's current description, not in the 2025-04 one).
  Services, teams (`groups`) and environments are served as the live API serves them, not as the
  description's attributes schema has them: only as JSON:API `relationships` (`relationships.services.data =
  [{id, type: services}]`), the resources themselves in the top-level `included` array when the request asks
  for them with `include=` (a comma-separated list, as JSON:API has it, although the description's enum names
  one value: the simulator validates each value). This follows replayed answers recorded from the live
  service (the public recordings of Rootly's SDK tests; issue 19): their `attributes` have no `services` or
  `groups`. The severity stays embedded in the attributes as `{data: {id, type, attributes}}`; `status`,
  `url` and `sequential_id` are served too (in Rootly's current SDKs, absent from the 2025-04 description's
  response schema).
- Filters: `filter[<time>_at][gt|gte|lt|lte]` on every timestamp the description lists (an incident
  without that timestamp never matches), `filter[status]`, `filter[kind]`, the id and slug filters of
  services, teams, environments and severity (comma-separated values). Other described filters answer
  400 "not simulated", so that no test relies on a filter the simulator silently ignores.
- `sort` among `created_at`, `updated_at`, descending with `-` (default `-created_at`, ties by id).
- Pages: `page[number]` from 1, `page[size]` at most 100 (Rootly's MCP server calls 100 the maximum).
  Unverified, chosen here: the default size is 10 (the size of Rootly's documented example), a larger size
  is cut to 100, and a `page[number]` past `MAX_PAGE_NUMBER` is a 400 (Rootly rejects deep pages with a
  400, per its MCP server's changelog, at a limit it does not document).
- Rate limit: a sliding window per API key (3,000 GETs a minute by default); every answer carries
  `X-RateLimit-Limit` ("3000, 3000;window=60"), `-Remaining`, `-Used` and `-Reset` (UTC epoch seconds);
  past it, 429 with `{"error": "Rate limit exceeded. Try again later."}`.
- A retrospective incident is Rootly's `backfilled` kind; reopened is back to `started` with the later times
  cleared; the non-failures each have a `resolved_at`, so that only the check can tell.
"""

from __future__ import annotations

import copy
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

from .core import COMPARE, Invalid, Quota, RateLimit, ToolSimulator, first, iso, parse_time, positive, within
from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

LIST_PATH = '/v1/incidents'
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_PAGE_NUMBER = 200
RATE_LIMIT = (3000, 60)  # GET requests per API key per sliding window of seconds
JSON_API = 'application/vnd.api+json; charset=utf-8'
TIMES = (
    'created_at',
    'updated_at',
    'started_at',
    'detected_at',
    'acknowledged_at',
    'mitigated_at',
    'resolved_at',
    'closed_at',
    'in_triage_at',
    'cancelled_at',
)
_TIME_FILTER = re.compile(r'filter\[(\w+)\]\[(gt|gte|lt|lte)\]')
_OPERATORS = {'gt': '>', 'gte': '>=', 'lt': '<', 'lte': '<='}
# filter name -> (incident attribute holding resources, the resource field compared)
_RESOURCE_FILTERS = {
    'filter[services]': ('services', 'slug'),
    'filter[service_ids]': ('services', 'id'),
    'filter[teams]': ('groups', 'slug'),
    'filter[team_ids]': ('groups', 'id'),
    'filter[environments]': ('environments', 'slug'),
    'filter[environment_ids]': ('environments', 'id'),
    'filter[severity]': ('severity', 'slug'),
    'filter[severity_id]': ('severity', 'id'),
}
_SIMULATED = {'filter[status]', 'filter[kind]', 'sort', 'page[number]', 'page[size]', *_RESOURCE_FILTERS}
RELATED = ('services', 'groups', 'environments')  # served as relationships, not attributes
_SEVERITY_LEVEL = {'SEV0': 'critical', 'SEV1': 'critical', 'SEV2': 'high', 'SEV3': 'medium'}


def _limit_headers(quota: Quota) -> dict:
    return {
        'X-RateLimit-Limit': f'{quota.limit}, {quota.limit};window={quota.per}',
        'X-RateLimit-Remaining': str(quota.remaining),
        'X-RateLimit-Used': str(quota.limit - quota.remaining),
        'X-RateLimit-Reset': str(int(quota.reset + 0.999)),
    }


def slug(name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


class RootlySimulator(ToolSimulator):
    source = 'rootly'
    limits = RateLimit(429, _limit_headers, lambda quota: {'error': 'Rate limit exceeded. Try again later.'},
                       every_answer=True)  # fmt: skip
    check_without_served_as = False
    corrected, corrupted = ('started_at', 'resolved_at'), 'started_at'
    list_path = LIST_PATH
    max_page_size = MAX_PAGE_SIZE
    # The driver's defaults as Datadog spells them: `Checkout API`, `Payments Team`, `Production`, `SEV1`.
    expected_tags: ClassVar[dict[str, str]] = {**ToolSimulator.expected_tags, 'env': 'production'}

    def __init__(self, token='sim-rootly-token', utc_offset=timedelta(0), rate_limit=RATE_LIMIT, validate=True):
        super().__init__(validate, rate_limit)
        self.token = token
        self._zone = timezone(utc_offset)  # the zone timestamps are written in: any offset is the same moment
        self.incidents: dict[str, dict] = {}  # id -> attributes, timestamps as datetimes
        self._resources: dict[tuple[str, str], dict] = {}
        self._sequence = itertools.count(1)

    # -- the driver interface ------------------------------------------------------------------------
    def open(
        self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=ENVIRONMENT, severity=SEVERITY
    ) -> str:
        with self._lock:
            incident_id, number = str(uuid.uuid4()), next(self._sequence)
            self.incidents[incident_id] = {
                'title': title,
                'kind': 'normal',
                'slug': slug(title),
                'sequential_id': number,
                'parent_incident_id': None,
                'duplicate_incident_id': None,
                'summary': None,
                'private': False,
                'source': 'web',
                'status': 'started',
                'url': f'https://rootly.com/account/incidents/{number}-{slug(title)}',
                # No severity: the key is left out. The description says `nullable`, but beside `allOf` a
                # validator reads that as not nullable (OpenAPI 3.0), and Rootly's SDKs say "unset".
                **({'severity': self._resource('severities', severity)} if severity else {}),
                'environments': [self._resource('environments', environment)] if environment else [],
                'incident_types': [],
                'services': [self._resource('services', service)] if service else [],
                'functionalities': [],
                'groups': [self._resource('groups', team)] if team else [],
                'labels': {},
                'mitigation_message': None,
                'resolution_message': None,
                'cancellation_message': None,
                'retrospective_progress_status': 'not_started',
                **dict.fromkeys(TIMES),
                'created_at': started_at,
                'updated_at': started_at,
                'started_at': started_at,
                'detected_at': started_at,
            }
            return incident_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        with self._lock:
            incident = self.incidents[incident_id]
            self.lag.hold(incident_id, incident, hidden, at)
            incident.update(status='resolved', resolved_at=at, updated_at=at)

    def touch(self, incident_id: str, at: datetime) -> None:
        self.incidents[incident_id]['updated_at'] = at

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """A retrospective incident: Rootly's `backfilled` kind, entered now for an incident that is over."""
        incident_id = self.open(started_at, **open_options)
        now = datetime.now(UTC)
        self.update(
            incident_id, kind='backfilled', status='resolved', resolved_at=resolved_at, created_at=now, updated_at=now
        )
        return incident_id

    def reopen(self, incident_id: str, at: datetime) -> None:
        with self._lock:
            self.lag.show(incident_id)
            incident = self.incidents[incident_id]
            incident.update(status='started', resolved_at=None, mitigated_at=None, closed_at=None, updated_at=at)

    # Why each incident `open_non_failures` makes is not a failure, in the order it returns them (the demo shows them).
    not_failures = (
        'kind `test`',
        'kind `test_sub`',
        'kind `example`',
        'kind `example_sub`',
        'kind `scheduled` (maintenance, ends `completed`)',
        'kind `scheduled_sub` (maintenance, ends `completed`)',
        'cancelled',
        'a duplicate of another incident',
    )

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            kinds = ('test', 'test_sub', 'example', 'example_sub', 'scheduled', 'scheduled_sub')
            reasons = (*kinds, 'cancelled', 'duplicate')
            ids = {reason: self.open(started_at, title=f'Not a failure: {reason}') for reason in reasons}
            for reason, incident_id in ids.items():
                self.resolve(incident_id, resolved_at)
                if reason in kinds:  # scheduled maintenance ends `completed`
                    self.update(incident_id, kind=reason, status='completed' if 'scheduled' in reason else 'resolved')
            self.update(ids['cancelled'], status='cancelled', cancelled_at=resolved_at, cancellation_message='Not one')
            self.update(ids['duplicate'], duplicate_incident_id=str(uuid.uuid4()))  # of an incident not listed here
            return list(ids.values())

    # -- more of Rootly, for tool-specific tests -----------------------------------------------------
    def mitigate(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, status='mitigated', mitigated_at=at, updated_at=at)

    def update(self, incident_id: str, **attributes) -> None:
        """Sets attributes as stored (timestamps as datetimes, `services` etc. as names)."""
        with self._lock:
            for field in ('services', 'groups', 'environments'):
                if field in attributes:
                    attributes[field] = [self._resource(field, name) for name in attributes[field]]
            if isinstance(attributes.get('severity'), str):
                attributes['severity'] = self._resource('severities', attributes['severity'])
            self.incidents[incident_id].update(attributes)

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        if request.headers.get('authorization') != f'Bearer {self.token}':
            return _errors(401, 'Unauthorized', 'Invalid or missing API key')
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _errors(400, 'Bad Request', message)

    def request_problem(self, request: Request) -> str | None:
        # `include` is a comma-separated list, as JSON:API has it, where the description's enum names one value.
        for name in (first(request.query, 'include') or '').split(','):
            query = [(k, name if k == 'include' else v) for k, v in request.query]
            problem = super().request_problem(Request(request.method, request.path, query, request.headers, b''))
            if problem:
                return problem
        return None

    def route(self, request: Request) -> Response:
        if request.method == 'GET' and request.path == LIST_PATH:
            return self._list(request)
        return _errors(404, 'Not Found', f'{request.method} {request.path}')

    def _list(self, request: Request) -> Response:
        query = request.query
        predicates = _filters(query)
        selected = [(i, attrs) for i, attrs in self.listed() if all(matches(attrs) for matches in predicates)]
        selected.sort(key=lambda item: item[0])
        field, descending = _sort(first(query, 'sort') or '-created_at')
        selected.sort(key=lambda item: item[1][field], reverse=descending)
        size = min(positive(first(query, 'page[size]'), DEFAULT_PAGE_SIZE, 'page[size]'), MAX_PAGE_SIZE)
        number = positive(first(query, 'page[number]'), 1, 'page[number]')
        if number > MAX_PAGE_NUMBER:
            raise Invalid(f'page[number] must be at most {MAX_PAGE_NUMBER}')
        pages = max(1, -(-len(selected) // size))
        page = selected[(number - 1) * size : number * size]
        after = number + 1 if number < pages else None
        pages_linked = {'self': number, 'first': 1, 'prev': number - 1 or None, 'next': after, 'last': pages}
        document = {
            'data': [self._served(incident_id, attrs) for incident_id, attrs in page],
            'links': {rel: n and self.link(request, **{'page[number]': n}) for rel, n in pages_linked.items()},
            'meta': {
                'current_page': number,
                'next_page': pages_linked['next'],
                'prev_page': pages_linked['prev'],
                'total_count': len(selected),
                'total_pages': pages,
            },
        }
        if wanted := set(filter(None, (first(query, 'include') or '').split(','))):
            related = [(field, ref['data']) for _, attrs in page for field in RELATED for ref in attrs.get(field) or []]
            included = {(field, data['id']): {**data, 'type': field} for field, data in related if field in wanted}
            document['included'] = list(included.values())
        return Response.json(200, document, {'Content-Type': JSON_API})

    def _served(self, incident_id: str, attrs: dict) -> dict:
        """The record as the live API lists it: services, teams and environments as relationships."""
        served = {k: iso(v, 'milliseconds', self._zone) if isinstance(v, datetime) else v for k, v in attrs.items()}
        relationships = {}
        for field in RELATED:
            refs = served.pop(field, None) or []
            relationships[field] = {'data': [{'id': ref['data']['id'], 'type': field} for ref in refs]}
        attributes = self.served(incident_id, served)
        return {'id': incident_id, 'type': 'incidents', 'attributes': attributes, 'relationships': relationships}

    def _resource(self, collection: str, name: str) -> dict:
        """The catalog entry (service, team, environment, severity) of that name, as incidents embed it."""
        key = (collection, name)
        if key not in self._resources:
            created = iso(datetime(2024, 1, 1, tzinfo=UTC), 'milliseconds', self._zone)
            attributes = {
                'name': name,
                'slug': slug(name),
                'description': None,
                'color': '#047BF8',
                'position': 1,
                **{key: [] for key in ('notify_emails', 'slack_channels', 'slack_aliases')},
                **dict.fromkeys(('created_at', 'updated_at'), created),
            }
            if collection == 'severities':
                attributes['severity'] = _SEVERITY_LEVEL.get(name.upper(), 'low')
            self._resources[key] = {'data': {'id': str(uuid.uuid4()), 'type': collection, 'attributes': attributes}}
        return copy.deepcopy(self._resources[key])


def _filters(query: list[tuple[str, str]]) -> list:
    """One predicate over an incident's attributes per filter of the query (other parameters select nothing)."""
    predicates = []
    for name, value in query:
        time_filter = _TIME_FILTER.fullmatch(name)
        if time_filter:
            field, op = time_filter.groups()
            if field not in TIMES:
                raise Invalid(f'{name} is not simulated by the loopback Rootly')
            bound = (field, COMPARE[_OPERATORS[op]], parse_time(value, name))
            predicates.append(lambda attrs, bound=bound: within(attrs.get, [bound]))  # unset: no match, as in SQL
        elif name in _RESOURCE_FILTERS:
            predicates.append(_resource_filter(*_RESOURCE_FILTERS[name], set(value.split(','))))
        elif name in ('filter[status]', 'filter[kind]'):
            field, wanted = name[len('filter[') : -1], set(value.split(','))
            predicates.append(lambda attrs, field=field, wanted=wanted: attrs.get(field) in wanted)
        elif name.startswith('filter[') and name not in _SIMULATED:
            raise Invalid(f'{name} is not simulated by the loopback Rootly')
    return predicates


def _resource_filter(field, key, wanted):
    def matches(attrs):
        refs = attrs.get(field)
        refs = refs if isinstance(refs, list) else [refs] if refs else []
        return any((ref['data']['id'] if key == 'id' else ref['data']['attributes']['slug']) in wanted for ref in refs)

    return matches


def _sort(value: str) -> tuple[str, bool]:
    field = value.lstrip('-')
    if field not in ('created_at', 'updated_at'):
        raise Invalid(f'sort by {value!r} is not supported')
    return field, value.startswith('-')


def _errors(status: int, title: str, detail: str) -> Response:
    document = {'errors': [{'title': title, 'status': str(status), 'code': None, 'detail': detail}]}
    return Response.json(status, document, {'Content-Type': JSON_API})
