"""The core every tool simulator is built on: the one request pipeline, the one rate-limit policy type, the one
"recorded now, shown later" helper, and what the simulators of query languages share.

A simulator subclasses `ToolSimulator`, says what its tool is (`source`, `list_path`, `max_page_size`,
`expected_tags`, `not_failures`, `limits`) and implements the tool's semantics: `authorize`, `route`,
`invalid` and the driver's methods (loopback/driver.py), which are abstract here. Every request goes:
authorize -> validate it against the tool's description (`_serve`: before injected faults) -> the rate-limit
policy -> `route` -> validate the answer (`handle`). Credentials are checked first because most descriptions
declare their security scheme: validating first would take a missing credential for a violation, where the
live service answers its own 401/403.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from . import spec
from .server import Fault, LoopbackServer, Request, Response

NEVER = datetime.max.replace(tzinfo=UTC)
COMPARE = {
    '=': lambda a, b: a == b,
    '!=': lambda a, b: a != b,
    '>': lambda a, b: a > b,
    '>=': lambda a, b: a >= b,
    '<': lambda a, b: a < b,
    '<=': lambda a, b: a <= b,
}


class Invalid(ValueError):
    """A request the tool refuses (a bad parameter, a filter not simulated): answered by `invalid`."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Quota:
    """Where the rate limit stands after a request: what a tool's rate-limit headers and body say."""

    limit: int  # requests per window (the bucket's size)
    per: float  # the window's seconds (the bucket's refill a second)
    remaining: int
    reset: float  # UTC epoch seconds when the budget is whole again (a bucket: when it is full)
    wait: int = 0  # whole seconds before a refused request may be sent again; 0: it was not refused


@dataclass(frozen=True)
class RateLimit:
    """How a tool limits requests and answers past its limit. `window`: 'sliding' (at most `limit` requests
    in any `per` seconds), 'fixed' (the budget comes back whole `per` seconds after the window began) or
    'bucket' (a token bucket of `limit` tokens refilled at `per` a second). The refusal is `status` with
    `headers(quota)` and the JSON `body(quota)`; `every_answer`: the headers go on every answer; `nominal`:
    the limit the headers state while the simulator's own `rate_limit` is off (None: then nothing is counted)."""

    status: int
    headers: Callable[[Quota], dict]
    body: Callable[[Quota], object]
    window: str = 'sliding'
    every_answer: bool = False
    nominal: tuple[int, float] | None = None
    content_type: str = 'application/json'

    def answer(self, quota: Quota) -> Response:
        return Response.json(self.status, self.body(quota), {'Content-Type': self.content_type, **self.headers(quota)})

    def take(self, limit: tuple[int, float], state: dict, enforce: bool) -> Quota:
        """Counts one request in `state` (the simulator's); a quota with `wait` when it is refused."""
        budget, per = limit
        now = time.time()
        if self.window == 'bucket':
            tokens, at = state.get('bucket') or (float(budget), now)
            tokens = min(float(budget), tokens + (now - at) * per)
            reset = int(now + (budget - tokens) / per) + 1
            if enforce and tokens < 1:
                state['bucket'] = (tokens, now)
                return Quota(budget, per, 0, reset, max(1, math.ceil((1 - tokens) / per)))
            state['bucket'] = (tokens - 1, now)
            return Quota(budget, per, max(0, int(tokens - 1)), reset)
        if self.window == 'fixed':
            start, used = state.get('fixed') or (now, 0)
            if now >= start + per:
                start, used = now, 0
            if enforce and used >= budget:
                return Quota(budget, per, 0, start + per, max(1, math.ceil(start + per - now)))
            state['fixed'] = (start, used + 1)
            return Quota(budget, per, max(0, budget - used - 1), start + per)
        calls = [t for t in state.get('calls', ()) if t > now - per]
        state['calls'] = calls
        if enforce and len(calls) >= budget:
            return Quota(budget, per, 0, calls[0] + per, max(1, math.ceil(calls[0] + per - now)))
        calls.append(now)
        return Quota(budget, per, max(0, budget - len(calls)), calls[0] + per)


class Lag:
    """Recorded now, shown later (a lagging index or replica): per record id, the record as the list showed it
    before a change, and from when the change shows."""

    def __init__(self):
        self._before: dict[str, tuple[datetime, object]] = {}

    def hold(self, record_id: str, record, hidden: bool, at: datetime | None = None) -> None:
        """Before changing `record`: the list shows it as it is now until `reveal` when `hidden`, else until
        `at` when that is still to come (pass `at` for a tool that lists a change from its time on)."""
        self._before.pop(record_id, None)
        if hidden or (at is not None and at > datetime.now(UTC)):
            self._before[record_id] = (NEVER if hidden else at, copy.deepcopy(record))

    def show(self, record_id: str) -> None:
        """The change is visible from now on."""
        self._before.pop(record_id, None)

    def held(self, record_id: str) -> bool:
        return record_id in self._before

    def listed(self, record_id: str, record, now: datetime | None = None):
        """The record as the list shows it at `now`."""
        before = self._before.get(record_id)
        return before[1] if before is not None and (now or datetime.now(UTC)) < before[0] else record


class ToolSimulator(LoopbackServer, ABC):
    """A tool's API on loopback, driven through loopback/driver.py's methods (the abstract ones below)."""

    source: ClassVar[str]  # the check's `source:` value; also the name of the tool's description in specs/
    list_path: str  # the list endpoint the check reads (faults target it)
    max_page_size: int
    # The tags an incident opened with the driver's defaults must get (`Checkout API`, `Payments Team`, `SEV1`);
    # a tool with environments adds `env` (otherwise the instance's `env: prod` applies).
    expected_tags: ClassVar[dict[str, str]] = {'service': 'checkout_api', 'team': 'payments_team', 'severity': 'sev1'}
    not_failures: ClassVar[tuple[str, ...]]  # why each incident `open_non_failures` makes is not a failure
    limits: ClassVar[RateLimit | None] = None
    # What the tool lets its users do after a resolution (the driver's `correct` and `reopen` raise
    # NotImplementedError where it does not): the conformance suite then proves what remains.
    edits_times: ClassVar[bool] = True  # a resolved incident's start or resolve time can be edited
    reopens: ClassVar[bool] = True  # a resolved incident can be made active again
    # Answers are checked as they would be without `serve_as` (True), or as served, violations included.
    check_without_served_as: ClassVar[bool] = True
    reveal_touches: ClassVar[bool] = True  # whether a revealed change moves the update time (`reveal`)
    corrected: ClassVar[tuple[str, str]] = ()  # the stored fields of the start and the resolution `correct` edits
    corrupted: ClassVar[str]  # the stored field `corrupt` serves as a string that is no time
    token: str

    def __init__(self, validate: bool = True, rate_limit: tuple[int, float] | None = None):
        super().__init__()
        self.validate = validate  # against the description; benchmarks turn it off (its CPU is not the check's)
        self.rate_limit = rate_limit  # (requests, seconds), or for a bucket (size, refill a second); None: off
        self.spec_violations: list[str] = []
        self.lag = Lag()
        self._limit_state: dict = {}
        self._served_as: dict[str, dict] = {}  # record id -> raw values served in place of the stored ones
        self._malformed = True  # False while an answer is rendered again to be checked without `serve_as`

    # -- the pipeline --------------------------------------------------------------------------------
    def _serve(self, request: Request) -> tuple[Response, Fault | None]:
        # The request is checked outside the lock (openapi-core is the costliest step) and before any injected
        # fault, so that a request a fault answers is checked too.
        problem = None
        if self.validate and self.authorize(request) is None:
            problem = self.request_problem(request)
        if problem is None:
            return super()._serve(request)
        with self._lock:
            self.requests.append(request)
            self.spec_violations.append(problem)
        return self.invalid(problem), None

    def handle(self, request: Request) -> Response:
        refused = self.authorize(request)
        if refused is not None:
            return refused
        limited, headers = self._count(request)
        if limited is not None:
            return limited
        response = self._route(request)
        response.headers.update(headers)
        if self.validate and str(response.status) in spec.documented(self.source, request):
            checked = response
            if self._served_as and self.check_without_served_as and response.status == 200:
                self._malformed = False
                try:
                    checked = self._route(request)
                    checked.headers.update(headers)
                finally:
                    self._malformed = True
            problem = self.answer_problem(request, checked)
            if problem:
                self.spec_violations.append(problem)
        return response

    def _route(self, request: Request) -> Response:
        try:
            return self.route(request)
        except ValueError as e:  # an `Invalid`, or a parameter that is no number
            return self.invalid(str(e), getattr(e, 'field', None))

    def _count(self, request: Request) -> tuple[Response | None, dict]:
        limit = self.rate_limit or (self.limits.nominal if self.limits else None)
        if limit is None or self.limits is None:
            return None, {}
        quota = self.limits.take(limit, self._limit_state, enforce=self.rate_limit is not None)
        if quota.wait:
            return self.limits.answer(quota), {}
        return None, self.limits.headers(quota) if self.limits.every_answer else {}

    def request_problem(self, request: Request) -> str | None:
        return spec.request_problem(self.source, request)

    def answer_problem(self, request: Request, response: Response) -> str | None:
        return spec.response_problem(self.source, request, response)

    @abstractmethod
    def authorize(self, request: Request) -> Response | None:
        """The tool's answer to a request without its credentials (or a path it answers before them); None: on."""

    @abstractmethod
    def route(self, request: Request) -> Response:
        """The tool's answer to an authorized, valid request within the rate limit; may raise `Invalid`."""

    @abstractmethod
    def invalid(self, message: str, field: str | None = None) -> Response:
        """The tool's answer to a request it cannot accept (a violation of its description, an `Invalid`)."""

    # -- what the driver and the tests share ---------------------------------------------------------
    def instance(self, **options) -> dict:
        return {'source': self.source, 'api_token': self.token, 'api_url': self.url, **options}

    def rate_limited(self, seconds: int = 1) -> Fault:
        """The tool's own rate-limit answer (its policy's, as if the budget were spent) on the list endpoint."""
        limit = self.rate_limit or self.limits.nominal or (0, 60)
        answer = self.limits.answer(Quota(limit[0], limit[1], 0, time.time() + seconds, seconds))
        return Fault(status=answer.status, headers=answer.headers, body=answer.body, path=self.list_path)

    def serve_as(self, record_id: str, **fields) -> None:
        """Serves these raw values (anything JSON) in place of the stored ones: a malformed record."""
        with self._lock:
            self._served_as.setdefault(record_id, {}).update(fields)

    def served(self, record_id: str, fields: dict, only_present: bool = False) -> dict:
        """`fields` with what `serve_as` set for the record (`only_present`: for the fields asked for)."""
        if self._malformed:
            overrides = self._served_as.get(record_id, {})
            fields.update({k: copy.deepcopy(v) for k, v in overrides.items() if not only_present or k in fields})
        return fields

    def listed(self) -> list[tuple[str, dict]]:
        """(id, record) of every incident (`self.incidents`) as the list shows it now, held changes as they were."""
        now = datetime.now(UTC)
        return [(i, self.lag.listed(i, record, now)) for i, record in self.incidents.items()]

    def update(self, incident_id: str, **fields) -> None:
        """Sets an incident's fields as stored (in the tool's names; times as datetimes)."""
        with self._lock:
            self.incidents[incident_id].update(fields)

    def link(self, request: Request, path: str | None = None, **replaced) -> str:
        """This request's URL (on `path`), its query kept but for the parameters replaced."""
        query = [(k, v) for k, v in request.query if k not in replaced] + [(k, str(v)) for k, v in replaced.items()]
        return f'{self.url}{path or request.path}?{urlencode(query)}'

    # -- the driver (loopback/driver.py says what each must do) ---------------------------------------
    @abstractmethod
    def open(self, started_at: datetime, **options) -> str: ...

    @abstractmethod
    def resolve(self, incident_id: str, at: datetime, *, hidden: bool = False) -> None: ...

    def touch(self, incident_id: str, at: datetime) -> None:
        """Moves the record's update time to `at`, as any edit does: what the defaults below build on."""
        raise NotImplementedError(f'{type(self).__name__} has no update time to move')

    def reveal(self, incident_id: str) -> None:
        """By default, the held change shows from now on and counts as a change now (unless `reveal_touches` is
        False: then it shows as it was written)."""
        with self._lock:
            self.lag.show(incident_id)
            if self.reveal_touches:
                self.touch(incident_id, datetime.now(UTC))

    def enter_resolved(self, started_at: datetime, resolved_at: datetime, **open_options) -> str:
        """By default, opened at `started_at` and resolved backdated to `resolved_at` (entered now)."""
        incident_id = self.open(started_at, **open_options)
        self.resolve_backdated(incident_id, resolved_at)
        return incident_id

    def resolve_backdated(self, incident_id: str, at: datetime) -> None:
        """By default, resolved at `at` and updated now (the responder enters when it really ended)."""
        self.resolve(incident_id, at)
        self.touch(incident_id, datetime.now(UTC))

    def correct(self, incident_id: str, *, started_at=None, resolved_at=None) -> None:
        """By default, the `corrected` fields edited now."""
        if not self.edits_times:
            raise NotImplementedError(f'{self.source}: nobody can edit when an incident started or was resolved')
        changes = dict(zip(self.corrected, (started_at, resolved_at), strict=True))
        with self._lock:
            self.update(incident_id, **{name: at for name, at in changes.items() if at is not None})
            self.touch(incident_id, datetime.now(UTC))

    @abstractmethod
    def reopen(self, incident_id: str, at: datetime) -> None: ...

    def corrupt(self, incident_id: str, **fields) -> None:
        """By default, `fields` (or the `corrupted` one as a string that is no time) served in place of the
        stored values: the tool's own filters still see the real ones."""
        self.serve_as(incident_id, **(fields or {self.corrupted: 'sometime last week'}))

    @abstractmethod
    def open_non_failures(self, started_at: datetime, resolved_at: datetime) -> list[str]: ...


def first(query: list[tuple[str, str]], name: str, default: str | None = None) -> str | None:
    """A query parameter's first value."""
    return next((value for key, value in query if key == name), default)


def whole(value: str, name: str) -> int:
    """A parameter that must be a non-negative integer; `Invalid` names it."""
    if not value.isdigit():
        raise Invalid(f'{name} must be a non-negative integer', name)
    return int(value)


def positive(value: str | None, default: int, name: str) -> int:
    """A page parameter that must be a positive integer (`default` when absent); `Invalid` names it."""
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise Invalid(f'{name} must be a positive integer', name)
    return int(value)


def parse_time(value: str, name: str, zone=UTC) -> datetime:
    """An ISO 8601 time parameter; without an offset, in `zone`. `Invalid` names the parameter."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f'{name}: {value[:40]!r} is not a time', name) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def bounds(query: list[tuple[str, str]], parameters: dict[str, tuple[str, str]], zone=UTC) -> list[tuple]:
    """The time bounds a query sets. `parameters`: name -> (the record's field, a `COMPARE` operator the field's
    value must meet against the parameter's time); each bound set is (field, compare, time)."""
    named = ((name, field, op, first(query, name)) for name, (field, op) in parameters.items())
    return [(field, COMPARE[op], parse_time(value, name, zone)) for name, field, op, value in named if value]


def within(value_of: Callable[[str], datetime | None], bounds: list[tuple]) -> bool:
    """Whether a record (`value_of(field)`) meets every bound; a field without a value meets none."""
    return all((value := value_of(field)) is not None and compare(value, at) for field, compare, at in bounds)


def java_local(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time's instant as java.time reads it (ServiceNow, Jira): a repeated time is its first
    occurrence (fold 0), a skipped one moves forward by the gap (fold 0 takes the offset before the gap)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def iso(moment: datetime, timespec: str = 'seconds', zone=UTC) -> str:
    """ISO 8601 in `zone`, UTC `Z`-suffixed."""
    return moment.astimezone(zone).isoformat(timespec=timespec).replace('+00:00', 'Z')
