"""incident.io API v2: resolutions read from `GET /v2/incidents`, filtered on the incident's update time.

What is read, and why: the list can filter on `created_at` and `updated_at` only, and an incident has no
top-level resolve time. Resolving an incident (moving it to a post-incident or closed status) updates it,
and so does everything done after the fact: a retrospective incident entered now, a "Resolved at" set
back, a timestamp corrected in the review. So the source lists by update time: it asks for
`status_category[one_of]=learning` and `=closed` (post-incident and closed: both are resolved) with
`updated_at[gte]` a day before the window and `updated_at[lte]` a day after it (dates, the only spelling
the vendor documents, a day wide whatever time zone the account reads them in), and keeps the records
whose `updated_at` is in the window. New, late and corrected resolutions are then told apart by the
cursor (cursor.py); steady state is one request per run.

Paging: `page_size` (at most 250) and the `after` cursor from `pagination_meta`, until a page comes back
without one or empty.

Not failures: `test` and `tutorial` incidents (the list leaves them out unless `mode` asks for them, and
they are dropped here too); the `triage`, `declined`, `canceled` and `merged` status categories (never
incidents) and `live`/`paused` (active: reopened) are neither asked for nor reported.

Times come from the incident's timestamps, found by name through `GET /v2/incident_timestamps` (exactly,
else ignoring case and a trailing " at", so `Resolved` finds "Resolved at"). Start: `started_timestamp`
("Impact started"), else "Reported at" (every incident has one; a retrospective incident's is when it
was reported, not when it was entered), else `created_at`. Resolution: `resolved_timestamp`
("Resolved at"), else for a closed incident "Closed at" (set when it was closed: later edits do not move
it, unlike `updated_at`); a post-incident one without it waits until it is resolved or closed. Restore:
the resolution, or with `restored_at: mitigated` the `mitigated_timestamp`.

Services, teams and environments are the values of the custom fields named by `service_field`,
`team_field` and `environment_field` (catalog entries by id and name, options by id and value, text as a
name); severity is the severity's name; `number` is the reference (INC-42), `url` the permalink.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..incident import Named, SourceIncident
from .base import (
    Page,
    Reading,
    Request,
    Source,
    checked_times,
    named,
    obj,
    objects,
    parse_time,
    restore_time,
    text,
    title,
)
from .http import Answer, JsonApi, SourceError, describer

LIST_PATH = '/v2/incidents'
TIMESTAMPS_PATH = '/v2/incident_timestamps'
PAGE_SIZE = 250  # the most the vendor allows
# `updated_at[gte]` takes a date that the account may read in its own time zone: a day early covers any.
DATE_SLACK = timedelta(days=1)
# Timestamps can be renamed or added in settings: their ids are looked up again after this long.
TIMESTAMPS_TTL = 3600.0
RESOLVED_CATEGORIES = ('learning', 'closed')
FAILURE_MODES = frozenset({'standard', 'retrospective'})
_ID = re.compile(r'[A-Za-z0-9_-]{1,128}')

HINTS = {
    401: 'incident.io rejected the API key: check `api_token` (an incident.io API key, created in Settings > '
    'API keys with the "View data" role)',
    403: 'the incident.io API key may not read incidents: `api_token` needs the "View data" role (and "View all '
    'incident data" to include private incidents)',
    404: 'incident.io answered 404: check `api_url` (default https://api.incident.io)',
    422: 'incident.io rejected the request',
    429: 'incident.io rate limit reached',
}


@dataclass(frozen=True)
class TimestampIds:
    """The ids of the account's incident timestamps the options name; None when the account has none."""

    started: str | None
    mitigated: str | None
    resolved: str
    reported: str | None = None  # "Reported at": the start when `started` is unset (retrospective incidents)
    closed: str | None = None  # "Closed at": the resolution of a closed incident without `resolved`


class IncidentIoSource(Source):
    name = 'incident_io'
    display_name = 'incident.io'
    default_api_url = 'https://api.incident.io'
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        'file': 'incident-io.openapi3.json',
        'from': ('incident-io/sdk-go', 'openapi3.json', '2026-08'),
        'operations': [('GET', '/v2/incidents'), ('GET', '/v2/incident_timestamps')],
    }
    options = frozenset(
        {
            'restored_at',
            'started_timestamp',
            'mitigated_timestamp',
            'resolved_timestamp',
            'service_field',
            'team_field',
            'environment_field',
        }
    )
    page_size = PAGE_SIZE
    reading = Reading(narrows=False)  # `updated_at` is filtered by the day: a narrower window reads the same pages

    def __init__(self, config, http, api_url: str, **clock):
        super().__init__(config, http, api_url, **clock)
        self._names = {
            'started': config.started_timestamp or 'Impact started',
            'mitigated': config.mitigated_timestamp or 'Fixed',
            'resolved': config.resolved_timestamp or 'Resolved',
            # incident.io's own timestamps, every account has them: not options.
            'reported': 'Reported at',
            'closed': 'Closed at',
        }
        self._mitigated = config.restored_at == 'mitigated'
        self._fields = {
            'services': config.service_field or 'Affected services',
            'teams': config.team_field,
            'environments': config.environment_field,
        }
        self._timestamp_ids: TimestampIds | None = None
        self._timestamps_read_at = 0.0

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {'Authorization': f'Bearer {token}', 'Accept': 'application/json'}
        return JsonApi(http, api_url.rstrip('/'), headers, describer('incident.io', HINTS, _error_detail, token))

    def prepare(self, deadline: float) -> None:
        self._timestamps(deadline)

    def request(self, start: datetime, end: datetime, token) -> Request:
        params = [
            ('page_size', self.page_size),
            ('updated_at[gte]', (start - DATE_SLACK).date().isoformat()),
            ('updated_at[lte]', (end + DATE_SLACK).date().isoformat()),
            *[('status_category[one_of]', category) for category in RESOLVED_CATEGORIES],
        ]
        return Request(LIST_PATH, params + ([('after', token)] if token else []))

    def page(self, answer: Answer, token) -> Page:
        records, after = _page(answer.body)
        return Page(records, after if records else None)

    def incident(self, record) -> SourceIncident | None:
        return self._read(record, self._timestamp_ids)

    def record_id(self, record) -> str | None:
        return _id_of(record)

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(record.get('updated_at'), 'updated_at')

    def _timestamps(self, deadline: float) -> TimestampIds:
        if self._timestamp_ids is None or time.monotonic() - self._timestamps_read_at > TIMESTAMPS_TTL:
            self._timestamp_ids = self._look_up_timestamps(deadline)
            self._timestamps_read_at = time.monotonic()
        return self._timestamp_ids

    def _look_up_timestamps(self, deadline: float) -> TimestampIds:
        page = self.api.get(TIMESTAMPS_PATH, None, deadline)
        entries = page.get('incident_timestamps')
        if not isinstance(entries, list):
            raise SourceError(f'incident.io answered {TIMESTAMPS_PATH} without an `incident_timestamps` list')
        known = [(text(e.get('id')), text(e.get('name'))) for e in entries if isinstance(e, dict)]
        known = [(tid, name) for tid, name in known if tid and name]
        found = {role: _find_timestamp(known, wanted) for role, wanted in self._names.items()}
        required = ['resolved'] + (['mitigated'] if self._mitigated else [])
        for role in required:
            if found[role] is None:
                have = ', '.join(repr(name) for _, name in known[:20]) or 'none'
                raise SourceError(
                    f'incident.io has no incident timestamp named {self._names[role]!r} (`{role}_timestamp`); '
                    f'this account has: {have}'
                )
        return TimestampIds(**found)

    # -- one record --------------------------------------------------------------------------------
    def _read(self, raw, ids: TimestampIds) -> SourceIncident | None:
        """The record's resolution if it is a failure; raises ValueError (and the like) if malformed."""
        incident_id = _id_of(raw)
        if incident_id.startswith('unidentified'):
            raise ValueError('the record has no incident.io id')
        category = _resolved_category(raw)
        if category is None:
            return None
        times = _timestamp_values(raw, ids)
        # A closed incident without a resolution time resolved when it was closed: "Closed at" stays put
        # when the incident is edited later, `updated_at` would not.
        resolution = times.get(ids.resolved) or (times.get(ids.closed) if category == 'closed' else None)
        if resolution is None:
            if category == 'closed':
                raise ValueError(f'closed without {self._names["resolved"]!r} or "Closed at"')
            return None  # post-incident without a resolution time: reported once it is resolved or closed
        return self._incident(raw, incident_id, resolution, times, ids)

    def _incident(self, raw: dict, incident_id, resolution, times, ids) -> SourceIncident:
        start = next((role for role in ('started', 'reported') if times.get(getattr(ids, role))), None)
        started_at = times[getattr(ids, start)] if start else parse_time(raw.get('created_at'), 'created_at')
        restored_at = resolution
        if self._mitigated and times.get(ids.mitigated):
            restored_at = restore_time(resolution, times[ids.mitigated])
        try:
            checked_times(started_at, restored_at, resolution)
        except ValueError as e:
            raise ValueError(f'{e} (start: {self._names[start] if start else "created_at"})') from None
        reference = text(raw.get('reference'))
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=reference,
            title=title(raw.get('name'), f'Incident {reference or incident_id}'),
            url=text(raw.get('permalink')),
            started_at=started_at,
            restored_at=restored_at,
            resolved_at=resolution,
            services=_field_values(raw, self._fields['services']),
            teams=_field_values(raw, self._fields['teams']),
            environments=_field_values(raw, self._fields['environments']),
            severity=text(obj(raw, 'severity').get('name')),
        )


def _page(page) -> tuple[list, str | None]:
    if not isinstance(page, dict):
        raise SourceError(f'incident.io answered {LIST_PATH} with JSON that is not an object')
    records = page.get('incidents')
    if not isinstance(records, list):
        raise SourceError(f'incident.io answered {LIST_PATH} without an `incidents` list')
    meta = page.get('pagination_meta')
    if meta is None:
        return records, None
    if not isinstance(meta, dict):
        raise SourceError(f'incident.io answered {LIST_PATH} with a `pagination_meta` that is not an object')
    after = meta.get('after')
    if after is not None and not isinstance(after, str):
        raise SourceError(f'incident.io answered {LIST_PATH} with a `pagination_meta.after` that is not a string')
    return records, after or None


def _resolved_category(raw) -> str | None:
    """The status category of a resolved failure (`learning` or `closed`); None for anything else."""
    if not isinstance(raw, dict):
        raise TypeError(f'the record is a {type(raw).__name__}, not an object')
    mode = raw.get('mode')
    if not isinstance(mode, str):
        raise TypeError(f'`mode` is {str(mode)[:32]!r}, not a string')
    category = obj(raw, 'incident_status').get('category')
    if not isinstance(category, str):
        raise TypeError(f'`incident_status.category` is {str(category)[:32]!r}, not a string')
    if mode not in FAILURE_MODES or category not in RESOLVED_CATEGORIES:
        return None
    return category


def _timestamp_values(raw: dict, ids: TimestampIds) -> dict[str, datetime]:
    """The values of the timestamps the options name, by timestamp id; unset ones are absent."""
    wanted = {ids.started, ids.mitigated, ids.resolved, ids.reported, ids.closed} - {None}
    values: dict[str, datetime] = {}
    for entry in objects(raw, 'incident_timestamp_values'):
        stamp = obj(entry, 'incident_timestamp')
        if stamp.get('id') not in wanted:
            continue
        value = obj(entry, 'value').get('value')
        if value is not None:
            values[stamp['id']] = parse_time(value, f'incident timestamp {text(stamp.get("name")) or stamp["id"]!r}')
    return values


def _field_values(raw: dict, wanted: str | None) -> tuple[Named, ...]:
    """The values of the custom field named (or with the id) `wanted`, as services/teams/environments."""
    if not wanted:
        return ()
    for entry in objects(raw, 'custom_field_entries'):
        field = obj(entry, 'custom_field')
        if wanted in (field.get('id'), field.get('name')) or _folded(field.get('name')) == _folded(wanted):
            refs = (_value_ref(value) for value in objects(entry, 'values'))
            return tuple(dict.fromkeys(ref for ref in refs if ref))
    return ()


def _value_ref(value: dict) -> Named | None:
    catalog_entry = obj(value, 'value_catalog_entry')
    if catalog_entry:
        return named(catalog_entry)
    option = obj(value, 'value_option')
    if option:
        return named(option, name_field='value')
    return Named(None, value['value_text'][:200]) if text(value.get('value_text')) else None


def _find_timestamp(known: list[tuple[str, str]], wanted: str | None) -> str | None:
    """The id of the timestamp named `wanted` (or with that id): exactly, else ignoring case and " at"."""
    if not wanted:
        return None
    for tid, name in known:
        if wanted in (tid, name):
            return tid
    loose = _loose(wanted)
    return next((tid for tid, name in known if _loose(name) == loose), None)


def _loose(name: str) -> str:
    return _folded(name).removesuffix(' at')


def _folded(name) -> str | None:
    return ' '.join(name.split()).casefold() if isinstance(name, str) else None


def _id_of(raw) -> str:
    incident_id = raw.get('id') if isinstance(raw, dict) else None
    if isinstance(incident_id, str) and _ID.fullmatch(incident_id):
        return incident_id
    return f'unidentified record ({str(incident_id)[:40]!r})'


def _error_detail(body: dict) -> str:
    """incident.io's `{"type", "errors": [{"message"}]}`."""
    errors = body.get('errors') if isinstance(body.get('errors'), list) else []
    message = '; '.join(str(e.get('message')) for e in errors if isinstance(e, dict) and e.get('message'))
    return message or str(body.get('type') or '')
