"""Entry tickets: issued with the confirmation (one per unit), voided by a refund, shown with
a rotating code (and as a QR), transferred with a new secret; the gate admits each once."""

from __future__ import annotations

import secrets
import threading
from typing import Any

import pytest
from sqlalchemy import event

from core.entry.codes import Code, current_step, make_code
from core.entry.gate import GateFor, scan
from core.entry.tickets import transfer_ticket
from core.models import EntryTicket, GateScan
from tests.helpers import Account, create_product, make_user
from tests.test_api_errors import assert_error
from tests.test_pipeline import buy, settle_until
from tests.test_seats import _best, _on_sale


def _confirmed(client: Any, app: Any, admin: Account, settings: Any, quantity: int) -> tuple:
    """A new buyer's confirmed order of standing places at a new event: (buyer, order, event)."""
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    placed = _best(client, buyer, event_id, "Floor", quantity)
    assert placed.status_code == 202, placed.get_json()
    ticket = placed.get_json()["ticket_id"]
    settle_until(client, buyer, ticket, settings, {"confirmed"})
    return buyer, ticket, event_id


def _tickets(client: Any, buyer: Account) -> list[dict[str, Any]]:
    response = client.get("/tickets", headers=buyer.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["tickets"]


def _scan(client: Any, gate: Account, code: str, event_id: int, at: str = "event_id") -> dict:
    """A scan at the gate of `event_id` (or of a drop's product, `at="product_id"`)."""
    body = {"code": code, at: event_id}
    response = client.post("/gate/scan", json=body, headers=gate.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture(scope="module")
def gate(app):  # type: ignore[no-untyped-def]
    return make_user(app, "gate")


def test_a_confirmed_order_has_a_ticket_per_unit_seen_by_its_holder_only(
    client, app, admin, settings
):
    buyer, order, _ = _confirmed(client, app, admin, settings, quantity=3)
    tickets = _tickets(client, buyer)
    assert len(tickets) == 3 and {t["order_ticket_id"] for t in tickets} == {order}
    assert {t["status"] for t in tickets} == {"valid"}
    first = tickets[0]
    assert Code.parse(first["code"]).ticket_id == first["id"]
    assert 1 <= first["code_seconds_left"] <= 15
    assert client.get(f"/tickets/{first['id']}", headers=buyer.headers).status_code == 200
    assert client.get(f"/tickets/{first['id']}", headers=admin.headers).status_code == 200
    stranger = make_user(app)
    assert_error(client.get(f"/tickets/{first['id']}", headers=stranger.headers), 404, "not_found")
    assert _tickets(client, stranger) == []
    qr = client.get(f"/tickets/{first['id']}/qr", headers=buyer.headers)
    assert qr.status_code == 200 and qr.mimetype == "image/svg+xml"
    assert b"<svg" in qr.data


def test_codes_admit_within_a_step_either_side_and_once(client, app, admin, settings, gate):
    buyer, _, event_id = _confirmed(client, app, admin, settings, quantity=4)
    a, b, c, d = _tickets(client, buyer)
    with app.app_context():
        from web.extensions import db

        secrets = {t.id: t.secret for t in db.session.query(EntryTicket).all()}
    now = current_step()

    def result(code: str) -> str:
        return _scan(client, gate, code, event_id)["result"]

    # Two steps away either way: refused as expired, and nothing is used.
    assert result(make_code(a["id"], secrets[a["id"]], now - 2)) == "expired_code"
    assert result(make_code(a["id"], secrets[a["id"]], now + 2)) == "expired_code"
    # Tampered, or another ticket's code under this ticket's id: not ours.
    good = make_code(a["id"], secrets[a["id"]], now)
    assert result(good[:-1] + ("0" if good[-1] != "0" else "1")) == "invalid_code"
    foreign = make_code(b["id"], secrets[b["id"]], now).split(".")[-1]
    assert result(f"{a['id']}.{now}.{foreign}") == "invalid_code"
    assert result("not a code") == "invalid_code"
    # One step either side admits; once.
    first = _scan(client, gate, make_code(a["id"], secrets[a["id"]], now - 1), event_id)
    assert first["result"] == "admitted" and first["ticket_id"] == a["id"]
    again = _scan(client, gate, good, event_id)
    assert again["result"] == "already_used"
    assert (again["used_at"], again["used_gate_id"]) == (first["used_at"], gate.id)
    assert result(make_code(b["id"], secrets[b["id"]], now + 1)) == "admitted"
    # A gate for another event refuses it.
    wrong = _scan(client, gate, make_code(c["id"], secrets[c["id"]], now), event_id + 1)
    assert wrong["result"] == "wrong_event"
    assert client.get(f"/tickets/{a['id']}", headers=buyer.headers).get_json()["status"] == "used"
    assert client.get(f"/tickets/{d['id']}", headers=buyer.headers).get_json()["status"] == "valid"
    with app.app_context():
        from web.extensions import db

        results = [s.result for s in db.session.query(GateScan).filter_by(gate_user_id=gate.id)]
    assert results.count("admitted") == 2 and "already_used" in results  # every scan recorded


def test_only_gate_staff_scan(client, app, admin, buyer):
    for account in (buyer, admin):
        assert_error(
            client.post("/gate/scan", json={"code": "x"}, headers=account.headers), 403, "forbidden"
        )


def test_a_scan_names_its_gate_event_and_admits_only_that_events_tickets(
    client, app, admin, settings, gate
):
    buyer, _, event_id = _confirmed(client, app, admin, settings, quantity=1)
    (ticket,) = _tickets(client, buyer)
    other_event = _on_sale(client, admin)["id"]
    unnamed = client.post("/gate/scan", json={"code": ticket["code"]}, headers=gate.headers)
    assert "event_id" in assert_error(unnamed, 400, "invalid_request")["message"]
    both = {"code": ticket["code"], "event_id": event_id, "product_id": 1}
    assert_error(client.post("/gate/scan", json=both, headers=gate.headers), 400, "invalid_request")
    assert _scan(client, gate, ticket["code"], other_event)["result"] == "wrong_event"
    drop_buyer = make_user(app)  # a plain drop's ticket belongs to no event's gate
    drop = create_product(client, admin, stock=5)
    order = buy(client, drop_buyer, drop["id"]).get_json()["ticket_id"]
    settle_until(client, drop_buyer, order, settings, {"confirmed"})
    (drop_ticket,) = _tickets(client, drop_buyer)
    assert _scan(client, gate, drop_ticket["code"], event_id)["result"] == "wrong_event"
    assert _tickets(client, buyer)[0]["status"] == "valid"  # nothing admitted so far
    assert _scan(client, gate, ticket["code"], event_id)["result"] == "admitted"
    # A drop's gate names its product: the drop's ticket is admitted there, an event's is not.
    other_drop = create_product(client, admin, stock=1)["id"]
    assert _scan(client, gate, drop_ticket["code"], other_drop, "product_id")["result"] == (
        "wrong_event"
    )
    assert _scan(client, gate, drop_ticket["code"], drop["id"], "product_id")["result"] == (
        "admitted"
    )


def test_fifty_gates_scanning_one_code_at_once_admit_it_once(client, app, admin, settings):
    buyer, _, event_id = _confirmed(client, app, admin, settings, quantity=1)
    (ticket,) = _tickets(client, buyer)
    gates = [make_user(app, "gate") for _ in range(50)]
    start = threading.Barrier(len(gates))
    results: list[str] = []

    def scan(gate: Account) -> None:
        own = app.test_client()
        start.wait()
        results.append(_scan(own, gate, ticket["code"], event_id)["result"])

    threads = [threading.Thread(target=scan, args=(g,)) for g in gates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["admitted"] + ["already_used"] * 49


def test_a_transfer_gives_a_new_secret_and_a_refund_voids(client, app, admin, settings, gate):
    buyer, order, event_id = _confirmed(client, app, admin, settings, quantity=1)
    (ticket,) = _tickets(client, buyer)
    old_code = ticket["code"]
    friend = make_user(app)
    url = f"/tickets/{ticket['id']}/transfer"
    assert_error(client.post(url, json={"to": buyer.username}, headers=buyer.headers), 409,
                 "same_holder")  # fmt: skip
    assert_error(client.post(url, json={"to": "nobody_here"}, headers=buyer.headers), 404,
                 "unknown_user")  # fmt: skip
    moved = client.post(url, json={"to": friend.username}, headers=buyer.headers)
    assert moved.status_code == 200, moved.get_json()
    assert _tickets(client, buyer) == []
    (given,) = _tickets(client, friend)
    assert given["id"] == ticket["id"] and given["code"] != old_code
    assert_error(client.post(url, json={"to": buyer.username}, headers=buyer.headers), 404,
                 "not_found")  # no longer the buyer's  # fmt: skip
    given_away = _scan(client, gate, old_code, event_id)
    assert given_away["result"] == "invalid_code"  # the old holder's codes

    # The order refunded by an admin: the ticket no longer admits anyone.
    assert client.post(f"/orders/{order}/cancel", headers=admin.headers).status_code == 200
    voided = client.get(f"/tickets/{ticket['id']}", headers=friend.headers).get_json()
    assert voided["status"] == "void" and voided["code"] is None
    with app.app_context():
        from web.extensions import db

        secret = db.session.get(EntryTicket, ticket["id"]).secret
    assert _scan(client, gate, make_code(ticket["id"], secret), event_id)["result"] == "void"
    assert_error(client.post(url, json={"to": buyer.username}, headers=friend.headers), 409,
                 "not_transferable")  # fmt: skip


def test_a_transfer_between_a_scan_check_and_its_admission_refuses_the_old_code(
    client, app, admin, settings, rt, gate
):
    """The scan reads and verifies the giver's code; the transfer commits before the scan's
    admitting UPDATE runs: the old code is refused and the receiver's new code admits."""
    buyer, _, event_id = _confirmed(client, app, admin, settings, quantity=1)
    (ticket,) = _tickets(client, buyer)
    friend = make_user(app)
    transferred = threading.Event()

    def transfer_before_admitting(conn, cursor, statement, *args: Any) -> None:  # type: ignore[no-untyped-def]
        admitting = statement.lstrip().upper().startswith("UPDATE ENTRY_TICKETS")
        if admitting and not transferred.is_set():
            with rt.sessions() as other:
                transfer_ticket(other, ticket["id"], buyer.id, friend.username)
                other.commit()
            transferred.set()

    with rt.sessions() as session:
        event.listen(session.connection(), "before_cursor_execute", transfer_before_admitting)
        outcome = scan(session, ticket["code"], gate.id, GateFor(event_id))
        session.commit()
    assert transferred.is_set()
    assert outcome.result == "invalid_code"
    (given,) = _tickets(client, friend)
    assert given["status"] == "valid"
    admitted = _scan(client, gate, given["code"], event_id)
    assert (admitted["result"], admitted["ticket_id"]) == ("admitted", ticket["id"])


def test_no_tickets_for_an_order_that_was_not_confirmed(client, app, admin, settings):
    buyer = make_user(app)
    product = create_product(client, admin, stock=5)
    order = buy(client, buyer, product["id"], pm="pm_card_chargeDeclined").get_json()["ticket_id"]
    settle_until(client, buyer, order, settings, {"failed"})
    assert _tickets(client, buyer) == []


def test_gate_staff_are_created_from_the_command_line(client, app):
    username = f"gate_{secrets.token_hex(3)}"
    made = app.test_cli_runner().invoke(
        args=["create-user", username, "--role", "gate", "--password", "correct horse"]
    )
    assert made.exit_code == 0, made.output
    token = client.post(
        "/auth/login", json={"username": username, "password": "correct horse"}
    ).get_json()["access_token"]
    scanned = client.post(
        "/gate/scan",
        json={"code": "nothing", "event_id": 1},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert scanned.status_code == 200 and scanned.get_json()["result"] == "invalid_code"
    again = app.test_cli_runner().invoke(args=["create-user", username, "--password", "x" * 9])
    assert again.exit_code != 0 and "exists" in again.output


def test_a_seated_order_has_a_ticket_per_seat_for_its_event(client, app, admin, settings, gate):
    from tests.test_seats import _buy as buy_seats
    from tests.test_seats import _settled

    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    order = buy_seats(client, buyer, event_id, ["B-1-3", "B-1-4"]).get_json()["ticket_id"]
    assert _settled(client, settings, buyer, order)["status"] == "confirmed"
    tickets = _tickets(client, buyer)
    assert sorted(t["seat"] for t in tickets) == ["B-1-3", "B-1-4"]
    assert {t["event_id"] for t in tickets} == {event_id}
    at_the_door = _scan(client, gate, tickets[0]["code"], event_id)
    assert (at_the_door["result"], at_the_door["seat"]) == ("admitted", tickets[0]["seat"])
    elsewhere = _scan(client, gate, tickets[1]["code"], event_id + 1)
    assert elsewhere["result"] == "wrong_event"
    # An event that forbids transfers: its tickets stay with their buyers.
    patched = client.patch(
        f"/events/{event_id}", json={"transfers_allowed": False}, headers=admin.headers
    )
    assert patched.status_code == 200 and patched.get_json()["transfers_allowed"] is False
    friend = make_user(app)
    refused = client.post(
        f"/tickets/{tickets[1]['id']}/transfer", json={"to": friend.username}, headers=buyer.headers
    )
    assert_error(refused, 409, "transfers_not_allowed")
