"""Redis' clock, the one the scripts decide deadlines and sale windows by."""

from __future__ import annotations

import time

from core.scripts import RedisClient

CLOCK_REFRESH_S = 30.0


def now_ms() -> int:
    """This process's own clock; decisions about deadlines use RedisClock instead."""
    return int(time.time() * 1000)


class RedisClock:
    """Redis' clock, the one the scripts decide deadlines and sale windows by, read in this
    process without a round trip: the offset to the local clock is measured now and then."""

    def __init__(self, redis: RedisClient, refresh_s: float = CLOCK_REFRESH_S) -> None:
        self.redis = redis
        self.refresh_s = refresh_s
        self._offset_ms = 0.0
        self._measured_at = -float("inf")

    def now_ms(self) -> int:
        if time.monotonic() - self._measured_at > self.refresh_s:
            self._measure()
        return int(time.time() * 1000 + self._offset_ms)

    def _measure(self) -> None:
        before = time.time()
        seconds, micros = self.redis.time()
        after = time.time()
        redis_ms = int(seconds) * 1000 + int(micros) / 1000
        self._offset_ms = redis_ms - (before + after) / 2 * 1000
        self._measured_at = time.monotonic()
