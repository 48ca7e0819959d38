"""POST /payments/webhook: Stripe's answers about payment intents, verified and applied once."""

from __future__ import annotations

import logging

import stripe
from flask import Blueprint, Response, request

from core.db import transaction
from core.locks import LockTimeout
from core.orders import event_seen, record_event
from core.payments import PaymentUnavailable
from core.settlement import SettlementDeferred
from web.answers import WebhookReceived, answer
from web.apidoc import documented
from web.common import runtime
from web.errors import ApiError
from web.extensions import limiter
from web.schemas import StripeEvent, StripeHeaders

log = logging.getLogger(__name__)
bp = Blueprint("payments", __name__, url_prefix="/payments")

WEBHOOK_MAX_BYTES = 512 * 1024  # Stripe's events can outgrow the API's body limit

# What each intent event means for the order; other events are acknowledged and ignored.
OUTCOMES = {
    "payment_intent.succeeded": "confirmed",
    "payment_intent.payment_failed": "failed",
    "payment_intent.canceled": "failed",
    "payment_intent.requires_action": "requires_action",
}


@bp.post("/webhook")
@limiter.exempt
@documented(
    "payments",
    {200: WebhookReceived},
    (400, 404, 413, 503),
    body=StripeEvent,
    headers=StripeHeaders,
)
def stripe_webhook() -> Response:
    """Stripe's payment intent events, verified by their Stripe-Signature.

    404 while webhooks are not configured; 503 asks Stripe to deliver the event again."""
    request.max_content_length = WEBHOOK_MAX_BYTES
    rt = runtime()
    secret = rt.settings.stripe_webhook_secret
    if not secret:
        raise ApiError(404, "not_found", "webhooks are not configured")
    try:
        event = stripe.Webhook.construct_event(
            request.get_data(), request.headers.get("Stripe-Signature", ""), secret
        )
    except (ValueError, stripe.SignatureVerificationError):
        raise ApiError(400, "invalid_signature", "the Stripe-Signature does not verify") from None
    with rt.sessions() as session:
        if event_seen(session, event.id):
            return answer(WebhookReceived(received=True, duplicate=True))
    result = "ignored"
    outcome = OUTCOMES.get(event.type)
    if outcome is not None:
        intent = event.data.object.to_dict()
        error = intent.get("last_payment_error") or {}
        reason = error.get("decline_code") or error.get("code") or event.type.split(".")[-1]
        try:
            result = rt.settler.settle_payment_event(
                "stripe", intent["id"], outcome, reason, intent.get("client_secret") or ""
            )
        except (PaymentUnavailable, LockTimeout, SettlementDeferred):
            # Not recorded as handled: Stripe delivers it again later.
            raise ApiError(503, "try_again", "the event could not be applied yet") from None
    # Recorded once handled: an event that failed half-way is handled again on Stripe's retry.
    with transaction(rt.sessions) as session:
        record_event(session, "stripe", event.id, event.type)
    log.info("stripe event %s %s: %s", event.id, event.type, result)
    return answer(WebhookReceived(received=True, result=result))
