"""The contract every incident source fulfils, and the record-reading helpers they share.

A source turns its API's records into `SourceIncident`s, in the tool's own terms: it never names a
Datadog service, team or env (that is `mapping.py`), never emits anything and never touches the cursor.
The reading loop (windows, pages, cuts, budget) is `reader.py`'s, the same for every tool.
"""

from __future__ import annotations

import base64
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from ..evidence import Evidence
from ..incident import Batch, Named, SourceIncident, text  # noqa: F401 (text: what tool modules import)
from .http import Answer, JsonApi
from .reader import MIN_WINDOW, Page, Reader, Request, Resume, utc  # noqa: F401 (what tool modules import)

# A resolve time this far past our clock is a broken record, not a clock difference.
CLOCK_SKEW = timedelta(hours=1)
MAX_TITLE = 500
# The longest time range one read covers: a long lookback or backfill is read a window at a time, and
# every tool's API accepts it (PagerDuty refuses more than 6 months between `since` and `until`).
MAX_WINDOW = timedelta(days=30)
MAX_PER_BATCH = 1_000
# `creation_horizon`'s default (spec.yaml), seconds: how far back the tools whose list filters on creation time
# only (Datadog Incident Management, Opsgenie, Statuspage) look for incidents that resolved since the last run.
DEFAULT_CREATION_HORIZON = 90 * 86400
# What a tool's list filters its windows on.
RESOLVED = 'resolved'  # the resolve time: a resolution entered late, or corrected, is not listed again
UPDATED = 'updated'  # the update time: every resolution, late entry or correction moves it, so all are read


@dataclass(frozen=True)
class Reading:
    """How the one reading loop (reader.py) reads a tool's list; the defaults fit most tools."""

    listing: str = UPDATED  # what the list's window filters on: RESOLVED or UPDATED
    # Whether a narrower window asks for fewer pages. False when the API cannot bound a window's pages (a
    # date-only filter, a search without a time filter): a narrower window would read the same pages, so a
    # full batch is handed over and the window goes on from the next page instead.
    narrows: bool = True
    # Whether a page's `total` counts the window's records (then it sizes windows), or more (a search without
    # a time filter, ServiceNow's zone margins): then it only tells that the list moved while it was paged.
    total_is_windows: bool = True
    max_window: timedelta = MAX_WINDOW
    max_per_batch: int = MAX_PER_BATCH


@dataclass(frozen=True)
class Credentials:
    """What a tool reads with; the defaults fit a tool read with one API token."""

    # Whether `api_token` is required, and what it must be. False for a tool with credentials of its own kind
    # (ServiceNow: `username`/`password` or a token; Datadog: its API and application keys).
    needs_api_token: bool = True
    api_token_help: str = 'set it to a read-only API token of the incident tool'
    # The options besides `api_token` that hold a secret the tool reads with: scrubbed from every message.
    secret_options: tuple[str, ...] = ()


class Source(ABC):
    """One incident tool: who it is (the class attributes), how it is read (`reading`), what it reads with
    (`credentials`), and the methods below, which the reading loop (reader.py) calls."""

    name: ClassVar[str]  # the `source:` value: a published contract
    display_name: ClassVar[str]
    default_api_url: ClassVar[str]  # '' when every site has its own URL (`api_url` is then required)
    # Options of this tool beyond the common ones; setting another tool's option is a configuration error.
    options: ClassVar[frozenset[str]] = frozenset()
    # Those of `options` that select which incidents are read: they scope the cursor (check.py).
    scope_options: ClassVar[frozenset[str]] = frozenset()
    # Whether `send_dora_failures` defaults to true (false where Datadog's DORA Metrics reads the tool itself).
    sends_dora_failures: ClassVar[bool] = True
    # The vendor's published API description and the operations used: `scripts/derive_specs.py`
    # keeps those in `loopback/specs/<name>.json`, which the simulator validates against.
    api_description: ClassVar[dict] = {}
    reading: ClassVar[Reading] = Reading()
    credentials: ClassVar[Credentials] = Credentials()

    def __init__(self, config, http, api_url: str, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.api: JsonApi = self.make_api(http, api_url, config.api_token)
        self.api.monotonic = monotonic
        self.api.tool = self.display_name
        self.api.max_response_size = config.max_response_size or self.api.max_response_size

    @classmethod
    def canonical_api_url(cls, api_url: str | None) -> str:
        """`api_url` (else the default) spelt one way per site, for the cursor's scope (check.py): by default
        without its trailing slash; a tool whose site has several spellings maps them to one."""
        return (api_url or cls.default_api_url).rstrip('/')

    @abstractmethod
    def make_api(self, http, api_url: str, token: str | None) -> JsonApi:
        """The tool's `JsonApi` over the check's `http`, with its auth headers, and `http.describer(tool, hints,
        detail, *secrets)` (or a describer of its own) for the user-facing hint of an HTTP error (`detail` reads
        the tool's error body). `token` is `api_token`, None when the tool does not need one."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the source sends derived from its credentials (a Basic auth value, the Agent's keys), to be
        scrubbed from every message; the options themselves are `credentials.secret_options`."""
        return ()

    def resolved(
        self, since: datetime, until: datetime, deadline: float, resume: Resume | None = None
    ) -> Iterator[Batch]:
        """Yield, oldest first, batches covering every resolution listed in [since, until) (see `Batch`)."""
        return Reader(self).batches(since, until, deadline, resume)

    # -- what each tool supplies to the reading loop -----------------------------------------------------
    def prepare(self, deadline: float) -> None:
        """Look-ups needed before the first window (incident.io's timestamp ids, Jira's zone); none by default.
        A request past `deadline` raises `OutOfTime`, which ends the run without an error."""

    @abstractmethod
    def request(self, start: datetime, end: datetime, token: Any) -> Request:
        """The request for the window [start, end) and the page `token`: None for the first page, otherwise
        whatever `page()` returned as `next` (a page number, an offset, a cursor token or a `Link` URL). A POST
        search sets `method='POST'` and `json`. Times go out in explicit UTC (`utc()`) where the API allows."""

    @abstractmethod
    def page(self, answer: Answer, token: Any) -> Page:
        """The page answered to the page `token`: its records (`answer.body` is an object or a top-level array;
        `answer.headers` and `answer.links` hold e.g. `X-Total-Count` and `Link: rel="next"`), the token of the
        next page (None: the last page) and the window's total, when the API gives one (see
        `Reading.total_is_windows`). A malformed page raises `SourceError` naming the tool and what is wrong."""

    @abstractmethod
    def incident(self, record) -> SourceIncident | None:
        """The record as an incident, in the tool's own terms; None when it is not a failure (yet). A malformed
        record raises ValueError, TypeError, LookupError or AttributeError: it is then skipped, by name, and
        counted, never stalling the others."""

    def record_id(self, record) -> str | None:
        """The record's id, to name a skipped record; by default its `id`."""
        return text(record.get('id')) if isinstance(record, dict) else None

    def listed_at(self, record, incident: SourceIncident | None) -> datetime | None:
        """The time the API's window filters on (`reading.listing`): a record outside [start, end) by it is
        dropped, so that each resolution lands in exactly one batch; None trusts the API's filter. By default
        the resolve time of a tool listed by it, else None."""
        if self.reading.listing == RESOLVED and incident is not None:
            return incident.resolved_at
        return None

    # -- optional: what change attribution asks (change_failures.py) ----------------------------------------
    def change_evidence(self, incident: SourceIncident, deadline: float) -> Evidence | None:
        """The changes the tool records as the incident's cause (and fix), for `change_attribution: evidence`
        (evidence.py says what identifies a change); None when it names none: the time window decides then.
        By default what the record itself carried (`SourceIncident.evidence`, None for most tools). A tool that
        keeps it elsewhere reads it here, at most one request, never past `deadline`; a failed read raises
        SourceError (or OutOfTime), and the incident's deployment is then found by the window."""
        return incident.evidence

    def monotonic(self) -> float:
        """The run's clock, which the deadline is measured by (injectable: tests run on a virtual one)."""
        return self.api.monotonic()

    def clock(self) -> datetime:
        """Now by the source's clock: the cursor never moves past it."""
        return self.api.clock()


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 timestamp with an explicit zone; anything else is malformed."""
    if not isinstance(value, str):
        raise ValueError(f'`{field}` is {value!r}, not a timestamp')
    try:
        parsed = datetime.fromisoformat(value.replace('Z', '+00:00') if value.endswith('Z') else value)
    except ValueError:
        raise ValueError(f'`{field}` is not an ISO 8601 timestamp: {value[:64]!r}') from None
    if parsed.tzinfo is None:
        raise ValueError(f'`{field}` has no time zone: {value[:64]!r}')
    return parsed


def checked_times(started_at: datetime, restored_at: datetime, resolved_at: datetime) -> None:
    """Raises ValueError for times no real incident has."""
    if restored_at < started_at:
        raise ValueError(f'restored {restored_at.isoformat()} before it started {started_at.isoformat()}')
    if resolved_at > datetime.now(timezone.utc) + CLOCK_SKEW:
        raise ValueError(f'resolved {resolved_at.isoformat()}, in the future')


def restore_time(resolved_at: datetime, mitigated_at: datetime | None) -> datetime:
    """What ends the time to restore with `restored_at: mitigated`: the mitigation, unless it is missing or
    after the resolution (a tool that lets it be edited), then the resolution."""
    return mitigated_at if mitigated_at is not None and mitigated_at <= resolved_at else resolved_at


def obj(raw: dict, field: str) -> dict:
    """A nested object; absent or null is empty, anything else is malformed."""
    value = raw.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'`{field}` is a {type(value).__name__}, not an object')
    return value


def objects(raw: dict, field: str) -> list[dict]:
    """A list of objects; absent or null is empty, anything else is malformed."""
    value = raw.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f'`{field}` is not a list of objects')
    return value


def named(raw: dict, id_field: str = 'id', name_field: str = 'name') -> Named | None:
    """A service/team/environment reference; None when it carries neither an id nor a name."""
    ref = Named(text(raw.get(id_field)), text(raw.get(name_field)))
    return ref if ref.id or ref.name else None


def title(value, fallback: str) -> str:
    return (text(value) or fallback)[:MAX_TITLE]


def basic_credential(username: str | None, secret: str | None) -> str | None:
    """What HTTP Basic auth sends for `username:secret` (base64): a secret too, in case a page echoes it."""
    if not (username and secret):
        return None
    return base64.b64encode(f'{username}:{secret}'.encode()).decode()
