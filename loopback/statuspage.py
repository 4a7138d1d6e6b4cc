"""A stateful loopback Atlassian Statuspage manage API: `GET /v1/pages/{page_id}/incidents`.

Where each piece of knowledge comes from:

- The manage API's OpenAPI description (as generated into `sbecker59/statuspage-api-client-go`, derived into
  `loopback/specs/statuspage.json`): the path under the `https://api.statuspage.io/v1` prefix, `q`, `limit`
  (default and maximum 100: a larger one is served 100), `page` (from 1; a page past the last is empty), a bare
  JSON array with no total and no `Link`, the incident fields, impacts and statuses, the `Authorization` header
  (`OAuth <key>`; the `api_key` query parameter is accepted too), and the rate limit of its introduction:
  1 request a second per API key over a rolling 60-second window, answered 420 or 429 (420 here).
- Recorded answers of the live API (`faros-ai/airbyte-connectors`, `sources/statuspage-source/test_files/`):
  `started_at`, null for unset times, components in full, `incident_updates` newest first with `display_at`,
  and a backfilled incident (Statuspage's own example) whose `created_at` and update times are in the past while
  its `started_at` is when it was entered. The status `postmortem` once a postmortem is published.
- Statuspage's API reference and status pages: the order, newest created first (not documented: assumed, as the
  check assumes it); times in the page's time zone with milliseconds (`2026-11-26T08:02:03.123-06:00`);
  401 `{"error": "Could not authenticate"}` for a wrong key or another scheme (`Bearer`); 404 for a page the key
  cannot see; `Retry-After` (seconds) on a rate limit and no `X-RateLimit-*` headers.

An API key sent in the URL (`?api_key=`, which Statuspage accepts) is kept as a violation: it lands in access logs.
"""

from __future__ import annotations

import random
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

from .core import RateLimit, ToolSimulator, first, iso
from .driver import SERVICE, SEVERITY, TITLE
from .server import Request, Response

PREFIX = '/v1'
DEFAULT_PAGE_ID = 'kctbh9vrtdwd'
MAX_PAGE_SIZE = 100
RATE_LIMIT = (60, 60.0)  # 1 request a second, measured over a rolling minute
PAGE_ZONE = timezone(timedelta(hours=-6))  # the page's time zone (America/Chicago in winter)
IMPACTS = {'SEV1': 'critical', 'SEV2': 'major'}  # the driver's severities as impacts; lower ones are minor
COMPONENT_CREATED = datetime(2026, 1, 5, 14, 36, 16, 379000, UTC)
# What the list serves of features the simulated page does not use (reminders, tweets, postmortem notices).
UNUSED_INCIDENT_FIELDS = {
    **dict.fromkeys(('impact_override', 'scheduled_reminded_at', 'postmortem_body', 'postmortem_body_last_updated_at')),
    **dict.fromkeys(('scheduled_remind_prior', 'postmortem_ignored', 'postmortem_notified_subscribers'), False),
    'postmortem_notified_twitter': False,
}
UNUSED_UPDATE_FIELDS = {
    **dict.fromkeys(('affected_components', 'custom_tweet', 'tweet_id')),
    'deliver_notifications': True,
}


def _id() -> str:
    """Statuspage ids: 12 lowercase letters and digits."""
    return ''.join(random.choices(string.ascii_lowercase + string.digits, k=12))


def _time(moment: datetime | None) -> str | None:
    """In the page's time zone, with milliseconds, as Statuspage serves times."""
    return None if moment is None else iso(moment, 'milliseconds', PAGE_ZONE)


class StatuspageSimulator(ToolSimulator):
    source = 'statuspage'
    max_page_size = MAX_PAGE_SIZE
    reveal_touches = False
    corrupted = 'resolved_at'
    limits = RateLimit(420, lambda q: {'Retry-After': str(q.wait)}, lambda q: {'error': 'Rate limit exceeded'})
    # A component per service, `impact` as severity; Statuspage has no teams and no environments.
    expected_tags: ClassVar[dict[str, str]] = {'service': 'checkout_api', 'severity': 'critical'}
    not_failures = ('impact `none` (informational)', 'a completed scheduled maintenance (impact `maintenance`)')

    def __init__(self, page_id: str = DEFAULT_PAGE_ID, rate_limit=RATE_LIMIT, validate: bool = True):
        super().__init__(validate, rate_limit)
        self.page_id = page_id
        self.token = ''.join(random.choices('0123456789abcdef', k=64))
        self.list_path = f'{PREFIX}/pages/{page_id}/incidents'
        self.incidents: dict[str, dict] = {}  # id -> fields, times as datetimes
        self.components: dict[str, str] = {}  # name -> id

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return super().instance(api_url=self.url + PREFIX, page_id=self.page_id, **options)

    def open(self, started_at, *, title=TITLE, service=SERVICE, team=None, environment=None, severity=SEVERITY):
        """Posted at `started_at` ("investigating"), the service as an affected component."""
        with self._lock:
            incident_id = _id()
            times = ('monitoring_at', 'resolved_at', 'scheduled_for', 'scheduled_until', 'postmortem_published_at')
            self.incidents[incident_id] = {
                'name': title,
                'status': 'investigating',
                'impact': IMPACTS.get(severity, 'minor') if severity else 'none',
                **dict.fromkeys(('created_at', 'started_at', 'updated_at'), started_at),
                **dict.fromkeys(times),
                'components': [self._component(service)] if service else [],
                'updates': [],
            }
            self._post(incident_id, 'investigating', started_at)
            return incident_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        with self._lock:
            self.lag.hold(incident_id, self.incidents[incident_id], hidden, at)
            self._post(incident_id, 'resolved', at, resolved_at=at)

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """A backfilled incident: its updates and `created_at` in the past, `started_at` and `updated_at` now
        (as the recorded example incident shows)."""
        with self._lock:
            incident_id = super().enter_resolved(started_at, resolved_at, **open_options)
            self.update(incident_id, started_at=self.incidents[incident_id]['updated_at'])
            return incident_id

    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """Resolved now, the resolving update's display time set back to `at`."""
        self._post(incident_id, 'resolved', at, created=datetime.now(UTC), resolved_at=at)

    def correct(self, incident_id: str, *, started_at=None, resolved_at=None) -> None:
        """An update's display time edited now: the resolving one moves `resolved_at`; `started_at` is the
        incident's start as Statuspage keeps it."""
        with self._lock:
            incident = self.incidents[incident_id]
            if started_at is not None:
                incident['started_at'] = started_at
            if resolved_at is not None:
                next(u for u in incident['updates'] if u['status'] == 'resolved')['display_at'] = resolved_at
                incident['resolved_at'] = resolved_at
            incident['updated_at'] = datetime.now(UTC)

    def reopen(self, incident_id: str, at: datetime) -> None:
        """A new update back to investigating: `resolved_at` is cleared."""
        with self._lock:
            self.lag.show(incident_id)
            self._post(incident_id, 'investigating', at, resolved_at=None)

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            informational = self.open(started_at, title='Not a failure: informational', severity=None)
            self.resolve(informational, resolved_at)
            maintenance = self.schedule_maintenance(started_at, resolved_at, title='Not a failure: maintenance')
            self.complete_maintenance(maintenance, resolved_at)
            return [informational, maintenance]

    # -- more of Statuspage, for tool-specific tests -------------------------------------------------
    def monitor(self, incident_id: str, at: datetime) -> None:
        """A fix is in: the incident enters "monitoring" (`monitoring_at`)."""
        self._post(incident_id, 'monitoring', at, monitoring_at=at)

    def publish_postmortem(self, incident_id: str, at: datetime) -> None:
        """The status becomes `postmortem`; no time of the incident moves but `updated_at`."""
        self.update(incident_id, status='postmortem', postmortem_published_at=at, updated_at=at)

    def schedule_maintenance(self, starts: datetime, ends: datetime, *, title=TITLE, service=SERVICE) -> str:
        with self._lock:
            incident_id = self.open(starts, title=title, service=service)
            self.incidents[incident_id]['updates'].clear()
            self._post(
                incident_id, 'scheduled', starts, impact='maintenance', scheduled_for=starts, scheduled_until=ends
            )
            return incident_id

    def complete_maintenance(self, incident_id: str, at: datetime) -> None:
        self._post(incident_id, 'completed', at, resolved_at=at)

    # -- HTTP: Statuspage's semantics ----------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        header, key = request.headers.get('authorization'), first(request.query, 'api_key')
        if header != f'OAuth {self.token}' and key != self.token:
            return Response.json(401, {'error': 'Could not authenticate'})
        return None

    def request_problem(self, request: Request) -> str | None:
        if first(request.query, 'api_key') is not None:
            return f'{request.path}: the API key travelled in the URL (`api_key`), not in `Authorization`'
        return super().request_problem(request)

    def invalid(self, message: str, field: str | None = None) -> Response:
        return Response.json(400, {'error': message})

    def route(self, request: Request) -> Response:
        if request.method != 'GET' or request.path != self.list_path:  # another page, or no such resource
            return Response.json(404, {'error': 'The requested resource could not be found.'})
        return Response.json(200, [self._served(incident_id, fields) for incident_id, fields in self._list(request)])

    def _list(self, request: Request) -> list[tuple[str, dict]]:
        """Newest created first, every incident of the page (maintenances and backfilled ones included)."""
        listed = self.listed()
        text = first(request.query, 'q', '').lower()
        if text:
            listed = [(i, f) for i, f in listed if text in f['name'].lower() or text == f['status']]
        listed.sort(key=lambda item: (item[1]['created_at'], item[0]), reverse=True)
        size = min(int(first(request.query, 'limit', MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
        number = max(1, int(first(request.query, 'page', 1)))
        return listed[(number - 1) * size : number * size]

    def _served(self, incident_id: str, fields: dict) -> dict:
        times = ('created_at', 'updated_at', 'monitoring_at', 'resolved_at', 'started_at', 'scheduled_for')
        maintenance = fields['impact'] == 'maintenance'
        served = {
            'id': incident_id,
            'page_id': self.page_id,
            'name': fields['name'],
            'status': fields['status'],
            'impact': fields['impact'],
            **{name: _time(fields[name]) for name in (*times, 'scheduled_until', 'postmortem_published_at')},
            'shortlink': f'https://stspg.io/{incident_id}',
            'scheduled_auto_in_progress': maintenance,
            'scheduled_auto_completed': maintenance,
            **UNUSED_INCIDENT_FIELDS,
            'metadata': {},
            'incident_updates': [self._update(incident_id, update) for update in reversed(fields['updates'])],
            'components': [self._component_served(component) for component in fields['components']],
        }
        return self.served(incident_id, served)

    def _update(self, incident_id: str, update: dict) -> dict:
        return {
            'id': update['id'],
            'incident_id': incident_id,
            'status': update['status'],
            'body': f'The incident is {update["status"]}.',
            **dict.fromkeys(('created_at', 'updated_at'), _time(update['created_at'])),
            'display_at': _time(update['display_at']),
            **UNUSED_UPDATE_FIELDS,
        }

    def _component_served(self, component: dict) -> dict:
        return {
            **component,
            'page_id': self.page_id,
            'status': 'operational',
            **dict.fromkeys(('created_at', 'updated_at'), _time(COMPONENT_CREATED)),
            'start_date': COMPONENT_CREATED.date().isoformat(),
            'position': 1,
            'showcase': True,
            **dict.fromkeys(('description', 'group_id')),
            **dict.fromkeys(('group', 'only_show_if_degraded'), False),
        }

    def _component(self, name: str) -> dict:
        if name not in self.components:
            self.components[name] = _id()
        return {'id': self.components[name], 'name': name}

    def _post(self, incident_id: str, status: str, at: datetime, created: datetime | None = None, **fields) -> None:
        """An update shown `at`, posted `created` (default `at`); it sets the status, `updated_at` and `fields`."""
        with self._lock:
            self.incidents[incident_id]['updates'].append(
                {'id': _id(), 'status': status, 'display_at': at, 'created_at': created or at}
            )
            self.update(incident_id, status=status, updated_at=created or at, **fields)
