"""Backfill: send historical resolutions to the DORA API, resumably, never twice.

Metrics cannot be back-dated (the Agent stamps them when a run submits them), but a DORA failure carries
its own `started_at`/`finished_at` and Datadog accepts any age, so history goes there. The backfill has
its own cursor (state key `backfill`), saved after each window: an interrupted backfill resumes where
it stopped, and what it sent is never sent again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ..cursor import OVERLAP, Cursor, Resolution
from ..durable import DurableJson
from ..outputs import dora_api, failure_payload
from ..sources import make_source

STATE_KEY = 'backfill'


@dataclass
class Summary:
    sent: int = 0
    already_sent: int = 0
    skipped: list[str] = field(default_factory=list)
    pending: int = 0
    resumed_from: datetime | None = None


def backfill(check, since: datetime, until: datetime, on_window: Callable[[datetime], None]) -> Summary:
    """`on_window(through)` runs after each window is sent and its cursor saved: persist and show progress."""
    source = make_source(check.config, check.http)
    dora = dora_api(check)
    store = DurableJson(check, STATE_KEY, Cursor.from_document, Cursor.to_document)
    cursor = store.load() or Cursor()
    summary = Summary(resumed_from=cursor.watermark)
    start = max(since, cursor.watermark - OVERLAP) if cursor.watermark else since
    dora.begin(deadline=math.inf)
    tags = list(check.config.tags or ())
    for batch in source.resolved(start, until, deadline=math.inf):
        for incident in batch.incidents:
            if cursor.classify(incident) is Resolution.SEEN:
                summary.already_sent += 1
                continue
            dora.send(failure_payload(incident, tags))
            cursor.record(incident)
            summary.sent += 1
        summary.skipped += [f'{s.id}: {s.reason}' for s in batch.skipped]
        dora.save()
        cursor.advance(batch.through)
        store.save(cursor)
        on_window(batch.through)
    dora.finish()
    summary.pending = dora.pending
    return summary
