"""Datadog Incident Management: `GET {api_url}/api/v2/incidents/search`, newest first, back to a creation horizon.

Listing: `query=state:(resolved OR completed)` (the search answers 400 to a facet it does not document, and
has none on time), `sort=-created` (its only order), `page[size]=100` (its maximum), `page[offset]`. There
is no time to filter on, so every run reads the resolved incidents created within `creation_horizon`
(default 90 days) and stops at the first one created before it; the reader's windows are on `modified`
(listed by update time: every resolution, late entry or correction moves it) and the cursor tells new and
corrected resolutions from those already reported. Offsets shift when an incident is resolved or reopened
while the list is paged: a page whose `total` moved makes the reader read the list again. `next_offset`
is set even on the last page: the end is told by `total`.

Not failures: test incidents (`is_test`); incidents whose state is not `resolved`/`completed` now (a
reopened one keeps a stale `resolved`); an incident declared after the fact straight in a resolved state
(`resolved: null`, as the live API answers for one) without a customer impact start and end. With both, it is
reported: start = `customer_impact_start`, restore and resolution = `customer_impact_end`. Other times:
start = `customer_impact_start` when `customer_impacted`, else `declared` (`created` is the import time of an
imported incident); resolution and restore = `resolved` ("when the state last changed from active or stable
to resolved or completed"; never `modified`, which every edit moves). Identity: services =
`fields.services.value`, teams = `fields.teams.value`, severity = `severity` (`SEV-1`; none when
`UNKNOWN`), number `#<public_id>`.

Credentials: the Datadog API and application keys (`datadog_api_key` / `datadog_app_key`, each falling back
to the Agent's), no `api_token`; `api_url` defaults to where DORA writes go. A 403 does not say which key
was refused: the error names both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

from datadog_checks.base import ConfigurationError

from ..datadog import keys
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
    parse_time,
    text,
    title,
)
from .http import Answer, JsonApi, SourceError, describer

SEARCH_PATH = '/api/v2/incidents/search'
QUERY = 'state:(resolved OR completed)'
RESOLVED_STATES = frozenset({'resolved', 'completed'})
PAGE_SIZE = 100

KEYS_HELP = (
    'check `datadog_api_key` and `datadog_app_key` (or the Agent `api_key` / `app_key`): Datadog does not say '
    'which one it refused; the application key needs the `incident_read` permission'
)
HINTS = {
    401: 'Datadog refused the API key or the application key: ' + KEYS_HELP,
    403: 'Datadog refused the API key or the application key: ' + KEYS_HELP,
    400: 'Datadog refused the incident search',
    429: 'Datadog rate limit reached for the incident search',
}


class DatadogIncidentsSource(Source):
    name = 'datadog_incidents'
    display_name = 'Datadog Incident Management'
    default_api_url = 'https://api.datadoghq.com'
    options = frozenset({'creation_horizon'})
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        'file': 'datadog-v2.openapi.yaml',
        'from': ('DataDog/datadog-api-client-python', '.generator/schemas/v2/openapi.yaml', '2026-04-14'),
        'operations': [('GET', SEARCH_PATH)],
    }
    # Datadog's DORA Metrics reads these incidents itself: no DORA failures unless asked for.
    sends_dora_failures = False
    # Each window reads the whole horizon (the search has no time filter) and keeps what was modified in it:
    # `total` counts the whole search, not the window's share.
    # A narrower window reads the same pages.
    reading = Reading(narrows=False, total_is_windows=False)
    # Not `api_token`: the check's own Datadog keys (datadog/keys.py), else the Agent's.
    credentials = Credentials(needs_api_token=False, secret_options=('datadog_api_key', 'datadog_app_key'))

    def __init__(self, config, http, api_url: str, **clock):
        # The check's own Datadog site and keys (datadog/keys.py), which read only `check.config` and the Agent.
        agent = SimpleNamespace(config=config)
        if config.api_token:
            raise ConfigurationError(
                '`api_token` is not used with `source: datadog_incidents`, which reads with `datadog_api_key` and '
                '`datadog_app_key`: remove it'
            )
        self._api_key, self._app_key = keys.api_key(agent), keys.app_key(agent)
        if not self._api_key:
            raise ConfigurationError(
                '`datadog_api_key`: no Datadog API key to read incidents; set it, or the Agent `api_key`'
            )
        if not self._app_key:
            raise ConfigurationError(
                '`datadog_app_key`: reading Datadog incidents needs an application key with `incident_read`; set it, '
                'or the Agent `app_key`'
            )
        horizon = config.creation_horizon or DEFAULT_CREATION_HORIZON
        self.creation_horizon = timedelta(seconds=horizon)
        self.api_url = (config.api_url or keys.api_url(agent)).rstrip('/')
        super().__init__(config, http, self.api_url, **clock)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._api_key, self._app_key

    def make_api(self, http, api_url: str, token) -> JsonApi:
        headers = {'DD-API-KEY': self._api_key, 'DD-APPLICATION-KEY': self._app_key, 'Accept': 'application/json'}
        return JsonApi(http, api_url, headers, describer('Datadog', HINTS, _error_detail, self._api_key, self._app_key))

    # -- reading -------------------------------------------------------------------------------------
    def request(self, start: datetime, end: datetime, token) -> Request:
        params = [('query', QUERY), ('sort', '-created'), ('page[size]', PAGE_SIZE), ('page[offset]', token or 0)]
        return Request(SEARCH_PATH, params)

    def page(self, answer: Answer, token) -> Page:
        attributes = obj(obj(answer.body, 'data') if isinstance(answer.body, dict) else {}, 'attributes')
        records, total = attributes.get('incidents'), attributes.get('total')
        if not isinstance(records, list) or type(total) is not int:
            raise SourceError(f'Datadog answered GET {SEARCH_PATH} without `data.attributes.incidents` and `total`')
        offset = (token or 0) + len(records)
        horizon = self.clock() - self.creation_horizon
        created = [_created(record) for record in records]
        past_horizon = any(moment is not None and moment < horizon for moment in created)
        more = records and offset < total and not past_horizon
        return Page(records, offset if more else None, total)

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(_attributes(record).get('modified'), 'modified')

    def record_id(self, record) -> str | None:
        data = record.get('data') if isinstance(record, dict) else None
        return text(data.get('id')) if isinstance(data, dict) else None

    def incident(self, record) -> SourceIncident | None:
        """The resolution an incident describes, or None when it is not a failure (now)."""
        incident_id = self.record_id(record)
        if incident_id is None:
            raise ValueError('the record has no `data.id`')
        attrs = _attributes(record)
        if attrs.get('is_test') is True or attrs.get('state') not in RESOLVED_STATES:
            return None
        if self.created_before_horizon(attrs):
            return None
        if attrs.get('resolved') is None:
            # Declared after the fact, straight in a resolved state: Datadog records no resolution time (its own
            # time to resolve is 0). Its customer impact, when it has one, is the outage; else not a failure.
            if attrs.get('customer_impact_start') is None or attrs.get('customer_impact_end') is None:
                return None
            started_at = parse_time(attrs.get('customer_impact_start'), 'customer_impact_start')
            resolved_at = parse_time(attrs.get('customer_impact_end'), 'customer_impact_end')
        else:
            resolved_at = parse_time(attrs.get('resolved'), 'resolved')
            start_field = 'customer_impact_start' if attrs.get('customer_impacted') is True else 'declared'
            if attrs.get(start_field) is None and start_field == 'declared':
                start_field = 'created'
            started_at = parse_time(attrs.get(start_field), start_field)
        checked_times(started_at, resolved_at, resolved_at)
        fields = obj(attrs, 'fields')
        public_id = attrs.get('public_id')
        number = f'#{public_id}' if type(public_id) is int else None
        severity = text(attrs.get('severity'))
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=number,
            title=title(attrs.get('title'), f'Datadog incident {number or incident_id}'),
            url=_app_url(self.api_url, public_id),
            started_at=started_at,
            restored_at=resolved_at,
            resolved_at=resolved_at,
            services=_values(fields, 'services'),
            teams=_values(fields, 'teams'),
            severity=None if severity == 'UNKNOWN' else severity,
        )

    def created_before_horizon(self, attrs: dict) -> bool:
        """Outside what every run reads: reported by none (so that a run that reads a page more reports alike)."""
        created = attrs.get('created')
        return created is not None and parse_time(created, 'created') < self.clock() - self.creation_horizon


def _attributes(record) -> dict:
    if not isinstance(record, dict):
        raise TypeError(f'the record is a {type(record).__name__}, not an object')
    attrs = obj(obj(record, 'data'), 'attributes')
    if not attrs:
        raise ValueError('the record has no `data.attributes`')
    return attrs


def _created(record) -> datetime | None:
    try:
        return parse_time(_attributes(record).get('created'), 'created')
    except (TypeError, ValueError):
        return None


def _values(fields: dict, name: str) -> tuple[Named, ...]:
    """An autocomplete/multiselect field's values (a dropdown's single value counts as one)."""
    value = obj(fields, name).get('value')
    values = value if isinstance(value, list) else [value]
    return tuple(Named(None, item) for item in dict.fromkeys(values) if text(item))


def _app_url(api_url: str, public_id) -> str | None:
    """The incident's page: `api.<site>` serves the API, `app.<site>` (or `<region>.<site>`) the app."""
    host = urlsplit(api_url).hostname or ''
    if type(public_id) is not int or not host.startswith('api.'):
        return None
    site = host[len('api.') :]
    app = f'app.{site}' if site.count('.') == 1 else site
    return f'https://{app}/incidents/{public_id}'


def _error_detail(body: dict) -> str:
    """Datadog's `{"errors": [...]}`: strings, or objects with `title` and `detail`."""
    errors = body.get('errors')
    return '; '.join(str(error)[:100] for error in errors if error) if isinstance(errors, list) else ''
