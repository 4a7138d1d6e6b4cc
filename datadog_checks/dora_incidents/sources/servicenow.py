"""ServiceNow Table API: `GET /api/now/table/incident`, listed by update time (`sys_updated_on`).

Resolving an incident updates it, and so does everything done after the fact: an incident logged once it
is over, a `resolved_at` set back, an `opened_at` or `resolved_at` corrected. So one query per run finds
new, late and corrected resolutions alike; the cursor tells them apart (cursor.py). Only Resolved (6) and
Closed (7) incidents are listed (Canceled is 8), and `encoded_query` is and'ed to each of its `^NQ` parts.

Time zones: ServiceNow reads a date literal in an encoded query in the instance's time zone, which a
read-only user cannot look up. The literals are therefore written `ZONE_BEFORE` earlier and `ZONE_AFTER`
later than the window (every zone, UTC-12 to UTC+14, then reads a range holding the whole window), and
`listed_at` keeps exactly the incidents whose `sys_updated_on` value (UTC: `sysparm_display_value=all`
serves each field as `{display_value, value}`) is in the window. Newest first, so that an incident updated
while a window is paged comes in at the front (read twice, kept once) rather than shifting one past us;
`X-Total-Count` (margins included) lets the reader re-read a window that lost an incident between pages.

Change evidence (`change_attribution: evidence`): the incident's `caused_by` ("Caused by Change", a reference
to `change_request` whose display value is the change's number), asked for in the same list request: the
deployment whose custom tag `<change_tag>:<number>` names that change.

Times: start = `opened_at`, or the date-time field `started_field` when set; restore and resolution =
`resolved_at`. Identity: id = `sys_id`; number = `number`; services = `business_service`, else `cmdb_ci`;
team = `assignment_group`; severity = `SEV<priority>` (1 - Critical -> SEV1).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from datadog_checks.base import ConfigurationError

from ..evidence import Change, evidence, wanted
from ..incident import Named, SourceIncident
from .base import Credentials, Page, Reading, Request, Source, basic_credential, checked_times, text, title
from .http import Answer, CredentialsRejected, JsonApi, SourceError, describer

LIST_PATH = '/api/now/table/incident'
OAUTH_PATH = '/oauth_token.do'
DEFAULT_TOKEN_LIFE = 1800  # seconds: ServiceNow's default access token lifespan
PAGE_SIZE = 250
ZONE_BEFORE = timedelta(hours=12)  # a literal is read as late as UTC-12 ...
ZONE_AFTER = timedelta(hours=14)  # ... and as early as UTC+14
RESOLVED_STATES = ('6', '7')  # Resolved, Closed
SN_TIME = '%Y-%m-%d %H:%M:%S'
FIELDS = (
    'sys_id', 'number', 'short_description', 'state', 'priority', 'opened_at', 'resolved_at', 'sys_updated_on',
    'business_service', 'cmdb_ci', 'assignment_group',
)  # fmt: skip
HINTS = {
    401: 'ServiceNow rejected the credentials: check `username` and `password` (a user with the itil and '
    'snc_read_only roles), `client_id` and `client_secret`, or the OAuth access token in `api_token` (it expires)',
    403: 'the ServiceNow user may not read incidents: give it the itil role (and snc_read_only), or read ACLs on '
    'incident, cmdb_ci_service, cmdb_ci and sys_user_group',
    429: 'ServiceNow rate limit rule reached',
}


class OAuthApi(JsonApi):
    """ServiceNow read with an OAuth client: its access token (client credentials grant, `/oauth_token.do`)
    fetched on first use, kept, and fetched anew before it expires or once refused.

    Not datadog-checks-base's `auth_token` OAuth reader: that one fetches through requests-oauthlib's own
    session, outside `self.http`'s proxy, TLS and `timeout` settings and the bounds `JsonApi` puts on every
    answer (size, redirects); it renews a token only after it expired or a request failed (any failure: a 429
    too), and its errors name neither ServiceNow nor the options to check."""

    def __init__(self, http, base_url: str, headers, describe_error, client_id: str, client_secret: str):
        super().__init__(http, base_url, headers, lambda response: self._scrubbed(describe_error(response)))
        self._client = {'grant_type': 'client_credentials', 'client_id': client_id, 'client_secret': client_secret}
        self._token: str | None = None
        self._renew_at = 0.0  # by `monotonic`

    def request(self, method, path, params, deadline, json=None, form=None) -> Answer:
        if self._token is None or self.monotonic() >= self._renew_at:
            self._fetch_token(deadline)
        try:
            return super().request(method, path, params, deadline, json=json, form=form)
        except CredentialsRejected:
            # A token revoked before its time (an admin, a restarted instance): once more with a new one.
            self._fetch_token(deadline)
            return super().request(method, path, params, deadline, json=json, form=form)

    def _fetch_token(self, deadline: float) -> None:
        self._token = None
        self._headers.pop('Authorization', None)
        try:
            answer = super().request('POST', OAUTH_PATH, None, deadline, form=self._client)
        except CredentialsRejected as e:
            raise CredentialsRejected(
                f'ServiceNow refused the OAuth client: check `client_id` and `client_secret` ({e})'
            ) from None
        except SourceError as e:
            if '(HTTP 400' in str(e):
                raise CredentialsRejected(f'ServiceNow refused the OAuth client credentials grant: {e}') from None
            raise
        token, life = answer.body.get('access_token'), answer.body.get('expires_in', DEFAULT_TOKEN_LIFE)
        if not isinstance(token, str) or not token or isinstance(life, bool) or not isinstance(life, (int, float)):
            raise SourceError(f'ServiceNow answered {OAUTH_PATH} without an `access_token` and its `expires_in`')
        self._token = token
        self._headers['Authorization'] = f'Bearer {token}'
        # Renewed with a tenth of its life left (a minute at most): never used as it expires mid-run.
        self._renew_at = self.monotonic() + life - min(60.0, life / 10)

    def _scrubbed(self, text: str) -> str:
        return text.replace(self._token, '***') if self._token else text


class ServiceNowSource(Source):
    name = 'servicenow'
    display_name = 'ServiceNow'
    default_api_url = ''  # every instance has its own URL: `api_url` is required
    # No published description: loopback/specs/servicenow.json is written by hand from the API reference.
    api_description = {'hand_written': True, 'operations': [('GET', '/api/now/table/{tableName}')]}
    options = frozenset({'started_field', 'encoded_query', 'change_tag', 'client_id', 'client_secret'})
    scope_options = frozenset({'encoded_query'})
    # X-Total-Count counts the zone margins too (hours either side of the window): no measure of a window's share.
    reading = Reading(total_is_windows=False, max_per_batch=5_000)
    # An OAuth client (`client_id`/`client_secret`), Basic auth (`username`/`password`) or an OAuth access token
    # in `api_token`.
    credentials = Credentials(needs_api_token=False, secret_options=('password', 'client_secret'))

    def __init__(self, config, http, api_url: str, **kwargs):
        if not api_url:
            raise ConfigurationError(
                '`api_url` is required with `source: servicenow`: your instance, https://<name>.service-now.com'
            )
        basic = bool(config.username and config.password)
        oauth = bool(config.client_id or config.client_secret)
        if oauth and not (config.client_id and config.client_secret):
            raise ConfigurationError('ServiceNow OAuth needs both `client_id` and `client_secret`')
        if basic + bool(config.api_token) + oauth != 1:
            raise ConfigurationError(
                'ServiceNow needs one of: an OAuth client (`client_id` and `client_secret`), `username` and '
                '`password` (Basic auth), or an OAuth access token in `api_token` (which expires: 30 minutes by '
                'default)' + (', not several' if basic + bool(config.api_token) + oauth > 1 else '')
            )
        super().__init__(config, http, api_url, **kwargs)
        self._base = api_url.rstrip('/')
        self._started = text(config.started_field)
        self._filters = _filters(text(config.encoded_query))
        # "Caused by Change": asked for only when it is evidence (`change_attribution: evidence`).
        self._change_tag = (text(config.change_tag) or 'change_request') if wanted(config) else None
        extra = [*([self._started] if self._started else []), *(['caused_by'] if self._change_tag else [])]
        self._fields = ','.join(dict.fromkeys([*FIELDS, *extra]))

    def make_api(self, http, api_url: str, token: str | None) -> JsonApi:
        headers = {'Accept': 'application/json'}
        if token:
            headers['Authorization'] = f'Bearer {token}'  # else `username`/`password`: the wrapper's Basic auth
        password = self.config.password
        basic = basic_credential(self.config.username, password)
        client_id, client_secret = self.config.client_id, self.config.client_secret
        describe = describer('ServiceNow', HINTS, _error_detail, token, password, basic, client_secret)
        if client_id and client_secret:
            return OAuthApi(http, api_url.rstrip('/'), headers, describe, client_id, client_secret)
        return JsonApi(http, api_url.rstrip('/'), headers, describe)

    @property
    def secrets(self) -> tuple[str, ...]:
        password, secret = self.config.password, self.config.client_secret
        return tuple(filter(None, [password, basic_credential(self.config.username, password), secret]))

    def request(self, start: datetime, end: datetime, token: Any) -> Request:
        return Request(
            LIST_PATH,
            [
                ('sysparm_query', query(start, end, self._filters)),
                ('sysparm_fields', self._fields),
                ('sysparm_display_value', 'all'),
                ('sysparm_exclude_reference_link', 'true'),
                ('sysparm_limit', PAGE_SIZE),
                ('sysparm_offset', token or 0),
            ],
        )

    def page(self, answer: Answer, token: Any) -> Page:
        records = answer.body.get('result') if isinstance(answer.body, dict) else None
        if not isinstance(records, list):
            raise SourceError(f'ServiceNow answered GET {LIST_PATH} without a `result` list')
        total = answer.headers.get('X-Total-Count')
        offset = (token or 0) + len(records)
        more = 'next' in answer.links if answer.links else len(records) == PAGE_SIZE
        return Page(records, offset if more and records else None, int(total) if (total or '').isdigit() else None)

    def record_id(self, record) -> str | None:
        return value(record, 'sys_id') or None if isinstance(record, dict) else None

    def listed_at(self, record, incident) -> datetime | None:
        return sn_time(value(record, 'sys_updated_on'), 'sys_updated_on')

    def incident(self, record) -> SourceIncident | None:
        if not isinstance(record, dict):
            raise TypeError(f'the record is a {type(record).__name__}, not an object')
        sys_id = value(record, 'sys_id')
        if not sys_id:
            raise ValueError('the record has no `sys_id`')
        if value(record, 'state') not in RESOLVED_STATES or not value(record, 'resolved_at'):
            return None  # reopened (or canceled) since it was listed: reported at its next resolution
        resolved_at = sn_time(value(record, 'resolved_at'), 'resolved_at')
        started_at = self._start(record)
        checked_times(started_at, resolved_at, resolved_at)
        number = value(record, 'number') or None
        services = [ref for ref in (reference(record, 'business_service'), reference(record, 'cmdb_ci')) if ref]
        priority = value(record, 'priority')
        return SourceIncident(
            source=self.name,
            id=sys_id,
            number=number,
            title=title(value(record, 'short_description'), f'ServiceNow incident {number or sys_id}'),
            url=f'{self._base}/nav_to.do?uri=incident.do?sys_id={sys_id}',
            started_at=started_at,
            restored_at=resolved_at,
            resolved_at=resolved_at,
            services=tuple(services[:1]),
            teams=tuple(ref for ref in [reference(record, 'assignment_group')] if ref),
            severity=f'SEV{priority}' if priority.isdigit() else None,
            evidence=self._caused_by(record),
        )

    def _caused_by(self, record: dict):
        """The change request the incident was "Caused by": the deployment tagged `<change_tag>:<its number>`
        (the reference's display value, with `sysparm_display_value=all`)."""
        caused_by = reference(record, 'caused_by') if self._change_tag else None
        if caused_by is None or not caused_by.name:
            return None
        return evidence([Change(tags=frozenset({f'{self._change_tag}:{caused_by.name}'.lower()}))])

    def _start(self, record: dict) -> datetime:
        if self._started and value(record, self._started):
            return sn_time(value(record, self._started), self._started)
        return sn_time(value(record, 'opened_at'), 'opened_at')


def query(start: datetime, end: datetime, filters: list[str]) -> str:
    """The encoded query of a window: updated in it (whatever zone the instance reads literals in), in a
    resolved state, and matching `encoded_query` (each of its `^NQ` parts), newest first."""
    window = (
        f'sys_updated_on>={literal(start - ZONE_BEFORE)}^sys_updated_on<{literal(end + ZONE_AFTER)}'
        f'^stateIN{",".join(RESOLVED_STATES)}'
    )
    parts = [f'{window}^{extra}' for extra in filters] or [window]
    return '^NQ'.join(parts) + '^ORDERBYDESCsys_updated_on^ORDERBYsys_id'


def _filters(encoded: str | None) -> list[str]:
    if not encoded:
        return []
    if 'ORDERBY' in encoded:
        raise ConfigurationError('`encoded_query` must not order (ORDERBY): the check orders the incidents itself')
    encoded = encoded.removesuffix('^EQ')  # the end marker a copied list filter may carry
    return [part.strip('^') for part in encoded.split('^NQ') if part.strip('^')]


def literal(moment: datetime) -> str:
    """A date-time as an encoded query writes it (whole seconds, no zone)."""
    return moment.astimezone(timezone.utc).strftime(SN_TIME)


def value(record: dict, field: str) -> str:
    """A field's internal value, with `sysparm_display_value=all` (`{display_value, value}`) or without."""
    raw = record.get(field)
    if isinstance(raw, dict):
        raw = raw.get('value')
    if raw is None:
        return ''
    if not isinstance(raw, str):
        raise ValueError(f'`{field}` is {raw!r}, not a string')
    return raw


def reference(record: dict, field: str) -> Named | None:
    """A reference field: its sys_id and display name."""
    raw = record.get(field)
    if not isinstance(raw, dict):
        return Named(text(raw), None) if text(raw) else None
    ref = Named(text(raw.get('value')), text(raw.get('display_value')))
    return ref if ref.id or ref.name else None


def sn_time(raw: str, field: str) -> datetime:
    """An internal date-time value: `yyyy-MM-dd HH:mm:ss`, UTC."""
    try:
        return datetime.strptime(raw, SN_TIME).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise ValueError(f'`{field}` is not a ServiceNow date-time: {str(raw)[:64]!r}') from None


def _error_detail(body: dict) -> str:
    """ServiceNow's `{"error": {"message", "detail"}, "status": "failure"}`."""
    error = body.get('error')
    if not isinstance(error, dict):
        return ''
    return ': '.join(str(part) for part in (error.get('message'), error.get('detail')) if part)
