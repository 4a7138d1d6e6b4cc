"""What the simulators of query languages share (ServiceNow's encoded queries, Jira's JQL): comparisons, the
way a Java server reads a local date-time in a zone, and an optional sliding-window rate limit."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

COMPARE = {
    '=': lambda a, b: a == b,
    '!=': lambda a, b: a != b,
    '>': lambda a, b: a > b,
    '>=': lambda a, b: a >= b,
    '<': lambda a, b: a < b,
    '<=': lambda a, b: a <= b,
}


def java_local(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local time's instant as java.time reads it: a repeated time is its first occurrence (fold 0),
    a skipped one moves forward by the gap (fold 0 takes the offset before the gap, which does just that)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


class SlidingWindow:
    """At most `budget` requests per `per` seconds; `None` never limits."""

    def __init__(self, limit: tuple[int, float] | None):
        self.limit = limit
        self._calls: list[float] = []

    def wait(self) -> int | None:
        """Counts a request; None when it may go, else the whole seconds until it could."""
        if self.limit is None:
            return None
        budget, per = self.limit
        now = time.time()
        self._calls = [t for t in self._calls if t > now - per]
        if len(self._calls) >= budget:
            return max(1, int(self._calls[0] + per - now + 0.999))
        self._calls.append(now)
        return None
