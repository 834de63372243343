"""A bounded, thread-safe, least-recently-used map for process-wide caches of loaded things (models, rendered
thumbnails): whatever is cached, at most ``maxsize`` entries stay referenced. A leaf module."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = int(maxsize)
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def get_or_create(self, key: K, build: Callable[[], V]) -> V:
        """The cached value, else ``build()`` (called under the lock, so one build per key at a time) kept."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            value = build()
            self.put(key, value)
            return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


__all__ = ["BoundedCache"]
