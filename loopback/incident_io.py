"""A stateful loopback incident.io API v2: the endpoints the check uses, with incident.io's shapes and traps.

Faithful to the vendor's published description (derived copy: `loopback/specs/incident_io.json`). No recorded
answer of the live service was available: what the description leaves open is taken from incident.io's API
docs, and a guess says so below.

- `GET /v2/incidents`: `page_size` (default 25; more than 250, the documented maximum, is a 422) and the
  `after` cursor, `pagination_meta.after` being the last id of a full page (so the last page may be
  empty); newest first by `created_at` unless `sort_by=created_at_oldest_first`; the filters
  `status_category[one_of|not_in]`, `status[one_of|not_in]`, `severity[one_of|not_in]`, `mode[one_of]`
  (default standard and retrospective: test and tutorial incidents are left out),
  `created_at`/`updated_at` `[gte|lte|date_range]` (dates, or RFC 3339 times, read in UTC) and
  `filter_mode`. Any other parameter or operator is a 422 here: the real API may ignore a misspelt
  filter, which is exactly the mistake the tests must catch.
- `GET /v2/incident_timestamps`: the account's timestamp definitions.
- `Authorization: Bearer <key>`, else 401 (`authentication_error`; the code for a wrong key is a guess,
  the vendor documents only the missing-key one); a token bucket (off unless `rate_limit` is set)
  answering 429 with `Retry-After` and the `X-RateLimit-*` headers, which every answer carries.

The account: statuses Triage, Investigating, Fixing, Monitoring, Paused, Documenting (post-incident),
Closed, Declined, Canceled, Merged; timestamps spelt as in the vendor's examples ("Impact started",
"Fixed at", "Resolved at", ...); custom fields "Affected services" and "Team" (catalog) and "Environment"
(options). No incident has a resolve time of its own: resolving moves it to Documenting and sets
"Resolved at"; reopening moves it back to Investigating and clears "Resolved at" (the status rule sets it
again on the next resolution); "Fixed at" keeps its first value.

After the fact: `resolve_backdated` and `correct` set "Resolved at"/"Impact started" now, which updates the
incident, as editing a timestamp does in incident.io.

Late visibility: a hidden resolution leaves the list showing the incident as it was until `reveal`,
which shows it with its original "Resolved at" and an `updated_at` of the reveal: what incident.io
shows when a responder resolves an incident late and backdates its resolution, the common way a
resolution reaches its API after the fact.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta

from .core import Invalid, Quota, RateLimit, ToolSimulator, iso
from .driver import ENVIRONMENT, SERVICE, SEVERITY, TEAM, TITLE
from .server import Request, Response
from .spec import response_problem

LIST_PATH = '/v2/incidents'
TIMESTAMPS_PATH = '/v2/incident_timestamps'
MAX_PAGE_SIZE = 250
EPOCH = '2024-01-02T09:00:00Z'  # when the account's settings were created
ORG = 'acme'
STATUSES = {  # name: category, in rank order
    'Triage': 'triage', 'Investigating': 'live', 'Fixing': 'live', 'Monitoring': 'live', 'Paused': 'paused',
    'Documenting': 'learning', 'Closed': 'closed', 'Declined': 'declined', 'Canceled': 'canceled', 'Merged': 'merged',
}  # fmt: skip
TIMESTAMPS = ['Reported at', 'Accepted at', 'Impact started', 'Fixed at', 'Resolved at', 'Closed at', 'Declined at',
              'Canceled at', 'Merged at']  # fmt: skip
# name: (field type, catalog-backed)
FIELDS = {'Affected services': ('multi_select', True), 'Team': ('single_select', True),
          'Environment': ('single_select', False)}  # fmt: skip
_CHOICE, _TIME = {'one_of', 'not_in'}, {'gte', 'lte', 'date_range'}
LIST_FILTERS = {'status_category': _CHOICE, 'status': _CHOICE, 'severity': _CHOICE, 'mode': {'one_of'},
                'created_at': _TIME, 'updated_at': _TIME}  # fmt: skip
PLAIN_PARAMETERS = {'page_size', 'after', 'sort_by', 'filter_mode'}
DEFAULT_MODES = ('standard', 'retrospective')
MIN, MAX = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)


def _limit_headers(quota: Quota) -> dict:
    return {
        **({'Retry-After': str(quota.wait)} if quota.wait else {}),
        'X-RateLimit-Limit': f'{quota.limit}, {quota.limit};window=60',
        'X-RateLimit-Remaining': str(quota.remaining),
        'X-RateLimit-Used': str(quota.limit - quota.remaining),
        'X-RateLimit-Reset': str(int(quota.reset)),
    }


def _too_many_requests(quota: Quota) -> dict:
    retry_after = iso(datetime.now(UTC) + timedelta(seconds=quota.wait))
    return {
        'type': 'too_many_requests',
        'status': 429,
        'request_id': str(uuid.uuid4()),
        'rate_limit': {'name': 'api_key_name', 'limit': quota.limit, 'remaining': 0, 'retry_after': retry_after},
        'errors': [{'code': 'too_many_requests', 'message': 'Too many requests hit the API too quickly.'}],
    }


class IncidentIoSimulator(ToolSimulator):
    source = 'incident_io'
    limits = RateLimit(
        429, _limit_headers, _too_many_requests, window='bucket', every_answer=True, nominal=(1200, 20.0)
    )
    list_path = LIST_PATH
    max_page_size = MAX_PAGE_SIZE

    def __init__(self, token: str = 'inc_sim0123456789abcdef0123456789abcdef', validate: bool = True):
        super().__init__(validate)
        self.token = token
        self._ids = (f'01JDX{n:021d}' for n in itertools.count(1))
        self._numbers = itertools.count(1)
        self.incidents: dict[str, dict] = {}
        self._valid: set[bytes] = set()  # digests of the incident records the description accepts
        self._statuses = {
            name: self._setting(name, f'{name} incidents', rank=rank, category=category)
            for rank, (name, category) in enumerate(STATUSES.items())
        }
        self._timestamps = {
            name: {'id': next(self._ids), 'name': name, 'rank': rank} for rank, name in enumerate(TIMESTAMPS)
        }
        self._fields = {name: self._field(name, kind) for name, (kind, _) in FIELDS.items()}
        self._values: dict[tuple[str, str], dict] = {}  # (field, value) -> catalog entry or option
        self._severities: dict[str, dict] = {}
        self._lead = self._setting('Incident Lead', 'The person currently coordinating the incident',
                                   shortform='lead', role_type='lead', instructions='Take charge')  # fmt: skip
        self._incident_type = self._setting('Default', 'Incidents', is_default=True, private_incidents_only=False,
                                            create_in_triage='optional')  # fmt: skip

    # -- the driver interface ------------------------------------------------------------------------
    def instance(self, **options) -> dict:
        return {'source': self.source, 'api_token': self.token, 'api_url': self.url, 'team_field': 'Team', **options}

    def open(self, started_at: datetime, *, title=TITLE, service=SERVICE, team=TEAM, environment=ENVIRONMENT,
             severity=SEVERITY, mode='standard') -> str:  # fmt: skip
        incident_id = next(self._ids)
        number = next(self._numbers)
        self.incidents[incident_id] = {
            'id': incident_id,
            'reference': f'INC-{number}',
            'name': title,
            'summary': f'{title}: customers see errors',
            'permalink': f'https://app.incident.io/{ORG}/incidents/{number}',
            'mode': mode,
            'visibility': 'public',
            'created_at': iso(started_at, 'microseconds'),
            'updated_at': iso(started_at, 'microseconds'),
            'creator': {'user': {'id': 'U01RESPONDER', 'name': 'Rae Responder', 'role': 'responder'}},
            'incident_status': self._statuses['Investigating'],
            'incident_type': self._incident_type,
            'incident_role_assignments': [{'role': self._lead}],
            'incident_timestamp_values': [{'incident_timestamp': stamp} for stamp in self._timestamps.values()],
            'custom_field_entries': [
                self._entry('Affected services', [service] if service else []),
                self._entry('Team', [team] if team else []),
                self._entry('Environment', [environment] if environment else []),
            ],
            'duration_metrics': [],
            'has_debrief': False,
            'slack_team_id': 'T02A1FSLE8J',
            'slack_channel_id': f'C{number:010d}',
            'slack_channel_name': f'inc-{number}-{title.lower().replace(" ", "-")[:40]}',
        }
        if severity:
            self.incidents[incident_id]['severity'] = self._severity(severity)
        for name in ('Reported at', 'Accepted at', 'Impact started'):
            self.set_timestamp(incident_id, name, started_at, touch=False)
        return incident_id

    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None:
        """To post-incident (Documenting): "Resolved at" set, "Fixed at" too unless the incident has one."""
        self.lag.hold(incident_id, self.incidents[incident_id], hidden)
        self.move(incident_id, 'Documenting', at)
        if self.timestamp(incident_id, 'Fixed at') is None:
            self.set_timestamp(incident_id, 'Fixed at', at, touch=False)
        self.set_timestamp(incident_id, 'Resolved at', at, touch=False)

    def touch(self, incident_id: str, at: datetime) -> None:
        self.incidents[incident_id]['updated_at'] = iso(at, 'microseconds')

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """A retrospective incident declared now (incident.io's `retrospective` mode), post-incident: "Reported
        at" is when it began (the responder enters it), no "Impact started", "Resolved at" in the past."""
        incident_id = super().enter_resolved(started_at, resolved_at, mode='retrospective', **open_options)
        self.incidents[incident_id]['created_at'] = self.incidents[incident_id]['updated_at']
        for name in ('Accepted at', 'Impact started'):
            self.set_timestamp(incident_id, name, None, touch=False)
        return incident_id

    def correct(self, incident_id: str, *, started_at=None, resolved_at=None) -> None:
        for name, value in (('Impact started', started_at), ('Resolved at', resolved_at)):
            if value is not None:
                self.set_timestamp(incident_id, name, value)

    def set_severity(self, incident_id: str, severity: str, at: datetime) -> None:
        """An edit that has nothing to do with the incident's times."""
        self.incidents[incident_id]['severity'] = self._severity(severity)
        self.touch(incident_id, at)

    def reopen(self, incident_id: str, at: datetime) -> None:
        self.move(incident_id, 'Investigating', at)
        for name in ('Resolved at', 'Closed at'):
            self.set_timestamp(incident_id, name, None, touch=False)

    def corrupt(self, incident_id: str) -> None:
        """Impact started a century after it was declared: a date-time by the description, nonsense by the
        clock, so the check must skip the record by id. A value that is no date-time at all is `mangle`'s."""
        created = datetime.fromisoformat(self.incidents[incident_id]['created_at'])
        self.set_timestamp(incident_id, 'Impact started', created + timedelta(days=36525))

    not_failures = (
        'a test incident',
        'a tutorial incident',
        'declined',
        'canceled',
        'merged into another incident',
        'still in triage: never an incident',
    )

    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]:
        """One incident of each kind that is not a failure: test and tutorial incidents resolved like real
        ones, declined, canceled and merged incidents, and one still in triage."""
        ids = []
        for mode in ('test', 'tutorial'):
            ids.append(self.open(started_at, title=f'A {mode} incident', mode=mode))
            self.resolve(ids[-1], resolved_at)
            self.close(ids[-1], resolved_at)
        for status in ('Declined', 'Canceled', 'Merged'):
            ids.append(self.open(started_at, title=f'{status} incident'))
            self.move(ids[-1], 'Triage', started_at)
            self.move(ids[-1], status, resolved_at)
            self.set_timestamp(ids[-1], f'{status} at', resolved_at, touch=False)
        ids.append(self.open(started_at, title='Still being triaged'))
        self.move(ids[-1], 'Triage', resolved_at)
        return ids

    # -- more of the tool's vocabulary ---------------------------------------------------------------
    def move(self, incident_id: str, status: str, at: datetime) -> None:
        self.incidents[incident_id]['incident_status'] = self._statuses[status]
        self.touch(incident_id, at)

    def close(self, incident_id: str, at: datetime) -> None:
        """Post-incident done: Closed, "Closed at" set; "Resolved at" stays the resolution."""
        self.move(incident_id, 'Closed', at)
        self.set_timestamp(incident_id, 'Closed at', at, touch=False)

    def set_timestamp(self, incident_id: str, name: str, value: datetime | None, touch: bool = True) -> None:
        """A responder sets (or with None clears) a timestamp; editing it updates the incident."""
        for entry in self.incidents[incident_id]['incident_timestamp_values']:
            if entry['incident_timestamp']['name'] == name:
                if value is None:
                    entry.pop('value', None)
                else:
                    entry['value'] = {'value': iso(value, 'microseconds')}
        if touch:
            self.touch(incident_id, datetime.now(UTC))

    def timestamp(self, incident_id: str, name: str) -> str | None:
        for entry in self.incidents[incident_id]['incident_timestamp_values']:
            if entry['incident_timestamp']['name'] == name:
                return (entry.get('value') or {}).get('value')
        return None

    def mangle(self, incident_id: str, **fields) -> None:
        """Overwrites fields of the record with anything, description or not (answers then violate it)."""
        self.incidents[incident_id].update(fields)

    # -- HTTP ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> Response | None:
        authorization = request.headers.get('authorization')
        if not authorization:
            message = 'No authorization material provided in request'
            return _error(401, 'authentication_error', 'missing_authorization_material', message)
        if authorization != f'Bearer {self.token}':
            message = 'The API key provided is not valid'
            return _error(401, 'authentication_error', 'invalid_authorization_material', message)
        return None

    def invalid(self, message: str, field: str | None = None) -> Response:
        return _error(422, 'validation_error', 'invalid_value', message, field=field)

    def route(self, request: Request) -> Response:
        if request.method == 'GET' and request.path == LIST_PATH:
            return self._list(request)
        if request.method == 'GET' and request.path == TIMESTAMPS_PATH:
            return Response.json(200, {'incident_timestamps': list(self._timestamps.values())})
        return _error(404, 'not_found', 'not_found', 'Not found')

    def answer_problem(self, request: Request, response: Response) -> str | None:
        """Checks the answer, leaving out records already checked as they are now: validating a page of
        250 incidents takes openapi-core about a second, and a record is valid or not on its own."""
        checked = response
        document = json.loads(response.body)
        if isinstance(document.get('incidents'), list):
            fresh = {_digest(i): i for i in document['incidents']}
            fresh = {key: i for key, i in fresh.items() if key not in self._valid}
            checked = Response.json(response.status, {**document, 'incidents': list(fresh.values())}, response.headers)
        problem = response_problem(self.source, request, checked)
        if not problem and checked is not response:
            self._valid.update(fresh)
        return problem

    def _list(self, request: Request) -> Response:
        query = _ListQuery(request.query)
        # Answers are serialised at once: the page needs no copy of the records.
        selected = [incident for _, incident in self.listed() if query.matches(incident)]
        selected.sort(key=_key, reverse=query.newest_first)
        page = query.page(selected, self.incidents)
        meta = {'page_size': query.page_size, 'total_record_count': len(selected)}
        if len(page) == query.page_size:
            meta['after'] = page[-1]['id']
        return Response.json(200, {'incidents': page, 'pagination_meta': meta})

    # -- the account's settings ----------------------------------------------------------------------
    def _setting(self, name: str, description: str, **more) -> dict:
        """One of the account's settings (a status, a severity, a role, an incident type)."""
        return {'id': next(self._ids), 'name': name, 'description': description, **more, 'created_at': EPOCH,
                'updated_at': EPOCH}  # fmt: skip

    def _field(self, name: str, kind: str) -> dict:
        return {'id': next(self._ids), 'name': name, 'description': f'{name} of the incident', 'field_type': kind,
                'options': []}  # fmt: skip

    def _severity(self, name: str) -> dict:
        if name not in self._severities:
            self._severities[name] = self._setting(name, f'{name} impact', rank=len(self._severities) + 1)
        return self._severities[name]

    def _entry(self, field_name: str, names: list[str]) -> dict:
        field = self._fields[field_name]
        return {'custom_field': field, 'values': [self._value(field, name) for name in names]}

    def _value(self, field: dict, name: str) -> dict:
        key = (field['name'], name)
        if key not in self._values:
            if FIELDS[field['name']][1]:
                self._values[key] = {'value_catalog_entry': {'id': next(self._ids), 'name': name, 'aliases': []}}
            else:
                option = {'id': next(self._ids), 'custom_field_id': field['id'], 'value': name}
                field['options'].append({**option, 'sort_key': len(field['options'])})
                self._values[key] = {'value_option': field['options'][-1]}
        return self._values[key]


class _ListQuery:
    """The list endpoint's query, as incident.io reads it; anything it does not know is an `Invalid`."""

    def __init__(self, pairs: list[tuple[str, str]]):
        plain: dict[str, str] = {}
        self.filters: dict[tuple[str, str], list] = {}  # (field, operator) -> values; for times, (low, high)s
        for key, value in pairs:
            if key in PLAIN_PARAMETERS:
                plain[key] = value
                continue
            field, _, rest = key.partition('[')
            operator = rest[:-1] if rest.endswith(']') else None
            if field not in LIST_FILTERS:
                raise Invalid(f'unknown query parameter {key!r}', key)
            if operator not in LIST_FILTERS[field]:
                raise Invalid(f'{field} accepts the operators {sorted(LIST_FILTERS[field])}, not {operator!r}', key)
            if field.endswith('_at'):  # gte: from its first instant; lte: to its last; date_range: both
                low, high = _range(value, field) if operator == 'date_range' else _moment(value, field)
                value = (MIN if operator == 'lte' else low, MAX if operator == 'gte' else high)
            self.filters.setdefault((field, operator), []).append(value)
        self.filters.setdefault(('mode', 'one_of'), list(DEFAULT_MODES))
        try:
            self.page_size = int(plain.get('page_size') or '25')
        except ValueError:
            raise Invalid('page_size must be an integer', 'page_size') from None
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise Invalid(f'page_size must be between 1 and {MAX_PAGE_SIZE}', 'page_size')
        self.after = plain.get('after') or None
        self.newest_first = (plain.get('sort_by') or 'created_at_newest_first') == 'created_at_newest_first'
        self.any = plain.get('filter_mode') == 'any'

    def matches(self, incident: dict) -> bool:
        # `mode` is not one of the combinable filters: it always applies.
        results = {key: self._match(incident, *key, values) for key, values in self.filters.items()}
        others = [result for (field, _), result in results.items() if field != 'mode']
        return results[('mode', 'one_of')] and (not others or (any(others) if self.any else all(others)))

    def _match(self, incident: dict, field: str, operator: str, values: list) -> bool:
        if field.endswith('_at'):
            moment = datetime.fromisoformat(incident[field])
            return all(low <= moment <= high for low, high in values)
        actual = {
            'status_category': incident['incident_status']['category'],
            'status': incident['incident_status']['id'],
            'severity': (incident.get('severity') or {}).get('id'),
            'mode': incident['mode'],
        }[field]
        return (actual in values) == (operator == 'one_of')

    def page(self, selected: list[dict], incidents: dict[str, dict]) -> list[dict]:
        if self.after:
            # A keyset cursor: it holds however the incident it names has changed or been filtered out since.
            if self.after not in incidents:
                raise Invalid(f'no incident with id {self.after!r}', 'after')
            after = _key(incidents[self.after])
            later = (lambda key: key < after) if self.newest_first else (lambda key: key > after)
            selected = [i for i in selected if later(_key(i))]
        return selected[: self.page_size]


def _digest(record: dict) -> bytes:
    return hashlib.blake2b(json.dumps(record, sort_keys=True).encode(), digest_size=16).digest()


def _key(incident: dict) -> tuple[str, str]:
    return incident['created_at'], incident['id']


def _moment(value: str, field: str) -> tuple[datetime, datetime]:
    """A date covers its whole UTC day: (its first instant, its last); a time is both."""
    try:
        if len(value) == 10:
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return day, day + timedelta(days=1) - timedelta(microseconds=1)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f'{field}: {value[:40]!r} is not a date', field) from None
    if moment.tzinfo is None:
        raise Invalid(f'{field}: {value[:40]!r} has no time zone', field)
    return moment, moment


def _range(value: str, field: str) -> tuple[datetime, datetime]:
    low, sep, high = value.partition('~')
    if not sep:
        raise Invalid(f'{field}[date_range] must be two dates joined by ~', field)
    return _moment(low, field)[0], _moment(high, field)[1]


def _error(status: int, kind: str, code: str, message: str, field: str | None = None) -> Response:
    error = {'code': code, 'message': message, **({'source': {'field': field}} if field else {})}
    return Response.json(status, {'type': kind, 'status': status, 'request_id': str(uuid.uuid4()), 'errors': [error]})
