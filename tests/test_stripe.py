"""Payments through Stripe's official SDK against localstripe, a local stateful Stripe emulator.

What the emulator does not do (it ignores Idempotency-Key and accepts over-refunds; it cannot
report an authentication failure by webhook) is covered by our own guarantees and by events
built and signed here with the webhook secret, exactly as Stripe signs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import time

import httpx
import pytest
import stripe

from core.inventory import Inventory
from core.keys import new_ticket_id
from core.orders import get_order, get_payment
from core.settlement import Settler
from tests.helpers import create_product, make_user
from tests.servers import Gunicorn, clean_env, wait_until

WEBHOOK_EVENTS = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.requires_action",
]


@pytest.fixture(scope="module")
def stripe_client(localstripe):  # type: ignore[no-untyped-def]
    return stripe.StripeClient(
        os.environ["STRIPE_API_KEY"],
        base_addresses={"api": localstripe.url},
        max_network_retries=0,
    )


@pytest.fixture(scope="module")
def settler(rt, localstripe):  # type: ignore[no-untyped-def]
    """A worker's settler with Stripe as the gateway for new payments."""
    settings = dataclasses.replace(rt.settings, payment_gateway="stripe")
    return Settler(rt.inventory, rt.sessions, rt.gateways, settings)


def reserve(rt, product_id, user_id, payment_method, inventory=None):  # type: ignore[no-untyped-def]
    ticket = new_ticket_id(product_id)
    outcome = (inventory or rt.inventory).reserve(product_id, user_id, 1, ticket, payment_method)
    assert outcome.result == "reserved", outcome
    return ticket


def order_and_payment(rt, ticket):  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return get_order(session, ticket), get_payment(session, ticket)


def intents_of(stripe_client, ticket):  # type: ignore[no-untyped-def]
    listed = stripe_client.v1.payment_intents.list(params={"limit": 100})
    return [pi for pi in listed.data if pi.to_dict().get("metadata", {}).get("ticket_id") == ticket]


def signed_event(event_type: str, intent: dict, secret: str | None = None):  # type: ignore[no-untyped-def]
    """A webhook delivery as Stripe makes it: the payload and its Stripe-Signature header."""
    event = {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": intent},
    }
    payload = json.dumps(event).encode()
    timestamp = int(time.time())
    key = (secret or os.environ["STRIPE_WEBHOOK_SECRET"]).encode()
    signature = hmac.new(key, f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return event, payload, {"Stripe-Signature": f"t={timestamp},v1={signature}"}


def post_event(client, payload, headers):  # type: ignore[no-untyped-def]
    return client.post(
        "/payments/webhook", data=payload, headers=headers, content_type="application/json"
    )


def test_a_card_payment_succeeds_with_our_metadata(client, app, rt, settler, stripe_client):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=3, price="25.00")
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {"confirmed": 1}
    order, payment = order_and_payment(rt, ticket)
    assert order.status == "confirmed" and payment.provider == "stripe"
    intent = stripe_client.v1.payment_intents.retrieve(payment.intent_id)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 2500, "usd")
    assert intent.metadata.to_dict() == {
        "ticket_id": ticket,
        "product_id": str(product["id"]),
        "user_id": str(buyer.id),
    }
    assert rt.inventory.figures(product["id"]).sold == 1


def test_zero_decimal_currencies_are_not_multiplied(client, app, rt, settler, stripe_client):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=3, price="1500", currency="JPY")
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    settler.settle_batch(product["id"], [(None, ticket)])
    _, payment = order_and_payment(rt, ticket)
    intent = stripe_client.v1.payment_intents.retrieve(payment.intent_id)
    assert (intent.amount, intent.currency) == (1500, "jpy")


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("pm_card_chargeCustomerFail", "card_declined"),
        ("pm_card_chargeDeclined", "resource_missing"),
    ],
)
def test_a_declined_card_fails_the_order_and_returns_the_stock(
    client, app, rt, settler, method, reason
):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2, max_per_user=1)
    ticket = reserve(rt, product["id"], buyer.id, method)
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {"failed": 1}
    order, _ = order_and_payment(rt, ticket)
    assert (order.status, order.failure_reason) == ("failed", reason)
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held, figures.sold) == (2, 0, 0)


def test_a_retried_settlement_makes_one_intent_and_one_charge(
    client, app, rt, settler, stripe_client
):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=3)
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    # A settler charges, then dies before it confirms the hold.
    work = settler.prepare(settler_report(), product["id"], "USD", [(None, ticket)])[0]
    settler.pay(work.product_id, [work])
    assert work.outcome == "confirmed"
    # Run again, twice: the intent recorded on the order is retrieved, not created again.
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {"confirmed": 1}
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {}
    [intent] = intents_of(stripe_client, ticket)
    charges = stripe_client.v1.charges.list(params={"limit": 100}).data
    assert len([c for c in charges if c.payment_intent == intent.id]) == 1
    assert rt.inventory.figures(product["id"]).sold == 1


def settler_report():  # type: ignore[no-untyped-def]
    from core.settlement import SettleReport

    return SettleReport()


def test_admin_cancel_of_a_confirmed_order_refunds_once_and_returns_the_stock(
    client, app, rt, settler, stripe_client
):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2, price="40.00", max_per_user=1)
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    settler.settle_batch(product["id"], [(None, ticket)])
    assert client.post(f"/orders/{ticket}/cancel", headers=buyer.headers).status_code == 409
    refunded = client.post(f"/orders/{ticket}/cancel", headers=admin.headers)
    assert refunded.status_code == 200 and refunded.get_json()["status"] == "refunded"
    again = client.post(f"/orders/{ticket}/cancel", headers=admin.headers)
    assert again.status_code == 409
    order, payment = order_and_payment(rt, ticket)
    assert order.status == "refunded" and payment.amount_refunded_minor == 4000
    intent = stripe_client.v1.payment_intents.retrieve(
        payment.intent_id, params={"expand": ["latest_charge"]}
    )
    assert intent.latest_charge.amount_refunded == 4000
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.sold) == (2, 0)
    assert reserve(rt, product["id"], buyer.id, "pm_card_visa")  # the allowance came back


def test_webhook_signatures_are_verified(client):
    _, payload, headers = signed_event("payment_intent.succeeded", {"id": "pi_unknown"})
    forged = post_event(client, payload, signed_event("x", {}, secret="whsec_other")[2])
    assert forged.status_code == 400 and forged.get_json()["error"] == "invalid_signature"
    unsigned = client.post("/payments/webhook", data=payload, content_type="application/json")
    assert unsigned.status_code == 400
    tampered = post_event(client, payload.replace(b"pi_unknown", b"pi_other00"), headers)
    assert tampered.status_code == 400
    accepted = post_event(client, payload, headers)
    assert accepted.status_code == 200
    assert accepted.get_json() == {"received": True, "result": "unknown_payment_intent"}


def test_a_duplicated_webhook_is_acknowledged_and_ignored(client, app, rt, settler):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2)
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    settler.settle_batch(product["id"], [(None, ticket)])
    _, payment = order_and_payment(rt, ticket)
    # A stale failure event for the succeeded intent, delivered twice.
    intent = {"id": payment.intent_id, "last_payment_error": {"code": "card_declined"}}
    _, payload, headers = signed_event("payment_intent.payment_failed", intent)
    first = post_event(client, payload, headers)
    assert first.status_code == 200 and first.get_json()["result"] == "no_change"
    second = post_event(client, payload, headers)
    assert second.get_json() == {"received": True, "duplicate": True}
    order, _ = order_and_payment(rt, ticket)
    assert order.status == "confirmed"
    assert rt.inventory.figures(product["id"]).sold == 1


def three_d_secure_method(stripe_client) -> str:  # type: ignore[no-untyped-def]
    card = {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return stripe_client.v1.payment_methods.create(params={"type": "card", "card": card}).id


def test_an_authentication_failure_reported_by_webhook_fails_the_order(
    client, app, rt, settler, stripe_client, localstripe
):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2)
    ticket = reserve(rt, product["id"], buyer.id, three_d_secure_method(stripe_client))
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {"requires_action": 1}
    status = client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()
    assert status["status"] == "requires_action"
    assert status["payment"]["client_secret"].startswith("pi_")
    other = make_user(app)
    assert client.get(f"/orders/{ticket}", headers=other.headers).status_code == 404
    _, payment = order_and_payment(rt, ticket)
    failed = httpx.post(  # the buyer fails 3-D Secure: the intent needs a new payment method
        f"{localstripe.url}/v1/payment_intents/{payment.intent_id}/_authenticate",
        data={
            "client_secret": status["payment"]["client_secret"],
            "success": "false",
            "key": "pk_test_flashsale",
        },
        timeout=10,
    )
    assert failed.status_code == 200, failed.text
    error = {"code": "payment_intent_authentication_failure"}
    _, payload, headers = signed_event(
        "payment_intent.payment_failed", {"id": payment.intent_id, "last_payment_error": error}
    )
    assert post_event(client, payload, headers).get_json()["result"] == "failed"
    order, _ = order_and_payment(rt, ticket)
    assert (order.status, order.failure_reason) == (
        "failed",
        "payment_intent_authentication_failure",
    )
    assert rt.inventory.figures(product["id"]).available == 2


def test_a_payment_that_succeeds_after_its_hold_expired_is_refunded(
    client, app, rt, settler, stripe_client
):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2, price="10.00")
    fast = dataclasses.replace(settler.settings, hold_seconds=0.5, settle_lease_seconds=0.5)
    inventory = Inventory(rt.inventory_redis, fast)
    short = Settler(inventory, rt.sessions, rt.gateways, fast)
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa", inventory=inventory)
    work = short.prepare(settler_report(), product["id"], "USD", [(None, ticket)])[0]
    short.pay(work.product_id, [work])  # charged; the settler dies before it confirms the hold
    wait_until(lambda: inventory.expire_holds(product["id"]) == 1, 10, "the lease to lapse")
    assert short.settle_batch(product["id"], [(None, ticket)]).settled == {"refunded": 1}
    order, payment = order_and_payment(rt, ticket)
    assert order.status == "refunded" and payment.amount_refunded_minor == 1000
    intent = stripe_client.v1.payment_intents.retrieve(
        payment.intent_id, params={"expand": ["latest_charge"]}
    )
    assert intent.latest_charge.amount_refunded == 1000
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.sold) == (2, 0)


@pytest.fixture(scope="module")
def server(localstripe):  # type: ignore[no-untyped-def]
    gunicorn = Gunicorn(clean_env({}), workers=1, threads=8).start()
    localstripe.register_webhook(
        "flashsale",
        f"{gunicorn.url}/payments/webhook",
        os.environ["STRIPE_WEBHOOK_SECRET"],
        WEBHOOK_EVENTS,
    )
    yield gunicorn
    gunicorn.stop()


@pytest.mark.slow
def test_three_d_secure_completed_at_stripe_settles_by_the_emulators_webhook(
    server, localstripe, client, app, rt, settler, stripe_client
):
    admin, buyer = make_user(app, "admin"), make_user(app)
    product = create_product(client, admin, stock=2)
    ticket = reserve(rt, product["id"], buyer.id, three_d_secure_method(stripe_client))
    settler.settle_batch(product["id"], [(None, ticket)])
    with httpx.Client(base_url=server.url, headers=buyer.headers, timeout=10) as http:
        waiting = http.get(f"/orders/{ticket}").json()
        assert waiting["status"] == "requires_action"
        secret = waiting["payment"]["client_secret"]
        _, payment = order_and_payment(rt, ticket)
        # The buyer completes 3-D Secure; Stripe (the emulator) signs and sends the webhook.
        done = httpx.post(
            f"{localstripe.url}/v1/payment_intents/{payment.intent_id}/_authenticate",
            data={"client_secret": secret, "success": "true", "key": "pk_test_flashsale"},
            timeout=10,
        )
        assert done.status_code == 200
        wait_until(
            lambda: http.get(f"/orders/{ticket}").json()["status"] == "confirmed",
            15,
            "the emulator's webhook to confirm the order",
        )
    # The poll may see Redis' confirmed hold a moment before the webhook's SQL commit.
    wait_until(
        lambda: order_and_payment(rt, ticket)[0].status == "confirmed",
        15,
        "the confirmation recorded in SQL",
    )
    assert rt.inventory.figures(product["id"]).sold == 1


@pytest.mark.slow
def test_stripe_unreachable_orders_wait_then_settle_once(
    localstripe, client, app, rt, settler, stripe_client
):
    admin = make_user(app, "admin")
    product = create_product(client, admin, stock=10)
    buyers = [make_user(app) for _ in range(5)]
    tickets = [reserve(rt, product["id"], b.id, "pm_card_visa") for b in buyers]
    localstripe.stop()
    try:
        report = settler.settle_batch(product["id"], [(None, t) for t in tickets])
        assert report.deferred == len(tickets) and report.settled == {}
        for ticket in tickets:
            order, _ = order_and_payment(rt, ticket)
            assert order.status == "processing"
        assert rt.inventory.figures(product["id"]).held == len(tickets)
    finally:
        localstripe.start()
    report = settler.settle_batch(product["id"], [(None, t) for t in tickets])
    assert report.settled == {"confirmed": len(tickets)}
    for ticket in tickets:
        assert order_and_payment(rt, ticket)[0].status == "confirmed"
        assert len(intents_of(stripe_client, ticket)) == 1
    figures = rt.inventory.figures(product["id"])
    assert (figures.held, figures.sold) == (0, len(tickets))


def test_a_large_event_is_accepted_while_api_bodies_stay_small(client):
    padding = {"description": "x" * 40_000}
    _, payload, headers = signed_event("payment_intent.created", {"id": "pi_big"} | padding)
    assert post_event(client, payload, headers).status_code == 200
    big_body = {"username": "large", "password": "y" * 40_000}
    assert client.post("/auth/register", json=big_body).status_code == 413
