"""The gate: a code admits its ticket once, at its own event's gate (every scan names it, or, for a
drop sold without an event, its product). The
ticket moves from valid to used in one conditional UPDATE that also requires the secret the
code was verified against, so of two gates scanning the same code at the same moment exactly
one admits it, and a transfer committed between the check and the UPDATE (a new secret) leaves
the old code refused; every scan is recorded with its answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.entry.codes import Code
from core.entry.status import USED, VALID, VOID
from core.models import EntryTicket, GateScan, utcnow

ADMITTED = "admitted"
# Refusals: the code is not one of ours, too old (or too new), the ticket void, used before,
# or for another event than the gate's.
REFUSALS = ("invalid_code", "expired_code", "void", "already_used", "wrong_event")


@dataclass(frozen=True)
class GateFor:
    """What a gate admits to: an event's tickets, or those of one product (a drop sold without
    an event); exactly one of the two."""

    event_id: int | None = None
    product_id: int | None = None

    def __post_init__(self) -> None:
        if (self.event_id is None) == (self.product_id is None):
            raise ValueError("a gate admits to one event or one product")

    def admits(self, ticket: EntryTicket) -> bool:
        if self.event_id is not None:
            return ticket.event_id == self.event_id
        return ticket.product_id == self.product_id


@dataclass(frozen=True)
class ScanResult:
    result: str
    ticket_id: str | None = None
    seat: str | None = None
    used_at: datetime | None = None  # already_used: the first admission
    used_gate_id: int | None = None


def scan(session: Session, text: str, gate_user_id: int, gate: GateFor) -> ScanResult:
    """Checks a code and admits its ticket at most once; records the scan (caller commits)."""
    outcome = _check(session, text, gate_user_id, gate)
    session.add(GateScan(
        entry_ticket_id=outcome.ticket_id, gate_user_id=gate_user_id, event_id=gate.event_id,
        result=outcome.result, scanned_at=utcnow(),
    ))  # fmt: skip
    return outcome


def _check(session: Session, text: str, gate_user_id: int, gate: GateFor) -> ScanResult:
    code = Code.parse(text)
    ticket = session.get(EntryTicket, code.ticket_id) if code else None
    if code is None or ticket is None or not code.signed_by(ticket.secret):
        return ScanResult("invalid_code")
    if not gate.admits(ticket):
        return ScanResult("wrong_event", ticket.id)
    if not code.in_time():
        return ScanResult("expired_code", ticket.id)
    verified_secret = ticket.secret
    now = utcnow()
    admitted = session.execute(
        update(EntryTicket)
        .where(
            EntryTicket.id == ticket.id,
            EntryTicket.status == VALID,
            EntryTicket.secret == verified_secret,
        )
        .values(status=USED, used_at=now, used_gate_id=gate_user_id)
        .execution_options(synchronize_session=False)
    ).rowcount
    if admitted == 1:
        return ScanResult(ADMITTED, ticket.id, ticket.seat, now, gate_user_id)
    session.refresh(ticket)
    if ticket.secret != verified_secret:  # given to someone else since: the code is dead
        return ScanResult("invalid_code")
    if ticket.status == VOID:
        return ScanResult("void", ticket.id)
    return ScanResult("already_used", ticket.id, ticket.seat, ticket.used_at, ticket.used_gate_id)
