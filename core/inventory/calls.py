"""The inventory's script calls: each names its script's KEYS and ARGV in order, the one place
that order is written (see core/script_call.py). Key names are ProductKeys' where they can be,
so `bucket_keys` builds a call's keys from a bucket's."""

from __future__ import annotations

from core.keys import ProductKeys
from core.script_call import ScriptCall

SEAT_KEYS = ("seats", "seat_ranks", "free_seats")  # lib.lua's seat_keys(KEY.seats) reads them
ROOM_KEYS = ("room", "queue", "early", "admits")  # lib.lua's room_keys(KEY.room) reads them
HOLD_KEYS = ("stock", "holds", "deadlines", "users", "events", *SEAT_KEYS)


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


class AdoptHoldCall(ScriptCall):
    script = "adopt_hold"
    KEYS = ("stock", "holds", "deadlines", "users", "settle", "events", "final", "idempotency",
            *SEAT_KEYS, "passes_used")  # fmt: skip
    ARGV = ("record", "placement")  # the hold's JSON record; 'own' or 'away' (its buyer's bucket)


class AwaitActionCall(ScriptCall):
    script = "await_action"
    KEYS = ("holds",)
    ARGV = ("ticket", "client_secret")


class BeginReturnCall(ScriptCall):
    script = "begin_return"
    KEYS = ("stock", "returns")
    ARGV = ("ticket", "user", "quantity", "seats")  # seats: a JSON list, or ''


class BeginSettlementCall(ScriptCall):
    script = "begin_settlement"
    KEYS = HOLD_KEYS
    ARGV = ("ticket", "lease_ms")


class ExpireHoldsCall(ScriptCall):
    script = "expire_holds"
    KEYS = HOLD_KEYS
    ARGV = ("limit",)


class FinishHoldCall(ScriptCall):
    script = "finish_hold"
    KEYS = HOLD_KEYS
    ARGV = ("ticket", "outcome", "reason", "only_from")  # '' for none (reason, only_from)


class ForgetHoldCall(ScriptCall):
    script = "forget_hold"
    KEYS = ("stock", "holds", "settle", "final")
    # entry_id, status, reason, payment_status: '' for none
    ARGV = ("ticket", "entry_id", "group", "status", "reason", "final_ttl", "payment_status")


class InventorySnapshotCall(ScriptCall):
    script = "inventory_snapshot"
    KEYS = ("stock", "holds", "returns")


class RepairSeatsCall(ScriptCall):
    script = "repair_seats"
    KEYS = ("stock", "events", *SEAT_KEYS)
    ARGV = ("version", "fixes")  # fixes: a JSON object, seat -> state


class RepairStockCall(ScriptCall):
    script = "repair_stock"
    KEYS = ("stock", "events")
    ARGV = ("version", "initial", "sold", "held")


class ResolveClaimsCall(ScriptCall):
    script = "resolve_claims"
    KEYS = ("stock", "claims", "users", "passes_used")
    ARGV_EACH = ("ticket", "action", "counted")  # counted: 'user:quantity' (for returned)


class ReturnUnitsCall(ScriptCall):
    script = "return_units"
    KEYS = ("stock", "returns", "users", "events", *SEAT_KEYS)
    ARGV = ("ticket",)


class RoomBoardCall(ScriptCall):
    script = "room_board"
    KEYS = ("stock", *ROOM_KEYS)
    ARGV = ("other_buckets",)  # a split product's other buckets' 'available:held', or ''


class RoomJoinCall(ScriptCall):
    script = "room_join"
    KEYS = RoomBoardCall.KEYS
    ARGV = ("buyer", "other_buckets")


class RoomStatusCall(ScriptCall):
    script = "room_status"
    KEYS = RoomBoardCall.KEYS
    ARGV = ("buyer", "other_buckets")


class TicketViewCall(ScriptCall):
    script = "ticket_view"
    KEYS = ("holds", "final")
    ARGV = ("ticket",)


class UpdateProductCall(ScriptCall):
    script = "update_product"
    KEYS = ("stock", "events", *ROOM_KEYS)  # the room's: the first bucket's only
    ARGV = (
        "initial", "starts_ms", "ends_ms", "max_per_user", "price", "terms_version", "currency",
        "waiting_room", "admit_per_second", "room_epoch",
    )  # fmt: skip
    # waiting_room: '1' or '0'; room_epoch: a later bucket's ('' while the first's is unknown)


def bucket_keys(k: ProductKeys, names: tuple[str, ...]) -> dict[str, str]:
    """The keys of those names that are the bucket's own (ProductKeys' properties)."""
    return {name: getattr(k, name) for name in names if isinstance(getattr(k, name, None), str)}


def reserve_key_map(k: ProductKeys, user_id: int) -> dict[str, str]:
    """reserve.lua's keys, by name, for one buyer in one bucket."""
    return bucket_keys(k, ReserveCall.KEYS) | {"purchase_rate": k.purchase_rate(user_id)}


def restore_key_map(k: ProductKeys, with_room: bool) -> dict[str, str]:
    """restore_stock.lua's keys, by name; the room's for the first bucket only."""
    return room_key_map(k, RestoreCall, with_room)


def room_key_map(k: ProductKeys, call: type[ScriptCall], with_room: bool) -> dict[str, str]:
    """The keys of a call that sets the room (the first bucket's only: `with_room`), by name."""
    return bucket_keys(k, tuple(n for n in call.KEYS if with_room or n not in ROOM_KEYS))
