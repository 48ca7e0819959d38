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
        return cls(
            ticket_id=data["t"],
            user_id=int(data["u"]),
            quantity=int(data["q"]),
            amount_minor=int(data["a"]),
            deadline_ms=int(data["d"]),
            status=data["s"],
            reason=data.get("r"),
            payment_method=data.get("pm", ""),
            created_ms=int(data["c"]),
            modified_ms=int(data.get("m", data["c"])),
            currency=data.get("cur", ""),
            client_secret=data.get("cs"),
            payment_status=data.get("ps"),
            idempotency_key=data.get("k"),
            seats=tuple(data.get("st") or ()),
            request_id=data.get("ri"),
            queue_pass=data.get("qp"),
        )

    def to_record(self) -> dict[str, object]:
        record = {
            "t": self.ticket_id,
            "u": str(self.user_id),
            "q": self.quantity,
            "a": self.amount_minor,
            "d": self.deadline_ms,
            "s": self.status,
            "pm": self.payment_method,
            "c": self.created_ms,
            "m": self.modified_ms,
            "cur": self.currency,
        }
        if self.reason:
            record["r"] = self.reason
        if self.idempotency_key:
            record["k"] = self.idempotency_key
        if self.seats:
            record["st"] = list(self.seats)
        if self.request_id:
            record["ri"] = self.request_id
        if self.queue_pass:
            record["qp"] = self.queue_pass
        return record


def json_list(items: list) -> str:
    """A JSON array even when empty (Lua's cjson reads '[]' and '{}' alike)."""
    return json.dumps(items, separators=(",", ":"))
