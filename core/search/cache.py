"""This process's recent search answers. A search storm (an on-sale, everyone typing the same
artist) asks the same few questions thousands of times a second; SQL answers each once per
change of the catalogue.

An answer is kept under the catalogue's version, a Redis counter every change of an event moves
after its commit (`changed`), and is used only while the version is the same: a request reads
the version before SQL, so an answer computed before a commit is never kept past the change.
`max_age_s` bounds what a change made around the API (by hand in SQL, or while Redis did not
answer its bump) can leave behind. Without Redis, nothing is cached."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import RedisError

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry:
    version: bytes
    at: float
    value: Any


class SearchCache:
    def __init__(self, redis: Redis, version_key: str, entries: int, max_age_s: float) -> None:
        self.redis = redis
        self.version_key = version_key
        self.entries = entries
        self.max_age_s = max_age_s
        self._kept: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._guard = threading.Lock()

    def answer(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The answer kept for `key` under the current version, else `compute()`'s (kept)."""
        if self.entries <= 0:
            return compute()
        try:
            version = self.redis.get(self.version_key) or b"0"
        except RedisError:
            return compute()
        now = time.monotonic()
        with self._guard:
            kept = self._kept.get(key)
            if kept is not None and kept.version == version and now - kept.at < self.max_age_s:
                self._kept.move_to_end(key)
                return kept.value
        value = compute()
        with self._guard:
            self._kept[key] = _Entry(version, now, value)
            self._kept.move_to_end(key)
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)
        return value

    def changed(self) -> None:
        """The catalogue changed (call after the commit): every process's answers are stale."""
        self.redis.incr(self.version_key)
