"""A stateful loopback Datadog Incident Management API: `GET /api/v2/incidents/search`, as Datadog describes it.

A server of its own, apart from the DORA intake (`intake.py`), although a check may be configured with one
URL for both in production. What it does like Datadog (the derived description
`loopback/specs/datadog_incidents.json`, from Datadog's v2 description, plus Datadog's incident docs where the
description is silent):

- `DD-API-KEY` and `DD-APPLICATION-KEY`: either one missing or wrong is a 403 `{"errors": ["Forbidden"]}`,
  which does not say which key (the default keys are the intake's, as one organisation's would be).
- `query` (required): facets joined by `AND`, values of one facet by `OR`: `state:(resolved OR completed)`,
  `severity:(SEV-1 OR SEV-2)`. Simulated facets: `state`, `severity`, `customer_impacted`. A facet Datadog
  does not document (`from_ts`, `resolved`, `modified`, ...) is a 400, as Datadog answers; a documented one
  this simulator does not implement is a 400 "not simulated", so that no test relies on a facet ignored.
- `sort`: `created` (default) or `-created`, ties by id; there is no other order and no time facet.
- Pages: `page[offset]` from 0, `page[size]` (default 10) at most 100, else a 400. `total` counts every
  match; `meta.pagination.next_offset` is `offset + size` even on the last page.
- Attributes: `created` (for an imported incident, the import), `declared`, `detected`, `resolved` ("when the
  state last changed from active or stable to resolved or completed": moving to `completed` and later edits
  keep it, and a reopen does not clear it), `modified` (every change), `customer_impacted`,
  `customer_impact_start` / `_end`, `severity` (`SEV-0`...`SEV-5`, `UNKNOWN`), `state`, `is_test`,
  `public_id`, and `fields` (`severity`, `state` dropdowns; `services`, `teams` autocompletes).
- Where the live service differs from the description: an incident declared straight in the `resolved` state
  (after the fact, `declare_resolved`) keeps `resolved: null` (Datadog's `time_to_resolve` is 0), as the
  replayed answers recorded from the live API in Datadog's public API client test recordings show (issue 19).
- Test incidents (`is_test`) are hidden from search unless their declarer opted in (`listed=True`).
- Rate limit: every answer carries `X-RateLimit-Limit`, `-Period`, `-Remaining`, `-Reset` (seconds to the
  reset) and `-Name`; past it, 429 `{"errors": ["Too many requests"]}`.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import ClassVar

from .core import Invalid, Quota, RateLimit, ToolSimulator
from .driver import SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response

LIST_PATH = '/api/v2/incidents/search'
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
RATE_LIMIT = (600, 60)  # requests per organisation per period of seconds, as X-RateLimit-Limit/-Period say
STATES = ('active', 'stable', 'resolved', 'completed')
SEVERITIES = ('UNKNOWN', 'SEV-0', 'SEV-1', 'SEV-2', 'SEV-3', 'SEV-4', 'SEV-5')
# The facets Datadog's incident search documents (its response's facets, and the incident attributes).
DOCUMENTED_FACETS = {
    'state', 'severity', 'customer_impacted', 'commander', 'created_by', 'last_modified_by', 'responder', 'team',
    'teams', 'services', 'impact', 'postmortem', 'time_to_repair', 'time_to_resolve', 'detection_method',
}  # fmt: skip
TIMES = ('created', 'declared', 'detected', 'modified', 'resolved', 'customer_impact_start', 'customer_impact_end')
_SIMULATED = {'state', 'severity', 'customer_impacted'}
_TERM = re.compile(r'\s*(-?)([\w.]+):(\([^)]*\)|"[^"]*"|\S+)\s*')


def datadog_severity(name: str) -> str:
    """The driver's `SEV1` as Datadog spells it: `SEV-1`."""
    match = re.fullmatch(r'SEV-?(\d)', name.upper())
    return f'SEV-{match.group(1)}' if match else 'UNKNOWN'


def _limit_headers(quota: Quota) -> dict:
    return {
        'X-RateLimit-Limit': str(quota.limit),
        'X-RateLimit-Period': str(quota.per),
        'X-RateLimit-Remaining': str(quota.remaining),
        'X-RateLimit-Reset': str(max(1, int(quota.reset - time.time() + 0.999))),  # seconds to the reset
        'X-RateLimit-Name': 'incidents_search',
    }


class DatadogIncidentsSimulator(ToolSimulator):
    source = 'datadog_incidents'
    limits = RateLimit(429, _limit_headers, lambda quota: {'errors': ['Too many requests']}, 'fixed', every_answer=True)
    list_path = LIST_PATH
    reveal_touches = False  # revealed as written: `resolved` and `modified` of the resolution
    # The customer impact start is the start the check reads.
    corrected, corrupted = ('customer_impact_start', 'resolved'), 'customer_impact_start'
    max_page_size = MAX_PAGE_SIZE
    # `fields.services` / `fields.teams` values and `SEV-1` as Datadog tags; no environments.
    expected_tags: ClassVar[dict[str, str]] = {**ToolSimulator.expected_tags, 'severity': 'sev-1'}

    def __init__(
        self, api_key='sim-datadog-api-key', app_key='sim-datadog-app-key', rate_limit=RATE_LIMIT, validate=True
    ):
        super().__init__(validate, rate_limit)
        self.api_key = api_key
        self.app_key = app_key
        self.token = app_key  # what must never leak
        self.credential = 'datadog_app_key'  # the option a wrong credential is set in (there is no `api_token`)
        self.incidents: dict[str, dict] = {}  # id -> attributes, timestamps as datetimes
        self._public_ids = itertools.count(1)

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        """No `api_token`: the Datadog keys. `send_dora_failures` keeps the tool's default (off)."""
        return {
            'source': self.source,
            'api_url': self.url,
            'datadog_api_key': self.api_key,
            'datadog_app_key': self.app_key,
            **options,
        }

    def open(self, started_at, *, title=TITLE, service=SERVICE, team=TEAM, environment=None, severity=SEVERITY):
        """Declared at `started_at`, customer-impacting from then. Datadog has no environments."""
        with self._lock:
            incident_id = str(uuid.uuid4())
            severity = datadog_severity(severity) if severity else 'UNKNOWN'
            self.incidents[incident_id] = {
                'title': title,
                'public_id': next(self._public_ids),
                **dict.fromkeys(('created', 'declared', 'detected', 'modified', 'customer_impact_start'), started_at),
                'resolved': None,
                'customer_impacted': True,
                'customer_impact_end': None,
                'customer_impact_scope': 'Customers cannot check out',
                'severity': severity,
                'state': 'active',
                'is_test': False,
                'listed': True,
                'services': [service] if service else [],
                'teams': [team] if team else [],
            }
            return incident_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        with self._lock:
            incident = self.incidents[incident_id]
            self.lag.hold(incident_id, incident, hidden, at)
            incident.update(state='resolved', resolved=at, modified=at)
            if incident['customer_impacted'] and incident['customer_impact_end'] is None:
                incident['customer_impact_end'] = at

    # -- late and corrected resolutions (Datadog lets responders edit an incident's times afterwards) -------
    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """An incident imported after the fact: `created` is the import (now), its other times are the past."""
        with self._lock:
            incident_id = self.open(started_at, **open_options)
            now = datetime.now(UTC)
            self.update(incident_id, created=now, state='resolved', resolved=resolved_at, modified=now)
            self.update(incident_id, customer_impact_end=resolved_at)
            return incident_id

    def touch(self, incident_id: str, at: datetime) -> None:
        self.update(incident_id, modified=at)

    def reopen(self, incident_id: str, at: datetime) -> None:
        """Back to `active`: `resolved` keeps its stale value, as Datadog keeps it."""
        with self._lock:
            self.lag.show(incident_id)
            self.incidents[incident_id].update(state='active', modified=at)

    not_failures = (
        'a test incident (`is_test`)',
        'declared after the fact as resolved, without a customer impact (`resolved: null`)',
    )

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        with self._lock:
            test = self.open(started_at, title='Not a failure: a test incident')
            self.update(test, is_test=True, listed=True)  # its declarer opted in to show it in search
            self.resolve(test, resolved_at)
            after_the_fact = self.declare_resolved(
                started_at, title='Not a failure: declared resolved, no customer impact', impact=None
            )
            return [test, after_the_fact]

    def declare_resolved(self, started_at: datetime, *, impact: tuple | None, **open_options) -> str:
        """An incident declared now straight in the `resolved` state, which keeps `resolved: null` (the module's
        docstring says why); `impact` is the customer impact's (start, end), or None for none."""
        with self._lock:
            incident_id = self.open(started_at, **open_options)
            now = datetime.now(UTC)
            start, end = impact or (None, None)
            self.update(
                incident_id,
                **dict.fromkeys(('created', 'declared', 'modified'), now),
                state='resolved',
                resolved=None,
                customer_impacted=impact is not None,
                customer_impact_start=start,
                customer_impact_end=end,
            )
            return incident_id

    # -- more of Datadog, for tool-specific tests ----------------------------------------------------
    def complete(self, incident_id: str, at: datetime) -> None:
        """Moves a resolved incident to `completed` (its postmortem done): `resolved` does not move."""
        self.update(incident_id, state='completed', modified=at)

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        keys = (request.headers.get('dd-api-key'), request.headers.get('dd-application-key'))
        return Response.json(403, {'errors': ['Forbidden']}) if keys != (self.api_key, self.app_key) else None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return Response.json(400, {'errors': [message]})

    def route(self, request: Request) -> Response:
        query = dict(request.query)
        predicates = [lambda attrs: not attrs['is_test'] or attrs['listed'], *_parse_query(query['query'])]
        selected = [item for item in self.listed() if all(matches(item[1]) for matches in predicates)]
        descending = query.get('sort', 'created') == '-created'
        selected.sort(key=lambda item: (item[1]['created'], item[0]), reverse=descending)
        size = int(query.get('page[size]', DEFAULT_PAGE_SIZE))
        offset = int(query.get('page[offset]', 0))
        if not 1 <= size <= MAX_PAGE_SIZE or offset < 0:
            raise Invalid(f'page[size] must be between 1 and {MAX_PAGE_SIZE} and page[offset] at least 0')
        page = selected[offset : offset + size]
        document = {
            'data': {
                'type': 'incidents_search_results',
                'attributes': {
                    'facets': _facets([listed for _, listed in selected]),
                    'incidents': [{'data': self._served(i, attrs)} for i, attrs in page],
                    'total': len(selected),
                },
            },
            'included': [],
            'meta': {'pagination': {'offset': offset, 'size': size, 'next_offset': offset + size}},
        }
        return Response.json(200, document)

    def _served(self, incident_id: str, attrs: dict) -> dict:
        served = {
            **{name: attrs[name] for name in ('title', 'public_id', 'severity', 'state', 'is_test')},
            **{name: attrs[name] for name in ('customer_impacted', 'customer_impact_scope')},
            **{name: _iso(attrs[name]) if attrs[name] else None for name in TIMES},
            'customer_impact_duration': _impact_seconds(attrs),
            **dict.fromkeys(('archived', 'case_id')),
            'visibility': 'organization',
            'notification_handles': [],
            'fields': {
                'severity': {'type': 'dropdown', 'value': attrs['severity']},
                'state': {'type': 'dropdown', 'value': attrs['state']},
                'services': {'type': 'autocomplete', 'value': list(attrs['services']) or None},
                'teams': {'type': 'autocomplete', 'value': list(attrs['teams']) or None},
            },
        }
        served = self.served(incident_id, served)
        user = {'data': {'type': 'users', 'id': '00000000-0000-0000-0000-0000000000a1'}}
        relationships = {'created_by_user': user, 'last_modified_by_user': user, 'commander_user': None}
        return {'id': incident_id, 'type': 'incidents', 'attributes': served, 'relationships': relationships}


def _parse_query(text: str) -> list:
    """One predicate per `facet:value` or `facet:(a OR b)` term; terms joined by AND (or a space)."""
    predicates, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TERM.match(text, position)
        if not match:
            raise Invalid(f'invalid query at {text[position:][:40]!r}')
        negated, facet, values = match.groups()
        position = match.end()
        if text[position : position + 4] == 'AND ':
            position += 4
        if facet not in DOCUMENTED_FACETS:
            raise Invalid(f'Invalid query: unknown facet {facet!r}')
        if facet not in _SIMULATED:
            raise Invalid(f'facet {facet!r} is not simulated by the loopback Datadog')
        wanted = {value.strip().strip('"') for value in values.strip('()').split(' OR ')}
        predicates.append(_predicate(facet, wanted, bool(negated)))
    return predicates


def _predicate(facet: str, wanted: set[str], negated: bool):
    def matches(attrs):
        value = attrs[facet]
        value = str(value).lower() if isinstance(value, bool) else value
        return (value in wanted) != negated

    return matches


def _facets(incidents: list[dict]) -> dict:
    counts = {facet: Counter(attrs[facet] for attrs in incidents) for facet in ('state', 'severity')}
    return {facet: [{'name': n, 'count': c} for n, c in sorted(count.items())] for facet, count in counts.items()}


def _impact_seconds(attrs: dict) -> int:
    start, end = attrs['customer_impact_start'], attrs['customer_impact_end']
    return int((end - start).total_seconds()) if start and end else 0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec='microseconds')
