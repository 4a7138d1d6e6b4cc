"""PagerDuty REST API v2: resolutions found through the account's log entries.

Why log entries and not `GET /incidents`: `since`/`until` on `/incidents` filter on `created_at`, so an
incident created weeks ago and resolved now is invisible to a time-windowed incident list. A
`resolve_log_entry` is stamped at the resolve time instead, so "resolved in [since, until)" is exactly
"resolve log entries created in [since, until)" — whenever the incident was created, and once more
each time a reopened incident is resolved again. `include[]=incidents` embeds the incident itself.

Offset pagination stops at 10,000 results, so a window holding more entries than a batch may hold is cut
in time. Where is estimated from the window's `total` (its first page asks `total=true`): the next window
ends where SPLIT_TARGET of the entries still expected would be, were they spread evenly, and each window
read corrects what is expected of the rest. A window whose own `total` is still too large (entries
bunched) is cut the same way. Reading N entries spread over a window costs about ceil(N/100) pages, plus
one probe and a partial page per window.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import requests

from ..incident import Batch, SourceIncident, Skipped
from .base import Source, checked_times, named, obj, objects, parse_time, text, title, utc, windows
from .http import JsonApi, SourceError

PAGE_SIZE = 100
OFFSET_CAP = 10_000
# Entries read before the cursor may advance. Smaller than the offset cap so that a run with a time
# budget checkpoints often, and memory stays bounded however large the backlog.
MAX_ENTRIES_PER_BATCH = 1_000
# What a cut window is sized for: 9 full pages, below the batch limit, so that unevenly spread entries
# seldom need a second cut.
SPLIT_TARGET = 900
# PagerDuty accepts at most 6 months between `since` and `until`; a month keeps each window's first
# (`total=true`) request cheap, and a long `initial_lookback` or backfill is read a month at a time.
MAX_WINDOW = timedelta(days=30)
MIN_WINDOW = timedelta(seconds=1)
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
    options = frozenset({'service_ids', 'team_ids', 'urgencies'})

    def __init__(self, config, http, api_url: str):
        super().__init__(config, http, api_url)
        self._team_ids = list(config.team_ids or ())
        self._urgencies = frozenset(config.urgencies or ())

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {
            'Authorization': f'Token token={token}',
            'Accept': 'application/vnd.pagerduty+json;version=2',
            'Content-Type': 'application/json',
        }
        return JsonApi(http, api_url, headers, describe_error)

    def resolved(self, since: datetime, until: datetime, deadline: float) -> Iterator[Batch]:
        # Ranges still to read, innermost last: (end, entries expected between `start` and it, None: unknown).
        ranges: list[tuple[datetime, int | None]] = [
            (end, None) for _, end in reversed(windows(since, until, MAX_WINDOW))
        ]
        start = since
        while ranges:
            end, expected = ranges[-1]
            if start >= end:
                ranges.pop()
                continue
            stop = _stop(start, end, expected)
            try:
                _in_time(deadline)  # e.g. the run's budget went to sending the DORA outbox: nothing new is read
                first = self._page(start, stop, offset=0, deadline=deadline, total=True)
                total = first.get('total')
                found = total if isinstance(total, int) else 0
                if found > MAX_ENTRIES_PER_BATCH and stop - start > MIN_WINDOW:
                    # Too many for one batch: [start, stop) is cut by its own total, the rest by what remains.
                    ranges[-1:] = [(end, None if expected is None else expected - found), (stop, found)]
                    continue
                batch = self._batch(self._entries(first, start, stop, deadline), stop)
            except _OutOfTime:
                # Past `max_run_time` in the middle of a window: none of it is reported, the cursor stays
                # before it, and the next run reads it again.
                yield Batch([], [], start)
                return
            ranges[-1] = (end, None if expected is None else expected - found)
            start = stop
            yield batch

    def _page(self, start, end, offset, deadline, total=False) -> dict:
        params = [
            ('since', utc(start)),
            ('until', utc(end)),
            ('time_zone', 'UTC'),
            ('is_overview', 'true'),
            ('include[]', 'incidents'),
            ('limit', PAGE_SIZE),
            ('offset', offset),
            ('total', 'true' if total else 'false'),
        ]
        params += [('team_ids[]', team_id) for team_id in self._team_ids]
        page = self.api.get('/log_entries', params, deadline)
        if not isinstance(page.get('log_entries'), list):
            raise SourceError('PagerDuty answered /log_entries without a `log_entries` list')
        return page

    def _entries(self, first: dict, start, end, deadline) -> Iterator[dict]:
        page, offset = first, 0
        while True:
            yield from page['log_entries']
            if not page.get('more'):
                return
            offset += PAGE_SIZE
            if offset + PAGE_SIZE > OFFSET_CAP:
                # Only reachable when one second holds more entries than the cap: refuse rather than skip.
                raise SourceError(f'more than {OFFSET_CAP} log entries between {utc(start)} and {utc(end)}')
            _in_time(deadline)
            page = self._page(start, end, offset, deadline)

    def _batch(self, entries: Iterator[dict], through: datetime) -> Batch:
        incidents: dict[str, SourceIncident] = {}
        skipped: list[Skipped] = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get('type') != 'resolve_log_entry':
                continue
            raw = entry.get('incident')
            try:
                incident = self._incident(raw)
            except (ValueError, TypeError, AttributeError, LookupError) as e:
                # One bad record must never stall the others: it is skipped, by name, and counted.
                skipped.append(Skipped(self.name, _id_of(raw, entry), str(e)))
                continue
            if incident is not None:
                # A window can hold several resolutions of a reopened incident; all embed its current state.
                incidents[incident.id] = incident
        return Batch(sorted(incidents.values(), key=lambda i: i.resolved_at), skipped, through)

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
    message = ''
    try:
        error = response.json().get('error') or {}
        message = '; '.join(str(part) for part in [error.get('message'), *(error.get('errors') or [])] if part)
    except (ValueError, AttributeError):
        pass
    other_region = US_API if 'eu.pagerduty.com' in (response.url or '') else EU_API
    hint = HINTS.get(response.status_code, 'PagerDuty answered HTTP {status}')
    hint = hint.format(other_region=other_region, status=response.status_code)
    return f'{hint} (HTTP {response.status_code}{": " + message[:200] if message else ""})'


def _severity(raw: dict) -> str | None:
    """PagerDuty has no severity: Datadog's own PagerDuty source uses the priority, we fall back to urgency."""
    priority = obj(raw, 'priority')
    return text(priority.get('summary')) or text(priority.get('name')) or text(raw.get('urgency'))


def _id_of(raw, entry) -> str:
    if isinstance(raw, dict) and text(raw.get('id')):
        return raw['id'][:64]
    return f'log entry {entry.get("id", "?")}'


def _stop(start: datetime, end: datetime, expected: int | None) -> datetime:
    """Where the next window ends: where SPLIT_TARGET of the `expected` entries in [start, end), spread evenly,
    would be. In whole seconds, as `since`/`until` are sent; shorter than [start, end) when cut at all."""
    if expected is None or expected <= SPLIT_TARGET:
        return end
    seconds = max(MIN_WINDOW.total_seconds(), math.floor((end - start).total_seconds() * SPLIT_TARGET / expected))
    return min(end, start + timedelta(seconds=seconds))


class _OutOfTime(Exception):
    pass


def _in_time(deadline: float) -> None:
    if time.monotonic() >= deadline:
        raise _OutOfTime
