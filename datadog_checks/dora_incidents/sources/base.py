"""The contract every incident source fulfils, and the record-reading helpers they share.

A source turns its API's objects into `SourceIncident`s, in the tool's own terms: it never names a
Datadog service, team or env (that is `mapping.py`), never emits anything and never touches the cursor.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

from ..incident import Batch, Named
from .http import JsonApi

# A resolve time this far past our clock is a broken record, not a clock difference.
CLOCK_SKEW = timedelta(hours=1)
MAX_TITLE = 500
# The longest time range one read covers: a long lookback or backfill is read a window at a time, and
# every tool's API accepts it (PagerDuty refuses more than 6 months between `since` and `until`).
MAX_WINDOW = timedelta(days=30)
# A window holding more than one batch is halved, down to this: APIs filter on whole seconds.
MIN_WINDOW = timedelta(seconds=1)


class Source:
    """One incident tool. Subclasses set the class attributes and implement `resolved`."""

    name: ClassVar[str]  # the `source:` value: a published contract
    display_name: ClassVar[str]
    default_api_url: ClassVar[str]
    # Options of this tool beyond the common ones; setting another tool's option is a configuration error.
    options: ClassVar[frozenset[str]] = frozenset()
    # Whether the tool reads with `api_token` (required then), and what that token must be.
    needs_api_token: ClassVar[bool] = True
    api_token_help: ClassVar[str] = 'set it to a read-only API token of the incident tool'

    def __init__(self, config, http, api_url: str):
        self.config = config
        self.api: JsonApi = self.make_api(http, api_url, config.api_token)

    def make_api(self, http, api_url: str, token: str) -> JsonApi:
        raise NotImplementedError

    def resolved(self, since: datetime, until: datetime, deadline: float) -> Iterator[Batch]:
        """Yield, oldest first, batches covering every resolution with a resolve time in [since, until)."""
        raise NotImplementedError

    def clock(self) -> datetime:
        """Now by the source's clock: the cursor never moves past it."""
        return self.api.clock()


def windows(start: datetime, end: datetime, step: timedelta = MAX_WINDOW) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of at most `step`, oldest first."""
    cuts = []
    while start < end:
        cuts.append((start, min(start + step, end)))
        start = cuts[-1][1]
    return cuts


def halves(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut in two at a whole second; only for windows longer than MIN_WINDOW."""
    middle = start + timedelta(seconds=max(1, int((end - start).total_seconds()) // 2))
    return [(start, middle), (middle, end)]


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


def utc(moment: datetime) -> str:
    """Explicit UTC, so an account's time zone never shifts a window."""
    return moment.astimezone(timezone.utc).isoformat(timespec='seconds').replace('+00:00', 'Z')
