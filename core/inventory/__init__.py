"""Stock and holds in Redis: every state change is one Lua call on one product's keys.

`Inventory` is the public surface: a facade whose parts each own one concern (purchase, claims,
holds, locks and leases, the settle stream, rooms, seats, terms, figures, rebuild, replicas);
the values it takes and answers with are re-exported here."""

from core.inventory.claims import CLAIM_MS
from core.inventory.clock import RedisClock, now_ms
from core.inventory.hold import Hold
from core.inventory.holds import Holds
from core.inventory.outcomes import PurchaseOutcome
from core.inventory.purchase import RECLAIM_PER_CALL, TOGETHER_SEARCH_SEATS, Purchases, reserve_keys
from core.inventory.rebuild import REBUILD_LEASE_MS, Rebuild
from core.inventory.records import (
    SECTION_SCORE,
    BestAvailable,
    Claim,
    Ending,
    HeldElsewhere,
    ProductTerms,
    PurchaseRate,
    RebuildView,
    Reservation,
    RoomFigures,
    SeatPlan,
    SeatSnapshot,
    Settled,
    Snapshot,
    StockFigures,
)
from core.inventory.seats import Seats
from core.inventory.stream import SettleStream
from core.inventory.terms import Terms


class Inventory(Purchases, Holds, Rebuild, Terms, SettleStream, Seats):
    """Works on a Redis client created with decode_responses=True."""


__all__ = [
    "CLAIM_MS",
    "REBUILD_LEASE_MS",
    "RECLAIM_PER_CALL",
    "SECTION_SCORE",
    "TOGETHER_SEARCH_SEATS",
    "BestAvailable",
    "Claim",
    "Ending",
    "HeldElsewhere",
    "Hold",
    "Inventory",
    "ProductTerms",
    "PurchaseOutcome",
    "PurchaseRate",
    "RebuildView",
    "RedisClock",
    "Reservation",
    "RoomFigures",
    "SeatPlan",
    "SeatSnapshot",
    "Settled",
    "Snapshot",
    "StockFigures",
    "now_ms",
    "reserve_keys",
]
