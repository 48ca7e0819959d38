"""Settlement locks, payment leases and refund locks of tickets, a batch in one round trip."""

from __future__ import annotations

import secrets
import time

from core.inventory.base import InventoryBase
from core.locks import RedisLock, retry_with_backoff
from core.metrics import LOCK_WAIT_SECONDS, LOCKS


class Locks(InventoryBase):
    """Locks and leases on the keys of a ticket's bucket."""

    def lock(self, product_id: int, ticket_id: str) -> RedisLock:
        k = self.ticket_keys(product_id, [ticket_id])
        return RedisLock(self.redis, self.scripts, k.lock(ticket_id), self.settings.lock_ttl_ms)

    def refund_lock(self, product_id: int, ticket_id: str) -> RedisLock:
        """Refunds of one ticket run one at a time, each re-reading what was refunded."""
        k = self.ticket_keys(product_id, [ticket_id])
        wait_s = self.settings.payment_timeout_seconds * 2
        return RedisLock(self.redis, self.scripts, k.refunding(ticket_id),
                         self._lease_ms, wait_s, kind="refund")  # fmt: skip

    # --- settlement steps: each takes a batch of tickets (one is a batch of one) ------------
    def take_locks(
        self, product_id: int, ticket_ids: list[str], wait_s: float = 0.0
    ) -> dict[str, str]:
        """Takes the settlement locks that are free, asking again for the others for up to
        `wait_s`: ticket -> token of those taken."""
        k = self.ticket_keys(product_id, ticket_ids)
        tokens: dict[str, str] = {}

        def attempt() -> bool:
            missing = [t for t in ticket_ids if t not in tokens]
            keys = [k.lock(t) for t in missing]
            taken = self._acquire(keys, missing, self.settings.lock_ttl_ms, "lock")
            tokens.update(taken)
            return len(tokens) == len(ticket_ids)

        started = time.perf_counter()
        retry_with_backoff(attempt, wait_s)
        if wait_s > 0:
            LOCK_WAIT_SECONDS.observe(time.perf_counter() - started)
        return tokens

    def release_locks(self, product_id: int, tokens: dict[str, str]) -> None:
        k = self.ticket_keys(product_id, tokens)
        self._release({k.lock(t): token for t, token in tokens.items()})

    def take_leases(self, product_id: int, ticket_ids: list[str]) -> dict[str, str]:
        """Payment leases: only one settler talks to the provider about a ticket at a time (a
        second one that claimed the ticket meanwhile retries later); each outlives the provider
        calls it covers. ticket -> token, free ones only."""
        k = self.ticket_keys(product_id, ticket_ids)
        return self._acquire([k.paying(t) for t in ticket_ids], ticket_ids, self._lease_ms, "lease")

    def release_leases(self, product_id: int, tokens: dict[str, str]) -> None:
        k = self.ticket_keys(product_id, tokens)
        self._release({k.paying(t): token for t, token in tokens.items()})

    @property
    def _lease_ms(self) -> int:
        """Payment leases and refund locks: three provider timeouts and a margin."""
        return int(self.settings.payment_timeout_seconds * 3 * 1000) + 5000

    def _acquire(
        self, keys: list[str], ticket_ids: list[str], ttl_ms: int, kind: str
    ) -> dict[str, str]:
        """One round trip for the batch's locks (or leases): ticket -> token of those taken."""
        if not ticket_ids:
            return {}
        tokens = [secrets.token_hex(16) for _ in ticket_ids]
        taken = self.scripts.take_locks(keys=keys, args=[ttl_ms, *tokens])
        got = {t: token for t, token, ok in zip(ticket_ids, tokens, taken, strict=True) if ok}
        LOCKS.labels(kind, "acquired").inc(len(got))
        LOCKS.labels(kind, "busy").inc(len(ticket_ids) - len(got))
        return got

    def _release(self, tokens_by_key: dict[str, str]) -> None:
        if tokens_by_key:
            self.scripts.release_locks(keys=list(tokens_by_key), args=list(tokens_by_key.values()))
