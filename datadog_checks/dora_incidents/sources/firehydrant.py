"""FireHydrant: resolutions read from `GET /v1/incidents`, filtered on the incident's update time.

Endpoint and filter: `updated_after` / `updated_before` select the incidents changed in a window, whenever
they were opened. Resolving an incident changes it, and so does everything done after the fact: a
retroactive incident ("Create Resolved Incident", created now with milestones in the past), a Resolved
milestone set back, a milestone corrected in the review. So one query per run finds new, late and
corrected resolutions alike; the cursor tells them apart (cursor.py). (`resolved_at_or_after` would miss
all three, `start_date`/`end_date` an incident opened weeks ago.) The incident entity does not serve its
update time, so the API's filter is trusted, read as [after, before) like every window here: the
description says neither bound's inclusiveness. Were `updated_after` exclusive, only a change stamped on
the exact microsecond of a cut could be missed; were `updated_before` inclusive, such a change would be
listed twice, and the cursor recognises it.

Paging: `page` (from 1) and `per_page` (at most 200); `pagination.next` is the next page number or null,
`pagination.count` the number of matches. A window (30 days at most) whose count exceeds a batch is cut
in time until it fits. Page numbers shift when the matches change between two pages, so a window whose
count changed while it was read is read again.

Not failures, excluded: archived incidents (`discarded_at`: FireHydrant hides them from lists and from its
own analytics; the list omits them unless `archived=true`, never sent here); incidents back in an active
milestone (`active: true`, reopened after a resolution: their next resolution is reported instead).
FireHydrant has no test or drill flag: archive drills, or filter them out with `services`/`severities`.

Times: start = `started_at` (the Started milestone, which responders move back to the real impact start),
else `created_at`. Resolution = the `resolved` milestone of `lifecycle_phases`, else the first milestone
reached in the post-incident or closed phase (custom lifecycles, or closed without the `resolved` step),
else the last `resolved` entry of the deprecated `milestones` history. A re-resolution moves it, so it is a
new resolution of the same incident id. Mitigation (`restored_at: mitigated`) = the `mitigated` milestone,
unless missing or after the resolution.

Change evidence (`change_attribution: evidence`): `GET /v1/incidents/{incident_id}/related_change_events`,
one request (one page of up to 200) per marked incident. Changes related as `caused` are the causes, `fixed`
the remediation; `suspect` and `dismissed` are not evidence. A change is identified by its `identities`
(`{type, value}`, e.g. `commit_sha`), its `labels`, and commit links in its `attachments` (evidence.py). An
incident with more than 200 related changes has only its first page read.

Names: services = `services[]` (id, name), else the impacted `functionalities[]` when no service is named;
teams = `team_assignments[].team`; environments = `environments[]`; severity = `severity` (SEV1...).
`number` is shown as `#42`; `incident_url` is the incident's page.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from ..evidence import Evidence, change, evidence
from ..incident import Named, SourceIncident
from .base import Page, Request, Source, checked_times, named, obj, objects, parse_time, restore_time, text, title, utc
from .http import Answer, JsonApi, SourceError, describer

LIST_PATH = '/v1/incidents'
PAGE_SIZE = 200  # FireHydrant's cap on `per_page`
RESOLVING_PHASES = frozenset({'post_incident', 'closed'})
_ID = re.compile(r'[A-Za-z0-9_-]{1,128}')

HINTS = {
    401: 'FireHydrant rejected the API token: set `api_token` to a FireHydrant API key (Settings > API keys) '
    'or bot token of this organization',
    403: 'the FireHydrant token may not read incidents: `api_token` needs an API key or bot token whose role '
    'can view incidents (API keys have Owner permissions by default)',
    404: f'FireHydrant has no {LIST_PATH} here: check `api_url` (default https://api.firehydrant.io)',
    429: 'FireHydrant rate limit reached (about 50 requests per 10 seconds, shared by every token of the account)',
}


class FireHydrantSource(Source):
    name = 'firehydrant'
    display_name = 'FireHydrant'
    default_api_url = 'https://api.firehydrant.io'
    api_description = {  # scripts/derive_specs.py: the vendor's description, and what the check uses of it
        'file': 'firehydrant.openapi.yaml',
        'from': ('firehydrant/terraform-provider-firehydrant-v2', 'openapi.yaml', '2025-02'),
        'operations': [
            ('GET', '/v1/incidents'),
            ('GET', '/v1/incidents/{incident_id}'),
            ('GET', '/v1/incidents/{incident_id}/related_change_events'),
        ],
    }
    options = frozenset({'restored_at'})

    def __init__(self, config, http, api_url: str, **clock):
        super().__init__(config, http, api_url.rstrip('/'), **clock)
        self._mitigated = config.restored_at == 'mitigated'

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        token = token.strip()
        token = token[len('Bearer ') :].strip() if token.lower().startswith('bearer ') else token
        headers = {'Authorization': f'Bearer {token}', 'Accept': 'application/json'}
        return JsonApi(http, api_url, headers, describer('FireHydrant', HINTS, _error_detail, token))

    def request(self, start: datetime, end: datetime, token) -> Request:
        params = [
            ('updated_after', utc(start)),
            ('updated_before', utc(_ceil_second(end))),
            ('page', token or 1),
            ('per_page', PAGE_SIZE),
        ]
        return Request(LIST_PATH, params)

    def page(self, answer: Answer, token) -> Page:
        body, number = answer.body, token or 1
        if not isinstance(body, dict) or not isinstance(body.get('data'), list):
            raise SourceError(f'FireHydrant answered {LIST_PATH} (page {number}) without a `data` list')
        pagination = body.get('pagination')
        if not isinstance(pagination, dict) or not _is_int(pagination.get('count')):
            raise SourceError(f'FireHydrant answered {LIST_PATH} (page {number}) without a `pagination` count')
        count, following = pagination['count'], pagination.get('next')
        if following is not None and not _is_int(following):
            raise SourceError(f'FireHydrant answered {LIST_PATH} (page {number}) with `pagination.next` {following!r}')
        if following is not None and (following != number + 1 or following > count):
            # Every page holds at least one match: a `next` past the count would never end.
            raise SourceError(f'FireHydrant {LIST_PATH} page {number} of {count} matches names page {following!r} next')
        return Page(body['data'], following, count)

    def incident(self, record) -> SourceIncident | None:
        return self._incident(record)

    def change_evidence(self, incident: SourceIncident, deadline: float) -> Evidence | None:
        path = f'{LIST_PATH}/{incident.id}/related_change_events'  # ids are [A-Za-z0-9_-]
        related = self.api.get(path, [('page', 1), ('per_page', PAGE_SIZE)], deadline).get('data')
        if not isinstance(related, list):
            raise SourceError(f'FireHydrant answered {path} without a `data` list')
        relations: dict[str, list] = {'caused': [], 'fixed': []}
        for entry in (r for r in related if isinstance(r, dict)):
            if entry.get('type') in relations and isinstance(entry.get('change_event'), dict):
                relations[entry['type']].append(_change(entry['change_event']))
        return evidence(relations['caused'], relations['fixed'])

    def _incident(self, raw) -> SourceIncident | None:
        """The resolution a record describes, or None when it is not one to report."""
        if not isinstance(raw, dict):
            raise TypeError(f'the record is a {type(raw).__name__}, not an object')
        incident_id = raw.get('id')
        if not isinstance(incident_id, str) or not _ID.fullmatch(incident_id):
            raise ValueError(f'`id` is not a FireHydrant id: {str(incident_id)[:64]!r}')
        if raw.get('discarded_at') is not None:
            return None  # archived: FireHydrant itself counts it nowhere
        if _still_active(raw):
            return None  # reopened since its resolution: the next resolution is reported instead
        resolved_at = _resolution(raw)
        started_at = _start(raw)
        restored_at = self._restored(raw, resolved_at)
        checked_times(started_at, restored_at, resolved_at)
        number = raw.get('number')
        return SourceIncident(
            source=self.name,
            id=incident_id,
            number=f'#{number}' if _is_int(number) else None,
            title=title(raw.get('name'), f'Incident {incident_id}'),
            url=text(raw.get('incident_url')),
            started_at=started_at,
            restored_at=restored_at,
            resolved_at=resolved_at,
            services=_refs(raw, 'services') or _refs(raw, 'functionalities'),
            teams=_teams(raw),
            environments=_refs(raw, 'environments'),
            severity=_severity(raw),
        )

    def _restored(self, raw: dict, resolved_at: datetime) -> datetime:
        if not self._mitigated:
            return resolved_at
        return restore_time(resolved_at, _milestones(raw).get('mitigated'))


def _change(event: dict):
    """A related change event's identity: its typed identities, its labels, its attachments' links."""
    identities = [(i.get('type'), i.get('value')) for i in event.get('identities') or () if isinstance(i, dict)]
    labels = event.get('labels') if isinstance(event.get('labels'), dict) else {}
    links = [a.get('href_url') for a in event.get('attachments') or () if isinstance(a, dict)]
    return change([*identities, *labels.items()], links)


def _still_active(raw: dict) -> bool:
    active = raw.get('active')
    if isinstance(active, bool):
        return active
    if active is not None:
        raise ValueError(f'`active` is {active!r}, not a boolean')
    # Without `active`, the current milestone's phase tells.
    current = raw.get('current_milestone')
    phases = _phases(raw)
    if not isinstance(current, str) or not phases:
        raise ValueError('neither `active` nor a `current_milestone` in `lifecycle_phases` says whether it is resolved')
    return not any(current in slugs for phase_type, slugs in phases if phase_type in RESOLVING_PHASES)


def _resolution(raw: dict) -> datetime:
    reached = _milestones(raw)
    if 'resolved' in reached:
        return reached['resolved']
    resolving = [
        reached[slug]
        for phase_type, slugs in _phases(raw)
        if phase_type in RESOLVING_PHASES
        for slug in slugs
        if slug in reached
    ]
    if resolving:
        return min(resolving)
    history = [entry for entry in objects(raw, 'milestones') if entry.get('type') == 'resolved']
    if history:
        return max(parse_time(entry.get('occurred_at'), 'milestones[resolved].occurred_at') for entry in history)
    raise ValueError('no resolution time: no `resolved` milestone and no milestone of the post-incident phase')


def _milestones(raw: dict) -> dict[str, datetime]:
    """Each milestone of `lifecycle_phases` that was reached -> when."""
    reached = {}
    for phase in objects(raw, 'lifecycle_phases'):
        for milestone in objects(phase, 'milestones'):
            slug, occurred = milestone.get('slug'), milestone.get('occurred_at')
            if isinstance(slug, str) and occurred is not None:
                reached[slug] = parse_time(occurred, f'lifecycle_phases[{slug}].occurred_at')
    return reached


def _phases(raw: dict) -> list[tuple[str, list[str]]]:
    """(phase type, milestone slugs) of `lifecycle_phases`, types spelled `post_incident`."""
    phases = []
    for phase in objects(raw, 'lifecycle_phases'):
        phase_type = str(phase.get('type') or '').strip().lower().replace('-', '_').replace(' ', '_')
        slugs = [m['slug'] for m in objects(phase, 'milestones') if isinstance(m.get('slug'), str)]
        phases.append((phase_type, slugs))
    return phases


def _start(raw: dict) -> datetime:
    if raw.get('started_at') is not None:
        return parse_time(raw['started_at'], 'started_at')
    return parse_time(raw.get('created_at'), 'created_at')


def _refs(raw: dict, field: str) -> tuple[Named, ...]:
    return tuple(dict.fromkeys(ref for ref in map(named, objects(raw, field)) if ref))


def _teams(raw: dict) -> tuple[Named, ...]:
    teams = (named(obj(assignment, 'team')) for assignment in objects(raw, 'team_assignments'))
    return tuple(dict.fromkeys(team for team in teams if team))


def _severity(raw: dict) -> str | None:
    severity = raw.get('severity')
    if severity is not None and not isinstance(severity, str):
        raise TypeError(f'`severity` is {severity!r}, not a string')
    return text(severity)


def _error_detail(body: dict) -> str:
    """FireHydrant's `{"error", "detail", "messages": [...]}`."""
    messages = body.get('messages') if isinstance(body.get('messages'), list) else []
    parts = [body.get('error'), body.get('detail'), *messages]
    return '; '.join(str(part) for part in parts if part)


def _is_int(value) -> bool:
    return type(value) is int


def _ceil_second(moment: datetime) -> datetime:
    floor = moment.replace(microsecond=0)
    return floor if floor == moment else floor + timedelta(seconds=1)
