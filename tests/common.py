"""Helpers shared by the test modules."""

import json
from datetime import UTC, datetime, timedelta

from datadog_checks.dora_incidents.cursor import CACHE_KEY
from loopback.harness import INCIDENTS_COUNT, TIME_TO_RESTORE, counted, dora_ids, restores  # noqa: F401


def ago(now, **delta):
    return now - timedelta(**delta)


def later():
    """The next whole second: past what a simulator stamps as changed now (a reveal, an entry after the fact)."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)


def cursor_keys(datadog_agent):
    return [key for key in datadog_agent._cache if f'_{CACHE_KEY}_' in key]


def stored_cursor(datadog_agent):
    """The newest cursor document the check left in the Agent's persistent cache, or None."""
    stored = []
    for key in cursor_keys(datadog_agent):
        try:
            slot = json.loads(datadog_agent._cache[key])
            stored.append((int(slot['sequence']), slot['document']))
        except (ValueError, TypeError, KeyError):
            continue  # a torn or corrupted slot; the other one holds the cursor
    return max(stored, key=lambda s: s[0])[1] if stored else None
