"""What has been reported: the one place that decides whether a resolution is new.

The cursor is a watermark (every resolution before it has been handled) plus the incidents reported
recently, keyed by incident and stamped with the resolve time reported, and the malformed records
already counted as skipped. It lives in memory across runs and in the Agent's persistent cache for
restarts, saved once per run when the run's emission is complete: the Agent commits a run's metrics
only after `run()` returns, so a cursor saved earlier could get ahead of metrics that a killed Agent
never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

from .durable import DurableJson, LostWrite
from .incident import SourceIncident, Skipped

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
    # skipped record key -> when it was first skipped (epoch ms): counted and named once, not every re-read.
    skipped: dict[str, int] = field(default_factory=dict)

    def window(self, now: datetime, initial_lookback: int) -> tuple[datetime, datetime]:
        if self.watermark is None:
            return now - timedelta(seconds=initial_lookback), now
        return min(self.watermark - OVERLAP, now), now

    def classify(self, incident: SourceIncident) -> Resolution:
        reported = self.reported.get(incident.key)
        if reported is None:
            return Resolution.NEW
        # Recovered from Datadog (`adopt`), a resolution is known by its DORA `finished_at`: the restore time.
        seen = reported in (_ms(incident.resolved_at), _ms(incident.restored_at))
        return Resolution.SEEN if seen else Resolution.AGAIN

    def adopt(self, reported: dict[str, int]) -> None:
        """Resolutions reported before this cursor existed (listed from Datadog): not to be counted again."""
        for key, ms in reported.items():
            self.reported.setdefault(key, ms)

    def record(self, incident: SourceIncident) -> None:
        self.reported.pop(incident.key, None)
        self.reported[incident.key] = _ms(incident.resolved_at)

    def first_skip(self, skipped: Skipped, now: datetime) -> bool:
        """True the first time this record is skipped (within the memory horizon)."""
        key = f'{skipped.source}:{skipped.id}'
        if key in self.skipped:
            return False
        self.skipped[key] = _ms(now)
        return True

    def advance(self, through: datetime) -> None:
        # Whole seconds: APIs filter on whole seconds, so every window starts and ends on one.
        through = through.replace(microsecond=0)
        self.watermark = max(through, self.watermark) if self.watermark else through
        self._forget_old()

    def lag(self, now: datetime) -> float | None:
        return None if self.watermark is None else (now - self.watermark).total_seconds()

    def _forget_old(self) -> None:
        horizon = _ms(self.watermark - REMEMBER)
        self.reported = _recent(self.reported, horizon)
        self.skipped = _recent(self.skipped, horizon)

    def to_document(self) -> dict:
        return {
            'version': VERSION,
            'watermark': self.watermark.isoformat() if self.watermark else None,
            'reported': self.reported,
            'skipped': self.skipped,
        }

    @classmethod
    def from_document(cls, data) -> Cursor:
        """Raises ValueError naming what is wrong with a stored cursor."""
        if not isinstance(data, dict) or data.get('version') != VERSION:
            raise ValueError('not a version-1 cursor object')
        watermark = data.get('watermark')
        reported = data.get('reported')
        skipped = data.get('skipped', {})
        for name, value in (('reported', reported), ('skipped', skipped)):
            if not isinstance(value, dict) or not all(isinstance(ms, int) for ms in value.values()):
                raise ValueError(f'`{name}` is not a map of incident to time')
        if watermark is not None:
            watermark = datetime.fromisoformat(watermark)
            if watermark.tzinfo is None:
                raise ValueError('`watermark` has no time zone')
        return cls(watermark, dict(reported), dict(skipped))


class CursorStore:
    """Keeps the cursor: in memory across runs, in the check's persistent cache across restarts.

    The Agent ignores a failed cache write (read-only run directory, full disk), so every save is read
    back: a save that did not stick is reported, and the cursor in memory keeps the check exact until
    the Agent restarts.
    """

    def __init__(self, check, key: str = CACHE_KEY):
        self._check = check
        self._store = DurableJson(check, key, Cursor.from_document, Cursor.to_document)
        self._cursor: Cursor | None = None
        self.save_failed = False

    def load(self) -> Cursor:
        if self._cursor is None:
            self._cursor = self._read()
        return self._cursor

    def save(self, cursor: Cursor) -> None:
        self._cursor = cursor
        try:
            self._store.save(cursor)
            self.save_failed = False
        except LostWrite as e:
            self.save_failed = True
            self._check.warning(
                'The cursor could not be saved in the Agent\'s persistent cache (%s): it is kept in memory, '
                'but an Agent restart would report the last `initial_lookback` again. Check that the Agent\'s '
                'run directory is writable and has space.',
                e,
            )

    def _read(self) -> Cursor:
        try:
            return self._store.load() or Cursor()
        except RuntimeError as e:
            return self._fresh(f'the persistent cache could not be read ({e})')
        except ValueError as e:
            return self._fresh(f'the stored cursor is unreadable ({e})')

    def _fresh(self, why: str) -> Cursor:
        self._check.warning(
            'Starting over from `initial_lookback`: %s. Incidents resolved in that window may be reported again; '
            'their DORA failures update rather than duplicate.',
            why,
        )
        return Cursor()


def _recent(stamps: dict[str, int], horizon: int) -> dict[str, int]:
    """The entries stamped at or after `horizon`, at most MAX_REMEMBERED, oldest first."""
    kept = sorted((ms, key) for key, ms in stamps.items() if ms >= horizon)
    return {key: ms for ms, key in kept[-MAX_REMEMBERED:]}


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(timezone.utc).timestamp() * 1000)
