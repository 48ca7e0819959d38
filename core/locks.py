"""A Redis lock that guards hold state transitions: SET NX PX with a random token, released by
compare-and-delete, acquired with jittered backoff, with counters in a metrics hash."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis

from core.scripts import Scripts


class LockTimeout(RuntimeError):
    """The lock stayed taken for longer than the caller was willing to wait."""


class RedisLock:
    def __init__(
        self,
        redis: Redis,
        scripts: Scripts,
        key: str,
        stats_key: str,
        ttl_ms: int,
        max_wait_s: float = 2.0,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.key = key
        self.stats_key = stats_key
        self.ttl_ms = ttl_ms
        self.max_wait_s = max_wait_s
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        started = time.monotonic()
        delay = 0.005
        while True:
            if self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self._record("acquired", started)
                return True
            if time.monotonic() - started + delay > self.max_wait_s:
                self._record("failed", started)
                return False
            time.sleep(random.uniform(0, delay))  # full jitter
            delay = min(delay * 2, 0.2)

    def release(self) -> bool:
        return bool(self.scripts.release_locks(keys=[self.key], args=[self.token]))

    def _record(self, outcome: str, started: float) -> None:
        waited_ms = int((time.monotonic() - started) * 1000)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(self.stats_key, outcome, 1)
        pipe.hincrby(self.stats_key, "wait_ms", waited_ms)
        pipe.execute()


@contextmanager
def locked(lock: RedisLock) -> Iterator[RedisLock]:
    if not lock.acquire():
        raise LockTimeout(lock.key)
    try:
        yield lock
    finally:
        lock.release()
