"""The contract every incident source fulfils, and the record-reading helpers they share.

A source turns its API's records into `SourceIncident`s, in the tool's own terms: it never names a
Datadog service, team or env (that is `mapping.py`), never emits anything and never touches the cursor.
The reading loop (windows, pages, cuts, budget) is `reader.py`'s, the same for every tool.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from ..evidence import Evidence
from ..incident import Batch, Named, SourceIncident
from .http import Answer, JsonApi
from .reader import MIN_WINDOW, Page, Reader, Request, Resume, utc  # noqa: F401 (what tool modules import)

# A resolve time this far past our clock is a broken record, not a clock difference.
CLOCK_SKEW = timedelta(hours=1)
MAX_TITLE = 500
# The longest time range one read covers: a long lookback or backfill is read a window at a time, and
# every tool's API accepts it (PagerDuty refuses more than 6 months between `since` and `until`).
MAX_WINDOW = timedelta(days=30)
MAX_PER_BATCH = 1_000
# What a tool's list filters its windows on.
RESOLVED = 'resolved'  # the resolve time: a resolution entered late, or corrected, is not listed again
UPDATED = 'updated'  # the update time: every resolution, late entry or correction moves it, so all are read


class Source:
    """One incident tool: the class attributes, `make_api`, and what `reader.py`'s docstring lists."""

    name: ClassVar[str]  # the `source:` value: a published contract
    display_name: ClassVar[str]
    default_api_url: ClassVar[str]
    # Options of this tool beyond the common ones; setting another tool's option is a configuration error.
    options: ClassVar[frozenset[str]] = frozenset()
    # Whether the tool reads with `api_token` (required then), and what that token must be. False for a tool
    # with credentials of its own kind (ServiceNow: `username`/`password`; Datadog: its API and application keys).
    needs_api_token: ClassVar[bool] = True
    api_token_help: ClassVar[str] = 'set it to a read-only API token of the incident tool'
    # Whether `send_dora_failures` defaults to true (false where Datadog's DORA Metrics reads the tool itself).
    sends_dora_failures: ClassVar[bool] = True
    # Those of `options` that select which incidents are read: they scope the cursor (check.py).
    scope_options: ClassVar[frozenset[str]] = frozenset()
    # The vendor's published API description and the operations used: `scripts/derive_specs.py`
    # keeps those in `loopback/specs/<name>.json`, which the simulator validates against.
    api_description: ClassVar[dict] = {}
    listing: ClassVar[str] = RESOLVED
    max_window: ClassVar[timedelta] = MAX_WINDOW
    max_per_batch: ClassVar[int] = MAX_PER_BATCH
    narrows: ClassVar[bool] = True  # a narrower window asks for fewer pages (reader.py)
    # Whether a page's `total` counts the window's records (then it sizes windows), or the whole list (a
    # search without a time filter): then it only tells that the list moved while it was paged.
    total_is_windows: ClassVar[bool] = True

    def __init__(self, config, http, api_url: str, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.api: JsonApi = self.make_api(http, api_url, config.api_token)
        self.api.monotonic = monotonic

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        raise NotImplementedError

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the source reads with besides `api_token`, to be scrubbed from every message."""
        return ()

    def resolved(
        self, since: datetime, until: datetime, deadline: float, resume: Resume | None = None
    ) -> Iterator[Batch]:
        """Yield, oldest first, batches covering every resolution listed in [since, until) (see `Batch`)."""
        return Reader(self).batches(since, until, deadline, resume)

    # -- what each tool supplies (reader.py says how it is used) --------------------------------------
    def prepare(self, deadline: float) -> None:
        """Look-ups needed before reading (none by default)."""

    def request(self, start: datetime, end: datetime, token: Any) -> Request:
        raise NotImplementedError

    def page(self, answer: Answer, token: Any) -> Page:
        raise NotImplementedError

    def incident(self, record) -> SourceIncident | None:
        raise NotImplementedError

    def record_id(self, record) -> str | None:
        return text(record.get('id')) if isinstance(record, dict) else None

    def listed_at(self, record, incident: SourceIncident | None) -> datetime | None:
        """The time the window filters on; by default the resolve time of a tool that lists by it."""
        if self.listing == RESOLVED and incident is not None:
            return incident.resolved_at
        return None

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


def text(value) -> str | None:
    return value if isinstance(value, str) and value else None


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
