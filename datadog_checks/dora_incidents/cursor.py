"""What has been reported: the one place that decides whether a resolution is new.

The cursor is a watermark (every resolution before it has been handled) plus the incidents reported
recently, keyed by incident and stamped with the resolve time reported. It lives in the Agent's
persistent cache as JSON, written only after the outputs of a batch went out, so a run that dies
midway re-reads (and idempotently re-sends) rather than skips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

from .durable import DurableJson
from .incident import Incident

CACHE_KEY = 'cursor'
VERSION = 1
# Each run re-reads this far behind the watermark: an entry can show up in the source's API a little
# after its own timestamp. Resolutions re-read there are recognised below and not reported twice.
OVERLAP = timedelta(minutes=5)
# An incident stays remembered this long after its resolution, so that reopening and resolving it again
# updates its DORA failure without counting it again. The cap bounds the cache file (~40 bytes each).
REMEMBER = timedelta(days=30)
MAX_REMEMBERED = 20_000


class Resolution(Enum):
    NEW = 'new'  # first resolution of this incident: count it
    AGAIN = 'again'  # reopened and resolved again: update its DORA failure, do not count it again
    SEEN = 'seen'  # already reported: nothing to do


@dataclass
class Cursor:
    watermark: datetime | None = None
    # incident key -> resolve time reported, in epoch milliseconds; oldest resolution first.
    reported: dict[str, int] = field(default_factory=dict)

    def window(self, now: datetime, initial_lookback: int) -> tuple[datetime, datetime]:
        if self.watermark is None:
            return now - timedelta(seconds=initial_lookback), now
        return min(self.watermark - OVERLAP, now), now

    def classify(self, incident: Incident) -> Resolution:
        reported = self.reported.get(incident.key)
        if reported is None:
            return Resolution.NEW
        return Resolution.SEEN if reported == _ms(incident.resolved_at) else Resolution.AGAIN

    def record(self, incident: Incident) -> None:
        self.reported.pop(incident.key, None)
        self.reported[incident.key] = _ms(incident.resolved_at)

    def advance(self, through: datetime) -> None:
        self.watermark = max(through, self.watermark) if self.watermark else through
        self._forget_old()

    def lag(self, now: datetime) -> float | None:
        return None if self.watermark is None else (now - self.watermark).total_seconds()

    def _forget_old(self) -> None:
        horizon = _ms(self.watermark - REMEMBER)
        kept = sorted((ms, key) for key, ms in self.reported.items() if ms >= horizon)
        self.reported = {key: ms for ms, key in kept[-MAX_REMEMBERED:]}

    def to_document(self) -> dict:
        return {
            'version': VERSION,
            'watermark': self.watermark.isoformat() if self.watermark else None,
            'reported': self.reported,
        }

    @classmethod
    def from_document(cls, data) -> Cursor:
        """Raises ValueError naming what is wrong with a stored cursor."""
        if not isinstance(data, dict) or data.get('version') != VERSION:
            raise ValueError('not a version-1 cursor object')
        watermark = data.get('watermark')
        reported = data.get('reported')
        if not isinstance(reported, dict) or not all(isinstance(ms, int) for ms in reported.values()):
            raise ValueError('`reported` is not a map of incident to resolve time')
        if watermark is not None:
            watermark = datetime.fromisoformat(watermark)
            if watermark.tzinfo is None:
                raise ValueError('`watermark` has no time zone')
        return cls(watermark, dict(reported))


class CursorStore:
    """Reads and writes the cursor in the check's persistent cache; a broken one restarts from the lookback."""

    def __init__(self, check):
        self._check = check
        self._store = DurableJson(check, CACHE_KEY, Cursor.from_document, Cursor.to_document)

    def load(self) -> Cursor:
        try:
            return self._store.load() or Cursor()
        except RuntimeError as e:
            return self._fresh(f'the persistent cache could not be read ({e})')
        except ValueError as e:
            return self._fresh(f'the stored cursor is unreadable ({e})')

    def save(self, cursor: Cursor) -> None:
        self._store.save(cursor)

    def _fresh(self, why: str) -> Cursor:
        self._check.warning(
            'Starting over from `initial_lookback`: %s. Incidents resolved in that window may be reported again; '
            'their DORA failures update rather than duplicate.',
            why,
        )
        return Cursor()


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(timezone.utc).timestamp() * 1000)
