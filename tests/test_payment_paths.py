"""Payment paths against localstripe, with races built deterministically: the emulator is paused
(SIGSTOP) until every racer has a request waiting on it, then resumed, so each racer has read our
database before any of them hears back from Stripe. Stale events are built and signed as Stripe
signs them. No mocks: the real settler, webhook route, Redis and database.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import stripe

from core.inventory import Inventory
from core.orders import event_seen
from core.settlement import Settler, SettleReport
from tests.helpers import create_product, make_user
from tests.servers import wait_until
from tests.test_stripe import (
    intents_of,
    order_and_payment,
    post_event,
    reserve,
    signed_event,
    three_d_secure_method,
)


@pytest.fixture(scope="module")
def stripe_client(localstripe):  # type: ignore[no-untyped-def]
    api = {"api": localstripe.url}
    return stripe.StripeClient(os.environ["STRIPE_API_KEY"], base_addresses=api)


@pytest.fixture(scope="module")
def settler(rt, localstripe):  # type: ignore[no-untyped-def]
    settings = dataclasses.replace(rt.settings, payment_gateway="stripe")
    return Settler(rt.inventory, rt.sessions, rt.gateways, settings)


@pytest.fixture()
def product(client, admin):  # type: ignore[no-untyped-def]
    return create_product(client, admin, stock=2, price="40.00")


def waiting_requests(port: int) -> int:
    """Requests sent to the (paused) emulator and not read yet: its sockets with unread bytes."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                _, local, _, state, queues = line.split()[:5]
                mine = int(local.rsplit(":", 1)[1], 16) == port and state == "01"
                count += mine and int(queues.split(":")[1], 16) > 0
    return count


def race(localstripe, *calls):  # type: ignore[no-untyped-def]
    """Runs `calls` at once; none hears from Stripe until all of them are waiting on it."""
    pid = localstripe.process.pid
    os.kill(pid, signal.SIGSTOP)
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        try:
            wait_until(
                lambda: (
                    waiting_requests(localstripe.port) >= len(calls)
                    or any(f.done() for f in futures)
                ),
                15,
                "every racer to wait on Stripe",
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        return [f.result() for f in futures]


def authenticate(localstripe, payment):  # type: ignore[no-untyped-def]
    """The buyer completes 3-D Secure at Stripe with the client secret their page was given."""
    data = {"client_secret": payment.client_secret, "success": "true", "key": "pk_test_x"}
    url = f"{localstripe.url}/v1/payment_intents/{payment.intent_id}/_authenticate"
    return httpx.post(url, data=data, timeout=10).status_code


def awaiting_3ds(rt, settler, stripe_client, product, buyer, inventory=None):  # type: ignore[no-untyped-def]
    method = three_d_secure_method(stripe_client)
    ticket = reserve(rt, product["id"], buyer.id, method, inventory=inventory)
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {"requires_action": 1}
    return ticket, order_and_payment(rt, ticket)[1]


def fast_settler(rt, settler):  # type: ignore[no-untyped-def]
    """Holds and leases of half a second, so that they lapse within a test."""
    fast = dataclasses.replace(settler.settings, hold_seconds=0.5, settle_lease_seconds=0.5)
    inventory = Inventory(rt.inventory_redis, fast)
    return inventory, Settler(inventory, rt.sessions, rt.gateways, fast)


def refunded_at_stripe(stripe_client, payment) -> int:  # type: ignore[no-untyped-def]
    expand = {"expand": ["latest_charge"]}
    intent = stripe_client.v1.payment_intents.retrieve(payment.intent_id, params=expand)
    return intent.latest_charge.amount_refunded


# --- confirmed bugs (fail today) ------------------------------------------------------------------


def test_two_settlers_of_one_ticket_charge_it_once(
    rt, settler, stripe_client, localstripe, product, buyer
):
    """XAUTOCLAIM hands a ticket to a second settler while the first one's payment is in flight."""
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    settle = lambda: settler.settle_batch(product["id"], [(None, ticket)])  # noqa: E731
    race(localstripe, settle, settle)
    order, payment = order_and_payment(rt, ticket)
    assert order.status == "confirmed"
    charged = [pi.id for pi in intents_of(stripe_client, ticket) if pi.status == "succeeded"]
    assert charged == [payment.intent_id], f"one order, {len(charged)} charges: {charged}"


def _two_admins_cancel(app, rt, settler, localstripe, product, buyer, admin):  # type: ignore[no-untyped-def]
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa")
    assert settler.settle_batch(product["id"], [(None, ticket)]).settled == {"confirmed": 1}
    url = f"/orders/{ticket}/cancel"
    cancel = lambda: app.test_client().post(url, headers=admin.headers).status_code  # noqa: E731
    return ticket, sorted(race(localstripe, cancel, cancel))


def test_two_admins_refunding_at_once_refund_what_was_captured_once(
    app, rt, settler, stripe_client, localstripe, product, buyer, admin
):
    ticket, _ = _two_admins_cancel(app, rt, settler, localstripe, product, buyer, admin)
    _, payment = order_and_payment(rt, ticket)
    refunded = refunded_at_stripe(stripe_client, payment)
    assert (refunded, payment.amount_refunded_minor) == (4000, 4000), (
        f"captured 4000, refunded {refunded}"
    )


def test_a_late_payment_recorded_by_two_settlers_at_once_is_refunded_once(
    rt, settler, stripe_client, localstripe, product, buyer
):
    """Charged, then the settler stalled past the lease; two deliveries of the ticket record it."""
    inventory, short = fast_settler(rt, settler)
    ticket = reserve(rt, product["id"], buyer.id, "pm_card_visa", inventory=inventory)
    work = short.prepare(SettleReport(), product["id"], "USD", [(None, ticket)])[0]
    short.pay(work.product_id, [work])
    assert work.outcome == "confirmed"
    wait_until(lambda: inventory.expire_holds(product["id"]) == 1, 10, "the lease to lapse")
    settle = lambda: short.settle_batch(product["id"], [(None, ticket)])  # noqa: E731
    race(localstripe, settle, settle)
    order, payment = order_and_payment(rt, ticket)
    assert order.status == "refunded"
    refunded = refunded_at_stripe(stripe_client, payment)
    assert refunded == 4000, f"captured 4000, refunded {refunded}"


def test_a_stale_failure_event_does_not_refund_a_payment_that_succeeded(
    client, rt, settler, stripe_client, localstripe, product, buyer
):
    """3-D Secure completed; an older payment_failed event arrives first (Stripe keeps no order)."""
    ticket, payment = awaiting_3ds(rt, settler, stripe_client, product, buyer)
    assert authenticate(localstripe, payment) == 200  # the intent has succeeded at Stripe
    error = {"code": "payment_intent_authentication_failure"}
    stale = {"id": payment.intent_id, "last_payment_error": error}
    assert (
        post_event(client, *signed_event("payment_intent.payment_failed", stale)[1:]).status_code
        == 200
    )
    order, payment = order_and_payment(rt, ticket)
    assert payment.status == "succeeded"
    assert (order.status, payment.amount_refunded_minor) == ("confirmed", 0), order.failure_reason


def test_a_3ds_hold_released_by_the_sweep_cancels_its_intent(
    rt, settler, stripe_client, localstripe, product, buyer
):
    """Workers are late: the sweep releases the hold before a settler looks at the ticket again."""
    inventory, short = fast_settler(rt, settler)
    ticket, payment = awaiting_3ds(rt, short, stripe_client, product, buyer, inventory)
    wait_until(lambda: inventory.expire_holds(product["id"]) == 1, 10, "the sweep to release it")
    assert short.settle_batch(product["id"], [(None, ticket)]).settled == {"expired": 1}
    intent = stripe_client.v1.payment_intents.retrieve(payment.intent_id)
    assert intent.status == "canceled", f"the expired order's intent is still {intent.status}"
    assert authenticate(localstripe, payment) != 200, "the buyer was charged for an expired order"


# --- regressions (pass today) ---------------------------------------------------------------------


def test_two_admins_refunding_at_once_return_the_stock_once(
    app, rt, settler, localstripe, product, buyer, admin
):
    ticket, codes = _two_admins_cancel(app, rt, settler, localstripe, product, buyer, admin)
    assert 200 in codes and set(codes) <= {200, 409, 503}  # the other: done, refused or busy
    assert order_and_payment(rt, ticket)[0].status == "refunded"
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held, figures.sold) == (2, 0, 0)


def test_concurrent_duplicate_deliveries_confirm_once(
    app, client, rt, settler, stripe_client, localstripe, product, buyer, admin
):
    ticket, payment = awaiting_3ds(rt, settler, stripe_client, product, buyer)
    for who, code in ((buyer, 200), (admin, 200), (make_user(app), 404)):
        shown = client.get(f"/orders/{ticket}", headers=who.headers)
        assert shown.status_code == code
        assert code == 404 or shown.get_json()["payment"]["client_secret"] == payment.client_secret
    assert authenticate(localstripe, payment) == 200
    payload, headers = signed_event("payment_intent.succeeded", {"id": payment.intent_id})[1:]
    deliver = lambda: post_event(app.test_client(), payload, headers).status_code  # noqa: E731
    assert race(localstripe, deliver, deliver) == [200, 200]
    assert post_event(client, payload, headers).get_json() == {"received": True, "duplicate": True}
    order, payment = order_and_payment(rt, ticket)
    assert (order.status, payment.status, payment.amount_refunded_minor) == (
        "confirmed",
        "succeeded",
        0,
    )
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held, figures.sold) == (1, 0, 1)


def test_an_event_not_applied_during_an_outage_is_applied_on_redelivery(
    client, rt, settler, stripe_client, localstripe, product, buyer
):
    ticket, payment = awaiting_3ds(rt, settler, stripe_client, product, buyer)
    assert authenticate(localstripe, payment) == 200
    event, payload, headers = signed_event("payment_intent.succeeded", {"id": payment.intent_id})
    forged = signed_event("payment_intent.succeeded", {"id": payment.intent_id}, "whsec_forged")
    assert post_event(client, forged[1], forged[2]).status_code == 400
    localstripe.stop()
    try:
        assert post_event(client, payload, headers).status_code == 503
    finally:
        localstripe.start()
    with rt.sessions() as session:
        assert not event_seen(session, event["id"]) and not event_seen(session, forged[0]["id"])
    assert post_event(client, payload, headers).get_json()["result"] == "confirmed"
    assert order_and_payment(rt, ticket)[0].status == "confirmed"
