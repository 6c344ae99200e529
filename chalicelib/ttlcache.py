"""A small thread-safe per-process cache with a time-to-live (for decrypted secrets and id lookups)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Entries live `ttl` seconds; the oldest go first beyond `max_entries`."""

    def __init__(self, ttl: float, *, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The live value for `key`, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < self.clock():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: K, value: V) -> None:
        """Remember `value` for `ttl` seconds."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (self.clock() + self.ttl, value)

    def drop(self, key: K) -> None:
        """Forget `key`."""
        with self._lock:
            self._entries.pop(key, None)
