"""The values settlement passes between its steps: a ticket's work, the batch's report, the
provider's answer turned into the ticket's outcome."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.inventory import Hold
from core.payments import GatewayNotConfigured, PaymentIntent, PaymentRejected, PaymentUnavailable

log = logging.getLogger(__name__)


ENDINGS = ("confirmed", "failed", "expired")  # outcomes that end a hold


class SettlementDeferred(RuntimeError):
    """A ticket could not be finished now (its lock stayed taken, its stock awaits a rebuild, a
    step failed); it is finished on a later delivery."""


@dataclass
class Work:
    entry_id: str | None
    hold: Hold
    product_id: int
    currency: str
    outcome: str = ""  # confirmed, failed, expired, requires_action, retry
    reason: str = ""
    intent: PaymentIntent | None = None
    provider: str = ""
    provider_down: bool = False  # the provider timed out or could not be reached


@dataclass
class SettleReport:
    settled: dict[str, int] = field(default_factory=dict)
    deferred: int = 0

    def count(self, status: str) -> None:
        self.settled[status] = self.settled.get(status, 0) + 1


class provider_errors:
    """Turns a provider's failure during a step into the ticket's outcome."""

    def __init__(self, work: Work) -> None:
        self.work = work

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> bool:
        if error is None:
            return False
        if isinstance(error, PaymentRejected):
            self.work.outcome, self.work.reason = "failed", error.code
        elif isinstance(error, PaymentUnavailable):
            self.work.outcome, self.work.reason = "retry", str(error)
            self.work.provider_down = not isinstance(error, GatewayNotConfigured)
        elif isinstance(error, Exception):  # an unexpected answer is retried, not guessed at
            log.exception("settle: payment for %s", self.work.hold.ticket_id)
            self.work.outcome, self.work.reason = "retry", type(error).__name__
        else:
            return False
        return True


def pending(intent: PaymentIntent) -> bool:
    return not intent.succeeded and not intent.failed


def outcome_of(intent: PaymentIntent | None, late: bool) -> tuple[str, str]:
    if intent is None:
        return "expired", "hold_expired"
    if intent.succeeded:
        return "confirmed", ""
    if intent.failed:
        if intent.status == "canceled" and late:
            return "expired", "hold_expired"
        return "failed", intent.failure_code or "payment_failed"
    if late:
        return "expired", "hold_expired"  # still pending at the deadline
    if intent.status == "requires_action":
        return "requires_action", ""
    return "retry", intent.status  # processing: asked again on the next delivery
