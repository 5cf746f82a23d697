"""A bounded least-recently-used map for the store reader's per-worker cache.

Built on `collections.OrderedDict`, whose reordering runs in C: a hit costs
about half of `cachetools.LRUCache`'s and an insert that evicts about a
quarter, and every INVITE makes a few of these.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class Lru(Generic[Key, Value]):
    """At most `maxsize` entries; the least recently read or written goes first."""

    __slots__ = ("_entries", "maxsize")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"cache size must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self._entries: OrderedDict[Key, Value] = OrderedDict()

    def get(self, key: Key, default: Value) -> Value:
        """The entry for `key` (now the most recent), or `default`."""
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
            return entries[key]
        return default

    def put(self, key: Key, value: Value) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.maxsize:
            entries.popitem(last=False)

    def discard(self, key: Key) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
