"""A least-recently-used cache of rendered audio, bounded in bytes.

Why bytes and not entries: answers range from a word to minutes of audio, so an entry count
says nothing about memory. Keys hold everything that changes the bytes (text, voice, format,
engine digest), so a rebuilt engine never serves stale audio. Used from the event loop only,
so it needs no lock.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class ByteLRU:
    """``get``/``put`` of bytes values; the oldest entries go first when over ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything for one item
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old)
        self._items[key] = value
        self.size += len(value)
        while self.size > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)
