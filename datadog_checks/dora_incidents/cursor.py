"""What has been reported: the one place that decides whether a resolution is new.

The cursor is a watermark (everything listed before it has been handled) plus the incidents reported
recently, keyed by incident and stamped with the times reported (resolve, start, restore), the malformed
records already counted as skipped, and where a read cut by the run's budget goes on (`resume`).

Memory: an incident is remembered for REMEMBER (or `initial_lookback`, the late-change horizon, if longer)
after the last resolution reported, at most MAX_REMEMBERED of them (the oldest are forgotten first). So a
reopened incident resolved again within that time is never counted twice, and a change to its start or
resolve time is recognised as a correction. Version 1 cursors (resolve times only) are still read.

It lives in memory across runs and in the Agent's persistent cache for restarts, saved once per run when
the run's emission is complete: the Agent commits a run's metrics only after `run()` returns, so a cursor
saved earlier could get ahead of metrics that a killed Agent never sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum

from .durable import DurableJson, LostWrite
from .incident import Skipped, SourceIncident
from .sources.reader import Resume

CACHE_KEY = 'cursor'
VERSION = 2
READABLE_VERSIONS = (1, 2)
# Each run re-reads this far behind the watermark: an entry can show up in the source's API a little
# after its own timestamp. Resolutions re-read there are recognised below and not reported twice.
OVERLAP = timedelta(minutes=5)
# An incident stays remembered this long after its last resolution, so that reopening and resolving it
# again, or correcting its times, updates its DORA failure without counting it again. The cap bounds the
# cache file (~80 bytes each).
REMEMBER = timedelta(days=90)
MAX_REMEMBERED = 20_000


class Resolution(Enum):
    NEW = 'new'  # first resolution of this incident: count it
    AGAIN = 'again'  # reopened and resolved again: update its DORA failure, do not count it again
    CORRECTED = 'corrected'  # its start or resolve time was edited: update its DORA failure, do not count it
    SEEN = 'seen'  # already reported: nothing to do
    TOO_OLD = 'too old'  # never reported, resolved before the late-change horizon: not reported now


@dataclass
class Cursor:
    watermark: datetime | None = None
    # incident key -> [resolve, start, restore] times reported, in epoch ms (a bare resolve time: version 1,
    # or recovered from Datadog); oldest resolution first.
    reported: dict[str, int | list[int]] = field(default_factory=dict)
    # skipped record key -> when it was first skipped (epoch ms): counted and named once, not every re-read.
    skipped: dict[str, int] = field(default_factory=dict)
    resume: Resume | None = None  # where a read cut by the run's budget goes on
    remember: timedelta = REMEMBER

    def window(self, now: datetime, initial_lookback: int) -> tuple[datetime, datetime]:
        if self.watermark is None:
            return now - timedelta(seconds=initial_lookback), now
        return min(self.watermark - OVERLAP, now), now

    def classify(self, incident: SourceIncident, horizon: datetime | None = None) -> Resolution:
        """`horizon`: a resolution never reported and resolved before it is not reported now (too late)."""
        reported = self.reported.get(incident.key)
        if reported is None:
            too_old = horizon is not None and incident.resolved_at < horizon
            return Resolution.TOO_OLD if too_old else Resolution.NEW
        if isinstance(reported, int):
            # Recovered from Datadog (`adopt`), a resolution is known by its DORA `finished_at`: the restore time.
            seen = reported in (_ms(incident.resolved_at), _ms(incident.restored_at))
            return Resolution.SEEN if seen else Resolution.AGAIN
        if _times(incident) == reported:
            return Resolution.SEEN
        # A later resolve time is a new resolution of a reopened incident; anything else an edit of the times.
        return Resolution.AGAIN if _ms(incident.resolved_at) > reported[0] else Resolution.CORRECTED

    def adopt(self, reported: dict[str, int]) -> None:
        """Resolutions reported before this cursor existed (listed from Datadog): not to be counted again."""
        for key, ms in reported.items():
            self.reported.setdefault(key, ms)

    def record(self, incident: SourceIncident) -> None:
        self.reported.pop(incident.key, None)
        self.reported[incident.key] = _times(incident)

    def latest(self, count: int) -> list[tuple[str, datetime]]:
        """The last `count` incidents reported, with the resolve time reported."""
        return [(key, _moment(_stamp(value))) for key, value in list(self.reported.items())[-count:]]

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
        horizon = _ms(self.watermark - self.remember)
        self.reported = _recent(self.reported, horizon)
        self.skipped = _recent(self.skipped, horizon)

    def to_document(self) -> dict:
        return {
            'version': VERSION,
            'watermark': self.watermark.isoformat() if self.watermark else None,
            'reported': self.reported,
            'skipped': self.skipped,
            'resume': self.resume.to_document() if self.resume else None,
        }

    @classmethod
    def from_document(cls, data) -> Cursor:
        """Raises ValueError naming what is wrong with a stored cursor."""
        if not isinstance(data, dict) or data.get('version') not in READABLE_VERSIONS:
            raise ValueError('not a version-1 or version-2 cursor object')
        watermark = data.get('watermark')
        reported = data.get('reported')
        skipped = data.get('skipped', {})
        if not isinstance(reported, dict) or not all(map(_is_stamp, reported.values())):
            raise ValueError('`reported` is not a map of incident to times')
        if not isinstance(skipped, dict) or not all(type(ms) is int for ms in skipped.values()):
            raise ValueError('`skipped` is not a map of record to time')
        if watermark is not None:
            watermark = datetime.fromisoformat(watermark)
            if watermark.tzinfo is None:
                raise ValueError('`watermark` has no time zone')
        resume = data.get('resume')
        return cls(watermark, dict(reported), dict(skipped), Resume.from_document(resume) if resume else None)


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


def _recent(stamps: dict, horizon: int) -> dict:
    """The entries stamped (resolved) at or after `horizon`, at most MAX_REMEMBERED, oldest first."""
    kept = sorted((_stamp(value), key) for key, value in stamps.items() if _stamp(value) >= horizon)
    return {key: stamps[key] for _, key in kept[-MAX_REMEMBERED:]}


def _stamp(value) -> int:
    return value if isinstance(value, int) else value[0]


def _is_stamp(value) -> bool:
    return type(value) is int or (isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value))


def _times(incident: SourceIncident) -> list[int]:
    return [_ms(incident.resolved_at), _ms(incident.started_at), _ms(incident.restored_at)]


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(timezone.utc).timestamp() * 1000)
