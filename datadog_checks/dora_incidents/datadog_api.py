"""Datadog's API: idempotent writes (DORA failures, deployment markings) through one durable outbox, and reads.

A write that cannot be made now (Datadog unreachable, rate-limited, out of run time) waits in a bounded
outbox in the persistent cache and goes out first next run. Every write is idempotent (a DORA failure by
its id, a PATCH by its target), so replaying one after a timeout or a crash changes nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import requests

from datadog_checks.base.utils.http import RequestsWrapper

from .durable import DurableJson, LostWrite

DORA_PATH = '/api/v2/dora/failure'
OUTBOX_KEY = 'dora_outbox'
MAX_OUTBOX = 1_000
MIN_BACKOFF = 30
MAX_BACKOFF = 3_600
DEFAULT_TIMEOUT = 10


@dataclass(frozen=True)
class Write:
    """One idempotent write. A newer write with the same `key` replaces a queued older one."""

    key: str
    method: str  # POST, PATCH
    path: str
    body: dict
    label: str  # what users read: 'the DORA failure for incident pagerduty:Q1'
    app_key: bool = False  # needs DD-APPLICATION-KEY as well


class DatadogError(Exception):
    """A read from Datadog's API failed. The message names the cause, never a key."""


def datadog_http(check) -> RequestsWrapper:
    """HTTP to Datadog, apart from `self.http`: an instance's `headers`, auth, proxy and TLS options are for the
    incident tool. Datadog gets the Agent's own proxy settings, the instance's timeout and kept-alive connections."""
    options = {'persist_connections': True, 'timeout': check.config.timeout or DEFAULT_TIMEOUT}
    return RequestsWrapper(options, {}, logger=check.log)


class DatadogApi:
    def __init__(self, check, base_url: str, api_key: str, http, app_key: str | None = None):
        self._check = check
        self._http = http
        self._base_url = base_url
        self._headers = {'DD-API-KEY': api_key, 'Content-Type': 'application/json'}
        self._app_key = app_key
        self._store = DurableJson(check, OUTBOX_KEY, _outbox_from_document, _outbox_to_document)
        self._outbox: dict[str, dict] | None = None  # key -> {write, attempts, next_at}; oldest first
        self._dropped = 0
        self._deadline = math.inf
        # Once a write fails for a reason that will not pass within the run, the rest of the run queues
        # without trying: an unreachable Datadog must not cost a timeout per incident.
        self._held_back: str | None = None
        self._deferred_for_time = False
        self.rejected: str | None = None  # Datadog refused a key this run: a configuration problem

    @property
    def pending(self) -> int:
        return len(self._outbox or ())

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def begin(self, deadline: float) -> None:
        """Start a run: send what is due from the outbox (read from the cache on the first run), before anything new."""
        self._deadline, self._held_back, self._deferred_for_time, self.rejected = deadline, None, False, None
        if self._outbox is None:
            self._outbox = self._load()
        now = time.time()
        for item in [item for item in self._outbox.values() if item['next_at'] <= now]:
            self._deliver(Write(**item['write']), item['attempts'], queued=True)

    def send(self, write: Write) -> None:
        self._deliver(write, attempts=0, queued=False)

    def query(self, path: str, body: dict) -> dict:
        """A read that needs the application key (list deployments, list failures). Raises DatadogError."""
        status, detail, _, document = self._request('POST', path, body, app_key=True)
        if status != 200 or not isinstance(document, dict):
            raise DatadogError(self._describe(status, detail, app_key=True))
        return document

    def save(self) -> None:
        try:
            self._store.save(self._outbox)
        except LostWrite as e:
            # Kept in memory until the Agent restarts; the cursor's own warning says what to fix.
            self._check.log.warning('The DORA outbox could not be saved in the persistent cache: %s', e)

    def finish(self) -> None:
        self.save()
        if self._held_back and self._outbox:
            self._check.warning('%d Datadog writes wait to be sent: %s', len(self._outbox), self._held_back)

    def _load(self) -> dict[str, dict]:
        try:
            return self._store.load() or {}
        except (RuntimeError, ValueError) as e:
            self._check.warning('The DORA outbox could not be read, starting it empty: %s', e)
            return {}

    def _deliver(self, write: Write, attempts: int, queued: bool) -> None:
        if not self._held_back and time.monotonic() > self._deadline:
            self._held_back = 'the run reached `max_run_time`; they go out first next run'
            self._deferred_for_time = True
        if self._held_back:
            if not queued:  # queued ones keep their place and their backoff
                self._enqueue(write, attempts, backoff=0 if self._deferred_for_time else _backoff(1))
            return
        status, detail, retry_in, _ = self._request(write.method, write.path, write.body, write.app_key)
        if status in (200, 202):
            self._outbox.pop(write.key, None)
        elif status == 400:
            self._outbox.pop(write.key, None)
            self._check.warning('Datadog rejected %s, dropping it: %s', write.label, detail)
        else:
            if status in (401, 403):
                self.rejected = self._describe(status, detail, write.app_key)
            self._held_back = self.rejected or f'the DORA API is unavailable ({detail}); retrying with backoff'
            backoff = retry_in if retry_in is not None else _backoff(attempts + 1)
            self._enqueue(write, attempts + 1, backoff=backoff)

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
        while len(self._outbox) > MAX_OUTBOX:
            oldest = next(iter(self._outbox))
            label = self._outbox.pop(oldest)['write']['label']
            self._dropped += 1
            self._check.warning('DORA outbox full (%d): dropped %s', MAX_OUTBOX, label)


def _rate_limit_reset(response) -> float | None:
    """Seconds until Datadog's rate limit resets, when it answered 429 with `X-RateLimit-Reset`."""
    if response.status_code != 429:
        return None
    try:
        return max(1.0, float(response.headers.get('x-ratelimit-reset', '')))
    except ValueError:
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
            write = Write(failure_id, 'POST', DORA_PATH, item.pop('payload'), f'the DORA failure for incident {failure_id}')
            item['write'] = asdict(write)
        write = Write(**item['write'])  # raises TypeError on a malformed one
        outbox[write.key] = item
    return outbox
