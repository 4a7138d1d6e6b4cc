"""Grafana IRM: `POST {stack}/api/plugins/grafana-irm-app/resources/api/v1/IncidentsService.QueryIncidentPreviews`.

Every call of the Incident API is an RPC: a POST of a JSON body to `<Service>.<Method>` under the IRM app's
resources of the customer's own stack (`api_url`, `https://<stack>.grafana.net`; the old
`grafana-incident-app` path is not the IRM API). Shapes come from Grafana's generated Go client
(grafana/incident-go, client.gen.go), which marks `QueryIncidents` deprecated for `QueryIncidentPreviews`.

Listing: the query language (`queryString`) filters on declared, started, resolved (`closedTime`) and ended
(`incidentEnd`) times but has no update time, and `dateFrom`/`dateTo` are creation times. Resolutions
entered late (an incident declared after it was over), backdated or corrected move nothing but the
incident's `modifiedTime`, so the check orders the previews by `modifiedTime`, newest first, and pages
until a page reaches past the window's start: the reader's windows are on `modifiedTime`
(listed by update time, `Reading`'s default), and the cursor tells new resolutions from corrections of reported ones. A
steady-state run reads one page. Re-reading a late-change horizon by `ended:` instead would read every
incident of the horizon each run, and still miss a correction that moved the end further back.
Paging is by the answer's `cursor` (`nextValue`, `hasMore`), asking for 100 a page (Grafana states no
maximum). An incident modified while the list is paged moves to its front: it is read by the next run,
whose window starts behind this run's end.

Failures: `status` resolved (or a stack's own status whose category is resolved, looked up once a run
with `StatusService.QueryOrgStatuses`) and not `isDrill`. Times: start = `incidentStart`, else
`createdTime`; restore and resolution = `incidentEnd`, else `closedTime`. `closedTime` is stamped when
someone closes the incident and cannot be entered or edited: an incident declared after the fact would
otherwise look resolved today, and a corrected end would not move the resolution. Unset times are `""`.
Identity: id = `<stack host>:<incidentID>` (IRM numbers incidents per stack), number `#<incidentID>`; services and team = the values of the labels keyed `service_label_key` /
`team_label_key`; severity = `severityLabel` (none while `Pending`, IRM's "not set yet").
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from datadog_checks.base import ConfigurationError

from ..incident import Named, SourceIncident
from .base import Credentials, Page, Reading, Request, Source, checked_times, objects, text, title
from .http import Answer, JsonApi, SourceError, describer

RPC_PATH = '/api/plugins/grafana-irm-app/resources/api/v1'
LIST_PATH = f'{RPC_PATH}/IncidentsService.QueryIncidentPreviews'
STATUSES_PATH = f'{RPC_PATH}/StatusService.QueryOrgStatuses'
OLD_PLUGIN = '/api/plugins/grafana-incident-app'
PAGE_SIZE = 100
RESOLVED = 'resolved'
UNSET_SEVERITY = 'pending'
DEFAULT_SERVICE_LABEL, DEFAULT_TEAM_LABEL = 'service', 'team'
# RFC 3339 as IRM writes it: any number of fractional digits (Python reads at most 6), `Z` or an offset.
_TIME = re.compile(r'(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?', re.IGNORECASE)

# The query language's date ranges (`declared:<from>,<to>`, ...).
_DATE_RANGE = re.compile(r'(?:^|[\s(])-?(declared|started|resolved|ended):', re.IGNORECASE)

HINTS = {
    401: 'Grafana refused the service account token in `api_token` (expired, revoked, or of another stack)',
    403: 'the Grafana service account of `api_token` may not read incidents: give it the Viewer role',
    404: 'no Grafana IRM Incident API at `api_url`: set it to the stack, https://<stack>.grafana.net',
    429: 'Grafana IRM rate limit reached',
}


class GrafanaIrmSource(Source):
    name = 'grafana_irm'
    display_name = 'Grafana IRM'
    default_api_url = ''  # every customer has a stack of its own: `api_url` is required
    # No published description: loopback/specs/grafana_irm.json is written by hand from grafana/incident-go.
    api_description: ClassVar[dict] = {
        'hand_written': True,
        'operations': [('POST', LIST_PATH), ('POST', STATUSES_PATH)],
    }
    options = frozenset({'service_label_key', 'team_label_key', 'incident_query'})
    scope_options = frozenset({'incident_query'})
    # Every window pages from the newest change, so a narrower one reads the same first pages; no total.
    reading = Reading(narrows=False, total_is_windows=False)
    credentials = Credentials(
        api_token_help='a Grafana service account token (glsa_...) of a service account with the Viewer role'
    )

    def __init__(self, config, http, api_url: str, **kwargs):
        self.stack = stack_url(api_url)
        self._host = urlsplit(self.stack).netloc.lower()
        super().__init__(config, http, self.stack, **kwargs)
        self._query = incident_query(config.incident_query)
        self._service_key = config.service_label_key or DEFAULT_SERVICE_LABEL
        self._team_key = config.team_label_key or DEFAULT_TEAM_LABEL
        self._resolved_statuses = frozenset({RESOLVED})
        # The start of the window being paged: `page` is not given the window, and stops once past it.
        self._reading_from: datetime | None = None

    @classmethod
    def canonical_api_url(cls, api_url: str | None) -> str:
        """The stack: `api_url` with or without the IRM API's path names the same one."""
        return (api_url or '').rstrip('/').removesuffix(RPC_PATH).rstrip('/')

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {'Authorization': f'Bearer {token}', 'Accept': 'application/json'}
        return JsonApi(http, api_url, headers, describer('Grafana IRM', HINTS, _error_detail, token))

    def prepare(self, deadline: float) -> None:
        """The stack's statuses whose category is resolved, besides `resolved` itself."""
        answer = self.api.request('POST', STATUSES_PATH, None, deadline, json={}).body
        try:
            statuses = [status for conf in objects(answer, 'configurations') for status in objects(conf, 'statuses')]
        except (AttributeError, TypeError, ValueError):
            raise SourceError(f'Grafana IRM answered {STATUSES_PATH} without `configurations` of statuses') from None
        resolved = {RESOLVED}
        for status in statuses:
            if str(status.get('category') or status.get('kind') or '').lower() == RESOLVED:
                resolved.update(
                    value.lower() for value in (status.get(f) for f in ('slug', 'name', 'statusID')) if text(value)
                )
        self._resolved_statuses = frozenset(resolved)

    # -- reading -------------------------------------------------------------------------------------
    def request(self, start: datetime, end: datetime, token: Any) -> Request:
        self._reading_from = start  # `page` stops once the changes it lists are older
        body: dict[str, Any] = {
            'query': {
                'limit': PAGE_SIZE,
                'orderField': 'modifiedTime',
                'orderDirection': 'DESC',
                'queryString': self._query,
            }
        }
        if token is not None:
            body['cursor'] = {'nextValue': token, 'hasMore': True}
        return Request(LIST_PATH, method='POST', json=body)

    def page(self, answer: Answer, token: Any) -> Page:
        body = answer.body if isinstance(answer.body, dict) else {}
        records, cursor = body.get('incidentPreviews', ...), body.get('cursor')
        if records is None:  # Go encodes an empty list as null
            records = []
        if not isinstance(records, list) or not isinstance(cursor, dict):
            raise SourceError(f'Grafana IRM answered {LIST_PATH} without `incidentPreviews` and `cursor`')
        more, next_value = cursor.get('hasMore'), cursor.get('nextValue')
        if more is True and not text(next_value):
            raise SourceError(f'Grafana IRM answered {LIST_PATH} with `hasMore` but no `cursor.nextValue`')
        past = self._reading_from is not None and any(
            modified is not None and modified < self._reading_from for modified in map(_modified, records)
        )
        return Page(records, next_value if more is True and records and not past else None)

    def record_id(self, record) -> str | None:
        """`<stack host>:<incidentID>`: IRM numbers incidents per stack, so the same id repeats across stacks."""
        incident_id = text(record.get('incidentID')) if isinstance(record, dict) else None
        return f'{self._host}:{incident_id}' if incident_id else None

    def listed_at(self, record, incident) -> datetime | None:
        return irm_time(record.get('modifiedTime'), 'modifiedTime')

    def incident(self, record) -> SourceIncident | None:
        if not isinstance(record, dict):
            raise TypeError(f'the record is a {type(record).__name__}, not an object')
        reported_id, incident_id = self.record_id(record), text(record.get('incidentID'))
        if reported_id is None or incident_id is None:
            raise ValueError('the record has no `incidentID`')
        if record.get('isDrill') is True or str(record.get('status') or '').lower() not in self._resolved_statuses:
            return None  # a drill, or active (again)
        started_at = irm_time(record.get('incidentStart'), 'incidentStart', optional=True) or irm_time(
            record.get('createdTime'), 'createdTime'
        )
        ended_at = irm_time(record.get('incidentEnd'), 'incidentEnd', optional=True) or irm_time(
            record.get('closedTime'), 'closedTime'
        )
        checked_times(started_at, ended_at, ended_at)
        labels = objects(record, 'labels')
        severity = text(record.get('severityLabel'))
        slug = text(record.get('slug'))
        return SourceIncident(
            source=self.name,
            id=reported_id,
            number=f'#{incident_id}',
            title=title(record.get('title'), f'Grafana IRM incident #{incident_id}'),
            url=f'{self.stack}/a/grafana-irm-app/incidents/{incident_id}' + (f'/{slug}' if slug else ''),
            started_at=started_at,
            restored_at=ended_at,
            resolved_at=ended_at,
            services=_label_values(labels, self._service_key),
            teams=_label_values(labels, self._team_key),
            severity=None if severity is None or severity.lower() == UNSET_SEVERITY else severity,
        )


def stack_url(api_url: str | None) -> str:
    """The stack's base URL: `api_url` as given, or with the IRM API's path, which names the same stack."""
    if not api_url:
        raise ConfigurationError(
            '`api_url` is required with `source: grafana_irm`: your Grafana Cloud stack, https://<stack>.grafana.net'
        )
    if OLD_PLUGIN in api_url:
        raise ConfigurationError(
            f'`api_url` names the old Grafana Incident plugin ({OLD_PLUGIN}), not the IRM API: set it to the stack, '
            'https://<stack>.grafana.net'
        )
    return GrafanaIrmSource.canonical_api_url(api_url)


def incident_query(query: str | None) -> str:
    """`incident_query` as sent; a date range in it would hide the late and corrected ends the check reads."""
    query = (query or '').strip()
    dated = _DATE_RANGE.search(query)
    if dated:
        raise ConfigurationError(
            f'`incident_query` must not hold a date range (`{dated.group(1)}:`): the check reads every incident '
            'changed since its last run itself'
        )
    return query


def irm_time(value, field: str, optional: bool = False) -> datetime | None:
    """An RFC 3339 time as IRM writes it; `""` is unset (None when `optional`, else malformed). A time without
    a zone (the Go client's examples have some) is UTC, as IRM stores every time."""
    if value == '' and optional:
        return None
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'`{field}` is not an RFC 3339 time: {str(value)[:64]!r}')
    day, clock, fraction, zone = match.groups()
    zone = '+00:00' if zone is None or zone.upper() == 'Z' else zone
    fraction = f'.{fraction[:6]}' if fraction else ''
    try:
        return datetime.fromisoformat(f'{day}T{clock}{fraction}{zone}').astimezone(UTC)
    except ValueError:
        raise ValueError(f'`{field}` is not an RFC 3339 time: {value[:64]!r}') from None


def _modified(record) -> datetime | None:
    try:
        return irm_time(record.get('modifiedTime'), 'modifiedTime')
    except (AttributeError, ValueError):
        return None


def _label_values(labels: list[dict], key: str) -> tuple[Named, ...]:
    values = (text(label.get('label')) for label in labels if label.get('key') == key)
    return tuple(Named(None, value) for value in dict.fromkeys(values) if value)


def _error_detail(body: dict) -> str:
    """Grafana's own refusals are `{"message", "messageId"}`; the RPC's errors `{"error": "<text>"}`."""
    return str(body.get('error') or body.get('message') or '')
