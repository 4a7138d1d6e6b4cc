"""PagerDuty REST API v2: resolutions found through the account's log entries.

Why log entries and not `GET /incidents`: `since`/`until` on `/incidents` filter on `created_at`, so an
incident created weeks ago and resolved now is invisible to a time-windowed incident list. A
`resolve_log_entry` is stamped at the resolve time instead, so "resolved in [since, until)" is exactly
"resolve log entries created in [since, until)" — whenever the incident was created, and once more
each time a reopened incident is resolved again. `include[]=incidents` embeds the incident itself.

Offset pagination (`offset`, `limit` 100, `more`, `total=true`) stops at 10,000 results; the reader
cuts a window holding more entries than a batch by its `total` (reader.py).

Change evidence (`change_attribution: evidence`): `GET /incidents/{id}/related_change_events`, one request
per marked incident, the change events PagerDuty correlates with it (`correlation_reason` `most_recent`,
`related_service` or `intelligent`: PagerDuty's own guesses, weighed alike). An event is evidence only when it
is one of the incident's own service and identifies a change: a commit SHA or version in its free-form
`custom_details` (Ansible's `pagerduty_change` sends `revision`), or a commit link in `links` (PagerDuty's
GitHub Action sends only compare links: no evidence).
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import quote

import requests

from ..evidence import Evidence, change, evidence
from ..incident import SourceIncident
from .base import (
    RESOLVED,
    Page,
    Reading,
    Request,
    Source,
    checked_times,
    named,
    obj,
    objects,
    parse_time,
    text,
    title,
    utc,
)
from .http import Answer, JsonApi, SourceError, error_text, json_object

PAGE_SIZE = 100
OFFSET_CAP = 10_000
_INCIDENT_ID = re.compile(r'[A-Za-z0-9._-]{1,128}')

US_API, EU_API = 'https://api.pagerduty.com', 'https://api.eu.pagerduty.com'
HINTS = {
    # A valid key sent to the other service region is rejected the same way as a wrong key.
    401: 'the API token was rejected: check `api_token`, or whether the account is in the other service region '
    '(`api_url: {other_region}`)',
    402: 'the PagerDuty account lacks an ability a filter needs (`team_ids` needs the `teams` ability)',
    403: 'the API token may not read log entries and incidents: use an `api_token` with read access',
    429: 'PagerDuty rate limit reached',
}


class PagerDutySource(Source):
    name = 'pagerduty'
    display_name = 'PagerDuty'
    default_api_url = US_API
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        'file': 'pagerduty-rest-v2.openapi.json',
        'from': ('PagerDuty/api-schema', 'reference/REST/openapiv3.json', '2026-08'),
        'operations': [
            ('GET', '/log_entries'),
            ('GET', '/incidents'),
            ('GET', '/incidents/{id}'),
            ('GET', '/incidents/{id}/related_change_events'),
        ],
    }
    options = frozenset({'service_ids', 'team_ids', 'urgencies'})
    scope_options = options
    reading = Reading(listing=RESOLVED)  # resolve log entries, by their creation time

    def __init__(self, config, http, api_url: str, **clock):
        super().__init__(config, http, api_url, **clock)
        self._team_ids = list(config.team_ids or ())
        self._urgencies = frozenset(config.urgencies or ())

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {
            'Authorization': f'Token token={token}',
            'Accept': 'application/vnd.pagerduty+json;version=2',
            'Content-Type': 'application/json',
        }
        return JsonApi(http, api_url, headers, describe_error)

    def request(self, start: datetime, end: datetime, token) -> Request:
        offset = token or 0
        if offset + PAGE_SIZE > OFFSET_CAP:
            # Only reachable when one second holds more entries than the cap: refuse rather than skip.
            raise SourceError(f'more than {OFFSET_CAP} log entries between {utc(start)} and {utc(end)}')
        params = [
            ('since', utc(start)),
            ('until', utc(end)),
            ('time_zone', 'UTC'),
            ('is_overview', 'true'),
            ('include[]', 'incidents'),
            ('limit', PAGE_SIZE),
            ('offset', offset),
            ('total', 'true'),  # every page: a total that moves between pages means the offsets shifted
        ]
        params += [('team_ids[]', team_id) for team_id in self._team_ids]
        return Request('/log_entries', params)

    def page(self, answer: Answer, token) -> Page:
        body = answer.body
        if not isinstance(body, dict) or not isinstance(body.get('log_entries'), list):
            raise SourceError('PagerDuty answered /log_entries without a `log_entries` list')
        total = body.get('total')
        following = (token or 0) + PAGE_SIZE if body.get('more') else None
        return Page(body['log_entries'], following, total if type(total) is int else None)

    def incident(self, record) -> SourceIncident | None:
        if not isinstance(record, dict) or record.get('type') != 'resolve_log_entry':
            return None
        return self._incident(record.get('incident'))

    def change_evidence(self, incident: SourceIncident, deadline: float) -> Evidence | None:
        path = f'/incidents/{quote(incident.id, safe="")}/related_change_events'
        events = self.api.get(path, None, deadline).get('change_events')
        if not isinstance(events, list):
            raise SourceError(f'PagerDuty answered {path} without a `change_events` list')
        own = {service.id for service in incident.services if service.id}
        causes = []
        for event in (e for e in events if isinstance(e, dict)):
            services = {s.get('id') for s in event.get('services') or () if isinstance(s, dict)}
            if not own & services:
                continue  # a change of another service (`related_service`), or of none: not this incident's own
            details = event.get('custom_details')
            links = [link.get('href') for link in event.get('links') or () if isinstance(link, dict)]
            causes.append(change(details.items() if isinstance(details, dict) else (), links))
        return evidence(causes)

    def record_id(self, record) -> str | None:
        raw = record.get('incident') if isinstance(record, dict) else None
        if isinstance(raw, dict) and text(raw.get('id')):
            return raw['id']
        return f'log entry {record.get("id", "?")}' if isinstance(record, dict) else None

    def _incident(self, raw) -> SourceIncident | None:
        """The resolution an embedded incident describes, or None when it is not one to report."""
        incident_id, status = _identity(raw)
        if status in ('triggered', 'acknowledged'):
            return None  # reopened since this entry was written: its next resolution is reported instead
        if obj(raw, 'resolve_reason').get('type') == 'merge_resolve_reason':
            return None  # merged into another incident: closed, not restored
        if self._urgencies and raw.get('urgency') not in self._urgencies:
            return None
        started_at = parse_time(raw.get('created_at'), 'created_at')
        resolved_at = parse_time(raw.get('resolved_at'), 'resolved_at')
        checked_times(started_at, resolved_at, resolved_at)
        service = named(obj(raw, 'service'), name_field='summary')
        number = raw.get('incident_number')
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=f'#{number}' if type(number) is int else None,
            title=title(raw.get('title') or raw.get('summary'), f'Incident {incident_id}'),
            url=text(raw.get('html_url')),
            started_at=started_at,
            restored_at=resolved_at,
            resolved_at=resolved_at,
            services=(service,) if service else (),
            teams=tuple(team for team in map(_team, objects(raw, 'teams')) if team),
            severity=_severity(raw),
        )


def _identity(raw) -> tuple[str, str]:
    if not isinstance(raw, dict) or 'status' not in raw:
        raise ValueError('the log entry embeds no incident object (was `include[]=incidents` dropped?)')
    incident_id, status = raw.get('id'), raw['status']
    if not is_incident_id(incident_id):
        raise ValueError(f'`id` is not a PagerDuty id: {str(incident_id)[:64]!r}')
    if status not in ('triggered', 'acknowledged', 'resolved'):
        raise ValueError(f'unknown status {str(status)[:32]!r}')
    return incident_id, status


def is_incident_id(value) -> bool:
    """PagerDuty ids are short alphanumeric strings; `-`, `.` and `_` are accepted for ids from other exports."""
    return isinstance(value, str) and _INCIDENT_ID.fullmatch(value) is not None


def _team(raw: dict):
    return named(raw, name_field='summary')


def describe_error(response: requests.Response) -> str:
    error = json_object(response).get('error')
    error = error if isinstance(error, dict) else {}
    errors = error.get('errors') if isinstance(error.get('errors'), list) else []
    message = '; '.join(str(part) for part in [error.get('message'), *errors] if part)
    other_region = US_API if 'eu.pagerduty.com' in (response.url or '') else EU_API
    hint = HINTS.get(response.status_code, 'PagerDuty answered HTTP {status}')
    return error_text(hint.format(other_region=other_region, status=response.status_code), response, message, ())


def _severity(raw: dict) -> str | None:
    """PagerDuty has no severity: Datadog's own PagerDuty source uses the priority, we fall back to urgency."""
    priority = obj(raw, 'priority')
    return text(priority.get('summary')) or text(priority.get('name')) or text(raw.get('urgency'))
