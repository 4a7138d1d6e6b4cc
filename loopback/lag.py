"""What a simulated list shows of a record whose change is not visible yet (a lagging index or replica)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

NEVER = datetime.max.replace(tzinfo=UTC)


class Lag:
    """Per record id: the record as it was listed before a change, and from when the change shows."""

    def __init__(self):
        self._before: dict[str, tuple[datetime, dict]] = {}

    def hold(self, record_id: str, record: dict, at: datetime, hidden: bool) -> None:
        """Before changing `record`: until `at` (never, when `hidden`), the list shows it as it is now."""
        self._before.pop(record_id, None)
        if hidden or at > datetime.now(UTC):
            self._before[record_id] = (NEVER if hidden else at, copy.deepcopy(record))

    def show(self, record_id: str) -> None:
        """The change is visible from now on."""
        self._before.pop(record_id, None)

    def listed(self, record_id: str, record: dict, now: datetime) -> dict:
        """The record as the list shows it at `now`."""
        before = self._before.get(record_id)
        return before[1] if before is not None and now < before[0] else record
