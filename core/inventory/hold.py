"""A hold as Redis keeps it, and its record's codec: the short field names reserve.lua
and lib.lua read and write."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Hold:
    ticket_id: str
    user_id: int
    quantity: int
    amount_minor: int
    deadline_ms: int
    status: str
    reason: str | None
    payment_method: str
    created_ms: int
    modified_ms: int
    currency: str = ""
    client_secret: str | None = None
    payment_status: str | None = None  # the provider's word, kept with a settled ticket
    idempotency_key: str | None = None
    seats: tuple[str, ...] = ()  # a seated product's hold: the seats it holds
    request_id: str | None = None  # the purchase request's id (X-Request-ID), for log lines
    queue_pass: str | None = None  # the waiting room pass it bought with (its id, see reserve)

    @classmethod
    def from_json(cls, raw: str) -> Hold:
        data = json.loads(raw)
        found = {name: data[short] for name, short in HOLD_FIELDS.items() if short in data}
        found.setdefault("modified_ms", found["created_ms"])
        found.setdefault("payment_method", "")
        found.setdefault("reason", None)
        for name in _NUMBERS:
            found[name] = int(found[name])
        found["seats"] = tuple(found.get("seats") or ())
        return cls(**found)

    def to_record(self) -> dict[str, object]:
        """The record restore_stock.lua and adopt_hold.lua write back (without the settlement's
        client secret and payment status)."""
        record = {HOLD_FIELDS[name]: getattr(self, name) for name in _ALWAYS_RECORDED}
        record[HOLD_FIELDS["user_id"]] = str(self.user_id)
        for name in _RECORDED_WHEN_SET:
            if value := getattr(self, name):
                record[HOLD_FIELDS[name]] = list(value) if name == "seats" else value
        return record


# The hold record's short field names, the one place they are written: core/scripts.py gives
# them to the scripts as HOLD.
HOLD_FIELDS = {
    "ticket_id": "t",
    "user_id": "u",
    "quantity": "q",
    "amount_minor": "a",
    "deadline_ms": "d",
    "status": "s",
    "reason": "r",
    "payment_method": "pm",
    "created_ms": "c",
    "modified_ms": "m",
    "currency": "cur",
    "client_secret": "cs",  # while the buyer must authenticate
    "payment_status": "ps",
    "idempotency_key": "k",
    "seats": "st",
    "request_id": "ri",
    "queue_pass": "qp",
}
_NUMBERS = ("user_id", "quantity", "amount_minor", "deadline_ms", "created_ms", "modified_ms")
_ALWAYS_RECORDED = (
    "ticket_id", "user_id", "quantity", "amount_minor", "deadline_ms", "status",
    "payment_method", "created_ms", "modified_ms", "currency",
)  # fmt: skip
_RECORDED_WHEN_SET = ("reason", "idempotency_key", "seats", "request_id", "queue_pass")


def json_list(items: list) -> str:
    """A JSON array even when empty (Lua's cjson reads '[]' and '{}' alike)."""
    return json.dumps(items, separators=(",", ":"))
