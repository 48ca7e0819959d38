"""Payment gateways, shaped like Stripe's PaymentIntents: the idempotency key is the ticket id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Intent states that end a payment without money taken.
FAILED_STATES = ("failed", "requires_payment_method", "canceled")


class PaymentUnavailable(RuntimeError):
    """The provider could not be reached or answered with a transient error: try again later."""


class GatewayNotConfigured(PaymentUnavailable):
    """A payment's provider is not configured here (not an outage of the provider)."""


class PaymentRejected(RuntimeError):
    """The provider refused the payment outright (say, an unknown payment method)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    status: str  # requires_confirmation, processing, requires_action, succeeded, failed, canceled
    amount_minor: int
    currency: str
    failure_code: str | None = None
    client_secret: str | None = None
    amount_refunded_minor: int = 0

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES


@dataclass(frozen=True)
class IntentRequest:
    ticket_id: str  # the idempotency key: one intent per ticket
    amount_minor: int
    currency: str
    payment_method: str
    metadata: dict[str, str]


class PaymentGateway(Protocol):
    name: str
    waits: bool  # its calls wait on a network: worth running several at once

    def create_intent(
        self,
        ticket_id: str,
        amount_minor: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, str],
    ) -> PaymentIntent: ...

    def confirm_intent(self, intent_id: str, ticket_id: str) -> PaymentIntent: ...

    def retrieve_intent(self, intent_id: str) -> PaymentIntent: ...

    def cancel_intent(self, intent_id: str) -> PaymentIntent: ...

    def refund(self, intent_id: str, amount_minor: int, idempotency_key: str) -> PaymentIntent: ...


@runtime_checkable
class BatchGateway(Protocol):
    """A gateway that also takes many intents in one call (the simulated one does, in one Redis
    round trip). The settler creates a batch's intents with one call, and confirms them with
    one call when the gateway does not wait on a network (confirming is where a bank waits)."""

    def create_intents(self, requests: list[IntentRequest]) -> list[PaymentIntent]: ...

    def confirm_intents(self, pairs: list[tuple[str, str]]) -> list[PaymentIntent]: ...


def gateway_for(gateways: Mapping[str, PaymentGateway], provider: str) -> PaymentGateway:
    """Payments stay with the provider that took them, whatever the default is now."""
    gateway = gateways.get(provider)
    if gateway is None:
        raise GatewayNotConfigured(f"gateway {provider!r} is not configured")
    return gateway
