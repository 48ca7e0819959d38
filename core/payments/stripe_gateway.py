"""Stripe PaymentIntents through the official SDK. Amounts are already in the currency's minor
unit (zero-decimal currencies such as JPY and KRW are not multiplied by 100)."""

from __future__ import annotations

from typing import Any

import stripe

from core.payments import PaymentIntent, PaymentRejected, PaymentUnavailable

TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


class StripeGateway:
    name = "stripe"
    waits = True

    def __init__(self, api_key: str, api_base: str = "", timeout_s: float = 20.0) -> None:
        options: dict[str, Any] = {
            "max_network_retries": 0,  # settlement retries with the same idempotency key itself
            "http_client": stripe.RequestsClient(timeout=timeout_s),
        }
        if api_base:
            options["base_addresses"] = {"api": api_base}
        self.client = stripe.StripeClient(api_key, **options)

    def create_intent(
        self,
        ticket_id: str,
        amount_minor: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, str],
    ) -> PaymentIntent:
        params = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "payment_method": payment_method,
            "payment_method_types": ["card"],
            "metadata": metadata,
        }
        with _translated_errors():
            intent = self.client.v1.payment_intents.create(
                params=params, options={"idempotency_key": f"create:{ticket_id}"}
            )
        return _intent(intent)

    def confirm_intent(self, intent_id: str, ticket_id: str) -> PaymentIntent:
        try:
            with _translated_errors():
                intent = self.client.v1.payment_intents.confirm(
                    intent_id, options={"idempotency_key": f"confirm:{ticket_id}"}
                )
        except stripe.CardError:
            return self.retrieve_intent(intent_id)  # declined: the intent says why
        return _intent(intent)

    def retrieve_intent(self, intent_id: str) -> PaymentIntent:
        with _translated_errors():
            intent = self.client.v1.payment_intents.retrieve(
                intent_id, params={"expand": ["latest_charge"]}
            )
        return _intent(intent)

    def cancel_intent(self, intent_id: str) -> PaymentIntent:
        try:
            with _translated_errors():
                self.client.v1.payment_intents.cancel(intent_id)
        except PaymentRejected:
            pass  # not cancelable any more (it succeeded or failed): the intent says which
        return self.retrieve_intent(intent_id)

    def refund(self, intent_id: str, amount_minor: int, idempotency_key: str) -> PaymentIntent:
        with _translated_errors():
            self.client.v1.refunds.create(
                params={"payment_intent": intent_id, "amount": amount_minor},
                options={"idempotency_key": idempotency_key},
            )
        return self.retrieve_intent(intent_id)


class _translated_errors:
    """Transient Stripe errors become PaymentUnavailable; refusals become PaymentRejected."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        if error is None or isinstance(error, stripe.CardError):
            return False
        if isinstance(error, (*TRANSIENT, stripe.AuthenticationError)):
            raise PaymentUnavailable(f"stripe: {type(error).__name__}") from error
        if isinstance(error, stripe.StripeError):
            fallback = "resource_missing" if error.http_status == 404 else "invalid_request"
            raise PaymentRejected(error.code or fallback) from error
        return False


def _intent(obj: Any) -> PaymentIntent:
    intent = obj.to_dict()
    charge = intent.get("latest_charge")
    refunded = charge.get("amount_refunded", 0) if isinstance(charge, dict) else 0
    error = intent.get("last_payment_error") or {}
    status = intent["status"]
    return PaymentIntent(
        id=intent["id"],
        status=status,
        amount_minor=int(intent["amount"]),
        currency=str(intent["currency"]).upper(),
        failure_code=(error.get("decline_code") or error.get("code")) if error else None,
        client_secret=intent.get("client_secret") if status == "requires_action" else None,
        amount_refunded_minor=int(refunded or 0),
    )
