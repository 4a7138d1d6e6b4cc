"""The write pool: idempotent writes sent `dora_concurrency` at a time, in order per target, within the run's time.

`send()` only queues a write (with `dora_concurrency: 1` it goes out at once, in the caller's thread); `save()`
waits until every queued write has been answered, so the outbox it stores is exact. Each run starts with one
write alone: an unreachable Datadog costs one timeout, not one per worker. Never two writes of one target at
once: a newer one waits for the older to be answered, so it lands last.

What an answer means (the status policy): 2xx done; a 4xx other than 401/403/408/429 means the write is wrong
or its target gone, dropped with a warning; a refused application key holds back the writes that need it and
lets the others go on; anything else holds the rest of the run back into the outbox with a backoff.

The rate-limit policy: a `429` that names its reset (`X-RateLimit-Reset`, else `X-RateLimit-Period`) pauses the
whole pool until then and halves how many writes go at once (widening again by one per window of successes),
and paces starts at `X-RateLimit-Limit` per period; a reset past the run's deadline holds the writes in the
outbox until that reset. An answer saying no request is left pauses the pool until its reset too.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from .client import DatadogAnswer, DatadogHttp
from .outbox import Outbox, Write, backoff

DEFAULT_CONCURRENCY = 8
# Writes queued per worker before `send()` waits: what is held in memory stays flat however large the backlog.
# Enough for the workers to keep posting while the reader reads the next window (up to ten pages), below
# MAX_OUTBOX at any `dora_concurrency` (what is queued when the run's time is up goes to the outbox).
QUEUED_PER_WORKER = 32
MAX_QUEUED = 512
# A worker with nothing to do for this long ends; the next write starts another.
IDLE_EXIT = 2.0
# A write answered `429` this many times in one run waits in the outbox for the next run.
RATE_LIMIT_RETRIES = 3
OUT_OF_TIME = 'the run reached `max_run_time`; they go out first next run'


@dataclass
class _Job:
    write: Write
    attempts: int  # failed attempts so far, across runs: the backoff's exponent
    queued: bool  # it is in the outbox already (sent again from there); a new write is not
    rate_limited: int = 0  # 429s waited out in this run


class WritePool:
    def __init__(self, check, http: DatadogHttp, outbox: Outbox, concurrency: int):
        self._check = check
        self._http = http
        self._outbox = outbox
        self._concurrency = max(1, concurrency)
        self.deadline = math.inf
        # Once a write fails for a reason that will not pass within the run, the rest of the run queues
        # without trying: an unreachable Datadog must not cost a timeout per write.
        self._held_back: str | None = None
        self._hold_for = 0.0  # the backoff of a new write held back: 0 when out of time, the reset when rate-limited
        self.rejected: str | None = None  # Datadog refused a key this run: a configuration problem
        self.app_key_refused = False  # the application key alone was refused: writes that need it wait
        # Everything below is guarded by one lock, with two conditions on it, so that an answer wakes only who
        # it concerns: `_cond` for the workers (a write to start, a free place in the window, a pause's end),
        # `_room` for the caller (room in the queue, everything answered).
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._room = threading.Condition(lock)
        # A full queue takes writes again once half empty: the caller is woken once per half queue, not per answer.
        self._queued_most = min(MAX_QUEUED, QUEUED_PER_WORKER * self._concurrency)
        self._queue: OrderedDict[str, _Job] = OrderedDict()  # not started yet, oldest first
        self._in_flight: set[str] = set()
        self._behind: dict[str, _Job] = {}  # a newer write for a key in flight: it goes once that one is answered
        self._workers = 0
        self._idle = 0  # workers waiting for a write
        self._stopping = False
        self._window = 1  # writes allowed in flight: 1 until Datadog answers a run's first, then `concurrency`
        self._slowed = False  # a 429 narrowed the window this run: it widens by one per window of successes
        self._successes = 0
        self._paused_until = 0.0  # monotonic: no write starts before (Datadog's rate-limit reset)
        self._spacing = 0.0  # seconds between starts, from X-RateLimit-Limit / X-RateLimit-Period
        self._next_start = 0.0
        self._failure: BaseException | None = None  # an unexpected error in a worker, raised to the caller

    def begin(self, deadline: float) -> None:
        """Start a run: send what is due from the outbox, before anything new. Returns once each of those writes
        is answered, or held back (out of time, Datadog unavailable)."""
        with self._cond:
            self._settle_previous_run()
            self.deadline, self._held_back, self._hold_for, self.rejected = deadline, None, 0.0, None
            self.app_key_refused = False
            self._window, self._slowed, self._successes, self._stopping = 1, False, 0, False
            for write, attempts in self._outbox.due():
                self._place(_Job(write, attempts, queued=True))
        self._dispatch()
        with self._cond:
            # Before the run reads anything: a run that spends its budget on the outbox reads nothing new, so
            # what waits never outgrows the outbox however slow Datadog is.
            self._wait_until_idle()

    def send(self, write: Write) -> None:
        """Queue a write; it goes out in the background (at once, with `dora_concurrency: 1`)."""
        with self._cond:
            if self._concurrency > 1 and len(self._queue) >= self._queued_most:
                while len(self._queue) > self._queued_most // 2 and self._failure is None and not self._held_back:
                    self._spawn_workers()
                    self._room.wait(0.5)
            self._raise_failure()
            self._place(_Job(write, attempts=0, queued=False))
            if self._concurrency > 1:  # the workers take it: started here, under the lock already held
                self._spawn_workers()
                return
        self._dispatch()

    def save(self) -> None:
        """Wait for every queued write to be answered, then store the outbox if it changed."""
        with self._cond:
            self._wait_until_idle()
            self._outbox.save()

    def finish(self) -> None:
        self.save()
        with self._cond:
            self._stopping = True  # idle workers end now rather than after IDLE_EXIT
            self._wake_all()
        if self._held_back and len(self._outbox):
            self._check.warning('%d Datadog writes wait to be sent: %s', len(self._outbox), self._held_back)

    def waiting(self, key: str) -> bool:
        """A write for this target is queued, in flight or in the outbox: sent, but maybe not applied yet."""
        with self._cond:
            return key in self._queue or key in self._in_flight or key in self._behind or key in self._outbox

    def note_answer(self, answer: DatadogAnswer) -> None:
        """Datadog's rate-limit headers, on any answer (reads too): pace the pool, pause it when none is left."""
        headers = answer.headers
        limit, period = _number(headers.get('x-ratelimit-limit')), _number(headers.get('x-ratelimit-period'))
        remaining, reset = _number(headers.get('x-ratelimit-remaining')), _number(headers.get('x-ratelimit-reset'))
        if limit is None and period is None and remaining is None:
            return
        with self._cond:
            if answer.status == 429 and limit and period:
                self._spacing = period / limit  # Datadog's own rate, from now on
            if remaining is not None and remaining < 1 and reset is not None and answer.status != 429:
                self._paused_until = max(self._paused_until, time.monotonic() + reset)

    # -- placing and starting writes (every method below but `_dispatch`, `_work` and `_attempt` runs with
    # `_cond` held) -------------------------------------------------------------------------------------------
    def _place(self, job: _Job) -> None:
        """Where a write goes: behind an older write of the same target in flight, the outbox, or the queue."""
        if not self._held_back and time.monotonic() > self.deadline:
            self._hold_back(OUT_OF_TIME, backoff=0)
        key = job.write.key
        if key in self._in_flight or key in self._behind:
            self._behind[key] = job  # never two writes of one target at once: the newer must land last
        elif job.write.app_key and self.app_key_refused:
            if not job.queued:
                self._outbox.put(job.write, job.attempts, backoff=backoff(1))
        elif self._held_back:
            self._hold(job)
        else:
            self._queue[key] = job  # a newer write replaces a queued older one, in its place
            if self._idle:
                self._cond.notify()  # an idle worker takes it now, rather than when its IDLE_EXIT wait ends

    def _hold(self, job: _Job) -> None:
        if not job.queued:  # queued ones keep their place and their backoff
            self._outbox.put(job.write, job.attempts, backoff=self._hold_for)

    def _hold_back(self, reason: str, backoff: float) -> None:
        """Nothing more is tried this run: everything waiting goes to the outbox, due after `backoff` seconds."""
        if not self._held_back:  # the first reason stands (a refused key, the deadline, an outage)
            self._held_back, self._hold_for = reason, backoff
        waiting, self._queue = list(self._queue.values()), OrderedDict()
        for job in waiting:
            self._hold(job)
        self._wake_all()

    def _dispatch(self) -> None:
        """Get the queue moving: worker threads, or (concurrency 1) this thread, one write after the other."""
        if self._concurrency > 1:
            with self._cond:
                self._spawn_workers()
            return
        while True:
            with self._cond:
                job = self._next_job(wait_for_more=False)
            if job is None:
                return
            self._attempt(job)

    def _spawn_workers(self) -> None:
        wanted = min(self._concurrency, len(self._queue) + len(self._in_flight))
        while self._workers < wanted:
            self._workers += 1
            threading.Thread(target=self._work, name='dora_incidents-datadog', daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._next_job(wait_for_more=True)
                if job is None:
                    self._workers -= 1
                    self._wake_all()
                    return
            try:
                self._attempt(job)
            except BaseException as e:  # a bug, or a test's simulated crash: the caller raises it
                with self._cond:
                    self._failure = self._failure or e
                    self._workers -= 1
                    self._wake_all()
                return

    def _next_job(self, wait_for_more: bool) -> _Job | None:
        """The next write to start, once the window, a rate-limit pause and the pacing allow it; None: no more."""
        while True:
            if self._failure is not None:
                return None
            if not self._queue:
                if not wait_for_more or self._stopping or not self._idle_wait():
                    return None
                continue
            now = time.monotonic()
            if now > self.deadline:
                self._hold_back(OUT_OF_TIME, backoff=0)
                continue
            starts_at = max(self._paused_until, self._next_start)
            if starts_at > self.deadline:
                reason = 'the DORA API is rate-limited past this run (HTTP 429); retrying at its reset'
                self._hold_back(reason, backoff=starts_at - now)
                continue
            if len(self._in_flight) >= self._window or now < starts_at:
                self._cond.wait(starts_at - now if now < starts_at else None)
                continue
            key, job = self._queue.popitem(last=False)
            self._in_flight.add(key)
            self._next_start = now + self._spacing
            return job

    def _idle_wait(self) -> bool:
        """Wait for a write; False when none came within IDLE_EXIT."""
        self._idle += 1
        try:
            return self._cond.wait(IDLE_EXIT)
        finally:
            self._idle -= 1

    def _attempt(self, job: _Job) -> None:
        write = job.write
        try:
            answer = self._http.send(write.method, write.path, write.body, write.app_key)
            self.note_answer(answer)
        except BaseException:
            with self._cond:  # not known to have landed: it (or a newer write of its target) stays due
                self._in_flight.discard(write.key)
                self._queue[write.key] = self._behind.pop(write.key, job)
                self._queue.move_to_end(write.key, last=False)
                self._wake_all()
            raise
        with self._cond:  # answered and settled at once: a newer write of the target cannot overtake it
            self._in_flight.discard(write.key)
            self._settle(job, answer)
            newer = self._behind.pop(write.key, None)
            if newer is not None:
                self._place(newer)
            # This worker takes the next write itself: others only for places beyond that (the window widened).
            free = self._window - len(self._in_flight) - 1
            if free > 0 and self._queue:
                self._cond.notify(free)
            if len(self._queue) <= self._queued_most // 2:
                self._room.notify_all()

    # -- what an answer means -----------------------------------------------------------------------------
    def _settle(self, job: _Job, answer: DatadogAnswer) -> None:
        write, status, retry_in = job.write, answer.status, rate_limit_reset(answer)
        if status is not None and 200 <= status < 300:
            self._outbox.forget(write.key)
            self._widen()
        elif status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429):
            # The write itself is wrong (400), or its target is gone (404, 409, 422): retrying cannot help.
            self._outbox.forget(write.key)
            self._check.warning('Datadog rejected %s, dropping it: %s', write.label, answer.detail)
        elif status in (401, 403) and write.app_key:
            # Only the application key was refused: markings wait, failures (API key only) go on.
            self.rejected, self.app_key_refused = refusal(status, answer.detail, app_key=True), True
            self._outbox.put(write, job.attempts + 1, backoff=backoff(job.attempts + 1))
            for waiting in [job for job in self._queue.values() if job.write.app_key]:
                del self._queue[waiting.write.key]
                self._place(waiting)
        elif (
            status == 429
            and not self._held_back
            and retry_in is not None
            and job.rate_limited < RATE_LIMIT_RETRIES
            and time.monotonic() + retry_in < self.deadline
        ):
            # Rate-limited until a reset this run can wait for: the whole pool pauses, narrows, and tries again.
            job.rate_limited += 1
            self._slow_down(retry_in)
            self._queue[write.key] = job
            self._queue.move_to_end(write.key, last=False)
        else:
            if status in (401, 403):
                self.rejected = refusal(status, answer.detail, write.app_key)
            if status == 429 and retry_in is not None:  # past this run: everything waits for the reset
                self._paused_until = max(self._paused_until, time.monotonic() + retry_in)
            reason = self.rejected or f'the DORA API is unavailable ({answer.detail}); retrying with backoff'
            self._hold_back(reason, backoff=retry_in if retry_in is not None else backoff(1))
            wait = retry_in if retry_in is not None else backoff(job.attempts + 1)
            self._outbox.put(write, job.attempts + 1, backoff=wait)

    def _widen(self) -> None:
        if self._window >= self._concurrency:
            return
        if not self._slowed:
            self._window = self._concurrency  # the run's first answer: Datadog is there
            return
        self._successes += 1
        if self._successes >= self._window:  # additive increase after a 429's halving
            self._window, self._successes = self._window + 1, 0

    def _slow_down(self, wait: float) -> None:
        now = time.monotonic()
        if now >= self._paused_until:  # once per 429 episode, not once per write that was already in flight
            self._window, self._successes, self._slowed = max(1, self._window // 2), 0, True
        self._paused_until = max(self._paused_until, now + wait)
        self._cond.notify_all()

    def _wake_all(self) -> None:
        self._cond.notify_all()
        self._room.notify_all()

    def _wait_until_idle(self) -> None:
        while (self._queue or self._in_flight) and self._failure is None:
            self._spawn_workers()
            self._room.wait(0.5)
        self._raise_failure()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is None:
            return
        # What was not sent stays due in the outbox, whatever the caller does with the error.
        hold_for, self._hold_for = self._hold_for, 0.0
        for job in [*self._queue.values(), *self._behind.values()]:
            self._hold(job)
        self._queue, self._behind, self._hold_for = OrderedDict(), {}, hold_for
        raise failure

    def _settle_previous_run(self) -> None:
        """A run that raised may have left writes in flight: they are answered before the next run starts."""
        try:
            self._wait_until_idle()
        except Exception:  # raised to the run it belonged to already, or lost with it: its writes are in the outbox
            pass


def refusal(status: int | None, detail: str, app_key: bool) -> str:
    """What a refused key means to users: which option to check."""
    key = '`datadog_app_key` (or the Agent app_key)' if app_key else '`datadog_api_key` (or the Agent api_key)'
    return f'Datadog refused the key: check {key}: {detail}'


def rate_limit_reset(answer: DatadogAnswer) -> float | None:
    """Seconds until Datadog's rate limit resets, when it answered 429 naming it (`X-RateLimit-Reset`, else the
    period, `X-RateLimit-Period`)."""
    if answer.status != 429:
        return None
    for header in ('x-ratelimit-reset', 'x-ratelimit-period'):
        seconds = _number(answer.headers.get(header))
        if seconds is not None:
            return max(1.0, seconds)
    return None


def _number(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
