"""JSON state in the Agent's persistent cache that a crash in the middle of a write cannot destroy.

The Agent writes each cache key's file in place, not atomically: an Agent killed mid-write leaves a
torn file. So every document is kept in two slots written in turn, each stamped with a sequence number.
A read takes the newest slot that parses; a torn write costs at most the latest save, whose work the
next run redoes (idempotently).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar('T')
SLOTS = ('a', 'b')


class LostWrite(Exception):
    """What was written to the persistent cache does not read back: the Agent dropped the write."""


class DurableJson(Generic[T]):
    def __init__(self, check, key: str, parse: Callable[[dict], T], dump: Callable[[T], dict]):
        self._check = check
        self._key = key
        self._parse = parse
        self._dump = dump
        self._sequence = 0
        self._good_slot: str | None = None  # the slot holding the document last read or written

    def load(self) -> T | None:
        """The newest readable document, or None when nothing was ever saved.

        Raises RuntimeError when the cache cannot be read, ValueError when every stored slot is unreadable.
        """
        problems, candidates = [], []
        for slot in SLOTS:
            text = self._check.read_persistent_cache(self._slot_key(slot))
            if not text:
                continue
            try:
                stored = json.loads(text)
                candidates.append((int(stored['sequence']), slot, stored['document']))
            except (ValueError, TypeError, KeyError) as e:
                problems.append(f'slot {slot}: {type(e).__name__}')
        # Later saves must outrank anything stored, readable or not.
        self._sequence = max((sequence for sequence, _, _ in candidates), default=0)
        self._good_slot = None
        for sequence, slot, document in sorted(candidates, reverse=True):
            try:
                value = self._parse(document)
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                problems.append(f'sequence {sequence}: {e}')
                continue
            self._good_slot = slot
            return value
        if problems:
            raise ValueError('; '.join(problems))
        return None

    def save(self, value: T) -> None:
        """Writes the slot not holding the last good document, so that one survives a torn write.

        Raises LostWrite when the write does not read back.
        """
        target = SLOTS[1] if self._good_slot == SLOTS[0] else SLOTS[0]
        self._sequence += 1
        text = json.dumps({'sequence': self._sequence, 'document': self._dump(value)}, separators=(',', ':'))
        self._check.write_persistent_cache(self._slot_key(target), text)
        try:
            stored = self._check.read_persistent_cache(self._slot_key(target))
        except RuntimeError as e:
            raise LostWrite(f'reading it back failed: {e}') from None
        if stored != text:
            raise LostWrite('the write did not read back')
        self._good_slot = target

    def _slot_key(self, slot: str) -> str:
        # Cache keys keep only [A-Za-z0-9_-].
        return f'{self._key}_{slot}'
