"""Datadog's API: idempotent writes (DORA failures, deployment markings) through one durable outbox, and reads.

A write that cannot be made now (Datadog unreachable, rate-limited past the run, out of run time) waits
in a bounded outbox in the persistent cache and goes out first next run. Every write is idempotent (a DORA
failure by its id, a PATCH by its target), so replaying one after a timeout or a crash changes nothing.

Writes go out `dora_concurrency` at a time over kept-alive connections (`1`: one after the other, in the
caller's thread). `send()` only queues a write; `save()` and `finish()` wait until every queued write
has been answered, so the outbox they store is exact. Each run starts with one write alone: an
unreachable Datadog costs one timeout, not one per worker. A `429` that names its reset pauses the
whole pool until then and narrows it (it widens again with successes); a reset past the run's deadline
queues the write for the next run, due at that reset.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import requests

from datadog_checks.base.utils.http import RequestsWrapper

from .durable import DurableJson, LostWrite

DORA_PATH = '/api/v2/dora/failure'
OUTBOX_KEY = 'dora_outbox'
MAX_OUTBOX = 1_000
MIN_BACKOFF = 30
MAX_BACKOFF = 3_600
DEFAULT_TIMEOUT = 10
DEFAULT_CONCURRENCY = 8
# Writes queued per worker before `send()` waits: what is held in memory stays flat however large the backlog.
QUEUED_PER_WORKER = 16
# A worker with nothing to do for this long ends; the next write starts another.
IDLE_EXIT = 2.0
# A write answered `429` this many times in one run waits in the outbox for the next run.
RATE_LIMIT_RETRIES = 3


@dataclass(frozen=True)
class Write:
    """One idempotent write. A newer write with the same `key` replaces a queued older one."""

    key: str
    method: str  # POST, PATCH
    path: str
    body: dict
    label: str  # what users read: 'the DORA failure for incident pagerduty:Q1'
    app_key: bool = False  # needs DD-APPLICATION-KEY as well


@dataclass
class _Job:
    write: Write
    attempts: int  # failed attempts so far, across runs: the backoff's exponent
    queued: bool  # it is in the outbox already (sent again from there); a new write is not
    rate_limited: int = 0  # 429s waited out in this run


class DatadogError(Exception):
    """A read from Datadog's API failed. The message names the cause, never a key."""


def datadog_http(check) -> RequestsWrapper:
    """HTTP to Datadog, apart from `self.http`: an instance's `headers`, auth, proxy and TLS options are for the
    incident tool. Datadog gets the Agent's own proxy settings, the instance's timeout and kept-alive connections."""
    options = {'persist_connections': True, 'timeout': check.config.timeout or DEFAULT_TIMEOUT}
    http = RequestsWrapper(options, {}, logger=check.log)
    _environment_read_once(http.session)
    return http


def _environment_read_once(session: requests.Session) -> None:
    """requests reads the proxy variables (`HTTPS_PROXY`, `NO_PROXY`, ...) and `REQUESTS_CA_BUNDLE` from the
    environment on every request, scanning all of it twice: a fifth of the CPU of a DORA post. The Agent's
    environment does not change while it runs, and every write goes to one host: read once per host."""
    merge = session.merge_environment_settings
    merged: dict[tuple, dict] = {}

    def merge_once(url, proxies, stream, verify, cert):
        key = (urlsplit(url)[:2], tuple(sorted((proxies or {}).items())), stream, verify, cert)
        settings = merged.get(key)
        if settings is None:
            settings = merged[key] = merge(url, proxies, stream, verify, cert)
        return {**settings, 'proxies': dict(settings['proxies'])}

    session.merge_environment_settings = merge_once


class DatadogApi:
    def __init__(
        self, check, base_url: str, api_key: str, http, app_key: str | None = None, concurrency: int | None = None
    ):
        self._check = check
        self._http = http
        self._base_url = base_url
        self._headers = {'DD-API-KEY': api_key, 'Content-Type': 'application/json'}
        self._app_key = app_key
        self._store = DurableJson(check, OUTBOX_KEY, _outbox_from_document, _outbox_to_document)
        self._outbox: dict[str, dict] | None = None  # key -> {write, attempts, next_at}; oldest first
        self._dirty = False  # the outbox changed since it was last read or stored
        self._dropped = 0
        self._deadline = math.inf
        # Once a write fails for a reason that will not pass within the run, the rest of the run queues
        # without trying: an unreachable Datadog must not cost a timeout per incident.
        self._held_back: str | None = None
        self._hold_for = 0.0  # the backoff of a new write held back: 0 when out of time, the reset when rate-limited
        self.rejected: str | None = None  # Datadog refused a key this run: a configuration problem
        # The application key alone was refused: writes that need it wait, the API key's go on.
        self._app_key_refused = False
        # The pool. Everything below is guarded by `_cond`.
        self._concurrency = max(1, concurrency or _configured_concurrency(check))
        self._cond = threading.Condition()
        self._queue: OrderedDict[str, _Job] = OrderedDict()  # not started yet, oldest first
        self._in_flight: set[str] = set()
        self._behind: dict[str, _Job] = {}  # a newer write for a key in flight: it goes once that one is answered
        self._workers = 0
        self._stopping = False
        self._window = 1  # writes allowed in flight: 1 until Datadog answers a run's first, then `concurrency`
        self._slowed = False  # a 429 narrowed the window this run: it widens by one per window of successes
        self._successes = 0
        self._paused_until = 0.0  # monotonic: no write starts before (Datadog's rate-limit reset)
        self._spacing = 0.0  # seconds between starts, from X-RateLimit-Limit / X-RateLimit-Period
        self._next_start = 0.0
        self._failure: BaseException | None = None  # an unexpected error in a worker, raised to the caller

    @property
    def pending(self) -> int:
        return len(self._outbox or ())

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def begin(self, deadline: float) -> None:
        """Start a run: send what is due from the outbox (read from the cache on the first run), before anything new.

        Returns once each of those writes is answered, or held back (out of time, Datadog unavailable)."""
        with self._cond:
            self._settle_previous_run()
            self._deadline, self._held_back, self._hold_for, self.rejected = deadline, None, 0.0, None
            self._app_key_refused = False
            self._window, self._slowed, self._successes, self._stopping = 1, False, 0, False
            if self._outbox is None:
                self._outbox = self._load()
            self._fit_connection_pool()
            now = time.time()
            for item in [item for item in self._outbox.values() if item['next_at'] <= now]:
                self._place(_Job(Write(**item['write']), item['attempts'], queued=True))
        self._dispatch()
        with self._cond:
            # Before the run reads anything: a run that spends its budget on the outbox reads nothing new, so
            # what waits never outgrows the outbox however slow Datadog is.
            self._wait_until_idle()

    def send(self, write: Write) -> None:
        """Queue a write; it goes out in the background (at once, with `dora_concurrency: 1`)."""
        with self._cond:
            while (
                self._concurrency > 1
                and len(self._queue) >= QUEUED_PER_WORKER * self._concurrency
                and self._failure is None
                and not self._held_back
            ):
                self._spawn_workers()
                self._cond.wait(0.5)
            self._raise_failure()
            self._place(_Job(write, attempts=0, queued=False))
        self._dispatch()

    def query(self, path: str, body: dict) -> dict:
        """A read that needs the application key (list deployments, list failures). Raises DatadogError."""
        if time.monotonic() > self._deadline:
            raise DatadogError('the run reached `max_run_time`')
        if self._app_key_refused:
            raise DatadogError(self.rejected or 'Datadog refused the application key')
        status, detail, _, document = self._request('POST', path, body, app_key=True)
        if status != 200 or not isinstance(document, dict):
            raise DatadogError(self._describe(status, detail, app_key=True))
        return document

    def save(self) -> None:
        """Wait for every queued write to be answered, then store the outbox if it changed."""
        with self._cond:
            self._wait_until_idle()
            if self._outbox is None or not self._dirty:
                return
            try:
                self._store.save(self._outbox)
                self._dirty = False
            except LostWrite as e:
                # Kept in memory until the Agent restarts; the cursor's own warning says what to fix.
                self._check.log.warning('The DORA outbox could not be saved in the persistent cache: %s', e)

    def finish(self) -> None:
        self.save()
        with self._cond:
            self._stopping = True  # idle workers end now rather than after IDLE_EXIT
            self._cond.notify_all()
        if self._held_back and self._outbox:
            self._check.warning('%d Datadog writes wait to be sent: %s', len(self._outbox), self._held_back)

    def _load(self) -> dict[str, dict]:
        try:
            return self._store.load() or {}
        except (RuntimeError, ValueError) as e:
            self._check.warning('The DORA outbox could not be read, starting it empty: %s', e)
            self._dirty = True
            return {}

    # -- the pool (every method below but `_dispatch`, `_work` and `_request` runs with `_cond` held) ----------
    def _place(self, job: _Job) -> None:
        """Where a write goes: behind an older write of the same target in flight, the outbox, or the queue."""
        if not self._held_back and time.monotonic() > self._deadline:
            self._hold_back('the run reached `max_run_time`; they go out first next run', backoff=0)
        key = job.write.key
        if key in self._in_flight or key in self._behind:
            self._behind[key] = job  # never two writes of one target at once: the newer must land last
        elif job.write.app_key and self._app_key_refused:
            if not job.queued:
                self._enqueue(job.write, job.attempts, backoff=_backoff(1))
        elif self._held_back:
            self._hold(job)
        else:
            self._queue[key] = job  # a newer write replaces a queued older one, in its place

    def _hold(self, job: _Job) -> None:
        if not job.queued:  # queued ones keep their place and their backoff
            self._enqueue(job.write, job.attempts, backoff=self._hold_for)

    def _hold_back(self, reason: str, backoff: float) -> None:
        """Nothing more is tried this run: everything waiting goes to the outbox, due after `backoff` seconds."""
        if not self._held_back:  # the first reason stands (a refused key, the deadline, an outage)
            self._held_back, self._hold_for = reason, backoff
        waiting, self._queue = list(self._queue.values()), OrderedDict()
        for job in waiting:
            self._hold(job)
        self._cond.notify_all()

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
                    self._cond.notify_all()
                    return
            try:
                self._attempt(job)
            except BaseException as e:  # a bug, or a test's simulated crash: the caller raises it
                with self._cond:
                    self._failure = self._failure or e
                    self._workers -= 1
                    self._cond.notify_all()
                return

    def _next_job(self, wait_for_more: bool) -> _Job | None:
        """The next write to start, once the window, a rate-limit pause and the pacing allow it; None: no more."""
        while True:
            if self._failure is not None:
                return None
            if not self._queue:
                if not wait_for_more or self._stopping or not self._cond.wait(IDLE_EXIT):
                    return None
                continue
            now = time.monotonic()
            if now > self._deadline:
                self._hold_back('the run reached `max_run_time`; they go out first next run', backoff=0)
                continue
            starts_at = max(self._paused_until, self._next_start)
            if starts_at > self._deadline:
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

    def _attempt(self, job: _Job) -> None:
        write = job.write
        try:
            answer = self._request(write.method, write.path, write.body, write.app_key)
        except BaseException:
            with self._cond:  # not known to have landed: it (or a newer write of its target) stays due
                self._in_flight.discard(write.key)
                self._queue[write.key] = self._behind.pop(write.key, job)
                self._queue.move_to_end(write.key, last=False)
                self._cond.notify_all()
            raise
        with self._cond:  # answered and settled at once: a newer write of the target cannot overtake it
            self._in_flight.discard(write.key)
            self._settle(job, *answer[:3])
            newer = self._behind.pop(write.key, None)
            if newer is not None:
                self._place(newer)
            self._cond.notify_all()

    def _settle(self, job: _Job, status: int | None, detail: str, retry_in: float | None) -> None:
        write = job.write
        if status in (200, 202):
            self._forget(write.key)
            self._widen()
        elif status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429):
            # The write itself is wrong (400), or its target is gone (404, 409, 422): retrying cannot help.
            self._forget(write.key)
            self._check.warning('Datadog rejected %s, dropping it: %s', write.label, detail)
        elif status in (401, 403) and write.app_key:
            # Only the application key was refused: markings wait, failures (API key only) go on.
            self.rejected, self._app_key_refused = self._describe(status, detail, app_key=True), True
            self._enqueue(write, job.attempts + 1, backoff=_backoff(job.attempts + 1))
            for waiting in [job for job in self._queue.values() if job.write.app_key]:
                del self._queue[waiting.write.key]
                self._place(waiting)
        elif (
            status == 429
            and not self._held_back
            and retry_in is not None
            and job.rate_limited < RATE_LIMIT_RETRIES
            and time.monotonic() + retry_in < self._deadline
        ):
            # Rate-limited until a reset this run can wait for: the whole pool pauses, narrows, and tries again.
            job.rate_limited += 1
            self._slow_down(retry_in)
            self._queue[write.key] = job
            self._queue.move_to_end(write.key, last=False)
        else:
            if status in (401, 403):
                self.rejected = self._describe(status, detail, write.app_key)
            if status == 429 and retry_in is not None:  # past this run: everything waits for the reset
                self._paused_until = max(self._paused_until, time.monotonic() + retry_in)
            reason = self.rejected or f'the DORA API is unavailable ({detail}); retrying with backoff'
            self._hold_back(reason, backoff=retry_in if retry_in is not None else _backoff(1))
            self._enqueue(
                write, job.attempts + 1, backoff=retry_in if retry_in is not None else _backoff(job.attempts + 1)
            )

    def _widen(self) -> None:
        if self._window >= self._concurrency:
            return
        if not self._slowed:
            self._fit_connection_pool()  # the first answer of a run: the HTTPS adapter exists now
            self._window = self._concurrency
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

    def _note_rate_limit(self, response) -> None:
        """Datadog's rate-limit headers, on any answer: pace the pool, and pause it when no request is left."""
        headers = response.headers
        limit, period = _number(headers.get('x-ratelimit-limit')), _number(headers.get('x-ratelimit-period'))
        remaining, reset = _number(headers.get('x-ratelimit-remaining')), _number(headers.get('x-ratelimit-reset'))
        if limit is None and period is None and remaining is None:
            return
        with self._cond:
            if response.status_code == 429 and limit and period:
                self._spacing = period / limit  # Datadog's own rate, from now on
            if remaining is not None and remaining < 1 and reset is not None and response.status_code != 429:
                self._paused_until = max(self._paused_until, time.monotonic() + reset)

    def _forget(self, key: str) -> None:
        if self._outbox.pop(key, None) is not None:
            self._dirty = True

    def _wait_until_idle(self) -> None:
        while (self._queue or self._in_flight) and self._failure is None:
            self._spawn_workers()
            self._cond.wait(0.5)
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

    def _fit_connection_pool(self) -> None:
        """One kept-alive connection per concurrent write: urllib3 keeps 10 per host and discards the rest."""
        session = getattr(self._http, 'session', None)
        if self._concurrency <= 1 or session is None:
            return
        for prefix in ('http://', 'https://'):
            adapter = session.adapters.get(prefix)
            if isinstance(adapter, requests.adapters.HTTPAdapter) and adapter._pool_maxsize < self._concurrency:
                adapter.init_poolmanager(adapter._pool_connections, self._concurrency, block=adapter._pool_block)

    def _request(self, method: str, path: str, body: dict, app_key: bool):
        """(status, what to tell users, the wait Datadog asked for, the JSON answer or None)."""
        url = self._base_url + path
        headers = {**self._headers, 'DD-APPLICATION-KEY': self._app_key or ''} if app_key else self._headers
        try:
            response = getattr(self._http, method.lower())(url, json=body, extra_headers=headers)
        except requests.Timeout:
            return None, f'{url} did not answer in time', None, None
        except requests.RequestException as e:
            return None, f'cannot reach {url}: {type(e).__name__}', None, None
        self._note_rate_limit(response)
        try:
            document = response.json()
        except ValueError:
            document = None
        detail = f'HTTP {response.status_code}: {response.text[:300]}'
        return response.status_code, detail, _rate_limit_reset(response), document

    @staticmethod
    def _describe(status: int | None, detail: str, app_key: bool) -> str:
        if status in (401, 403):
            key = '`datadog_app_key` (or the Agent app_key)' if app_key else '`datadog_api_key` (or the Agent api_key)'
            return f'Datadog refused the key: check {key}: {detail}'
        return f'the Datadog API failed: {detail}'

    def _enqueue(self, write: Write, attempts: int, backoff: float) -> None:
        self._outbox.pop(write.key, None)  # a newer write for the same target replaces the older one
        self._outbox[write.key] = {'write': asdict(write), 'attempts': attempts, 'next_at': time.time() + backoff}
        self._dirty = True
        while len(self._outbox) > MAX_OUTBOX:
            oldest = next(iter(self._outbox))
            label = self._outbox.pop(oldest)['write']['label']
            self._dropped += 1
            self._check.warning('DORA outbox full (%d): dropped %s', MAX_OUTBOX, label)


def _configured_concurrency(check) -> int:
    config = getattr(check, 'config', None)
    return getattr(config, 'dora_concurrency', None) or DEFAULT_CONCURRENCY


def _number(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _rate_limit_reset(response) -> float | None:
    """Seconds until Datadog's rate limit resets, when it answered 429 naming it (`X-RateLimit-Reset`, else
    the period, `X-RateLimit-Period`)."""
    if response.status_code != 429:
        return None
    for header in ('x-ratelimit-reset', 'x-ratelimit-period'):
        seconds = _number(response.headers.get(header))
        if seconds is not None:
            return max(1.0, seconds)
    return None


def _backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, MIN_BACKOFF * 2 ** max(0, attempts - 1))


def _outbox_to_document(outbox: dict) -> dict:
    return {'items': list(outbox.values())}


def _outbox_from_document(document: dict) -> dict:
    outbox = {}
    for item in document['items']:
        if not isinstance(item.get('attempts'), int) or not isinstance(item.get('next_at'), (int, float)):
            raise ValueError('an outbox item lacks `attempts` or `next_at`')
        if 'payload' in item:  # an outbox written by 0.1.0: DORA failures only
            failure_id = item['payload']['data']['attributes']['id']
            write = Write(
                failure_id, 'POST', DORA_PATH, item.pop('payload'), f'the DORA failure for incident {failure_id}'
            )
            item['write'] = asdict(write)
        write = Write(**item['write'])  # raises TypeError on a malformed one
        outbox[write.key] = item
    return outbox
