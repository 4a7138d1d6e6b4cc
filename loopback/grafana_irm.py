"""A stateful loopback Grafana Cloud stack: the IRM app's Incident API (`IncidentsService.QueryIncidentPreviews`).

Grafana publishes no OpenAPI description of the Incident API: this simulator and its minimal description
(`loopback/specs/grafana_irm.json`, hand-written) follow the Go client Grafana generates from the API
(grafana/incident-go, client.gen.go: request and answer shapes, the RPC URL, the `{"error"}` body) and
Grafana Cloud's IRM docs (service account tokens, the incident query syntax). Where neither says, the
choice is marked "assumed" below; no recorded live answer was replayed. Every request and every documented
answer is checked against the description (`spec_violations`), gzipped answers as decoded.

- RPC: every call is `POST <stack>/api/plugins/grafana-irm-app/resources/api/v1/<Service>.<Method>` with a
  JSON body; an unknown method is a 404 `{"error"}` (assumed). Answers are gzipped when the request accepts
  gzip (the Go client asks for it and decodes it).
- Auth: Grafana checks `Authorization: Bearer <service account token>` before the plugin sees the call:
  a wrong token is a 401 `{"message": "Invalid API key", "messageId": "api-key.invalid", ...}`, none a 401
  `{"message": "Unauthorized", "messageId": "auth.unauthorized", ...}` (Grafana's own answers).
- `QueryIncidentPreviews`: `{"query": {"limit", "orderField", "orderDirection", "queryString"}, "cursor":
  {"nextValue", "hasMore"}}` -> `{"incidentPreviews", "query", "cursor"}`. `orderField` `createdTime`
  (when empty) or `modifiedTime` (others are "not simulated", a 400); `orderDirection` `ASC`/`DESC`; ties
  by `incidentID`. `limit` above 100 is served 100 (Grafana states no maximum: assumed). `cursor.nextValue`
  is opaque (an offset here, so an incident that moves to the front while the list is paged shifts the
  rest: one may be served twice). An empty list is `null`, as Go encodes an empty slice (assumed).
- `queryString` terms, and'ed: `isdrill:true|false`, `status:active|resolved`, `label:<value>` or
  `label:<key>:<value>`; any other term is a 400 "not simulated", so that no test relies on a filter
  ignored. No `modified:` exists in IRM's syntax.
- `StatusService.QueryOrgStatuses`: the stack's statuses, `active` and `resolved` plus those `add_status`
  defines with their category; a preview's `status` holds the slug of a custom status (assumed).
- Previews: times are RFC 3339 UTC with 0 to 6 fractional digits (trailing zeros dropped, as Go writes
  them); unset `incidentStart`, `incidentEnd`, `closedTime` are `""`. `modifiedTime` moves with every
  change. Labels `[{key, label, description, colorHex}]`, a plain label keyed `tags`; severity as the
  stack names it (`severityLabel`; `Pending` until set).
- Lifecycle (assumed where the docs are silent): resolving sets `closedTime` and, when unset, `incidentEnd`;
  reopening clears both; `incidentStart` / `incidentEnd` can be edited any time, `closedTime` cannot.
- Rate limit: Grafana documents none for this API (off by default); past `rate_limit`, and for the
  driver's `rate_limited`, a 429 `{"message": "Too Many Requests"}` with `Retry-After`, as Grafana Cloud's
  gateway answers.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
from datetime import UTC, datetime
from urllib.parse import urlsplit

from .core import Invalid, RateLimit, ToolSimulator, iso
from .driver import SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

RPC_PATH = '/api/plugins/grafana-irm-app/resources/api/v1'
LIST_PATH = f'{RPC_PATH}/IncidentsService.QueryIncidentPreviews'
STATUSES_PATH = f'{RPC_PATH}/StatusService.QueryOrgStatuses'
MAX_PAGE_SIZE = 100
ORDER_FIELDS = {'': 'createdTime', 'createdTime': 'createdTime', 'modifiedTime': 'modifiedTime'}
TIMES = ('createdTime', 'modifiedTime', 'closedTime', 'incidentStart', 'incidentEnd')
BUILT_IN_STATUSES = (('active', 'Active', 'active'), ('resolved', 'Resolved', 'resolved'))
INVALID_KEY = {'message': 'Invalid API key', 'messageId': 'api-key.invalid', 'statusCode': 401, 'traceID': ''}
NO_KEY = {'message': 'Unauthorized', 'messageId': 'auth.unauthorized', 'statusCode': 401, 'traceID': ''}


class GrafanaIrmSimulator(ToolSimulator):
    source = 'grafana_irm'
    list_path = LIST_PATH
    max_page_size = MAX_PAGE_SIZE
    limits = RateLimit(429, lambda q: {'Retry-After': str(q.wait)}, lambda q: {'message': 'Too Many Requests'})
    corrected, corrupted = ('incidentStart', 'incidentEnd'), 'incidentStart'  # `closedTime` cannot be edited
    # Label values and the stack's own severity label as Datadog tags (the core's defaults); IRM has no environments.

    def __init__(self, token: str = 'glsa_simulatedServiceAccountToken_0a1b2c3d', validate=True, rate_limit=None):
        super().__init__(validate, rate_limit)
        self.token = token
        self.incidents: dict[str, dict] = {}  # incidentID -> fields, times as datetimes (None: unset)
        self.statuses: list[dict] = [
            {'statusID': slug, 'incidentType': 'internal', 'name': name, 'slug': slug, 'category': category}
            for slug, name, category in BUILT_IN_STATUSES
        ]
        self._ids = itertools.count(1)

    # -- the driver interface ------------------------------------------------------------------------
    def open(self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=None, severity=SEVERITY):
        """Declared at `started_at`, its impact starting then. IRM has no environments."""
        with self._lock:
            incident_id = str(next(self._ids))
            labels = [('service', service), ('team', team), ('tags', 'customer-facing')]
            self.incidents[incident_id] = {
                'title': title,
                'slug': '-'.join(title.lower().split())[:60],
                'status': 'active',
                'isDrill': False,
                'severityLabel': severity or 'Pending',
                'labels': [{'key': key, 'label': label} for key, label in labels if label],
                **dict.fromkeys(('createdTime', 'modifiedTime', 'incidentStart'), started_at),
                **dict.fromkeys(('incidentEnd', 'closedTime')),
            }
            return self.reported_id(incident_id)

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        with self._lock:
            incident_id = self._known(incident_id)
            incident = self.incidents[incident_id]
            self.lag.hold(incident_id, incident, hidden, at)
            incident.update(status='resolved', closedTime=at, modifiedTime=at)
            if incident['incidentEnd'] is None:
                incident['incidentEnd'] = at

    def reveal(self, incident_id: str) -> None:
        with self._lock:
            self.lag.show(self._known(incident_id))

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """Declared now, its start and end entered as they were, and resolved: `closedTime` is now."""
        with self._lock:
            now = datetime.now(UTC)
            incident_id = self.open(started_at, **open_options)
            self.update(incident_id, createdTime=now, incidentEnd=resolved_at)
            self.resolve(incident_id, now)
            return incident_id

    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """Resolved now, its end entered as `at`."""
        with self._lock:
            self.update(incident_id, incidentEnd=at)
            self.resolve(incident_id, datetime.now(UTC))

    def touch(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, modifiedTime=at)

    def reopen(self, incident_id: str, at: datetime) -> None:
        with self._lock:
            self.lag.show(self._known(incident_id))
            self.update(incident_id, status='active', closedTime=None, incidentEnd=None, modifiedTime=at)

    def serve_as(self, incident_id: str, **fields) -> None:
        super().serve_as(self._known(incident_id), **fields)

    not_failures = ('a drill (`isDrill`)',)

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            drill = self.open(started_at, title='Not a failure: a drill')
            self.update(drill, isDrill=True)
            self.resolve(drill, resolved_at)
            return [drill]

    # -- more of IRM, for tool-specific tests ---------------------------------------------------------
    def update(self, incident_id: str, **fields) -> None:
        """Sets fields as stored (times as datetimes or None; `labels` as `[{key, label}]`)."""
        with self._lock:
            self.incidents[self._known(incident_id)].update(fields)

    def add_status(self, name: str, category: str) -> str:
        """A status of the stack's own (its slug is what previews carry)."""
        slug = '-'.join(name.lower().split())
        status = {'statusID': f'status-{slug}', 'incidentType': 'internal', 'name': name, 'slug': slug}
        with self._lock:
            self.statuses.append({**status, 'category': category})
        return slug

    def reported_id(self, incident_id: str) -> str:
        """The id the check reports an incident under: the stack's host and the `incidentID`."""
        return f'{urlsplit(self.url).netloc}:{incident_id}'

    def _known(self, incident_id: str) -> str:
        """The `incidentID` of an incident named by it or by the id the check reports."""
        incident_id = incident_id.rpartition(':')[2]
        if incident_id not in self.incidents:
            raise KeyError(f'no incident {incident_id}')
        return incident_id

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        """Grafana refuses the token before the plugin sees the call."""
        header = request.headers.get('authorization')
        if header is None:
            return Response.json(401, NO_KEY)
        return Response.json(401, INVALID_KEY) if header != f'Bearer {self.token}' else None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return Response.json(400, {'error': message})

    def route(self, request: Request) -> Response:
        if request.method != 'POST' or request.path not in (LIST_PATH, STATUSES_PATH):
            return Response.json(404, {'error': f'no such method: {request.path.rsplit("/", 1)[-1]}'})
        body = json.loads(request.body or b'{}')
        response = Response.json(200, self._statuses(body) if request.path == STATUSES_PATH else self._previews(body))
        if 'gzip' not in request.headers.get('accept-encoding', ''):
            return response
        return Response(200, gzip.compress(response.body), {**response.headers, 'Content-Encoding': 'gzip'})

    def answer_problem(self, request: Request, response: Response) -> str | None:
        if response.headers.get('Content-Encoding') == 'gzip':
            response = Response(response.status, gzip.decompress(response.body), response.headers)
        return super().answer_problem(request, response)

    # -- the vendor's semantics ----------------------------------------------------------------------
    def _statuses(self, body: dict) -> dict:
        wanted = body.get('incidentType') or None
        statuses = [dict(s) for s in self.statuses if wanted in (None, s['incidentType'])]
        return {'configurations': [{'incidentType': 'internal', 'default': True, 'statuses': statuses}]}

    def _previews(self, body: dict) -> dict:
        query = body.get('query') or {}
        order = ORDER_FIELDS.get(query.get('orderField') or '')
        if order is None:
            raise Invalid(f'orderField {query["orderField"]!r} is not simulated', 'orderField')
        matches = _parse_query(query.get('queryString') or '')
        listed = [item for item in self.listed() if all(match(item[1]) for match in matches)]
        descending = query.get('orderDirection') == 'DESC'
        listed.sort(key=lambda item: (item[1][order], int(item[0])), reverse=descending)
        limit = min(int(query.get('limit') or 10), MAX_PAGE_SIZE)
        offset = _offset((body.get('cursor') or {}).get('nextValue') or '')
        more = offset + limit < len(listed)
        return {
            'incidentPreviews': [self._preview(i, fields) for i, fields in listed[offset : offset + limit]] or None,
            'query': {
                'limit': limit,
                'orderField': order,
                'orderDirection': 'DESC' if descending else 'ASC',
                'queryString': query.get('queryString') or '',
            },
            'cursor': {'nextValue': _token(offset + limit) if more else '', 'hasMore': more},
        }

    def _preview(self, incident_id: str, fields: dict) -> dict:
        labels = [{**label, 'description': '', 'colorHex': '#3d71d9'} for label in fields['labels']]
        preview = {
            'incidentID': incident_id,
            'severityID': f'severity-{fields["severityLabel"].lower()}',
            'severityLabel': fields['severityLabel'],
            'incidentType': 'internal',
            'labels': labels or None,
            'isDrill': fields['isDrill'],
            'title': fields['title'],
            **dict.fromkeys(('description', 'summary'), ''),
            'status': fields['status'],
            'slug': fields['slug'],
            'version': 1,
            **{name: _rfc3339(fields[name]) for name in TIMES},
        }
        return self.served(incident_id, preview)


def _parse_query(text: str) -> list:
    predicates = []
    for term in text.split():
        name, _, value = term.partition(':')
        name = name.lower()
        if name == 'isdrill' and value in ('true', 'false'):
            predicates.append(lambda fields, want=value == 'true': fields['isDrill'] is want)
        elif name == 'status' and value in ('active', 'resolved'):
            predicates.append(lambda fields, want=value: fields['status'] == want)
        elif name == 'label' and value:
            wanted = value.rpartition(':')[::2]  # (key or '', label)
            predicates.append(
                lambda fields, k=wanted: any(k in ((i['key'], i['label']), ('', i['label'])) for i in fields['labels'])
            )
        else:
            raise Invalid(f'query term {term!r} is not simulated', 'queryString')
    return predicates


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f'offset:{offset}'.encode()).decode()


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(':')
        if kind == 'offset' and value.isdigit():
            return int(value)
    except ValueError:
        pass
    raise Invalid('invalid cursor', 'cursor')


def _rfc3339(moment: datetime | None) -> str:
    """As Go's time.RFC3339Nano writes it: UTC `Z`, trailing zeros of the fraction dropped; unset is `""`."""
    return '' if moment is None else iso(moment, 'microseconds')[:-1].rstrip('0').rstrip('.') + 'Z'
