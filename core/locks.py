"""A Redis lock that guards hold state transitions: SET NX PX with a random token, released by
compare-and-delete, acquired with jittered backoff, counted in the Prometheus metrics
(core/metrics.py)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from core.backoff import backoff_delays
from core.metrics import LOCK_WAIT_SECONDS, LOCKS
from core.scripts import RedisClient, Scripts

LOCK_WAIT_S = 2.0  # how long a caller that must have a lock waits for it


class LockTimeout(RuntimeError):
    """The lock stayed taken for longer than the caller was willing to wait."""


def retry_with_backoff(attempt: Callable[[], bool], max_wait_s: float) -> bool:
    """Calls `attempt` until it succeeds or waiting more would pass `max_wait_s`, sleeping with
    full jitter between calls (5 ms, doubling up to 200 ms)."""
    started = time.monotonic()
    for delay in backoff_delays(0.005, 0.2):
        if attempt():
            return True
        if time.monotonic() - started + delay > max_wait_s:
            return False
        time.sleep(delay)
    return False  # unreachable: the delays never end


class RedisLock:
    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        key: str,
        ttl_ms: int,
        max_wait_s: float = LOCK_WAIT_S,
        kind: str = "lock",
    ) -> None:
        self.redis = redis
        self.kind = kind
        self.scripts = scripts
        self.key = key
        self.ttl_ms = ttl_ms
        self.max_wait_s = max_wait_s
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        started = time.monotonic()
        taken = retry_with_backoff(
            lambda: bool(self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms)),
            self.max_wait_s,
        )
        LOCKS.labels(self.kind, "acquired" if taken else "busy").inc()
        LOCK_WAIT_SECONDS.observe(time.monotonic() - started)
        return taken

    def release(self) -> bool:
        return bool(self.scripts.release_locks(keys=[self.key], args=[self.token]))


@contextmanager
def locked(lock: RedisLock) -> Iterator[RedisLock]:
    if not lock.acquire():
        raise LockTimeout(lock.key)
    try:
        yield lock
    finally:
        lock.release()
