"""Splunk On-Call (formerly VictorOps): its reporting API, `GET /api-reporting/v2/incidents`.

The reporting API filters on the incident's start only (`startedAfter`/`startedBefore`), never on a resolve
or update time, and its data "may be up to 15 minutes behind real-time". A run reads one of two ways:

- the whole horizon: every incident started within `start_horizon` (90 days) before now and before the
  window's end, 100 a page (its maximum), by `offset` (the first run of a process, or after a run that did not
  read everything: cut by the budget, or failed);
- after a run that read everything: the incidents that were open then (or resolved after its end), asked for by
  number (`incidentNumber`, one call), and those started since LAG before that run (usually one call). Anything
  older was shown, resolved, to that run: a steady-state run costs two reporting calls, whatever the horizon.

Every query asks for all phases, so that a run learns which incidents are still open. The order of the answers
is not documented and not relied on. A resolution is placed in the window of its resolve time, or, when that is
behind what the run reads (it showed up late), in the run's first window: the cursor then tells new resolutions
from those already reported, and `initial_lookback` bounds how late one may show up.

Failures: incidents whose `currentPhase` is resolved (compared case-insensitively: the public API says
`RESOLVED`). A resolved incident is never reopened (a new alert opens a new incident, a new failure).
Times: start = `startTime`; restore and resolution = the `at` of the last `resolved` transition (never
`lastAlertTime` nor an acknowledgement; `endTime` when an answer has no transitions). Identity: id =
`incidentNumber`, shown `#<number>`; url = `incidentLink`; title = `entityDisplayName` (served HTML-escaped);
service = `routingKey`; teams = the teams of `pagedPolicies` (else the `pagedTeams` slugs); severity =
`entityState` only when it is CRITICAL or WARNING (it is the entity's state now: OK once a recovery resolved it).

Credentials: two custom headers, `X-VO-Api-Id` (`api_id`) and `X-VO-Api-Key` (`api_token`), both secrets.
requests would carry those custom headers along a redirect to another host: `JsonApi` follows a redirect only
within `api_url`'s host (for every tool), so they never leave it. A 403 is
"Authentication failed or rate-limit reached": one that names a wait (`Retry-After`) is a rate limit.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import requests

from datadog_checks.base import ConfigurationError

from ..incident import Batch, Named, SourceIncident
from .base import (
    RESOLVED,
    Credentials,
    Page,
    Reading,
    Request,
    Source,
    checked_times,
    objects,
    parse_time,
    text,
    title,
    utc,
)
from .http import Answer, JsonApi, SourceError, describer

LIST_PATH = '/api-reporting/v2/incidents'
PAGE_SIZE = 100  # the most the reporting API serves a page
DEFAULT_START_HORIZON = 90 * 86400
# How far behind real time the reporting data may be (15 minutes, documented), with a margin: an incident
# started longer ago than this before a run was shown to that run.
LAG = timedelta(minutes=20)
MAX_ASKED = PAGE_SIZE  # incident numbers asked for in one call; more open incidents: the horizon is read again
PHASES = 'triggered,acknowledged,resolved'
RECENT = 'recent:'  # the page tokens of the incidents started since the last run (the horizon's are offsets)
REPORTED_STATES = frozenset({'CRITICAL', 'WARNING'})  # OK, INFO, RECOVERY say how the entity is now, not how bad
KEYS = '`api_id` (the organisation\'s API ID) and `api_token` (a Read-only API key, Integrations > API)'
HINTS = {
    401: f'Splunk On-Call refused the request without credentials: set {KEYS}',
    403: f'Splunk On-Call refused the API ID or the API key (or its rate limit was reached): check {KEYS}',
    429: 'Splunk On-Call rate limit reached for the reporting API',
    400: 'Splunk On-Call refused the incident query',
}


class SplunkOnCallSource(Source):
    name = 'splunk_oncall'
    display_name = 'Splunk On-Call'
    default_api_url = 'https://api.victorops.com'
    options = frozenset({'api_id', 'routing_keys', 'start_horizon'})
    scope_options = frozenset({'routing_keys'})
    # The vendor's Swagger 2.0 file is not read by derive_specs.py (OpenAPI 3.0 only): loopback/specs/
    # splunk_oncall.json is written by hand from it and from go-victorops' reporting answers.
    api_description: ClassVar[dict] = {'hand_written': True, 'operations': [('GET', LIST_PATH)]}
    # Listed by resolve time, a resolution that shows up late placed in the run's first window: Splunk On-Call
    # has no late entries beyond its reporting lag (no retrospective incident, no backdated or edited time).
    # A narrower window of resolve times asks for the same starts; `total` counts the horizon, not the window.
    reading = Reading(listing=RESOLVED, narrows=False, total_is_windows=False)
    credentials = Credentials(
        api_token_help='set it to a Read-only API key of Splunk On-Call (Integrations > API > New Key > Read-only)',
        secret_options=('api_id',),
    )

    def __init__(self, config, http, api_url: str, **kwargs):
        if not text(config.api_id):
            raise ConfigurationError(
                "`api_id` is required with `source: splunk_oncall`: the organisation's API ID (Integrations > API)"
            )
        self.start_horizon = timedelta(seconds=config.start_horizon or DEFAULT_START_HORIZON)
        self.routing_keys = frozenset(config.routing_keys or ())
        super().__init__(config, http, api_url.rstrip('/'), **kwargs)
        self._since: datetime | None = None
        self._until: datetime | None = None
        self._started_after: datetime | None = None
        # Left by the last run that read everything: what the next run asks for instead of the whole horizon.
        self._last: _LastRead | None = None
        self._recent_after: datetime | None = None  # this run: started since (None: read the whole horizon)
        self._asked: list[str] = []  # this run: the numbers asked for
        self._open: set[str] = set()  # this run: incidents still open, or resolved after `until`

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {'X-VO-Api-Id': self.config.api_id, 'X-VO-Api-Key': token, 'Accept': 'application/json'}
        return _ReportingApi(
            http, api_url, headers, describer('Splunk On-Call', HINTS, _detail, token, self.config.api_id)
        )

    # -- reading -------------------------------------------------------------------------------------
    def resolved(self, since, until, deadline, resume=None) -> Iterator[Batch]:
        self._since, self._until = since, until  # a resolution that showed up behind `since` goes in the first window
        read_at = self.clock()
        self._started_after = read_at - self.start_horizon
        last, self._last = self._last, None  # usable again only once this run has read everything
        narrowed = last is not None and len(last.open) <= MAX_ASKED
        self._recent_after = max(self._started_after, last.read_at - LAG) if narrowed else None
        self._asked = sorted(last.open, key=int) if narrowed else []
        self._open = set()
        for batch in super().resolved(since, until, deadline, resume):
            yield batch
            if batch.cut:
                return
        self._last = _LastRead(read_at, frozenset(self._open))

    def request(self, start: datetime, end: datetime, token: Any) -> Request:
        asking, offset = self._position(token)
        params = [('currentPhase', PHASES)]
        if asking:
            params.append(('incidentNumber', _ranges(self._asked)))
        else:
            params.append(('startedAfter', utc(self._recent_after or self._started_after)))
        params += [('startedBefore', utc(end)), ('limit', PAGE_SIZE), ('offset', offset)]
        if len(self.routing_keys) == 1:  # the API takes one routing key; several are filtered here
            params.append(('routingKey', next(iter(self.routing_keys))))
        return Request(LIST_PATH, params)

    def page(self, answer: Answer, token: Any) -> Page:
        body = answer.body if isinstance(answer.body, dict) else {}
        records, total = body.get('incidents'), body.get('total')
        if not isinstance(records, list) or type(total) is not int:
            raise SourceError(f'Splunk On-Call answered GET {LIST_PATH} without an `incidents` list and a `total`')
        for record in records:
            self._note_open(record)
        asking, offset = self._position(token)
        if asking:  # at most MAX_ASKED numbers: one page; then the incidents started since
            return Page(records, f'{RECENT}0')
        offset += len(records)
        more = records and offset < total
        if self._recent_after is None:
            return Page(records, offset if more else None, total)
        return Page(records, f'{RECENT}{offset}' if more else None, total)

    def _position(self, token: Any) -> tuple[bool, int]:
        """Whether the page `token` asks for the open incidents by number, and the offset it asks from. A token
        of the other way of reading (resumed after a restart) starts that window again."""
        if self._recent_after is None:
            return False, token if type(token) is int else 0
        if token is None and self._asked:
            return True, 0
        if isinstance(token, str) and token.startswith(RECENT) and token[len(RECENT) :].isdigit():
            return False, int(token[len(RECENT) :])
        return False, 0

    def _note_open(self, record) -> None:
        """Remembers an incident the next run must ask for by number: open, or resolved after this run's end."""
        number = _number(record) if isinstance(record, dict) else None
        if number is None or not number.isdigit():
            return  # no number to ask for: malformed, skipped by name when read
        try:
            if str(record.get('currentPhase') or '').lower() != 'resolved' or _resolve_time(record) >= self._until:
                self._open.add(number)
        except (TypeError, ValueError):
            self._open.add(number)  # malformed (skipped by name when read): asked for again, in case it is mended

    def record_id(self, record) -> str | None:
        return _number(record) if isinstance(record, dict) else None

    def listed_at(self, record, incident: SourceIncident | None) -> datetime | None:
        if incident is None:
            return None
        return max(incident.resolved_at, self._since) if self._since is not None else incident.resolved_at

    def incident(self, record) -> SourceIncident | None:
        if not isinstance(record, dict):
            raise TypeError(f'the record is a {type(record).__name__}, not an object')
        number = _number(record)
        if number is None:
            raise ValueError('the record has no `incidentNumber`')
        if str(record.get('currentPhase') or '').lower() != 'resolved':
            return None  # triggered or acknowledged: not over
        routing_key = text(record.get('routingKey'))
        if self.routing_keys and routing_key not in self.routing_keys:
            return None
        started_at = parse_time(record.get('startTime'), 'startTime')
        resolved_at = _resolve_time(record)
        checked_times(started_at, resolved_at, resolved_at)
        state = str(record.get('entityState') or '').upper()
        name = html.unescape(text(record.get('entityDisplayName')) or text(record.get('entityId')) or '')
        return SourceIncident(
            source=self.name,
            id=number,
            number=f'#{number}',
            title=title(name, f'Splunk On-Call incident #{number}'),
            url=text(record.get('incidentLink')),
            started_at=started_at,
            restored_at=resolved_at,
            resolved_at=resolved_at,
            services=(Named(None, routing_key),) if routing_key else (),
            teams=_teams(record),
            severity=state if state in REPORTED_STATES else None,
        )


@dataclass(frozen=True)
class _LastRead:
    read_at: datetime  # the source's clock before that run's first call
    open: frozenset[str]  # the numbers of the incidents to ask for


def _ranges(numbers: list[str]) -> str:
    """Incident numbers as `incidentNumber` takes them, runs as ranges: `4,5,20:50`."""
    parts, run = [], []
    for number in map(int, numbers):
        if run and number == run[-1] + 1:
            run.append(number)
            continue
        if run:
            parts.append(f'{run[0]}:{run[-1]}' if len(run) > 2 else ','.join(map(str, run)))
        run = [number]
    if run:
        parts.append(f'{run[0]}:{run[-1]}' if len(run) > 2 else ','.join(map(str, run)))
    return ','.join(parts)


class _ReportingApi(JsonApi):
    def retried(self, response: requests.Response) -> bool:
        # "Authentication failed or rate-limit reached": a 403 that names a wait is the rate limit.
        return super().retried(response) or (response.status_code == 403 and 'retry-after' in response.headers)


def _number(record: dict) -> str | None:
    number = record.get('incidentNumber')
    if type(number) is int:
        return str(number)
    return text(number)


def _resolve_time(record: dict) -> datetime:
    """The last `resolved` transition's time (names compared case-insensitively), else `endTime`."""
    times = [
        parse_time(transition.get('at'), 'transitions[].at')
        for transition in objects(record, 'transitions')
        if str(transition.get('name') or '').lower() == 'resolved'
    ]
    if times:
        return max(times)
    if record.get('endTime'):
        return parse_time(record.get('endTime'), 'endTime')
    raise ValueError('a resolved incident without a `resolved` transition or an `endTime`')


def _teams(record: dict) -> tuple[Named, ...]:
    teams: dict[str, Named] = {}
    for paged in objects(record, 'pagedPolicies'):
        team = paged.get('team')
        if isinstance(team, dict) and (text(team.get('slug')) or text(team.get('name'))):
            ref = Named(text(team.get('slug')), text(team.get('name')))
            teams.setdefault(ref.id or ref.name, ref)
    if not teams:
        slugs = record.get('pagedTeams')
        for slug in slugs if isinstance(slugs, list) else ():
            if text(slug):
                teams.setdefault(slug, Named(slug, None))
    return tuple(teams.values())


def _detail(body: dict) -> str:
    """What an error answer says: `message` or `error` (the reporting API documents no error body)."""
    for field in ('message', 'error'):
        if isinstance(body.get(field), str):
            return body[field]
    return ''
