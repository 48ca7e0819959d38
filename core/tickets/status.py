"""The statuses of a ticket: one vocabulary for Python, SQL and the Lua scripts, whose own open
set (`OPEN` in core/lua/lib.lua) a test compares with `OPEN_STATUSES`."""

from __future__ import annotations

import enum


class OrderStatus(enum.StrEnum):
    RESERVED = "reserved"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"

    @property
    def is_terminal(self) -> bool:
        return self not in OPEN_STATUSES


# A hold still waiting for its outcome: it keeps its units held, and it has a deadline.
OPEN_STATUSES: tuple[OrderStatus, ...] = (
    OrderStatus.RESERVED,
    OrderStatus.PROCESSING,
    OrderStatus.REQUIRES_ACTION,
)
