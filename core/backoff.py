"""Bounded exponential backoff, and the outage of a server a long-running loop depends on.

A loop that must outlive a Redis or database stall, restart or refused connection (the
scheduler, the RQ workers, the web's settlement kicker and revocation watch) wraps its step in
`ride_out`: each failure waits a jittered delay that doubles up to a cap, and the outage is
logged twice, when it begins and when it ends, never once per retry.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

T = TypeVar("T")

OUTAGE_FIRST_S = 0.5  # the first wait after a failure
OUTAGE_CAP_S = 10.0  # no wait is longer: a server back is noticed within this
# A server that does not answer, refuses, was restarted or failed over (a former primary now a
# read-only replica); not the errors of a wrong command, which retrying would repeat.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OperationalError,
    InterfaceError,
    DisconnectionError,
    OSError,
)


def backoff_delays(first_s: float, cap_s: float) -> Iterator[float]:
    """Full-jitter delays: each drawn below a bound that starts at `first_s` and doubles up
    to `cap_s`."""
    bound = first_s
    while True:
        yield random.uniform(0, bound)
        bound = min(bound * 2, cap_s)


class Outage:
    """What a loop knows of the server it depends on: up, or down since a failure."""

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        first_s: float = OUTAGE_FIRST_S,
        cap_s: float = OUTAGE_CAP_S,
    ) -> None:
        self.what = what
        self.log = log
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0
        self._since = 0.0
        self._next_try = 0.0
        self._delays = backoff_delays(first_s, cap_s)

    @property
    def down(self) -> bool:
        return self.failures > 0

    def due(self) -> bool:
        """Whether a periodic task should try now: always while up; once the wait after the
        last failure has passed while down."""
        return time.monotonic() >= self._next_try

    def failed(self, error: BaseException) -> float:
        """Notes a failure (the first of an outage is logged); answers how long to wait before
        the next try."""
        if not self.down:
            self._since = time.monotonic()
            self._delays = backoff_delays(self.first_s, self.cap_s)
            reason = f"{type(error).__name__}: {error}"
            self.log.warning("%s: outage began (%s); retrying", self.what, reason)
        self.failures += 1
        delay = next(self._delays)
        self._next_try = time.monotonic() + delay
        return delay

    def recovered(self) -> None:
        """Notes a success; the end of an outage is logged."""
        if self.down:
            lasted = time.monotonic() - self._since
            self.log.warning(
                "%s: outage ended after %.1f s, %d failed tries", self.what, lasted, self.failures
            )
            self.failures = 0


def ride_out(
    step: Callable[[], T],
    outage: Outage,
    wait: Callable[[float], object] = time.sleep,
) -> T:
    """`step`'s result, calling it again after each outage error until it succeeds. Other
    errors propagate."""
    while True:
        try:
            result = step()
        except OUTAGE_ERRORS as error:
            wait(outage.failed(error))
            continue
        outage.recovered()
        return result
