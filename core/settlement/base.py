"""What every part of the settler shares: the inventory, SQL, the gateways, the settings, and
what it caches of a product (its event, its buckets)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.inventory import Hold, Inventory
from core.models import Product
from core.payments import PaymentGateway
from core.refunds import Refunds
from core.settlement.work import SettleReport

log = logging.getLogger(__name__)


class SettlerBase:
    """The settler's state; its steps are in the modules beside this one."""

    def __init__(
        self,
        inventory: Inventory,
        sessions: sessionmaker[Session],
        gateways: Mapping[str, PaymentGateway],
        settings: Settings,
    ) -> None:
        self.inventory = inventory
        self.sessions = sessions
        self.gateways = gateways
        self.settings = settings
        self.refunds = Refunds(inventory, sessions, gateways)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_guard = threading.Lock()
        self._event_of: dict[int, int | None] = {}  # a product's event never changes
        self._buckets_of: dict[int, int] = {}

    def event_of(self, product_id: int) -> int | None:
        """The event whose seats the product sells, if any."""
        if product_id not in self._event_of:
            with self.sessions() as session:
                product = session.get(Product, product_id)
                self._event_of[product_id] = product.event_id if product else None
        return self._event_of[product_id]

    def buckets_of(self, product_id: int) -> int:
        """The product's number of buckets (1 when its stock is not split, or it is unknown)."""
        if product_id not in self._buckets_of:
            with self.sessions() as session:
                buckets = session.scalar(select(Product.buckets).where(Product.id == product_id))
            if buckets is None:
                return 1
            self._buckets_of[product_id] = buckets  # never changes
        return self._buckets_of[product_id]

    def _late(self, hold: Hold) -> bool:
        """Past the hold's deadline, by the clock the scripts decide deadlines by (Redis')."""
        return hold.deadline_ms <= self.inventory.clock.now_ms()

    @property
    def batch_size(self) -> int:
        """Tickets taken from the stream at once: SETTLE_BATCH_SIZE, rounded up to whole waves
        of PAYMENT_CONCURRENCY payments when the gateway waits, so no wave runs half empty."""
        size = self.settings.settle_batch_size
        concurrency = max(1, self.settings.payment_concurrency)
        if not self.gateway.waits:
            return size
        return -(-size // concurrency) * concurrency

    @property
    def gateway(self) -> PaymentGateway:
        """The gateway new payments go through."""
        return self.gateways[self.settings.payment_gateway]

    def _guard(self, report: SettleReport, step, *args):  # type: ignore[no-untyped-def]
        try:
            return step(report, *args)
        except Exception:
            log.exception("settle: %s deferred", step.__name__)
            report.deferred += 1
            return None

    def close(self) -> None:
        """Stops the payment threads, if any were started."""
        with self._pool_guard:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _payment_pool(self) -> ThreadPoolExecutor:
        """PAYMENT_CONCURRENCY threads, started once per process and kept for later batches."""
        with self._pool_guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.payment_concurrency, thread_name_prefix="payment"
                )
            return self._pool
