"""Opsgenie: resolutions read from the Incident API v1, `GET {api_url}/v1/incidents`, back to a creation horizon.

Listing: `query=status: (resolved OR closed) AND createdAt >= <ms>` (and `AND (<query>)`), `sort=createdAt`,
`order=desc`, `limit=100` (its maximum), `offset`. The incident search's only time field is `createdAt`: there
is no update or resolve time to search on. So every run reads the resolved and closed incidents created
within `creation_horizon` (default 90 days); the reader's windows are on `updatedAt` (listed by update time:
a resolution, a reopen, an edited impact time all move it) and the cursor tells new and corrected
resolutions from those already reported. Offsets shift when an incident is resolved or reopened while the
list is paged: a page whose `totalCount` moved makes the reader read the list again.

Not failures: incidents whose status is not `resolved` or `closed` now. A reopened incident keeps its old
`impactEndDate`: the status tells, never the field. Closing a resolved incident moves `updatedAt` only: the
same resolution is listed again and the cursor recognises it. Opsgenie has no test or drill flag (`query`).

Times: start = `impactStartDate` (defaults to `createdAt`, editable), else `createdAt`; resolution and
restore = `impactEndDate` (set when resolved, editable), else (a resolved incident without one) the `eventTime`
of the latest `IncidentResolved` entry of its timeline, `GET /v2/incident-timelines/{id}/entries` (one request
per such incident and update). There is no `resolvedAt`, and `updatedAt` is never a resolve time. Date-times
are UTC, milliseconds with trailing zeros dropped (`...T17:49:10.17Z`).

Names: `impactedServices` holds service ids, named by `GET /v1/services/{id}`; the team is `ownerTeam`, else
the first team of `responders`, named by `GET /v2/teams/{id}`. Both are looked up once per id and kept for
the source's life (a deleted one keeps its id only). Severity = `priority` (`P1`...`P5`); title = `message`;
link = `links.web`; number = `#<tinyId>`, for display only (tinyIds roll over: never an identity).

Credentials: an API integration's key, `Authorization: GenieKey <key>`. Errors are
`{"message", "took", "requestId"}`; a 429 carries `X-RateLimit-State: THROTTLED` and
`X-RateLimit-Period-In-Sec`, no `Retry-After`. Read-only: no write endpoint is ever called.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from ..incident import Named, SourceIncident
from .base import (
    DEFAULT_CREATION_HORIZON,
    Credentials,
    Page,
    Reading,
    Request,
    Source,
    checked_times,
    obj,
    objects,
    parse_time,
    text,
    title,
)
from .http import MAX_RETRY_WAIT, Answer, JsonApi, SourceError, describer, retry_after

LIST_PATH = '/v1/incidents'
SERVICES_PATH = '/v1/services'
TEAMS_PATH = '/v2/teams'
SERVICE_PATH = SERVICES_PATH + '/{}'
TEAM_PATH = TEAMS_PATH + '/{}'
TIMELINE_PATH = '/v2/incident-timelines/{}/entries'
PAGE_SIZE = 100  # Opsgenie's cap on `limit`
RESOLVED_STATUSES = frozenset({'resolved', 'closed'})
# An Opsgenie id as it may go into a path: a UUID in practice.
_ID = re.compile(r'[A-Za-z0-9_-]{1,128}')

HINTS = {
    401: 'Opsgenie refused the API key: set `api_token` to the key of an Opsgenie API integration with Read '
    'Access (Settings > Integrations > API), of this account and region (EU accounts: `api_url: '
    'https://api.eu.opsgenie.com`)',
    402: "Opsgenie's Incident API needs a Standard or Enterprise plan: this account's plan does not include it",
    403: 'the Opsgenie key in `api_token` may not read incidents: its API integration needs Read Access',
    404: 'Opsgenie has no such path here: check `api_url` (default https://api.opsgenie.com)',
    422: 'Opsgenie refused the incident search: check `query` (Opsgenie\'s search syntax for incidents, without '
    'status or createdAt)',
    429: 'Opsgenie rate limit reached for the incident API',
}


class _OpsgenieApi(JsonApi):
    """Opsgenie's 429 names no reset (no `Retry-After`), only how long its throttling period is."""

    def wait(self, response, attempt: int) -> float:
        try:
            period = float(response.headers.get('x-ratelimit-period-in-sec', ''))
        except ValueError:
            return retry_after(response, attempt)
        # A period longer than a run may wait: backing off briefly may still find the period's end.
        return period if 0 <= period <= MAX_RETRY_WAIT else retry_after(response, attempt)


class OpsgenieSource(Source):
    name = 'opsgenie'
    display_name = 'Opsgenie'
    default_api_url = 'https://api.opsgenie.com'
    options = frozenset({'query', 'creation_horizon'})
    scope_options = frozenset({'query'})
    api_description = {  # written by hand (loopback/specs/opsgenie.json): the vendor's is multi-file Swagger 2.0
        'hand_written': True,
        'operations': [
            ('GET', LIST_PATH),
            ('GET', SERVICES_PATH),
            ('GET', '/v1/services/{id}'),
            ('GET', TEAMS_PATH),
            ('GET', '/v2/teams/{identifier}'),
            ('GET', '/v2/incident-timelines/{incidentId}/entries'),
        ],
    }
    # Listed by update time. Each window reads the whole horizon (the search filters on creation only) and keeps
    # what was updated in it: `totalCount` counts the whole search, not the window's share, and a narrower
    # window reads the same pages.
    reading = Reading(narrows=False, total_is_windows=False)
    credentials = Credentials(api_token_help='set it to the key of an Opsgenie API integration with Read Access')

    def __init__(self, config, http, api_url: str, **clock):
        self.creation_horizon = timedelta(seconds=config.creation_horizon or DEFAULT_CREATION_HORIZON)
        self._names: dict[str, str | None] = {}  # service or team look-up path -> its name (None: unknown)
        self._names_loaded = False
        # (incident id, `updatedAt`) -> when its timeline says it was resolved, for those without `impactEndDate`
        self._resolve_actions: dict[tuple[str, str], datetime | None] = {}
        self._deadline = 0.0
        self._horizon: datetime | None = None
        self._reach_back: datetime | None = None
        super().__init__(config, http, api_url.rstrip('/'), **clock)

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        token = _bare_key(token)
        headers = {'Authorization': f'GenieKey {token}', 'Accept': 'application/json'}
        return _OpsgenieApi(http, api_url, headers, describer('Opsgenie', HINTS, _error_detail, token))

    @property
    def secrets(self) -> tuple[str, ...]:
        return (_bare_key(self.config.api_token),)  # `api_token` may hold it with its `GenieKey ` prefix

    def resolved(self, since: datetime, until: datetime, deadline: float, resume=None):
        # Reading back to `since` (a backfill, a long lookback) reaches back `creation_horizon` before it.
        self._reach_back = since
        return super().resolved(since, until, deadline, resume)

    def prepare(self, deadline: float) -> None:
        """The run's horizon, fixed for all its pages (a moving one would move `totalCount` between pages):
        `creation_horizon` before the start of what is read, or before now; on the first run, every service's
        and team's name (a few requests), so that a page's records seldom wait for a look-up past the budget."""
        self._deadline = deadline
        self._horizon = None
        self.horizon()
        if not self._names_loaded:
            self._load_names()
            self._names_loaded = True

    # -- reading -------------------------------------------------------------------------------------
    def request(self, start: datetime, end: datetime, token) -> Request:
        # Created before it was last updated: nothing created after the window's end is in it.
        created = f'createdAt >= {_ms(self.horizon())} AND createdAt < {_ms(end)}'
        query = f'status: (resolved OR closed) AND {created}'
        if self.config.query:
            query += f' AND ({self.config.query})'
        params = [('query', query), ('offset', token or 0), ('limit', PAGE_SIZE), ('sort', 'createdAt')]
        return Request(LIST_PATH, [*params, ('order', 'desc')])

    def page(self, answer: Answer, token) -> Page:
        body, offset = answer.body, token or 0
        if (
            not isinstance(body, dict)
            or not isinstance(body.get('data'), list)
            or type(body.get('totalCount')) is not int
        ):
            raise SourceError(f'Opsgenie answered {LIST_PATH} (offset {offset}) without a `data` list and `totalCount`')
        records, total = body['data'], body['totalCount']
        self._look_up_names(records)
        self._look_up_resolve_actions(records)
        following = offset + len(records)
        return Page(records, following if records and following < total else None, total)

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(_record(record).get('updatedAt'), 'updatedAt')

    def incident(self, record) -> SourceIncident | None:
        """The resolution an incident describes, or None when it is not a failure (now)."""
        raw = _record(record)
        incident_id = raw.get('id')
        if not isinstance(incident_id, str) or not _ID.fullmatch(incident_id):
            raise ValueError(f'`id` is not an Opsgenie id: {str(incident_id)[:64]!r}')
        if raw.get('status') not in RESOLVED_STATUSES:
            return None  # open (a reopened one keeps its stale `impactEndDate`)
        created_at = parse_time(raw.get('createdAt'), 'createdAt')
        if created_at < self.horizon():
            return None  # outside what every run reads: reported by none, so that runs agree
        if raw.get('impactEndDate') is not None:
            resolved_at = parse_time(raw['impactEndDate'], 'impactEndDate')
        else:
            resolved_at = self._resolve_actions.get((incident_id, str(raw.get('updatedAt'))))
            if resolved_at is None:
                raise ValueError(
                    'resolved without an `impactEndDate` or a resolution in its timeline: set its impact end'
                )
        start = raw.get('impactStartDate')
        started_at = parse_time(start, 'impactStartDate') if start is not None else created_at
        checked_times(started_at, resolved_at, resolved_at)
        tiny_id = text(raw.get('tinyId'))
        priority = raw.get('priority')
        if priority is not None and not isinstance(priority, str):
            raise TypeError(f'`priority` is {priority!r}, not a string')
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=f'#{tiny_id}' if tiny_id else None,
            title=title(raw.get('message'), f'Opsgenie incident {incident_id}'),
            url=text(obj(raw, 'links').get('web')),
            started_at=started_at,
            restored_at=resolved_at,
            resolved_at=resolved_at,
            services=tuple(self._named(SERVICE_PATH, service) for service in _service_ids(raw)),
            teams=tuple(self._named(TEAM_PATH, team) for team in _team_ids(raw)[:1]),
            severity=text(priority),
        )

    def horizon(self) -> datetime:
        """The oldest creation time this run reads."""
        if self._horizon is None:
            now = self.clock()
            reach = min(now, self._reach_back) if self._reach_back is not None else now
            self._horizon = (reach - self.creation_horizon).replace(microsecond=0)
        return self._horizon

    # -- names ---------------------------------------------------------------------------------------
    def _load_names(self) -> None:
        names: dict[str, str | None] = {}
        offset = 0
        while True:
            body = self._get(SERVICES_PATH, [('limit', PAGE_SIZE), ('offset', offset)])
            services = body.get('data')
            if not isinstance(services, list):
                raise SourceError(f'Opsgenie answered {SERVICES_PATH} without a `data` list')
            names.update(_names_of(SERVICE_PATH, services))
            offset += len(services)
            total = body.get('totalCount')
            if not services or type(total) is not int or offset >= total:
                break
        teams = self._get(TEAMS_PATH, None).get('data')
        if not isinstance(teams, list):
            raise SourceError(f'Opsgenie answered {TEAMS_PATH} without a `data` list')
        self._names = {**names, **_names_of(TEAM_PATH, teams)}

    def _look_up_names(self, records: list) -> None:
        """Names of the page's services and teams not known yet (created since): one request per id, kept."""
        for record in records:
            try:
                raw = _record(record)
                wanted = [SERVICE_PATH.format(i) for i in _service_ids(raw)]
                wanted += [TEAM_PATH.format(i) for i in _team_ids(raw)[:1]]
            except (TypeError, ValueError):
                continue  # a malformed record is skipped by name later
            for path in wanted:
                if path not in self._names:
                    self._names[path] = self._look_up(path)

    def _look_up_resolve_actions(self, records: list) -> None:
        """When the resolve action happened, from the timeline, for each resolved incident of the page without an
        `impactEndDate`: one request per such incident and update, kept."""
        for record in records:
            raw = record if isinstance(record, dict) else {}
            incident_id, key = raw.get('id'), (raw.get('id'), str(raw.get('updatedAt')))
            if raw.get('status') not in RESOLVED_STATUSES or raw.get('impactEndDate') is not None:
                continue
            if isinstance(incident_id, str) and _ID.fullmatch(incident_id) and key not in self._resolve_actions:
                self._resolve_actions[key] = self._resolve_action(incident_id)

    def _resolve_action(self, incident_id: str) -> datetime | None:
        """The latest `IncidentResolved` entry's `eventTime` (the first page, newest first); None without one."""
        try:
            data = self._get(TIMELINE_PATH.format(incident_id), [('limit', PAGE_SIZE)]).get('data')
        except SourceError as e:
            if e.status == 404:
                return None  # deleted since
            raise
        entries = data.get('entries') if isinstance(data, dict) else None
        times = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get('type') == 'IncidentResolved':
                try:
                    times.append(parse_time(entry.get('eventTime'), 'eventTime'))
                except ValueError:
                    continue  # the incident is then skipped by name, unless another entry tells
        return max(times, default=None)

    def _get(self, path: str, params) -> dict:
        try:
            return self.api.get(path, params, self._deadline)
        except SourceError as e:
            if 'Opsgenie' in str(e):
                raise
            raise SourceError(f'Opsgenie {path}: {e}', e.status) from None

    def _look_up(self, path: str) -> str | None:
        try:
            data = self._get(path, None).get('data')
        except SourceError as e:
            if e.status == 404:
                return None  # deleted since: its id stays
            raise
        return text(data.get('name')) if isinstance(data, dict) else None

    def _named(self, path: str, identifier: str) -> Named:
        return Named(identifier, self._names.get(path.format(identifier)))


def _ms(moment: datetime) -> int:
    """Unix milliseconds, as the search compares `createdAt`; rounded up, so that `<` keeps the whole millisecond."""
    return math.ceil(moment.timestamp() * 1000)


def _names_of(path: str, listed: list) -> dict[str, str | None]:
    """Look-up path -> name, for each service or team of a list."""
    names = {}
    for item in listed:
        if isinstance(item, dict) and isinstance(item.get('id'), str) and _ID.fullmatch(item['id']):
            names[path.format(item['id'])] = text(item.get('name'))
    return names


def _record(record) -> dict:
    if not isinstance(record, dict):
        raise TypeError(f'the record is a {type(record).__name__}, not an object')
    return record


def _service_ids(raw: dict) -> list[str]:
    services = raw.get('impactedServices')
    if services is None:
        return []
    if not isinstance(services, list) or not all(isinstance(s, str) and _ID.fullmatch(s) for s in services):
        raise ValueError('`impactedServices` is not a list of service ids')
    return list(dict.fromkeys(services))


def _team_ids(raw: dict) -> list[str]:
    """The owner team, then the responder teams."""
    teams = [raw.get('ownerTeam')] + [r.get('id') for r in objects(raw, 'responders') if r.get('type') == 'team']
    return [team for team in dict.fromkeys(teams) if isinstance(team, str) and _ID.fullmatch(team)]


def _error_detail(body: dict) -> str:
    """Opsgenie's `{"message", "took", "requestId"}`."""
    message = body.get('message')
    return str(message) if message else ''


def _bare_key(token: str) -> str:
    """The API key `api_token` holds, with or without the `GenieKey ` prefix of the header it travels in."""
    token = token.strip()
    return token[len('GenieKey ') :].strip() if token.lower().startswith('geniekey ') else token
