"""The claims sweep: a split product's claims left open past CLAIM_MS ended by where their
purchase went."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from core.db import snapshot as sql_snapshot
from core.inventory import Claim, Inventory
from core.keys import ticket_in_bucket
from core.orders import statuses_of
from core.stock.report import CONFIRMED, REFUNDED
from core.tickets import OPEN_STATUSES


def sweep_claims(
    inventory: Inventory, sessions: sessionmaker[Session], product_id: int, buckets: int
) -> int:
    """Ends a split product's claims left open past CLAIM_MS (a purchase whose process died
    between two buckets, or a settler that died before ending them) by where their purchase
    went: still held somewhere, left alone (its settlement ends it); recorded confirmed or
    refunded in SQL, kept; otherwise (recorded ended, or never held), released. Redis is read
    before SQL: settlement writes SQL before it forgets a hold. Answers how many ended."""
    ended = 0
    now = inventory.clock.now_ms()
    for home in range(buckets):
        stale = [t for t, (_, _, until) in inventory.open_claims(product_id, home).items()
                 if until <= now]  # fmt: skip
        if not stale:
            continue
        away = {t: [ticket_in_bucket(t, b) for b in range(buckets) if b != home] for t in stale}
        elsewhere = [ticket for tickets in away.values() for ticket in tickets]
        held = inventory.holding(product_id, elsewhere)
        with sql_snapshot(sessions) as session:
            statuses = statuses_of(session, elsewhere)
        claims = []
        for ticket, tickets in away.items():
            found = [statuses[t] for t in tickets if t in statuses]
            if held & set(tickets) or any(s in OPEN_STATUSES for s in found):
                continue
            kept = any(s in (CONFIRMED, REFUNDED) for s in found)
            claims.append(Claim(ticket, "kept" if kept else "released"))
        ended += inventory.resolve_claims(product_id, home, claims)
    return ended
