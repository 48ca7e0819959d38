"""The inventory's script calls whose KEYS and ARGV are long enough to get wrong: each names
them in order here, the one place that order is written. Python builds the lists by name
(`keys()`, `argv()`), and the script reads them by name too: core/scripts.py prepends
`KEY` and `ARG` (name -> position) to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from core.keys import ProductKeys


@dataclass(frozen=True)
class ScriptCall:
    """One call: its keys and arguments by name."""

    script: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]]
    ARGV: ClassVar[tuple[str, ...]]

    keys_by_name: Mapping[str, str]
    args: Mapping[str, object]

    def keys(self) -> list[str]:
        return self.ordered_keys(self.keys_by_name)

    @classmethod
    def ordered_keys(cls, keys_by_name: Mapping[str, str]) -> list[str]:
        """KEYS, in the script's order; keys a call does not have may only be the last ones."""
        present = [name in keys_by_name for name in cls.KEYS]
        if sorted(present, reverse=True) != present or set(keys_by_name) - set(cls.KEYS):
            raise ValueError(f"{cls.script}: keys {sorted(keys_by_name)} out of its order")
        return [keys_by_name[name] for name in cls.KEYS if name in keys_by_name]

    def argv(self) -> list[object]:
        if set(self.args) != set(self.ARGV):
            raise ValueError(f"{self.script}: arguments {sorted(set(self.args) ^ set(self.ARGV))}")
        return [self.args[name] for name in self.ARGV]


class ReserveCall(ScriptCall):
    script = "reserve"
    KEYS = (
        "stock", "holds", "deadlines", "users", "idempotency", "settle", "events",
        "purchase_rate",
        "seats", "seat_ranks", "free_seats", "passes_used", "claims",
    )  # fmt: skip
    ARGV = (
        "user", "quantity", "ticket", "hold_ms", "idempotency_key", "payment_method",
        "reclaim_limit", "rate_limit", "rate_window_ms", "seats", "best", "pass", "request_id",
        "buckets", "place", "claim_ms", "together_search",
    )  # fmt: skip


class RestoreCall(ScriptCall):
    script = "restore_stock"
    KEYS = (
        "stock", "holds", "deadlines", "users", "settle", "events", "idempotency", "returns",
        "rebuild_lease", "seats", "seat_ranks", "free_seats", "claims", "passes_used",
        "room", "queue", "early", "admits",  # the first bucket's only
    )  # fmt: skip
    ARGV = (
        "initial", "sold", "max_per_user", "starts_ms", "ends_ms", "price", "currency", "holds",
        "user_quantities", "idempotency", "terms_version", "settle_group", "refunded_marks",
        "lease", "seat_states", "sections", "ranks", "waiting_room", "admit_per_second",
        "buckets", "claims", "room_epoch", "passes_used",
    )  # fmt: skip


def bucket_keys(k: ProductKeys, names: tuple[str, ...]) -> dict[str, str]:
    """The keys of those names that are the bucket's own (ProductKeys' properties)."""
    return {name: getattr(k, name) for name in names if isinstance(getattr(k, name, None), str)}


def reserve_key_map(k: ProductKeys, user_id: int) -> dict[str, str]:
    """reserve.lua's keys, by name, for one buyer in one bucket."""
    return bucket_keys(k, ReserveCall.KEYS) | {"purchase_rate": k.purchase_rate(user_id)}


def restore_key_map(k: ProductKeys, with_room: bool) -> dict[str, str]:
    """restore_stock.lua's keys, by name; the room's for the first bucket only."""
    room = ("room", "queue", "early", "admits")
    names = tuple(n for n in RestoreCall.KEYS if with_room or n not in room)
    return bucket_keys(k, names)


LAYOUTS: dict[str, type[ScriptCall]] = {c.script: c for c in (ReserveCall, RestoreCall)}
