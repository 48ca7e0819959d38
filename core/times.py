"""Moments as the API writes them: ISO 8601, UTC, with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime | None) -> str | None:
    """SQLite hands back naive datetimes, which are UTC here."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch (the Lua scripts' clock), to the millisecond."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
