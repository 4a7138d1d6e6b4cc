"""A stateful loopback Atlassian Statuspage manage API: `GET /v1/pages/{page_id}/incidents`.

Where each piece of knowledge comes from:

- The manage API's OpenAPI description (as generated into `sbecker59/statuspage-api-client-go`, derived into
  `loopback/specs/statuspage.json`): the path under the `https://api.statuspage.io/v1` prefix, `q`, `limit`
  (default and maximum 100: a larger one is served 100), `page` (from 1; a page past the last is empty), a bare
  JSON array with no total and no `Link`, the incident fields, impacts and statuses, the `Authorization` header
  (`OAuth <key>`), and the rate limit of its introduction: 1 request a second per API key over a rolling
  60-second window, answered 420 or 429.
- Recorded answers of the live API (`faros-ai/airbyte-connectors`, `sources/statuspage-source/test_files/`):
  `started_at`, null for unset times, components in full, `incident_updates` newest first with `display_at`,
  and a backfilled incident (Statuspage's own example) whose `created_at` and update times are in the past while
  its `started_at` is when it was entered. The status `postmortem` once a postmortem is published.
- Statuspage's API reference and status pages: the order, newest created first (not documented: assumed, as the
  check assumes it); times in the page's time zone with milliseconds (`2026-11-26T08:02:03.123-06:00`);
  401 `{"error": "Could not authenticate"}` for a wrong key or another scheme (`Bearer`); 404 for a page the key
  cannot see; `Retry-After` (seconds) on a rate limit and no `X-RateLimit-*` headers.

The plumbing is `handle()`, in the order every simulator follows: validate the request against the description,
authorize, rate-limit, route, validate the answer. The vendor's semantics are the methods it calls. A request the
description rejects is answered 400 and kept in `spec_violations`; so is an API key sent in the URL (`?api_key=`,
which Statuspage accepts but which lands in access logs). Corruption (`corrupt`) is a fault like an injected one:
the answer is validated as it would be without it.
"""

from __future__ import annotations

import copy
import random
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

from . import spec
from .driver import SERVICE, SEVERITY, TITLE
from .lag import Lag
from .querying import SlidingWindow
from .server import Fault, LoopbackServer, Request, Response

VENDOR = 'statuspage'
PREFIX = '/v1'
DEFAULT_PAGE_ID = 'kctbh9vrtdwd'
MAX_PAGE_SIZE = 100
RATE_LIMIT = (60, 60.0)  # 1 request a second, measured over a rolling minute
PAGE_ZONE = timezone(timedelta(hours=-6))  # the page's time zone (America/Chicago in winter)
IMPACTS = {'SEV1': 'critical', 'SEV2': 'major'}  # the driver's severities as impacts; lower ones are minor
UNAUTHENTICATED = {'error': 'Could not authenticate'}


class StatuspageSimulator(LoopbackServer):
    source = VENDOR
    max_page_size = MAX_PAGE_SIZE
    # A component per service, `impact` as severity; Statuspage has no teams and no environments.
    expected_tags: ClassVar[dict[str, str]] = {'service': 'checkout_api', 'severity': 'critical'}
    # Why each incident `open_non_failures` makes is not a failure, in the order it returns them.
    not_failures = ('impact `none` (informational)', 'a completed scheduled maintenance (impact `maintenance`)')

    def __init__(self, page_id: str = DEFAULT_PAGE_ID, rate_limit=RATE_LIMIT, rate_limit_status: int = 420):
        super().__init__()
        self.page_id = page_id
        self.token = ''.join(random.choices('0123456789abcdef', k=64))
        self.list_path = f'{PREFIX}/pages/{page_id}/incidents'
        self.rate_limit_status = rate_limit_status
        self.spec_violations: list[str] = []
        self.incidents: dict[str, dict] = {}  # id -> fields, times as datetimes
        self.components: dict[str, str] = {}  # name -> id
        self._lag = Lag()
        self._served_as: dict[str, dict] = {}
        self._window = SlidingWindow(rate_limit)

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return {
            'source': self.source,
            'api_token': self.token,
            'api_url': self.url + PREFIX,
            'page_id': self.page_id,
            **options,
        }

    def open(self, started_at, *, title=TITLE, service=SERVICE, team=None, environment=None, severity=SEVERITY):
        """Posted at `started_at` ("investigating"), the service as an affected component."""
        with self._lock:
            incident_id = self._new_id()
            self.incidents[incident_id] = {
                'name': title,
                'status': 'investigating',
                'impact': IMPACTS.get(severity, 'minor') if severity else 'none',
                'created_at': started_at,
                'started_at': started_at,
                'updated_at': started_at,
                'monitoring_at': None,
                'resolved_at': None,
                'scheduled_for': None,
                'scheduled_until': None,
                'postmortem_published_at': None,
                'components': [self._component(service)] if service else [],
                'updates': [],
            }
            self._post(incident_id, 'investigating', started_at)
            return incident_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        with self._lock:
            incident = self.incidents[incident_id]
            self._lag.hold(incident_id, incident, at, hidden)
            self._post(incident_id, 'resolved', at)
            incident.update(status='resolved', resolved_at=at, updated_at=at)

    def reveal(self, incident_id: str) -> None:
        with self._lock:
            self._lag.show(incident_id)

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """A backfilled incident: its updates and `created_at` in the past, `started_at` and `updated_at` now
        (as the recorded example incident shows)."""
        with self._lock:
            incident_id = self.open(started_at, **open_options)
            now = datetime.now(UTC)
            self._post(incident_id, 'resolved', resolved_at, created=now)
            self.incidents[incident_id].update(
                status='resolved', resolved_at=resolved_at, started_at=now, updated_at=now
            )
            return incident_id

    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """Resolved now, the resolving update's display time set back to `at`."""
        with self._lock:
            now = datetime.now(UTC)
            self._post(incident_id, 'resolved', at, created=now)
            self.incidents[incident_id].update(status='resolved', resolved_at=at, updated_at=now)

    def correct(self, incident_id: str, *, started_at=None, resolved_at=None) -> None:
        """An update's display time edited now: the resolving one moves `resolved_at`; `started_at` is the
        incident's start as Statuspage keeps it."""
        with self._lock:
            incident = self.incidents[incident_id]
            if started_at is not None:
                incident['started_at'] = started_at
            if resolved_at is not None:
                resolving = next(u for u in incident['updates'] if u['status'] == 'resolved')
                resolving['display_at'] = resolved_at
                incident['resolved_at'] = resolved_at
            incident['updated_at'] = datetime.now(UTC)

    def reopen(self, incident_id: str, at: datetime) -> None:
        """A new update back to investigating: `resolved_at` is cleared."""
        with self._lock:
            self._lag.show(incident_id)
            self._post(incident_id, 'investigating', at)
            self.incidents[incident_id].update(status='investigating', resolved_at=None, updated_at=at)

    def corrupt(self, incident_id: str) -> None:
        """Its `resolved_at` is served as a string that is no timestamp."""
        with self._lock:
            self._served_as.setdefault(incident_id, {})['resolved_at'] = 'sometime last week'

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            informational = self.open(started_at, title='Not a failure: informational', severity=None)
            self.resolve(informational, resolved_at)
            maintenance = self.schedule_maintenance(started_at, resolved_at, title='Not a failure: maintenance')
            self.complete_maintenance(maintenance, resolved_at)
            return [informational, maintenance]

    def rate_limited(self, seconds: int = 1) -> Fault:
        body = b'{"error": "Rate limit exceeded"}'
        headers = {'Retry-After': str(seconds), 'Content-Type': 'application/json'}
        return Fault(status=self.rate_limit_status, headers=headers, body=body, path=self.list_path)

    # -- more of Statuspage, for tool-specific tests -------------------------------------------------
    def update(self, incident_id: str, **fields) -> None:
        """Sets fields as stored (times as datetimes)."""
        with self._lock:
            self.incidents[incident_id].update(fields)

    def monitor(self, incident_id: str, at: datetime) -> None:
        """A fix is in: the incident enters "monitoring" (`monitoring_at`)."""
        with self._lock:
            self._post(incident_id, 'monitoring', at)
            self.incidents[incident_id].update(status='monitoring', monitoring_at=at, updated_at=at)

    def publish_postmortem(self, incident_id: str, at: datetime) -> None:
        """The status becomes `postmortem`; no time of the incident moves but `updated_at`."""
        self.update(incident_id, status='postmortem', postmortem_published_at=at, updated_at=at)

    def schedule_maintenance(self, starts: datetime, ends: datetime, *, title=TITLE, service=SERVICE) -> str:
        with self._lock:
            incident_id = self.open(starts, title=title, service=service)
            self.incidents[incident_id]['updates'].clear()
            self.update(
                incident_id, impact='maintenance', status='scheduled', scheduled_for=starts, scheduled_until=ends
            )
            self._post(incident_id, 'scheduled', starts)
            return incident_id

    def complete_maintenance(self, incident_id: str, at: datetime) -> None:
        with self._lock:
            self._post(incident_id, 'completed', at)
            self.update(incident_id, status='completed', resolved_at=at, updated_at=at)

    def serve_as(self, incident_id: str, **fields) -> None:
        with self._lock:
            self._served_as.setdefault(incident_id, {}).update(fields)

    # -- HTTP: the pipeline --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        problem = self._request_problem(request)
        if problem:
            self.spec_violations.append(problem)
            return Response.json(400, {'error': problem})
        refused = self._authorize(request)
        if refused:
            return refused
        limited = self._rate_limit()
        if limited:
            return limited
        response, clean = self._route(request)
        if response.status == 200:
            problem = spec.response_problem(VENDOR, request, clean)
            if problem:
                self.spec_violations.append(problem)
        return response

    def _request_problem(self, request: Request) -> str | None:
        if not request.path.startswith(PREFIX + '/'):
            return f'{request.path}: not under the API prefix {PREFIX}'
        if any(name == 'api_key' for name, _ in request.query):
            return f'{request.path}: the API key travelled in the URL (`api_key`), not in `Authorization`'
        return spec.request_problem(VENDOR, request)

    def _authorize(self, request: Request) -> Response | None:
        if request.headers.get('authorization') != f'OAuth {self.token}':
            return Response.json(401, UNAUTHENTICATED)
        return None

    def _rate_limit(self) -> Response | None:
        wait = self._window.wait()
        if wait is None:
            return None
        return Response.json(self.rate_limit_status, {'error': 'Rate limit exceeded'}, {'Retry-After': str(wait)})

    def _route(self, request: Request) -> tuple[Response, Response]:
        """The answer, and the same answer without deliberate corruption (what the description is checked on)."""
        parts = request.path.removeprefix(PREFIX).strip('/').split('/')
        if request.method != 'GET' or len(parts) != 3 or parts[0] != 'pages' or parts[2] != 'incidents':
            missing = Response.json(404, {'error': 'The requested resource could not be found.'})
            return missing, missing
        if parts[1] != self.page_id:
            missing = Response.json(404, {'error': 'The requested resource could not be found.'})
            return missing, missing
        page = self._list(dict(request.query))
        served = Response.json(200, [self._served(incident_id, fields) for incident_id, fields in page])
        clean = Response.json(200, [self._served(i, fields, malformed=False) for i, fields in page])
        return served, clean

    # -- Statuspage's semantics ----------------------------------------------------------------------
    def _list(self, query: dict) -> list[tuple[str, dict]]:
        """Newest created first, every incident of the page (maintenances and backfilled ones included)."""
        now = datetime.now(UTC)
        listed = [(i, self._lag.listed(i, fields, now)) for i, fields in self.incidents.items()]
        text = query.get('q', '').lower()
        if text:
            listed = [(i, f) for i, f in listed if text in f['name'].lower() or text == f['status']]
        listed.sort(key=lambda item: (item[1]['created_at'], item[0]), reverse=True)
        size = min(int(query.get('limit', MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
        number = max(1, int(query.get('page', 1)))
        return listed[(number - 1) * size : number * size]

    def _served(self, incident_id: str, fields: dict, malformed: bool = True) -> dict:
        served = {
            'id': incident_id,
            'name': fields['name'],
            'status': fields['status'],
            'created_at': _time(fields['created_at']),
            'updated_at': _time(fields['updated_at']),
            'monitoring_at': _time(fields['monitoring_at']),
            'resolved_at': _time(fields['resolved_at']),
            'impact': fields['impact'],
            'impact_override': None,
            'shortlink': f'https://stspg.io/{incident_id}',
            'started_at': _time(fields['started_at']),
            'page_id': self.page_id,
            'scheduled_for': _time(fields['scheduled_for']),
            'scheduled_until': _time(fields['scheduled_until']),
            'scheduled_remind_prior': False,
            'scheduled_reminded_at': None,
            'scheduled_auto_in_progress': fields['impact'] == 'maintenance',
            'scheduled_auto_completed': fields['impact'] == 'maintenance',
            'metadata': {},
            'postmortem_body': None,
            'postmortem_body_last_updated_at': None,
            'postmortem_ignored': False,
            'postmortem_published_at': _time(fields['postmortem_published_at']),
            'postmortem_notified_subscribers': False,
            'postmortem_notified_twitter': False,
            'incident_updates': [self._update(incident_id, u) for u in reversed(fields['updates'])],
            'components': [self._component_served(component) for component in fields['components']],
        }
        if malformed:
            served.update(copy.deepcopy(self._served_as.get(incident_id, {})))
        return served

    def _update(self, incident_id: str, update: dict) -> dict:
        return {
            'id': update['id'],
            'status': update['status'],
            'body': f'The incident is {update["status"]}.',
            'incident_id': incident_id,
            'created_at': _time(update['created_at']),
            'updated_at': _time(update['created_at']),
            'display_at': _time(update['display_at']),
            'affected_components': None,
            'deliver_notifications': True,
            'custom_tweet': None,
            'tweet_id': None,
        }

    def _component_served(self, component: dict) -> dict:
        return {
            'id': component['id'],
            'name': component['name'],
            'status': 'operational',
            'created_at': _time(datetime(2026, 1, 5, 14, 36, 16, 379000, UTC)),
            'updated_at': _time(datetime(2026, 1, 5, 14, 36, 16, 379000, UTC)),
            'position': 1,
            'description': None,
            'showcase': True,
            'start_date': '2026-01-05',
            'group_id': None,
            'page_id': self.page_id,
            'group': False,
            'only_show_if_degraded': False,
        }

    def _component(self, name: str) -> dict:
        if name not in self.components:
            self.components[name] = ''.join(random.choices(string.ascii_lowercase + string.digits, k=12))
        return {'id': self.components[name], 'name': name}

    def _post(self, incident_id: str, status: str, display_at: datetime, created: datetime | None = None) -> None:
        self.incidents[incident_id]['updates'].append(
            {'id': self._new_id(), 'status': status, 'display_at': display_at, 'created_at': created or display_at}
        )

    def _new_id(self) -> str:
        """Statuspage ids: 12 lowercase letters and digits."""
        return ''.join(random.choices(string.ascii_lowercase + string.digits, k=12))


def _time(moment: datetime | None) -> str | None:
    """In the page's time zone, with milliseconds, as Statuspage serves times."""
    if moment is None:
        return None
    return moment.astimezone(PAGE_ZONE).isoformat(timespec='milliseconds')
