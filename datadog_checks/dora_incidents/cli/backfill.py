"""Backfill: send historical resolutions to the DORA API, resumably, never twice.

Metrics cannot be back-dated (the Agent stamps them when a run submits them), but a DORA failure carries
its own `started_at`/`finished_at` and Datadog accepts any age, so history goes there. It runs the check's
own reporting path with DORA-only outputs and its own cursor (state key `backfill`), committed after
every window: it emits no metrics that a commit could get ahead of, so an interrupted backfill resumes
where it stopped, and what it sent is never sent again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..cursor import OVERLAP, CursorStore
from ..datadog import datadog_api
from ..mapping import Mapper
from ..outputs import Outputs
from ..reporting import Reporter
from ..sources import SourceError, make_source

STATE_KEY = 'backfill'


@dataclass
class Summary:
    sent: int = 0
    already_sent: int = 0
    skipped: int = 0
    pending: int = 0
    undelivered: str | None = None  # why DORA failures did not reach Datadog: a refused key, an unreachable API
    resumed_from: datetime | None = None
    warnings: list[str] = field(default_factory=list)


def backfill(check, since: datetime, until: datetime, on_window: Callable[[datetime], None]) -> Summary:
    """`on_window(through)` runs after each window is committed: persist the state file and show progress.

    Raises SourceError (progress committed) when the source fails, ValueError-free: a corrupt backfill
    state starts over with a warning, like the check's own cursor.
    """
    source = make_source(check.config, set(check.instance), check.http)
    store = CursorStore(check, STATE_KEY)
    outputs = Outputs(check, datadog_api(check), send_metrics=False)
    # The whole backfill is the late-change horizon: a resumed backfill still reports a resolution entered late
    # anywhere in [since, until).
    reporter = Reporter(source, Mapper(check.config), outputs, store, check.warning, horizon=until - since)
    cursor = store.load()
    summary = Summary(resumed_from=cursor.watermark)
    start = max(since, cursor.watermark - OVERLAP) if cursor.watermark else since
    reporter.outputs.begin(deadline=math.inf)

    def commit(cursor):
        reporter.commit(cursor)
        on_window(cursor.watermark)

    progress = reporter.catch_up(cursor, start, until, math.inf, after_batch=commit)
    reporter.commit(cursor)
    summary.sent, summary.already_sent, summary.skipped = progress.reported, progress.already_reported, progress.skipped
    reporter.outputs.dora.finish()  # waits for the last writes; says why any stay queued
    summary.pending = reporter.outputs.pending
    summary.undelivered = undelivered(reporter.outputs, check.warnings)
    if progress.source_error:
        raise SourceError(progress.source_error)
    return summary


def undelivered(outputs, warnings: list[str]) -> str | None:
    """Why DORA writes did not reach Datadog, from what the outputs report: the key Datadog refused (`rejected`),
    else, while writes stay queued (`pending`), the outbox's own warning, which names the cause."""
    if outputs.rejected:
        return outputs.rejected
    if not outputs.pending:
        return None
    return next((w for w in reversed(warnings) if 'Datadog' in w), 'the Datadog API did not accept them')
