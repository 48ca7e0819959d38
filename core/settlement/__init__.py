"""Settling tickets: persist the order, charge, then confirm or release the hold.

Each ticket goes through three steps. `prepare` takes the hold (reserved -> processing) under the
ticket's lock and records the order; `pay` talks to the gateway with no lock and no transaction
open; `finish` moves the hold to its final state under the lock, then SQL follows. Every step is
idempotent on the ticket id, so a settler killed anywhere is simply run again. The provider's own
answers (webhooks) go through `settle_payment_event`: its ticket is a batch of one for `finish`,
which waits for the ticket's lock, so the provider hears "try again" only when the lock stays taken
(or the ticket could not be finished now for another reason). This `__init__` is the public
surface.
"""

from core.settlement.settler import Settler
from core.settlement.work import ENDINGS, SettlementDeferred, SettleReport, Work

__all__ = ["ENDINGS", "SettleReport", "SettlementDeferred", "Settler", "Work"]
