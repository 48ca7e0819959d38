"""Moments: milliseconds since the epoch (the Lua scripts' clock) and ISO 8601 in UTC with a Z
(the API's)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import WithJsonSchema


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes, which are UTC here."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def to_ms(moment: datetime | None) -> int:
    moment = aware(moment)
    return 0 if moment is None else int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso(moment: datetime | None) -> str | None:
    moment = aware(moment)
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_seconds(seconds: float | None) -> str | None:
    """A Unix time in seconds (time.time()); None for none."""
    return iso(from_ms(int(seconds * 1000))) if seconds else None


def iso_ms(ms: int) -> str:
    """To the millisecond."""
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# How a moment is written in an answer's schema (the string is built by `iso` or `iso_ms`).
Moment = Annotated[str | None, WithJsonSchema({"type": ["string", "null"], "format": "date-time"})]
