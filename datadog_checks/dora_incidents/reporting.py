"""The one path from a source's batches to the outputs and the cursor, shared by the check and the backfill.

Per batch: each resolution the cursor has not seen is mapped and emitted, then recorded; the cursor
advances, in memory, over the batch. `commit` makes the run durable: outputs first (the DORA outbox),
cursor last, so dying in between re-sends (idempotently) instead of skipping. The check commits once,
after the run's emission is complete; the backfill, which emits no metrics, after every window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .cursor import REMEMBER, Cursor, CursorStore, Resolution
from .incident import Batch
from .mapping import Mapper
from .outputs import Outputs
from .sources import CredentialsRejected, Source, SourceError

# A source clock this far behind the host's is worth a warning: windows wait for the source.
SKEW_WARNING = timedelta(minutes=1)


@dataclass
class Progress:
    """What one catch-up did."""

    source_error: str | None = None
    credentials_rejected: bool = False
    out_of_time: bool = False
    reported: int = 0
    already_reported: int = 0
    skipped: int = 0


class Reporter:
    def __init__(
        self,
        source: Source,
        mapper: Mapper,
        outputs: Outputs,
        store: CursorStore,
        warn: Callable,
        horizon: timedelta = timedelta(days=1),
    ):
        self.source = source
        self.mapper = mapper
        self.outputs = outputs
        self.store = store
        self._warn = warn
        # The late-change horizon (`initial_lookback`): how far behind what a run reads a resolution entered
        # or corrected late is still reported. Incidents are remembered at least as long.
        self.horizon = horizon

    def catch_up(
        self,
        cursor: Cursor,
        since: datetime,
        until: datetime,
        deadline: float,
        after_batch: Callable[[Cursor], None] | None = None,
    ) -> Progress:
        """Reads [since, until) batch by batch until caught up or out of time."""
        progress = Progress()
        if self.source.monotonic() >= deadline:
            # The budget went on the outbox: reading more would only queue more behind it.
            progress.out_of_time = True
            return progress
        cursor.remember = max(REMEMBER, self.horizon)
        # A resolution entered or corrected late is reported if resolved within the horizon behind what is
        # read; the first run reports its lookback only.
        horizon = since - self.horizon if cursor.watermark is not None else since
        try:
            for batch in self.source.resolved(since, until, deadline, cursor.resume):
                self._emit(batch, cursor, progress, horizon)
                # Never past the source's own clock: a host clock ahead of it would otherwise skip
                # resolutions the source has not written yet.
                cursor.advance(min(batch.through, self.source.clock()))
                cursor.resume = batch.resume
                if after_batch:
                    after_batch(cursor)
                if batch.cut or (self.source.monotonic() >= deadline and cursor.watermark < until):
                    progress.out_of_time = True
                    break
        except CredentialsRejected as e:
            progress.source_error, progress.credentials_rejected = str(e), True
        except SourceError as e:
            progress.source_error = str(e)
        self._warn_about_skew()
        return progress

    def commit(self, cursor: Cursor) -> None:
        self.outputs.save()
        self.store.save(cursor)

    def _emit(self, batch: Batch, cursor: Cursor, progress: Progress, horizon: datetime) -> None:
        now = self.source.clock()
        for found in batch.incidents:
            if not self.mapper.selects(found):
                continue
            resolution = cursor.classify(found, horizon)
            if resolution in (Resolution.SEEN, Resolution.TOO_OLD):
                progress.already_reported += resolution is Resolution.SEEN
                continue
            self.outputs.emit(self.mapper.to_datadog(found), resolution, now)
            cursor.record(found)
            progress.reported += 1
        for skipped in batch.skipped:
            if cursor.first_skip(skipped, now):
                progress.skipped += 1
                self._warn('Skipped malformed %s incident %s: %s', skipped.source, skipped.id, skipped.reason)

    def _warn_about_skew(self) -> None:
        skew = self.source.api.skew
        if skew > SKEW_WARNING.total_seconds():
            self._warn(
                'This host\'s clock is %d seconds ahead of %s\'s: resolutions are read up to %s\'s time, so they '
                'are reported late but never lost. Synchronise the host clock (NTP).',
                skew,
                self.source.display_name,
                self.source.display_name,
            )
