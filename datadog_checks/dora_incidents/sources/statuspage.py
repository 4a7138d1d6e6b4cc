"""Atlassian Statuspage: `GET {api_url}/pages/{page_id}/incidents`, newest created first, back to a creation horizon.

Listing: the manage API's incident list takes `q` (a text search), `limit` (default and maximum 100) and `page`
(from 1) and answers a bare JSON array: no total, no `Link`, no time or status filter. Its order is not
documented; newest created first is assumed (as the status page shows them), so every run reads the pages
until one ends short or holds an incident created before `creation_horizon` (default 90 days). The reader's
windows are on `updated_at` (Reading's default: listed by update time): a resolution, a reopen, an update's
display time edited afterwards and a postmortem all move it, and the cursor tells new and corrected
resolutions from those already reported. An incident created while the list is paged shifts every later page
by one: the record at the edge is read twice and kept once, never missed.

Not failures: incidents not resolved now (`investigating`, `identified`, `monitoring`; a reopened one has
`resolved_at` cleared, and an update may set it back); impacts not in `impacts` (by default `none` and
scheduled maintenances, impact `maintenance`, which are done when `completed`). Times: start = `started_at`,
unless later than `created_at` (a backfilled incident's `created_at` is its backfill date: Statuspage's own
example incident shows it), else `created_at`; resolution = `resolved_at` (a maintenance's `completed` time is
its `resolved_at` too); restore with `restored_at: mitigated` = `monitoring_at` unless missing or after the
resolution. Times carry the page's UTC offset. Identity: services = `components[]` (id, name), severity =
`impact` (it already reflects `impact_override`); Statuspage has no teams.

Credentials: the API key, sent as `Authorization: OAuth <key>` (never `?api_key=`, which lands in access logs).
Rate limit: 1 request a second per key over a rolling minute, answered 420 (still used) or 429 with
`Retry-After`: both are waited out like any rate limit.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import requests

from datadog_checks.base import ConfigurationError

from ..incident import SourceIncident
from .base import (
    DEFAULT_CREATION_HORIZON,
    Credentials,
    Page,
    Reading,
    Request,
    Source,
    checked_times,
    named,
    objects,
    parse_time,
    restore_time,
    text,
    title,
)
from .http import Answer, JsonApi, SourceError, describer

LIST_PATH = '/pages/{page_id}/incidents'
PAGE_SIZE = 100  # the list's default and maximum `limit`
DEFAULT_IMPACTS = ('minor', 'major', 'critical')
# `postmortem` is what the list answers once a postmortem is published (the description's enum lacks it).
RESOLVED_STATUSES = frozenset({'resolved', 'postmortem'})
COMPLETED_MAINTENANCE = 'completed'
RATE_LIMITED = 420  # Statuspage's older rate-limit status, answered beside 429
PAGE_ID = re.compile(r'[A-Za-z0-9]{1,64}')  # 12 lowercase letters and digits in practice

HINTS = {
    401: 'Statuspage rejected the API key: set `api_token` to an API key of the page\'s organization '
    '(manage.statuspage.io > your avatar > API info)',
    403: 'the Statuspage API key may not read this page: check `api_token` and `page_id`',
    404: 'Statuspage has no page {page_id} visible to this API key: check `page_id` (API info lists the pages)',
    420: 'Statuspage rate limit reached (1 request a second per API key)',
    429: 'Statuspage rate limit reached (1 request a second per API key)',
}


class StatuspageApi(JsonApi):
    """Statuspage answers a rate limit with 420 as well as 429: both are waited out (`Retry-After`)."""

    def retried(self, response: requests.Response) -> bool:
        return response.status_code == RATE_LIMITED or super().retried(response)


class StatuspageSource(Source):
    name = 'statuspage'
    display_name = 'Statuspage'
    default_api_url = 'https://api.statuspage.io/v1'
    options = frozenset({'page_id', 'impacts', 'restored_at', 'creation_horizon'})
    scope_options = frozenset({'page_id', 'impacts'})
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        'file': 'statuspage.openapi.yaml',
        'from': ('sbecker59/statuspage-api-client-go', 'api/v1/statuspage/api/openapi.yaml', '2024-08'),
        'operations': [('GET', LIST_PATH)],
        'overlay': 'statuspage_as_answered',
    }
    # Listed by update time; each window reads the whole horizon (the list has no time filter) and keeps what
    # was updated in it: a narrower window reads the same pages.
    reading = Reading(narrows=False)
    credentials = Credentials(
        api_token_help='set it to a Statuspage API key (manage.statuspage.io > your avatar > API info)'
    )

    def __init__(self, config, http, api_url: str, **clock):
        self.page_id = text(config.page_id)
        if not self.page_id:
            raise ConfigurationError(
                '`page_id` is required with `source: statuspage`: the id of the page to read (API info lists it)'
            )
        if not PAGE_ID.fullmatch(self.page_id):
            raise ConfigurationError(f'`page_id` is not a Statuspage page id (letters and digits): {config.page_id!r}')
        impacts = DEFAULT_IMPACTS if config.impacts is None else config.impacts  # the model refuses unknown ones
        if not impacts:
            raise ConfigurationError('`impacts` is empty: list the impacts that make a failure (e.g. minor, major)')
        self.impacts = frozenset(impacts)
        self.creation_horizon = timedelta(seconds=config.creation_horizon or DEFAULT_CREATION_HORIZON)
        self._mitigated = config.restored_at == 'mitigated'
        self.list_path = LIST_PATH.format(page_id=self.page_id)
        super().__init__(config, http, api_url.rstrip('/'), **clock)

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        token = token.strip()
        token = token[len('OAuth ') :].strip() if token.lower().startswith('oauth ') else token
        headers = {'Authorization': f'OAuth {token}', 'Accept': 'application/json'}
        hints = {status: hint.replace('{page_id}', repr(self.page_id)) for status, hint in HINTS.items()}
        return StatuspageApi(http, api_url, headers, describer('Statuspage', hints, _error_detail, token))

    # -- reading -------------------------------------------------------------------------------------
    def request(self, start: datetime, end: datetime, token) -> Request:
        return Request(self.list_path, [('limit', PAGE_SIZE), ('page', token or 1)])

    def page(self, answer: Answer, token) -> Page:
        records, number = answer.body, token or 1
        if not isinstance(records, list):
            raise SourceError(f'Statuspage answered GET {self.list_path} (page {number}) with no list of incidents')
        if len(records) > PAGE_SIZE:
            raise SourceError(f'Statuspage answered page {number} with {len(records)} incidents, more than {PAGE_SIZE}')
        horizon = self.clock() - self.creation_horizon
        past_horizon = any(moment is not None and moment < horizon for moment in map(_created, records))
        more = len(records) == PAGE_SIZE and not past_horizon
        return Page(records, number + 1 if more else None)

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(_record(record).get('updated_at'), 'updated_at')

    def incident(self, record) -> SourceIncident | None:
        """The resolution an incident describes, or None when it is not a failure (now)."""
        raw = _record(record)
        incident_id = text(raw.get('id'))
        if incident_id is None:
            raise ValueError('the incident has no `id`')
        impact, status = raw.get('impact'), raw.get('status')
        if impact not in self.impacts:
            return None
        completed = impact == 'maintenance' and status == COMPLETED_MAINTENANCE
        if status not in RESOLVED_STATUSES and not completed:
            return None  # open, reopened, or a maintenance not done yet: reported at its resolution
        resolved_at = _resolution(raw, completed)
        if resolved_at is None:
            return None
        created_at = parse_time(raw.get('created_at'), 'created_at')
        if created_at < self.clock() - self.creation_horizon:
            return None  # outside what every run reads: reported by none, whichever page a run reached
        started_at = created_at
        if raw.get('started_at') is not None:
            started_at = min(created_at, parse_time(raw['started_at'], 'started_at'))
        restored_at = resolved_at
        if self._mitigated and raw.get('monitoring_at') is not None:
            restored_at = restore_time(resolved_at, parse_time(raw['monitoring_at'], 'monitoring_at'))
        checked_times(started_at, restored_at, resolved_at)
        components = (named(component) for component in objects(raw, 'components'))
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=None,
            title=title(raw.get('name'), f'Statuspage incident {incident_id}'),
            url=text(raw.get('shortlink')),
            started_at=started_at,
            restored_at=restored_at,
            resolved_at=resolved_at,
            services=tuple(dict.fromkeys(component for component in components if component)),
            teams=(),
            severity=impact,
        )


def _record(record) -> dict:
    if not isinstance(record, dict):
        raise TypeError(f'the incident is a {type(record).__name__}, not an object')
    return record


def _resolution(raw: dict, completed: bool) -> datetime | None:
    """`resolved_at`; for a completed maintenance without one, the display time of its `completed` update."""
    if raw.get('resolved_at') is not None:
        return parse_time(raw['resolved_at'], 'resolved_at')
    if not completed:
        return None  # a reopen clears it: reported at the next resolution
    updates = [update for update in objects(raw, 'incident_updates') if update.get('status') == COMPLETED_MAINTENANCE]
    times = [parse_time(update.get('display_at'), 'incident_updates[completed].display_at') for update in updates]
    if not times:
        raise ValueError('a completed maintenance with neither `resolved_at` nor a `completed` update')
    return max(times)


def _created(record) -> datetime | None:
    try:
        return parse_time(_record(record).get('created_at'), 'created_at')
    except (TypeError, ValueError):
        return None


def _error_detail(body: dict) -> str:
    """Statuspage's `{"error": "..."}` (the description says `{"message": "..."}`; both are read)."""
    error = body.get('error')
    if isinstance(error, list):
        error = '; '.join(str(item) for item in error)
    return str(error or body.get('message') or '')
