"""A gateway that behaves like Stripe's test mode for Stripe's test payment methods, keeping its
intents in Redis as a provider keeps them on its side."""

from __future__ import annotations

import json
import secrets
import time

from redis import Redis

from core.keys import SimulatedProviderKeys
from core.payments import IntentRequest, PaymentIntent
from core.scripts import Scripts

SUCCEEDS = {"pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_us"}
DECLINES = {
    "pm_card_chargeDeclined": "generic_decline",
    "pm_card_visa_chargeDeclined": "generic_decline",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "pm_card_visa_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "pm_card_chargeDeclinedExpiredCard": "expired_card",
    "pm_card_chargeCustomerFail": "generic_decline",
}
NEEDS_ACTION = {"pm_card_authenticationRequired", "pm_card_threeDSecure2Required"}


class SimulatedGateway:
    name = "simulated"

    def __init__(self, redis: Redis, prefix: str, latency_ms: int = 0) -> None:
        self.redis = redis
        self.latency_s = latency_ms / 1000
        self.waits = latency_ms > 0
        keys = SimulatedProviderKeys(prefix)
        self.intents_key = keys.intents
        self.idempotency_key = keys.idempotency
        self.charges_key = keys.charges
        self.refunds_key = keys.refunds
        self.scripts = Scripts(redis)

    def create_intent(
        self,
        ticket_id: str,
        amount_minor: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, str],
    ) -> PaymentIntent:
        request = IntentRequest(ticket_id, amount_minor, currency, payment_method, metadata)
        return self.create_intents([request])[0]

    def create_intents(self, requests: list[IntentRequest]) -> list[PaymentIntent]:
        """Creates many intents in one round trip (creating one waits for no bank)."""
        with self.scripts.pipeline(self.intents_key) as pipe:
            for request in requests:
                intent_id = f"pi_sim_{secrets.token_hex(12)}"
                record = {
                    "id": intent_id, "status": "requires_confirmation",
                    "amount": request.amount_minor, "currency": request.currency,
                    "payment_method": request.payment_method, "metadata": request.metadata,
                    "refunded": 0, "on_confirm": _outcome_for(request.payment_method, intent_id),
                }  # fmt: skip
                self.scripts.simulated_create(
                    keys=[self.idempotency_key, self.intents_key],
                    args=[request.ticket_id, intent_id, json.dumps(record)],
                    client=pipe,
                )
            return [_intent(json.loads(raw)) for raw in pipe.execute()]

    def confirm_intent(self, intent_id: str, ticket_id: str) -> PaymentIntent:
        return self.confirm_intents([(intent_id, ticket_id)])[0]

    def confirm_intents(self, pairs: list[tuple[str, str]]) -> list[PaymentIntent]:
        """Confirms many (intent id, ticket) pairs in one round trip. PAYMENT_LATENCY_MS models
        the card network's answer, once per call."""
        self._wait()
        with self.scripts.pipeline(self.intents_key) as pipe:
            for intent_id, ticket_id in pairs:
                self.scripts.simulated_confirm(
                    keys=[self.intents_key, self.charges_key],
                    args=[intent_id, ticket_id],
                    client=pipe,
                )
            answers = pipe.execute()
        for (intent_id, _), raw in zip(pairs, answers, strict=True):
            if raw is None:
                raise KeyError(intent_id)
        return [_intent(json.loads(raw)) for raw in answers]

    def retrieve_intent(self, intent_id: str) -> PaymentIntent:
        return _intent(self._load(intent_id))

    def cancel_intent(self, intent_id: str) -> PaymentIntent:
        record = self._load(intent_id)
        if record["status"] in ("requires_confirmation", "requires_action"):
            record["status"] = "canceled"
            self.redis.hset(self.intents_key, intent_id, json.dumps(record))
        return _intent(record)

    def complete_action(self, intent_id: str, ticket_id: str, success: bool) -> PaymentIntent:
        """The buyer finishes (or fails) 3-D Secure, as the provider would report it."""
        record = self._load(intent_id)
        if record["status"] == "requires_action":
            if success:
                record["status"] = "succeeded"
                self.redis.hincrby(self.charges_key, ticket_id, 1)
            else:
                record.update(status="failed", failure_code="authentication_failure")
            self.redis.hset(self.intents_key, intent_id, json.dumps(record))
        return _intent(record)

    def refund(self, intent_id: str, amount_minor: int, idempotency_key: str) -> PaymentIntent:
        self._wait()
        if not self.redis.hsetnx(self.refunds_key, idempotency_key, intent_id):
            return self.retrieve_intent(intent_id)  # this refund was made already
        record = self._load(intent_id)
        record["refunded"] = min(record["amount"], record["refunded"] + amount_minor)
        self.redis.hset(self.intents_key, intent_id, json.dumps(record))
        return _intent(record)

    def charges(self, ticket_id: str) -> int:
        """How many times the ticket's buyer was charged (tests and audits)."""
        return int(self.redis.hget(self.charges_key, ticket_id) or 0)

    def _load(self, intent_id: str) -> dict:
        raw = self.redis.hget(self.intents_key, intent_id)
        if raw is None:
            raise KeyError(intent_id)
        return json.loads(raw)

    def _wait(self) -> None:
        if self.latency_s:
            time.sleep(self.latency_s)


def _outcome_for(method: str, intent_id: str) -> dict[str, str]:
    """What confirming an intent with this Stripe test payment method does."""
    if method in DECLINES:
        return {"status": "failed", "failure_code": DECLINES[method]}
    if method in NEEDS_ACTION:
        return {"status": "requires_action", "client_secret": f"{intent_id}_secret_sim"}
    if method in SUCCEEDS:
        return {"status": "succeeded"}
    return {"status": "failed", "failure_code": "invalid_payment_method"}


def _intent(record: dict) -> PaymentIntent:
    return PaymentIntent(
        id=record["id"],
        status=record["status"],
        amount_minor=record["amount"],
        currency=record["currency"],
        failure_code=record.get("failure_code"),
        client_secret=record.get("client_secret"),
        amount_refunded_minor=record.get("refunded", 0),
    )
