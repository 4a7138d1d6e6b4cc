"""Reads from Datadog's DORA API (lists of deployments and failures), beside the writes: the same client, the run's
deadline, and a refused application key held back for markings too.

The list endpoints page by time only: each next page ends where the previous one's oldest event started (that
event comes again and is dropped by id).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from ..incident import text
from .client import DatadogHttp
from .pool import WritePool, refusal

LIST_LIMIT = 1_000  # the most one list answer holds
MAX_PAGES = 20
_BARE_VALUE = re.compile(r'[A-Za-z0-9_.]+')


class DatadogError(Exception):
    """A read from Datadog's API failed. The message names the cause, never a key."""


class DoraLists:
    """The reads of Datadog's DORA lists (deployments, failures): one query, or a time-paged list."""

    def __init__(self, http: DatadogHttp, pool: WritePool):
        self._http = http
        self._pool = pool

    def query(self, path: str, body: dict) -> dict:
        """One read that needs the application key. Raises DatadogError."""
        if time.monotonic() > self._pool.deadline:
            raise DatadogError('the run reached `max_run_time`')
        if self._pool.app_key_refused:
            raise DatadogError(self._pool.rejected or 'Datadog refused the application key')
        answer = self._http.send('POST', path, body, app_key=True)
        self._pool.note_answer(answer)
        if answer.status in (401, 403):
            raise DatadogError(refusal(answer.status, answer.detail, app_key=True))
        if answer.status != 200 or not isinstance(answer.document, dict):
            raise DatadogError(f'the Datadog API failed: {answer.detail}')
        return answer.document

    def list_events(
        self, path: str, kind: str, query: str, since: datetime, until: datetime, limit: int | None = None
    ) -> tuple[list[dict], bool]:
        """The events matching `query` whose start is in [since, until], newest first, and whether that is all of
        them. Raises DatadogError."""
        limit = limit or LIST_LIMIT
        events: dict[str, dict] = {}
        to = until
        for _ in range(MAX_PAGES):
            attributes = {'from': iso(since), 'to': iso(to), 'sort': '-started_at', 'limit': limit}
            if query:  # none: every event
                attributes['query'] = query
            page = self.query(path, {'data': {'type': kind, 'attributes': attributes}}).get('data') or []
            if not isinstance(page, list):
                raise DatadogError(f'{path} did not answer a list')
            fresh = [item for item in page if listed(item) and item['id'] not in events]
            events.update((item['id'], item) for item in fresh)
            if len(page) < limit:
                return list(events.values()), True
            oldest = min(
                (datadog_time(item['attributes'].get('started_at')) for item in fresh), default=None, key=_sortable
            )
            if not fresh or oldest is None or oldest >= to:  # a full page at one instant: no way further back
                return list(events.values()), False
            to = oldest
        return list(events.values()), False


def search_query(**terms: str | None) -> str:
    """`service:checkout env:prod`; a value with other characters than letters, digits, `_` and `.` is quoted."""
    return ' '.join(f'{name}:{_search_value(value)}' for name, value in terms.items() if value)


def listed(item) -> bool:
    """An entry of a list answer with a string id and an attributes object; others are ignored."""
    return isinstance(item, dict) and text(item.get('id')) is not None and isinstance(item.get('attributes'), dict)


def datadog_time(value) -> datetime | None:
    """A date-time as Datadog's list endpoints answer it (ISO 8601, `Z` or an offset; none is UTC); None when
    unreadable. Lenient, unlike a source's `parse_time`, which refuses a record without an explicit zone."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def _search_value(value: str) -> str:
    if _BARE_VALUE.fullmatch(value):
        return value
    return '"' + value.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _sortable(moment: datetime | None):
    return moment or datetime.max.replace(tzinfo=timezone.utc)
