"""The durable outbox: idempotent Datadog writes that could not be made yet, kept across runs and restarts.

Bounded (the oldest is dropped and counted past MAX_OUTBOX), each write with its failed attempts and when it is
due again. Stored only when it changed. Reads the documents of 0.1.0 (DORA failures only) and 0.2.0.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from datadog_checks.dora_incidents.durable import DurableJson, LostWrite

OUTBOX_KEY = 'dora_outbox'
DORA_PATH = '/api/v2/dora/failure'
MAX_OUTBOX = 1_000
MIN_BACKOFF = 30
MAX_BACKOFF = 3_600


@dataclass(frozen=True)
class Write:
    """One idempotent write. A newer write with the same `key` replaces a queued older one."""

    key: str
    method: str  # POST, PATCH
    path: str
    body: dict
    label: str  # what users read: 'the DORA failure for incident pagerduty:Q1'
    app_key: bool = False  # needs DD-APPLICATION-KEY as well


class Outbox:
    def __init__(self, check):
        self._check = check
        self._store = DurableJson(check, OUTBOX_KEY, _from_document, _to_document)
        self._items: dict[str, dict] | None = None  # key -> {write, attempts, next_at}; oldest first
        self._dirty = False  # changed since it was last read or stored
        self._dropped = 0

    def __len__(self) -> int:
        return len(self._items or ())

    def __contains__(self, key: str) -> bool:
        return key in (self._items or ())

    def due(self) -> list[tuple[Write, int]]:
        """The writes due now, oldest first, with their failed attempts (read from the cache the first time)."""
        if self._items is None:
            self._items = self._load()
        now = time.time()
        return [(Write(**item['write']), item['attempts']) for item in self._items.values() if item['next_at'] <= now]

    def put(self, write: Write, attempts: int, backoff: float) -> None:
        """Keep a write, due in `backoff` seconds; it replaces an older write for the same target."""
        items = self._loaded()
        items.pop(write.key, None)
        # Its fields as they are (`asdict` would deep-copy the body, which nothing changes once made).
        items[write.key] = {'write': vars(write).copy(), 'attempts': attempts, 'next_at': time.time() + backoff}
        self._dirty = True
        while len(items) > MAX_OUTBOX:
            label = items.pop(next(iter(items)))['write']['label']
            self._dropped += 1
            self._check.warning('DORA outbox full (%d): dropped %s', MAX_OUTBOX, label)

    def forget(self, key: str) -> None:
        if self._loaded().pop(key, None) is not None:
            self._dirty = True

    def take_dropped(self) -> int:
        dropped, self._dropped = self._dropped, 0
        return dropped

    def save(self) -> None:
        if self._items is None or not self._dirty:
            return
        try:
            self._store.save(self._items)
            self._dirty = False
        except LostWrite as e:
            # Kept in memory until the Agent restarts; the cursor's own warning says what to fix.
            self._check.log.warning('The DORA outbox could not be saved in the persistent cache: %s', e)

    def _loaded(self) -> dict[str, dict]:
        if self._items is None:
            self._items = self._load()
        return self._items

    def _load(self) -> dict[str, dict]:
        try:
            return self._store.load() or {}
        except (RuntimeError, ValueError) as e:
            self._check.warning('The DORA outbox could not be read, starting it empty: %s', e)
            self._dirty = True
            return {}


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, MIN_BACKOFF * 2 ** max(0, attempts - 1))


def _to_document(items: dict) -> dict:
    return {'items': list(items.values())}


def _from_document(document: dict) -> dict:
    items = {}
    for item in document['items']:
        if not isinstance(item.get('attempts'), int) or not isinstance(item.get('next_at'), (int, float)):
            raise ValueError('an outbox item lacks `attempts` or `next_at`')
        if 'payload' in item:  # an outbox written by 0.1.0: DORA failures only
            failure_id = item['payload']['data']['attributes']['id']
            label = f'the DORA failure for incident {failure_id}'
            item['write'] = asdict(Write(failure_id, 'POST', DORA_PATH, item.pop('payload'), label))
        write = Write(**item['write'])  # raises TypeError on a malformed one
        items[write.key] = item
    return items
