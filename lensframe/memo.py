"""A small thread-safe LRU memo, used for what is kept in memory between clicks (focus results,
lookups, probe tokens, generations, causal traces)."""
from __future__ import annotations

import threading
from collections import OrderedDict


class Memo:
    """A thread-safe LRU memo: `get` moves a hit to the end (None on a miss), `put` evicts the oldest
    beyond `size`. The executor's memos (focus results, lookups, probe tokens, generations) are all
    of this kind; each has its own lock, so filling one never waits on another."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
