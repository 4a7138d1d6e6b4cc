"""Rootly REST API (JSON:API): `GET /v1/incidents` filtered on the update time.

Endpoint and filter: `filter[updated_at][gte]` / `filter[updated_at][lt]` select the incidents changed in a
window. Resolving an incident updates it, and so does everything done after the fact: a retrospective
(`backfilled`) incident entered now, a resolve time set back, a start or resolve time corrected in the
review. So one query per run finds new, late and corrected resolutions alike; the cursor tells them apart
(cursor.py). A restarted (reopened) incident loses its `resolved_at` and is listed again, same `id`, once
resolved again. Windows are at most 30 days long; a record whose `updated_at` is outside the window asked
for is left to the window that holds it.

Paging: `page[size]=100` (the API's maximum), `page[number]` 1, 2, ... while `links.next` is set, in
`created_at` order. The next page is asked for with our own parameters rather than by fetching the URL
the answer names, so the key only ever goes to `api_url`. Rootly rejects deep page numbers: the reader cuts a
window holding more than a batch (by `meta.total_count`, or found by paging) before asking past it, and
reads again a window whose total changes while it is paged (pages are offsets).

Not failures: status `cancelled` (or a `cancelled_at`); kinds `test`, `test_sub`, `example`, `example_sub`
and scheduled maintenance (`scheduled`, `scheduled_sub`); duplicates (`duplicate_incident_id`). An
incident restarted since (status not `resolved`/`closed`) is left for its next resolution.

Times: start = `started_at`, else `created_at`; resolution = `resolved_at`; restore = `resolved_at`, or
with `restored_at: mitigated` `mitigated_at` (falling back to `resolved_at`).
Identity: services = `services`, teams = `groups`, environments = `environments`. The live API names them
only as JSON:API `relationships` (ids), the resources (with their `name`) in the top-level `included` array
when asked for with `include=services,groups,environments`, which the check does; the published description
has them embedded in the attributes as `{data: {id, attributes: {name}}}`, which is still read where present.
`service_mapping` matches a service by its id or its name. Severity = the name of
`severity.data` (e.g. `SEV1`); number = `INC-<sequential_id>`, as Rootly's own tools print it; url = `url`.
"""

from __future__ import annotations

import re
from datetime import datetime

from ..incident import Named, SourceIncident
from .base import Page, Request, Source, checked_times, obj, objects, parse_time, restore_time, text, title, utc
from .http import Answer, JsonApi, SourceError, describer

LIST_PATH = '/v1/incidents'
PAGE_SIZE = 100
RESOLVED_STATUSES = frozenset({'resolved', 'closed'})
# Every status Rootly documents: anything else is a record we do not understand.
KNOWN_STATUSES = frozenset(
    {
        'in_triage',
        'started',
        'detected',
        'acknowledged',
        'mitigated',
        'resolved',
        'closed',
        'cancelled',
        'scheduled',
        'in_progress',
        'completed',
    }
)
RELATED = ('services', 'groups', 'environments')  # relationships read, asked for with `include`
NOT_FAILURE_KINDS = frozenset({'test', 'test_sub', 'example', 'example_sub', 'scheduled', 'scheduled_sub'})
_ID = re.compile(r'[A-Za-z0-9_-]{1,128}')

TOKEN_HELP = (
    'a Rootly API key (Organization Settings > API Keys): a Global key whose Incident Response role can read '
    'incidents, such as Observer'
)
HINTS = {
    401: 'Rootly rejected the API key (wrong, revoked or expired): check `api_token`, which must be ' + TOKEN_HELP,
    403: 'the Rootly API key may not list incidents: `api_token` must be ' + TOKEN_HELP,
    429: 'Rootly rate limit reached (by default 3,000 GET requests per API key per minute)',
}


class RootlySource(Source):
    name = 'rootly'
    display_name = 'Rootly'
    default_api_url = 'https://api.rootly.com'
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        'file': 'rootly.swagger.json',  # OpenAPI 3.0.1 despite its name
        'from': ('rootlyhq/rootly-go', 'swagger.json', '2025-04'),
        'operations': [('GET', '/v1/incidents')],
    }
    options = frozenset({'restored_at'})

    def __init__(self, config, http, api_url: str, **clock):
        super().__init__(config, http, api_url, **clock)
        self._mitigated = config.restored_at == 'mitigated'

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        headers = {
            'Authorization': f'Bearer {token}',
            'Accept': 'application/vnd.api+json',
            'Content-Type': 'application/vnd.api+json',
        }
        return JsonApi(
            http,
            (api_url or self.default_api_url).rstrip('/'),
            headers,
            describer('Rootly', HINTS, _error_detail, token),
        )

    def request(self, start: datetime, end: datetime, token) -> Request:
        params = [
            ('filter[updated_at][gte]', utc(start)),
            ('filter[updated_at][lt]', utc(end)),
            ('sort', 'created_at'),
            ('page[size]', PAGE_SIZE),
            ('page[number]', token or 1),
            ('include', ','.join(RELATED)),
        ]
        return Request(LIST_PATH, params)

    def page(self, answer: Answer, token) -> Page:
        page = answer.body
        if not isinstance(page, dict) or not isinstance(page.get('data'), list):
            raise SourceError(f'Rootly answered GET {LIST_PATH} without a `data` list')
        links = page.get('links')
        if not isinstance(links, dict) or not isinstance(links.get('next'), (str, type(None))):
            raise SourceError(f'Rootly answered GET {LIST_PATH} without valid `links` (needed to page)')
        # The next page is asked for with our own parameters rather than the URL named, so that the key
        # only ever goes to `api_url`.
        records = _with_related(page['data'], page.get('included'))
        return Page(records, (token or 1) + 1 if links.get('next') else None, _total(page))

    def incident(self, record) -> SourceIncident | None:
        return self._incident(record)

    def listed_at(self, record, incident) -> datetime | None:
        return parse_time(obj(record, 'attributes').get('updated_at'), 'updated_at')

    def _incident(self, record) -> SourceIncident | None:
        """The resolution a record describes, or None when it is not a failure to report."""
        incident_id, attrs = _identity(record)
        status, kind = attrs.get('status'), attrs.get('kind')
        if kind is not None and not isinstance(kind, str):
            raise ValueError(f'`kind` is {kind!r}, not a string')
        if kind in NOT_FAILURE_KINDS or text(attrs.get('duplicate_incident_id')) or text(attrs.get('cancelled_at')):
            return None
        if status is not None and status not in KNOWN_STATUSES:
            raise ValueError(f'unknown status {str(status)[:32]!r}')
        if status is not None and status not in RESOLVED_STATUSES:
            return None  # cancelled, or restarted since: a restarted one is reported at its next resolution
        if status is None and attrs.get('resolved_at') is None:
            return None  # not resolved (the 2025-04 description has no `status`: `resolved_at` tells)
        started_at, restored_at, resolved_at = self._times(attrs)
        sequential = attrs.get('sequential_id')
        number = f'INC-{sequential}' if type(sequential) is int else None
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=number,
            title=title(attrs.get('title'), f'Rootly incident {number or incident_id}'),
            url=_url(attrs.get('url')),
            started_at=started_at,
            restored_at=restored_at,
            resolved_at=resolved_at,
            services=_refs(attrs, 'services'),
            teams=_refs(attrs, 'groups'),
            environments=_refs(attrs, 'environments'),
            severity=_severity(attrs),
        )

    def _times(self, attrs: dict) -> tuple[datetime, datetime, datetime]:
        start_field = 'started_at' if attrs.get('started_at') is not None else 'created_at'
        started_at = parse_time(attrs.get(start_field), start_field)
        resolved_at = parse_time(attrs.get('resolved_at'), 'resolved_at')
        mitigated = attrs.get('mitigated_at') if self._mitigated else None
        restored_at = restore_time(
            resolved_at, parse_time(mitigated, 'mitigated_at') if mitigated is not None else None
        )
        checked_times(started_at, restored_at, resolved_at)
        if resolved_at < started_at:
            raise ValueError(f'resolved {resolved_at.isoformat()} before it started {started_at.isoformat()}')
        return started_at, restored_at, resolved_at


def _identity(record) -> tuple[str, dict]:
    if not isinstance(record, dict):
        raise TypeError(f'the record is a {type(record).__name__}, not an object')
    incident_id = record.get('id')
    if not isinstance(incident_id, str) or not _ID.fullmatch(incident_id):
        raise ValueError(f'`id` is not a Rootly id: {str(incident_id)[:64]!r}')
    if record.get('type') != 'incidents':
        raise ValueError(f'`type` is {str(record.get("type"))[:32]!r}, not `incidents`')
    attrs = obj(record, 'attributes')
    if not attrs:
        raise ValueError('the record has no `attributes`')
    return incident_id, attrs


def _with_related(records: list, included) -> list:
    """The records with their `relationships` (and the `included` resources they name) read into the
    attributes, in the form the published description has there, unless the attributes carry them already."""
    resources = {}
    for resource in included if isinstance(included, list) else ():
        if isinstance(resource, dict) and isinstance(resource.get('id'), str):
            resources[(resource.get('type'), resource['id'])] = resource
    for record in records:
        attrs, relationships = (
            record.get(key) if isinstance(record, dict) else None for key in ('attributes', 'relationships')
        )
        if not isinstance(attrs, dict) or not isinstance(relationships, dict):
            continue
        for field in RELATED:
            linkage = relationships.get(field)
            data = linkage.get('data') if isinstance(linkage, dict) else None
            if field in attrs or not isinstance(data, list):
                continue
            attrs[field] = [
                {'data': resources.get((ref.get('type'), ref.get('id')), ref)} for ref in data if isinstance(ref, dict)
            ]
    return records


def _refs(attrs: dict, field: str) -> tuple[Named, ...]:
    """`[{data: {id, type, attributes: {name}}}]`: what JSON:API resources embedded in attributes look like."""
    refs = []
    for item in objects(attrs, field):
        data = obj(item, 'data')
        ref = Named(text(data.get('id')), text(obj(data, 'attributes').get('name')))
        if ref.id or ref.name:
            refs.append(ref)
    return tuple(refs)


def _severity(attrs: dict) -> str | None:
    data = obj(obj(attrs, 'severity'), 'data')
    severity = obj(data, 'attributes')
    return text(severity.get('name')) or text(severity.get('slug'))


def _url(value) -> str | None:
    return value if isinstance(value, str) and value.startswith(('https://', 'http://')) else None


def _total(page: dict) -> int | None:
    meta = page.get('meta')
    total = meta.get('total_count') if isinstance(meta, dict) else None
    return total if type(total) is int else None


def _error_detail(body: dict) -> str:
    """JSON:API `errors[]` (title, detail), or Rootly's rate-limit `{"error": "..."}`."""
    if isinstance(body.get('error'), str):
        return body['error']
    errors = body.get('errors') if isinstance(body.get('errors'), list) else []
    parts = [str(part) for e in errors if isinstance(e, dict) for part in (e.get('title'), e.get('detail')) if part]
    return '; '.join(parts)
