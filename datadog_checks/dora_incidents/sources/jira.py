"""Jira Cloud and Jira Service Management: the JQL search (`POST /rest/api/3/search/jql`) by `updated`.

The issues are those of the configured `jql`. Resolving an issue updates it, and so does everything done
after the fact (an import of past incidents, a resolution date or impact start corrected), so one search a
run finds new, late and corrected resolutions alike; the cursor tells them apart (cursor.py). Issues are
not filtered on their status in JQL: an issue reopened while a window is paged must not leave the results
and shift another past us.

Time zones: JQL date literals have minute precision and are read in the token owner's time zone, which
`GET /rest/api/3/myself` tells (`prepare`, hourly). Each window bound is written in that zone, the lower
one rounded down to its minute and the upper one rounded up, each moved until Jira's reading of it (a
repeated local time is its first occurrence, a skipped one moves forward) is on the safe side; `listed_at`
then keeps exactly the issues whose `updated` is in the window. Newest first, so that an issue updated
while a window is paged comes in at the front (read twice, kept once). The search gives no total.

Not failures: an issue whose status is not in the Done category, without `resolutiondate`, or resolved as
Duplicate, Won't Do, Cannot Reproduce or Declined. Times: start = `created`, or the date-time field
`started_field` when set; restore and resolution = `resolutiondate`. Identity: id = `<site>:<issue id>`
(a key changes when an issue moves project; numeric ids repeat from site to site); number = its key;
services = the components, or the field `service_field`; team = the field `team_field`; severity = the
priority's name. Change evidence (`change_attribution: evidence`): the issue's "Affects versions" (`versions`,
asked for in the same search), each the `version` of a deployment.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from datadog_checks.base import ConfigurationError

from ..evidence import Change, evidence, wanted
from ..incident import Named, SourceIncident
from .base import Page, Request, Source, basic_credential, checked_times, obj, parse_time, text, title
from .http import Answer, JsonApi, SourceError, describer

SEARCH_PATH = '/rest/api/3/search/jql'
MYSELF_PATH = '/rest/api/3/myself'
PAGE_SIZE = 100
DEFAULT_JQL = 'issuetype = Incident'
NOT_FAILURES = frozenset({'duplicate', "won't do", 'cannot reproduce', 'declined'})
ZONE_TTL = 3600.0  # seconds the owner's time zone is trusted before it is read again
MINUTE = timedelta(minutes=1)
HINTS = {
    400: 'Jira refused the search: check `jql` (and `service_field`, `team_field`, `started_field`)',
    401: 'Jira rejected the credentials: `username` must be the account\'s email and `api_token` an API token of '
    'that account (id.atlassian.com > Security > API tokens)',
    403: 'the Jira account may not search these issues: it needs the Browse projects permission',
    404: 'no Jira Cloud REST API at `api_url`: use the site, https://<site>.atlassian.net',
    410: 'this Jira API has been removed',
    429: 'Jira rate limit reached',
}


class JiraSource(Source):
    name = 'jira'
    display_name = 'Jira'
    default_api_url = ''  # every site has its own URL: `api_url` is required
    # No published description: loopback/specs/jira.json is written by hand from the API reference.
    api_description = {
        'hand_written': True,
        'operations': [
            ('GET', '/rest/api/3/search/jql'),
            ('POST', '/rest/api/3/search/jql'),
            ('GET', '/rest/api/3/myself'),
        ],
    }
    options = frozenset({'jql', 'service_field', 'team_field', 'started_field'})
    scope_options = frozenset({'jql'})

    def __init__(self, config, http, api_url: str, **kwargs):
        if not api_url:
            raise ConfigurationError(
                '`api_url` is required with `source: jira`: your site, https://<site>.atlassian.net'
            )
        if not text(config.username) or not config.api_token:
            raise ConfigurationError("Jira needs `username` (the account's email) and `api_token` (its API token)")
        self._jql = text(config.jql) or DEFAULT_JQL
        if 'order by' in ' '.join(self._jql.lower().split()):
            raise ConfigurationError('`jql` must not order (ORDER BY): the check orders the issues itself')
        super().__init__(config, http, api_url, **kwargs)
        self._base = api_url.rstrip('/')
        self._site = urlsplit(self._base).netloc.lower()
        self._service = text(config.service_field) or 'components'
        self._team = text(config.team_field)
        self._started = text(config.started_field)
        fields = ['summary', 'status', 'resolution', 'resolutiondate', 'created', 'updated', 'priority']
        self._versions = wanted(config)  # "Affects versions", asked for only when it is evidence
        extra = (self._service, self._team, self._started, 'versions' if self._versions else None)
        self._fields = list(dict.fromkeys([*fields, *filter(None, extra)]))
        self.zone: ZoneInfo | None = None
        self._zone_read = float('-inf')

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        basic = basic_credential(self.config.username, token)
        headers = {'Authorization': f'Basic {basic}', 'Accept': 'application/json'}
        return JsonApi(http, api_url.rstrip('/'), headers, describer('Jira', HINTS, _error_detail, token, basic))

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(filter(None, [basic_credential(self.config.username, self.config.api_token)]))

    def prepare(self, deadline: float) -> None:
        """The token owner's time zone, which JQL date literals are read in."""
        if self.zone is not None and self.monotonic() - self._zone_read < ZONE_TTL:
            return
        name = self.api.get(MYSELF_PATH, None, deadline).get('timeZone')
        try:
            self.zone = ZoneInfo(name) if isinstance(name, str) else None
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = None
        if self.zone is None:
            raise SourceError(f'Jira {MYSELF_PATH} names no time zone this host knows ({str(name)[:40]!r})')
        self._zone_read = self.monotonic()

    def request(self, start: datetime, end: datetime, token: Any) -> Request:
        low, high = lower_literal(start, self.zone), upper_literal(end, self.zone)
        body = {
            'jql': f'({self._jql}) AND updated >= "{low}" AND updated < "{high}" ORDER BY updated DESC, key DESC',
            'fields': self._fields,
            'maxResults': PAGE_SIZE,
        }
        if token:
            body['nextPageToken'] = token
        return Request(SEARCH_PATH, method='POST', json=body)

    def page(self, answer: Answer, token: Any) -> Page:
        body = answer.body if isinstance(answer.body, dict) else {}
        issues, following = body.get('issues'), body.get('nextPageToken')
        if not isinstance(issues, list):
            raise SourceError(f'Jira answered {SEARCH_PATH} without an `issues` list')
        if body.get('isLast') is False and not text(following):
            raise SourceError(f'Jira answered {SEARCH_PATH} with more pages but no `nextPageToken`')
        return Page(issues, None if body.get('isLast', not following) else following)

    def record_id(self, record) -> str | None:
        issue_id = record.get('id') if isinstance(record, dict) else None
        return f'{self._site}:{issue_id}' if isinstance(issue_id, str) and issue_id.isdigit() else None

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(_fields(record).get('updated'), 'updated')

    def incident(self, record) -> SourceIncident | None:
        reported_id, fields = self.record_id(record), _fields(record)
        if reported_id is None:
            raise ValueError('the issue has no numeric `id`')
        category = (obj(obj(fields, 'status'), 'statusCategory')).get('key')
        resolution = text(obj(fields, 'resolution').get('name'))
        if category != 'done' or fields.get('resolutiondate') is None:
            return None  # not resolved (yet, or again): reported at its next resolution
        if resolution and resolution.lower() in NOT_FAILURES:
            return None
        resolved_at = parse_time(fields['resolutiondate'], 'resolutiondate')
        started_at = self._start(fields)
        checked_times(started_at, resolved_at, resolved_at)
        key = text(record.get('key'))
        return SourceIncident(
            source=self.name,
            id=reported_id,  # numeric ids repeat from site to site
            number=key,
            title=title(fields.get('summary'), f'Jira issue {key or reported_id}'),
            url=f'{self._base}/browse/{key}' if key else None,
            started_at=started_at,
            restored_at=resolved_at,
            resolved_at=resolved_at,
            services=named_values(fields.get(self._service)),
            teams=named_values(fields.get(self._team)) if self._team else (),
            severity=text(obj(fields, 'priority').get('name')),
            evidence=self._affects(fields),
        )

    def _affects(self, fields: dict):
        """The "Affects versions": each a deployment's `version`."""
        if not self._versions:
            return None
        versions = fields.get('versions')
        if not isinstance(versions, list):
            return None  # absent, or malformed: no evidence, never a reason to drop the incident
        names = (text(v.get('name')) for v in versions if isinstance(v, dict))
        return evidence(Change(versions=frozenset({name})) for name in names if name)

    def _start(self, fields: dict) -> datetime:
        if self._started and fields.get(self._started) is not None:
            return parse_time(fields[self._started], self._started)
        return parse_time(fields.get('created'), 'created')


def lower_literal(moment: datetime, zone: ZoneInfo) -> str:
    """The latest JQL minute in `zone` that Jira reads at or before `moment`."""
    local = moment.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None)
    while jira_reads(local, zone) > moment:
        local -= MINUTE
    return local.strftime('%Y-%m-%d %H:%M')


def upper_literal(moment: datetime, zone: ZoneInfo) -> str:
    """The earliest JQL minute in `zone` that Jira reads at or after `moment`."""
    local = moment.astimezone(zone).replace(tzinfo=None)
    if local.second or local.microsecond:
        local = local.replace(second=0, microsecond=0) + MINUTE
    while jira_reads(local, zone) < moment:  # the second occurrence of a repeated hour
        local += MINUTE
    return local.strftime('%Y-%m-%d %H:%M')


def jira_reads(local: datetime, zone: ZoneInfo) -> datetime:
    """The instant Jira (java.time) reads a local time as: a repeated one is its first occurrence, a skipped
    one moves forward by the gap; Python's fold=0 does just that."""
    return local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)


def named_values(value) -> tuple[Named, ...]:
    """Components, select or multi-select options, labels, text, an Atlassian team: what names a service."""
    values = value if isinstance(value, list) else [value] if value is not None else []
    names = []
    for item in values:
        if isinstance(item, str) and item:
            names.append(Named(None, item))
        elif isinstance(item, dict):
            ref = Named(
                text(str(item['id']) if 'id' in item else None), text(item.get('name')) or text(item.get('value'))
            )
            if ref.id or ref.name:
                names.append(ref)
        elif item is not None:
            raise ValueError(f'a service or team value is {type(item).__name__}, not a name or an object')
    return tuple(names)


def _fields(record) -> dict:
    fields = record.get('fields') if isinstance(record, dict) else None
    if not isinstance(fields, dict):
        raise ValueError('the issue has no `fields`')
    return fields


def _error_detail(body: dict) -> str:
    """Jira's `{"errorMessages": [...], "errors": {field: message}}`."""
    messages = [str(m) for m in body.get('errorMessages') or [] if m]
    errors = body.get('errors') if isinstance(body.get('errors'), dict) else {}
    return '; '.join([*messages, *(f'{field}: {message}' for field, message in errors.items())])
