"""A stateful loopback PagerDuty REST API v2: the endpoints the check uses, with PagerDuty's traps.

Behaviour follows PagerDuty's official OpenAPI description (derived into `loopback/specs/pagerduty.json`) and
the reference notes: `limit` <= 100 with offset pagination capped at offset + limit <= 10,000 (HTTP 400
past it), `since`/`until` on `/incidents` filtering on `created_at`, timestamps without a zone read in
the account's time zone, 402 for a `team_ids[]` filter without the `teams` ability, 401 for a wrong
token, 429 with `ratelimit-reset` past a request budget, reopened and merge-resolved incidents.
`GET /incidents/{id}/related_change_events` answers the change events `relate_change` correlated with an
incident, each with its `correlation_reason` (the description's `ChangeEvent`; not paged in practice: the
answer's `limit`, `offset`, `total` are null, as in the description's example).
The live service beyond the description: that `since`/`until` filter on `created_at` (the description does not
say which time) is what open-source collectors reading PagerDuty in production rely on (Apache DevLake's);
reopening a resolved incident is PagerDuty's changelog of 2025-09-18. No recorded live answer was replayed.
With `validate=True` (as the registry makes it) every request and answer is checked against the description
(`spec_violations`); unchecked by default, for the benchmarks and the fault matrix, which predate it.
"""

from __future__ import annotations

import bisect
import copy
import itertools
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo

from .core import RateLimit, ToolSimulator, first, iso, parse_time
from .server import Request, Response
from .spec import pagerduty_request_problem

OFFSET_CAP = 10_000
OVERVIEW_TYPES = {'trigger_log_entry', 'acknowledge_log_entry', 'resolve_log_entry', 'unacknowledge_log_entry'}
# The account's own time zone: what PagerDuty applies to `since`/`until` given without an offset.
ACCOUNT_TIME_ZONE = 'America/Los_Angeles'
FILTERS = {  # the incidents' filters: parameter -> an incident's values it matches any of
    'statuses[]': lambda incident: {incident['status']},
    'urgencies[]': lambda incident: {incident['urgency']},
    'service_ids[]': lambda incident: {incident['service']['id']},
    'team_ids[]': lambda incident: {team['id'] for team in incident['teams']},
}


class PagerDutySimulator(ToolSimulator):
    """Also the conformance driver (loopback/driver.py): a service per name, severity as the priority."""

    source = 'pagerduty'
    limits = RateLimit(
        429,
        lambda quota: {'ratelimit-reset': str(quota.wait)},
        lambda quota: _error_document(2020, 'Rate Limit Exceeded'),
    )
    list_path = '/log_entries'
    max_page_size = 100
    # PagerDuty has no environments: the suite's instance sets `env: prod`.
    expected_tags: ClassVar[dict[str, str]] = {**ToolSimulator.expected_tags, 'env': 'prod'}

    def __init__(self, token: str = 'sim-pagerduty-token', abilities=('teams',), validate: bool = False):
        super().__init__(validate=validate)
        self.token = token
        self.abilities = set(abilities)
        self.incidents: dict[str, dict] = {}
        self._entries: list[tuple[float, int, dict]] = []  # (created_at epoch, sequence, entry), sorted
        self._services: dict[str, dict] = {}
        self._sequence = itertools.count(1)
        self._numbers = itertools.count(1)
        self._related: dict[str, list[dict]] = {}  # incident id -> its correlated change events

    # -- state -------------------------------------------------------------------------------------
    def add_service(self, service_id: str, name: str, teams=()) -> None:
        self._services[service_id] = {
            'service': {'id': service_id, 'type': 'service_reference', 'summary': name},
            'teams': [{'id': tid, 'type': 'team_reference', 'summary': tname} for tid, tname in teams],
        }

    def trigger(self, service_id, created_at: datetime, title='Something broke', urgency='high', priority=None):
        incident_id = f'Q{next(self._sequence):013d}'
        number = next(self._numbers)
        service = self._services[service_id]
        reference = {'id': f'PRI{priority}', 'type': 'priority_reference', 'summary': priority} if priority else None
        self.incidents[incident_id] = {
            'id': incident_id,
            'type': 'incident',
            'summary': f'[#{number}] {title}',
            'self': f'https://api.pagerduty.com/incidents/{incident_id}',
            'html_url': f'https://acme.pagerduty.com/incidents/{incident_id}',
            'incident_number': number,
            'title': title,
            'created_at': iso(created_at),
            'updated_at': iso(created_at),
            'status': 'triggered',
            'incident_key': None,
            'urgency': urgency,
            'service': dict(service['service']),
            'teams': [dict(team) for team in service['teams']],
            'priority': reference,
            'assignments': [],
            'last_status_change_at': iso(created_at),
            'resolved_at': None,
            'resolve_reason': None,
        }
        self._log(incident_id, 'trigger_log_entry', created_at)
        self._log(incident_id, 'notify_log_entry', created_at + timedelta(seconds=1))
        return incident_id

    def resolve(self, incident_id, at: datetime, merged_into: str | None = None, hidden: bool = False) -> None:
        incident = self.incidents[incident_id]
        incident.update(status='resolved', resolved_at=iso(at), updated_at=iso(at), last_status_change_at=iso(at))
        if merged_into:
            incident['resolve_reason'] = {
                'type': 'merge_resolve_reason',
                'incident': {'id': merged_into, 'type': 'incident_reference'},
            }
        entry_id = self._log(incident_id, 'resolve_log_entry', at)
        self.lag.hold(entry_id, None, hidden)  # a hidden log entry is not listed (indexing lag)

    def reopen(self, incident_id, at: datetime, status: str = 'triggered') -> None:
        """Resolved is not final (PagerDuty changelog 2025-09-18): back to triggered, `resolved_at` cleared;
        `status='acknowledged'`: then acknowledged by a responder."""
        incident = self.incidents[incident_id]
        incident.update(status='triggered', resolved_at=None, resolve_reason=None, updated_at=iso(at))
        incident['last_status_change_at'] = iso(at)
        self._log(incident_id, 'trigger_log_entry', at)
        if status == 'acknowledged':
            incident['status'] = 'acknowledged'
            self._log(incident_id, 'acknowledge_log_entry', at + timedelta(seconds=1))

    def relate_change(
        self, incident_id, *, custom_details=None, links=(), service_id=None, reason='most_recent', summary='Deploy'
    ) -> dict:
        """A change event PagerDuty correlates with the incident (on its service unless `service_id` says another:
        a `related_service` change); `links` are hrefs."""
        incident = self.incidents[incident_id]
        service = self._services[service_id]['service'] if service_id else incident['service']
        event = {
            'id': f'01CHANGE{next(self._sequence):018d}',
            'type': 'change_event',
            'summary': summary,
            'timestamp': incident['created_at'],
            'source': 'acme-deploy-pipeline',
            'integration': {'id': 'PINTEG1', 'type': 'inbound_integration_reference'},
            'services': [{'id': service['id'], 'type': 'service_reference'}],
            'custom_details': dict(custom_details or {}),
            'links': [{'href': href, 'text': 'View in CI'} for href in links],
            'images': [],
            'correlation_reason': {'reason': reason},
        }
        self._related.setdefault(incident_id, []).append(event)
        return event

    def corrupt(self, incident_id, **fields) -> None:
        """Overwrite incident fields with anything, to feed the check malformed data."""
        self.incidents[incident_id].update(fields or {'created_at': 'last tuesday'})

    # -- the conformance driver ----------------------------------------------------------------------
    def open(self, started_at, *, title='Checkout is down', service='Checkout API', team='Payments Team',
             environment=None, severity='SEV1') -> str:  # fmt: skip
        service_id = 'P' + ''.join(ch for ch in service.upper() if ch.isalnum())[:12]
        if service_id not in self._services:
            self.add_service(service_id, service, teams=[('T' + service_id[1:], team)])
        return self.trigger(service_id, started_at, title=title, priority=severity)

    def reveal(self, incident_id) -> None:
        for _, _, entry in self._entries:
            if entry['incident_id'] == incident_id:
                self.lag.show(entry['id'])

    def enter_resolved(self, started_at, resolved_at, **open_options) -> str:
        raise NotImplementedError('PagerDuty lists by log entry time: no late or corrected resolutions are read')

    resolve_backdated = correct = enter_resolved

    not_failures = (
        'merged into another incident (the incident it was merged into is the failure)',
        'resolved, then triggered again: not resolved (yet)',
        'resolved, then acknowledged again: not resolved (yet)',
    )

    def open_non_failures(self, started_at, resolved_at) -> list[str]:
        """Merged into another; and resolved, then triggered again or acknowledged again: their resolve log
        entries embed an incident that is not resolved (yet), which is not a failure and not malformed."""
        survivor = self.open(started_at)
        merged = self.open(started_at)
        self.resolve(merged, resolved_at, merged_into=survivor)
        reopened = {
            status: self.open(started_at, title=f'Resolved, then {status}') for status in ('triggered', 'acknowledged')
        }
        for status, incident_id in reopened.items():
            self.resolve(incident_id, resolved_at - timedelta(minutes=10))
            self.reopen(incident_id, resolved_at - timedelta(minutes=5), status=status)
        return [merged, *reopened.values()]

    def _log(self, incident_id, entry_type, at: datetime) -> str:
        sequence = next(self._sequence)
        entry = {
            'id': f'R{sequence:013d}',
            'type': entry_type,
            'summary': entry_type.replace('_log_entry', ''),
            'created_at': iso(at),
            'incident_id': incident_id,  # internal; replaced by the `incident` reference when served
        }
        bisect.insort(self._entries, (at.timestamp(), sequence, entry))
        return entry['id']

    # -- HTTP --------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        if request.headers.get('authorization') != f'Token token={self.token}':
            return _error(401, 2006, 'Authentication failed')
        return None

    def request_problem(self, request: Request) -> str | None:
        return pagerduty_request_problem(request)

    def answer_problem(self, request: Request, response: Response) -> str | None:
        # A log entry embedding its incident matches none of the description's log entry kinds (each one's
        # `incident` is a reference): those answers are checked case by case in tests/test_specs.py instead.
        if request.path.endswith('/related_change_events'):
            return super().answer_problem(request, response)
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _error(400, 2001, 'Invalid Input Provided', [message])

    def route(self, request: Request) -> Response:
        path, query = request.path, request.query
        if request.method == 'GET' and path in ('/log_entries', '/incidents'):
            if _all(query, 'team_ids[]') and 'teams' not in self.abilities:
                return _error(402, 2012, 'Account does not have the abilities to perform the action', ['teams'])
            return self._list_log_entries(query) if path == '/log_entries' else self._list_incidents(query)
        incident_id, _, rest = path.removeprefix('/incidents/').partition('/')
        if request.method != 'GET' or incident_id not in self.incidents or rest not in ('', 'related_change_events'):
            return _error(404, 2100, 'Not Found')
        if rest:
            events = copy.deepcopy(self._related.get(incident_id, []))
            return Response.json(200, {'change_events': events, 'limit': None, 'offset': None, 'total': None})
        return Response.json(200, {'incident': self.incidents[incident_id]})

    def _list_log_entries(self, query: list[tuple[str, str]]) -> Response:
        since, until = _window(query)
        overview = _flag(query, 'is_overview')
        teams = set(_all(query, 'team_ids[]'))
        low = bisect.bisect_left(self._entries, (since.timestamp(),))
        high = bisect.bisect_left(self._entries, (until.timestamp(),))
        selected = [
            entry
            for _, _, entry in reversed(self._entries[low:high])  # newest first, as PagerDuty lists them
            if not (overview and entry['type'] not in OVERVIEW_TYPES)
            and not self.lag.held(entry['id'])
            and (not teams or teams & FILTERS['team_ids[]'](self.incidents[entry['incident_id']]))
        ]
        embed = 'incidents' in _all(query, 'include[]')
        return self._page(query, selected, 'log_entries', lambda entry: self._served_entry(entry, embed))

    def _served_entry(self, entry: dict, embed: bool) -> dict:
        incident = self.incidents[entry['incident_id']]
        served = {key: value for key, value in entry.items() if key != 'incident_id'}
        reference = {'id': incident['id'], 'type': 'incident_reference', 'summary': incident['summary']}
        served['incident'] = copy.deepcopy(incident) if embed else reference
        return {**served, 'service': incident['service'], 'teams': incident['teams']}

    def _list_incidents(self, query: list[tuple[str, str]]) -> Response:
        selected = list(self.incidents.values())
        if first(query, 'date_range') != 'all':
            # The trap: `since`/`until` filter on created_at, not on when the incident was resolved.
            since, until = _window(query)
            selected = [i for i in selected if since <= datetime.fromisoformat(i['created_at']) < until]
        for name, values_of in FILTERS.items():
            if wanted := set(_all(query, name)):
                selected = [i for i in selected if wanted & values_of(i)]
        selected.sort(key=lambda i: i['created_at'])
        return self._page(query, selected, 'incidents', lambda incident: incident)

    def _page(self, query: list[tuple[str, str]], items: list, key: str, serve) -> Response:
        limit = min(int(first(query, 'limit') or 25), 100)
        offset = int(first(query, 'offset') or 0)
        if offset + limit > OFFSET_CAP:
            return self.invalid(f'Offset must be less than {OFFSET_CAP - limit + 1}.')
        page = [serve(item) for item in items[offset : offset + limit]]
        total = len(items) if _flag(query, 'total') else None
        return Response.json(200, {key: page, 'limit': limit, 'offset': offset, 'more': offset + limit < len(items),
                                   'total': total})  # fmt: skip


def _all(query: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in query if key == name]


def _flag(query: list[tuple[str, str]], name: str) -> bool:
    return (first(query, name) or 'false').lower() == 'true'


def _window(query: list[tuple[str, str]]) -> tuple[datetime, datetime]:
    """`since`/`until` (by default the 30 days up to now); without an offset, in the account's time zone."""
    zone = ZoneInfo(first(query, 'time_zone') or ACCOUNT_TIME_ZONE)
    until = parse_time(value, 'until', zone) if (value := first(query, 'until')) else datetime.now(UTC)
    since = parse_time(value, 'since', zone) if (value := first(query, 'since')) else until - timedelta(days=30)
    return since, until


def _error_document(code, message, errors=()) -> dict:
    return {'error': {'code': code, 'message': message, 'errors': list(errors)}}


def _error(status, code, message, errors=()) -> Response:
    return Response.json(status, _error_document(code, message, errors))
