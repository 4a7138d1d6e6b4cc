"""The one reading loop every source runs: windows, pages, cuts, re-reads, the run's budget, batches.

A tool module supplies a `Source` subclass (base.py): `request`, `page`, `incident`, `record_id`,
`listed_at`, `prepare` and `make_api`, whose docstrings are the contract, and its `Reading` traits
(`listing`, `narrows`, `total_is_windows`, `max_window`, `max_per_batch`).

What the reader does with that:

- `[since, until)` is cut into windows of at most `max_window`, oldest first, every cut on a whole second.
- A window whose first page's total exceeds `max_per_batch` is cut where `max_per_batch` * CUT_TARGET of
  its records would end, were they spread evenly (at most in the middle); the rest is sized by what its
  total leaves. A window whose records exceed `max_per_batch` without a total is halved (for a tool that
  `narrows`). Neither goes below MIN_WINDOW.
- A window whose total changes between its pages (offset or page-number paging shifted) is read again,
  at most MAX_READS times.
- Before every request the run's deadline is checked (`JsonApi` raises `OutOfTime` without sending). A
  window the budget cut is not thrown away: what it read is yielded as a batch that does not move the
  cursor past the window's start, carrying `resume` (the window as cut so far, the next page's token and
  the total seen), which the cursor keeps; the next run continues with that window and page. A resumed
  page whose total differs from the one kept starts the window over (the cursor knows what it reported).
- Records are turned into incidents; a malformed one is skipped once per batch, by id (the cursor
  counts and names it once across batches); incidents are de-duplicated by id, oldest resolution first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ..incident import Batch, Skipped, SourceIncident
from .http import OutOfTime, SourceError

# A window is cut so that its share of a batch is this fraction, so that unevenly spread records seldom
# need a second cut.
CUT_TARGET = 0.9
MAX_READS = 3
MIN_WINDOW = timedelta(seconds=1)
MALFORMED = (ValueError, TypeError, AttributeError, LookupError)


@dataclass(frozen=True)
class Request:
    """One request of a window's page: `path` relative to `api_url`, or an absolute URL from a `Link`."""

    path: str
    params: list[tuple[str, Any]] = field(default_factory=list)
    method: str = 'GET'
    json: Any = None


@dataclass(frozen=True)
class Page:
    records: list
    next: Any = None  # the next page's token (page number, offset, cursor, URL); None: this was the last
    total: int | None = None  # the window's number of records, when the API says


@dataclass(frozen=True)
class Resume:
    """Where a window cut by the run's budget goes on: kept in the cursor between runs."""

    start: datetime
    end: datetime
    token: Any  # None: from the window's first page
    total: int | None

    def to_document(self) -> dict:
        return {'start': self.start.isoformat(), 'end': self.end.isoformat(), 'token': self.token, 'total': self.total}

    @classmethod
    def from_document(cls, data) -> Resume:
        if not isinstance(data, dict) or not isinstance(data.get('token'), (int, str, type(None))):
            raise ValueError('`resume` is not a window and a page token')
        total = data.get('total')
        if total is not None and type(total) is not int:
            raise ValueError('`resume.total` is not a number')
        start, end = (datetime.fromisoformat(data[name]) for name in ('start', 'end'))
        if start.tzinfo is None or end.tzinfo is None or not start < end:
            raise ValueError('`resume` is not a window')
        return cls(start, end, data['token'], total)


@dataclass(frozen=True)
class _Read:
    """A record as the tool module reads it, once: its incident (None: not one to report) and listing time, or
    why it is malformed."""

    record: Any
    incident: SourceIncident | None = None
    listed: datetime | None = None
    malformed: Exception | None = None

    def in_window(self, start: datetime, end: datetime) -> bool:
        """Whether its listing time is in [start, end); a record that cannot tell is kept (and skipped as
        malformed, if it is)."""
        return self.listed is None or start <= self.listed < end


class _Cut(Exception):
    """The window holds more than a batch: read [start, stop) first, the rest after. `total`: what the window
    holds, when its first page said."""

    def __init__(self, stop: datetime, total: int | None = None):
        self.stop, self.total = stop, total


@dataclass
class _Position:
    """Where a window's read is: the token of the page to ask for next and the total its pages gave."""

    token: Any
    total: int | None


class _Shifted(Exception):
    """The window's total changed while it was paged: read it again."""


@dataclass
class _Window:
    """A window still to read. `expected`: records the API said [start, end) holds (None: unknown), shared
    with the window before it, which debits what it found; `owes`: the `expected` this window debits."""

    start: datetime
    end: datetime
    expected: list[int] | None = None
    owes: list[int] | None = None


class Reader:
    def __init__(self, source):
        self.source = source

    def batches(self, since: datetime, until: datetime, deadline: float, resume: Resume | None) -> Iterator[Batch]:
        source = self.source
        try:
            source.prepare(deadline)
        except OutOfTime:
            yield Batch([], [], since, cut=True, resume=resume)
            return
        if resume is not None and since <= resume.start < until:
            start = resume.end
            pending = [_Window(resume.start, resume.end)]
        else:
            start, pending, resume = since, [], None
        pending += [_Window(*cut) for cut in windows(start, until, source.reading.max_window)]
        while pending:
            window = pending.pop(0)
            resumed = resume is not None and (window.start, window.end) == (resume.start, resume.end)
            token, total = (resume.token, resume.total) if resumed else (None, None)
            resume = None
            if not resumed and window.expected:
                ahead = self._sized(window)
                if ahead:
                    pending[:0] = ahead
                    continue
            try:
                for batch, found in self._window(window.start, window.end, token, total, deadline):
                    if window.owes is not None and batch.through == window.end:
                        window.owes[0] -= found
                    yield batch
                    if batch.cut:
                        return
            except _Cut as cut:
                pending[:0] = self._cut(window, cut)

    def _sized(self, window: _Window) -> list[_Window]:
        """A window expected to hold more than a batch, cut where CUT_TARGET of a batch would end were its
        records spread evenly; [] when it fits."""
        expected, target = window.expected[0], self.source.reading.max_per_batch * CUT_TARGET
        span = (window.end - window.start).total_seconds()
        if expected <= target or window.end - window.start <= MIN_WINDOW:
            return []
        stop = window.start + timedelta(seconds=max(1, math.floor(span * target / expected)))
        if stop >= window.end:
            return []
        return [_Window(window.start, stop, owes=window.expected), _Window(stop, window.end, window.expected)]

    def _cut(self, window: _Window, cut: _Cut) -> list[_Window]:
        if cut.total is None:  # halved: what each half holds is unknown
            return [_Window(window.start, cut.stop), _Window(cut.stop, window.end)]
        if window.owes is not None:
            window.owes[0] -= cut.total  # the window before knows what this one holds
        expected = [cut.total]
        return [_Window(window.start, cut.stop, owes=expected), _Window(cut.stop, window.end, expected)]

    def _window(self, start, end, token, total, deadline) -> Iterator[tuple[Batch, int]]:
        """The window's batch and how many records it held; cut short by the budget, the batch's `cut` is
        set and its `resume` says where to go on. A tool whose window does not narrow its pages yields a
        batch's worth at a time, each resuming the window, rather than cut it."""
        reading = self.source.reading
        for _ in range(MAX_READS):
            records: list = []
            at = _Position(token, total)
            try:
                for page_records in self._pages(start, end, at, deadline):
                    records += page_records
                    if not reading.narrows and len(records) >= reading.max_per_batch and at.token is not None:
                        # A batch's worth, more to come: hand it over; the window goes on from the next page.
                        yield self._batch(records, start, start, resume=Resume(start, end, at.token, at.total)), 0
                        records = []
            except _Shifted:
                token = total = None
                continue
            except OutOfTime:
                # Even before its first page: the window as narrowed so far is not cut again from scratch.
                resume = Resume(start, end, at.token, at.total)
                yield self._batch(records, start, start, cut=True, resume=resume), len(records)
                return
            yield self._batch(records, start, end), at.total if at.total is not None else len(records)
            return
        raise SourceError(
            f'{self.source.display_name}: the records between {utc(start)} and {utc(end)} kept changing while '
            f'they were read; will retry next run'
        )

    def _pages(self, start, end, at: _Position, deadline) -> Iterator[list]:
        """The records in the window, page by page, `at` following; raises _Cut or _Shifted."""
        source, reading, kept, seen = self.source, self.source.reading, 0, set()
        while True:
            page = self._page(source.request(start, end, at.token), at.token, deadline)
            if page.total is not None:
                if (
                    reading.total_is_windows
                    and at.total is None
                    and at.token is None
                    and page.total > reading.max_per_batch
                ):
                    self._cut_by_total(start, end, page.total)
                if at.total is not None and page.total != at.total:
                    raise _Shifted  # offsets moved between two pages (or two runs)
                at.total = page.total
            records = [read for read in map(self._read, page.records) if read.in_window(start, end)]
            kept += len(records)
            # A batch's worth read and more to come: cut before asking for a page past it (some APIs refuse
            # deep pages).
            full = kept > reading.max_per_batch or (kept == reading.max_per_batch and page.next is not None)
            if full and reading.narrows and end - start > MIN_WINDOW:
                raise _Cut(_middle(start, end))
            if page.next is not None and (page.next == at.token or page.next in seen):
                raise SourceError(f'{source.display_name} handed out the same page ({str(page.next)[:40]!r}) twice')
            seen.add(page.next)
            at.token = page.next  # where to go on, once these records are handed over
            yield records
            if page.next is None:
                return

    def _cut_by_total(self, start: datetime, end: datetime, total: int) -> None:
        if end - start <= MIN_WINDOW:
            return
        span = (end - start).total_seconds()
        most = self.source.reading.max_per_batch
        stop = start + timedelta(seconds=max(1, math.floor(span * most * CUT_TARGET / total)))
        # At most half: records bunched in a moment would otherwise take a probe per 10% shaved off.
        raise _Cut(min(stop, _middle(start, end)), total)

    def _page(self, request: Request, token, deadline: float) -> Page:
        api = self.source.api
        try:
            answer = api.request(request.method, request.path, request.params, deadline, json=request.json)
        except SourceError as e:
            if type(e) is SourceError and self.source.display_name not in str(e):
                raise SourceError(f'{self.source.display_name} {request.path}: {e}') from None  # name the tool
            raise
        return self.source.page(answer, token)

    def _read(self, record) -> _Read:
        try:
            incident = self.source.incident(record)
            # A record that cannot say when it changed is malformed.
            return _Read(record, incident, self.source.listed_at(record, incident))
        except MALFORMED as e:
            return _Read(record, malformed=e)

    def _batch(self, records: list[_Read], start, through, cut: bool = False, resume: Resume | None = None) -> Batch:
        incidents: dict[str, SourceIncident] = {}
        skipped: dict[str, Skipped] = {}
        for position, read in enumerate(records):
            if read.malformed is not None:
                # One bad record must never stall the others: it is skipped, by name, and counted.
                name = _name_of(self.source, read.record, position, start)
                skipped[name] = Skipped(self.source.name, name, str(read.malformed))
                continue
            if read.incident is not None:
                incidents[read.incident.id] = read.incident
        found = sorted(incidents.values(), key=lambda incident: incident.resolved_at)
        return Batch(found, list(skipped.values()), through, cut=cut, resume=resume)


def _name_of(source, record, position: int, start: datetime) -> str:
    try:
        name = source.record_id(record)
    except MALFORMED:
        name = None
    return name[:64] if isinstance(name, str) and name else f'record {position + 1} of the window from {utc(start)}'


def windows(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of at most `step`, oldest first."""
    cuts = []
    while start < end:
        cuts.append((start, min(start + step, end)))
        start = cuts[-1][1]
    return cuts


def _middle(start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=max(1, int((end - start).total_seconds()) // 2))


def utc(moment: datetime) -> str:
    """Explicit UTC, so an account's time zone never shifts a window."""
    return moment.astimezone(timezone.utc).isoformat(timespec='seconds').replace('+00:00', 'Z')
