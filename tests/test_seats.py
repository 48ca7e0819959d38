"""Buying named seats: one Redis call holds them all or none; settlement sells or releases
exactly those seats; expiry, decline and cancel give them back; a rebuild after Redis lost the
event gives the same seat states; SQL and Redis agree seat by seat."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.models import EventSection, Product
from core.orders import live_seats
from core.settlement import SettleReport
from core.stock import rebuild_stock, reconcile_product
from tests.helpers import Account, app_with, make_user, make_users, run_workers, seat_blocks
from tests.servers import wait_until
from tests.test_api_errors import assert_error

HALL = {
    "sections": [
        {"name": "A", "price": "80.00", "rows": [{"name": "1", "seats": 6}]},
        {"name": "B", "price": "40.00", "rows": [{"name": "1", "seats": 6}]},
        {"name": "Floor", "price": "25.00", "capacity": 50},
    ]
}


def _on_sale(client: Any, admin: Account, body: dict[str, Any] = HALL) -> dict[str, Any]:
    """A published event whose sale is open."""
    starts = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    created = client.post(
        "/events",
        json={"title": "Seated show", "venue": "Hall", "starts_at": starts, "currency": "USD"},
        headers=admin.headers,
    ).get_json()
    assert (
        client.put(f"/events/{created['id']}/seatmap", json=body, headers=admin.headers).status_code
        == 200
    )
    published = client.post(f"/events/{created['id']}/publish", headers=admin.headers)
    assert published.status_code == 200, published.get_json()
    return created


def _buy(client: Any, buyer: Account, event_id: int, seats: list[str], **extra: Any) -> Any:
    body = {"seats": seats, "payment_method": "pm_card_visa"} | extra
    return client.post(f"/events/{event_id}/purchase", json=body, headers=buyer.headers)


def _product(rt: Any, event_id: int) -> int:
    with rt.sessions() as session:
        return session.scalar(select(Product.id).where(Product.event_id == event_id))


def _states(rt: Any, event_id: int) -> dict[str, str]:
    return rt.inventory_redis.hgetall(rt.inventory.keys(_product(rt, event_id)).seats)


def _status(client: Any, buyer: Account, ticket: str) -> dict[str, Any]:
    return client.get(f"/orders/{ticket}", headers=buyer.headers).get_json()


def _settled(client: Any, settings: Any, buyer: Account, ticket: str) -> dict[str, Any]:
    def final() -> bool:
        run_workers(settings)
        return _status(client, buyer, ticket)["status"] not in ("reserved", "processing")

    wait_until(final, 20, "the ticket to be settled")
    return _status(client, buyer, ticket)


def test_a_buyer_holds_exactly_the_seats_asked_for_or_none(client, app, admin, rt):
    event_id = _on_sale(client, admin)["id"]
    first, second = make_user(app), make_user(app)
    held = _buy(client, first, event_id, ["A-1-2", "B-1-3"])
    assert held.status_code == 202, held.get_json()
    ticket = held.get_json()["ticket_id"]
    assert held.get_json()["seats"] == ["A-1-2", "B-1-3"]
    assert _status(client, first, ticket)["amount"] == "120.00"  # 80 + 40, each seat's section

    refused = _buy(client, second, event_id, ["B-1-3", "B-1-4"])
    assert refused.status_code == 409
    assert refused.get_json()["error"] == "seats_unavailable"
    assert refused.get_json()["seats"] == ["B-1-3"]
    states = _states(rt, event_id)
    assert states["A-1-2"] == states["B-1-3"] == f"h:{ticket}"
    assert states["B-1-4"] == "f"  # all or none: the free seat of the refused ask stays free

    unknown = _buy(client, second, event_id, ["A-1-9"])
    assert unknown.status_code == 400 and unknown.get_json()["seats"] == ["A-1-9"]
    by_count = client.post(
        f"/purchase/{_product(rt, event_id)}",
        json={"quantity": 1, "payment_method": "pm_card_visa"},
        headers=second.headers,
    )
    assert_error(by_count, 409, "seats_required")


def test_settlement_sells_the_seats_and_sql_agrees_seat_by_seat(client, app, admin, rt, settings):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    ticket = _buy(client, buyer, event_id, ["A-1-1", "A-1-2"]).get_json()["ticket_id"]
    settled = _settled(client, settings, buyer, ticket)
    assert settled["status"] == "confirmed" and settled["seats"] == ["A-1-1", "A-1-2"]
    states = _states(rt, event_id)
    assert states["A-1-1"] == states["A-1-2"] == f"s:{ticket}"
    with rt.sessions() as session:
        assert live_seats(session, event_id) == {"A-1-1": ticket, "A-1-2": ticket}
    figures = rt.inventory.figures(_product(rt, event_id))
    assert (figures.initial, figures.sold, figures.held) == (12, 2, 0)


@pytest.mark.parametrize("ending", ["declined", "cancelled", "expired"])
def test_a_ticket_that_ends_unpaid_gives_back_exactly_its_seats(
    client, app, admin, rt, settings, ending
):
    event_id = _on_sale(client, admin)["id"]
    buyer, other = make_user(app), make_user(app)
    kept = _buy(client, other, event_id, ["B-1-1"]).get_json()["ticket_id"]
    method = "pm_card_chargeDeclined" if ending == "declined" else "pm_card_visa"
    ticket = _buy(client, buyer, event_id, ["B-1-2", "B-1-3"], payment_method=method).get_json()[
        "ticket_id"
    ]
    product_id = _product(rt, event_id)
    if ending == "cancelled":
        assert client.post(f"/orders/{ticket}/cancel", headers=buyer.headers).status_code == 200
    elif ending == "expired":
        _past_deadline(rt, product_id, ticket)
        assert rt.inventory.expire_holds(product_id) == 2
    final = _settled(client, settings, buyer, ticket)
    assert final["status"] == {"declined": "failed"}.get(ending, ending)
    states = _states(rt, event_id)
    assert states["B-1-2"] == states["B-1-3"] == "f"
    assert states["B-1-1"] in (f"h:{kept}", f"s:{kept}")  # another ticket's seat is untouched
    row = client.get(f"/events/{event_id}/seats").get_json()["sections"][1]["rows"][0]
    assert row["states"][1:3] == "ff" and row["states"][0] in "hs"  # the seat map shows it
    again = _buy(client, make_user(app), event_id, ["B-1-2", "B-1-3"])
    assert again.status_code == 202, again.get_json()


def _past_deadline(rt: Any, product_id: int, ticket: str) -> None:
    keys = rt.inventory.keys(product_id)
    record = json.loads(rt.inventory_redis.hget(keys.holds, ticket))
    record["d"] = 1
    rt.inventory_redis.hset(keys.holds, ticket, json.dumps(record))
    rt.inventory_redis.zadd(keys.deadlines, {ticket: 1})


def test_a_rebuild_after_redis_lost_the_event_gives_the_same_seat_states(
    client, app, admin, rt, settings
):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    sold = _buy(client, buyer, event_id, ["A-1-3", "A-1-4"]).get_json()["ticket_id"]
    assert _settled(client, settings, buyer, sold)["status"] == "confirmed"
    product_id = _product(rt, event_id)
    open_ticket = _buy(client, buyer, event_id, ["B-1-5"]).get_json()["ticket_id"]
    works = rt.settler.prepare(SettleReport(), product_id, "USD", [(None, open_ticket)])
    assert [w.hold.ticket_id for w in works] == [open_ticket]  # recorded in SQL, still open
    before = _states(rt, event_id)
    keys = rt.inventory.keys(product_id)
    rt.inventory_redis.delete(*keys.all())
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    assert _states(rt, event_id) == before
    assert before["A-1-3"] == f"s:{sold}" and before["B-1-5"] == f"h:{open_ticket}"
    assert _buy(client, make_user(app), event_id, ["B-1-5"]).status_code == 409
    assert _settled(client, settings, buyer, open_ticket)["status"] == "confirmed"
    assert _states(rt, event_id)["B-1-5"] == f"s:{open_ticket}"


def test_concurrent_buyers_of_overlapping_seats_never_share_one(client, app, admin, rt, settings):
    event_id = _on_sale(client, admin)["id"]
    buyers = make_users(app, 60)
    rows = [f"A-1-{n}" for n in range(1, 7)] + [f"B-1-{n}" for n in range(1, 7)]
    asks = [[rows[(i + k) % len(rows)] for k in range(2 + i % 3)] for i in range(len(buyers))]
    answers: list[tuple[list[str], dict[str, Any], int]] = []
    start = threading.Barrier(len(buyers))

    def buy(account: Account, seats: list[str]) -> None:
        with app.test_client() as own:
            start.wait()
            response = _buy(own, account, event_id, seats)
            answers.append((seats, response.get_json(), response.status_code))

    threads = [threading.Thread(target=buy, args=pair) for pair in zip(buyers, asks, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    owner: dict[str, str] = {}
    for seats, body, status in answers:
        if status == 202:
            assert body["seats"] == seats
            for seat in seats:
                assert seat not in owner, f"{seat} held by {owner[seat]} and {body['ticket_id']}"
                owner[seat] = body["ticket_id"]
        else:
            assert (status, body["error"]) == (409, "seats_unavailable"), body
            assert set(body["seats"]) <= set(seats)
    for seats, body, status in answers:  # every seat named as taken was in fact held
        if status != 202:
            assert all(seat in owner for seat in body["seats"]), (seats, body)

    def sold() -> bool:
        run_workers(settings)  # the kicker hands purchases over every 50 ms: asked again
        states = _states(rt, event_id)
        return all(states[seat] == f"s:{ticket}" for seat, ticket in owner.items())

    wait_until(sold, 20, "every accepted ticket's seats to be sold")
    with rt.sessions() as session:
        assert live_seats(session, event_id) == owner


def test_an_admin_refund_puts_the_seats_back_on_sale(client, app, admin, rt, settings):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    ticket = _buy(client, buyer, event_id, ["A-1-5", "A-1-6"]).get_json()["ticket_id"]
    assert _settled(client, settings, buyer, ticket)["status"] == "confirmed"
    refunded = client.post(f"/orders/{ticket}/cancel", headers=admin.headers)
    assert refunded.status_code == 200 and refunded.get_json()["status"] == "refunded"
    states = _states(rt, event_id)
    assert states["A-1-5"] == states["A-1-6"] == "f"
    with rt.sessions() as session:
        assert live_seats(session, event_id) == {}
    assert _buy(client, make_user(app), event_id, ["A-1-5"]).status_code == 202


def _best(
    client: Any, buyer: Account, event_id: int, section: str, quantity: int, **kw: Any
) -> Any:
    body = {"section": section, "quantity": quantity, "payment_method": "pm_card_visa"} | kw
    return client.post(f"/events/{event_id}/purchase", json=body, headers=buyer.headers)


def test_best_available_takes_the_best_ranked_free_seats(client, app, admin):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    first = _best(client, buyer, event_id, "A", 2)
    assert first.status_code == 202, first.get_json()
    assert sorted(first.get_json()["seats"]) == ["A-1-3", "A-1-4"]  # the middle of the row
    assert sorted(_best(client, buyer, event_id, "B", 1).get_json()["seats"]) in (
        ["B-1-3"],
        ["B-1-4"],
    )
    assert _best(client, buyer, event_id, "A", 5).get_json()["error"] == "not_enough_seats"
    assert _best(client, buyer, event_id, "C", 1).status_code == 400  # unknown_section


def test_best_available_together_finds_the_best_block_side_by_side(client, app, admin):
    hall = {"sections": [{"name": "A", "price": 10, "rows": [{"name": "1", "seats": 6}]}]}
    event_id = _on_sale(client, admin, hall)["id"]
    buyer = make_user(app)
    assert _buy(client, buyer, event_id, ["A-1-3"]).status_code == 202
    block = _best(client, buyer, event_id, "A", 3, together=True)
    assert block.status_code == 202, block.get_json()
    assert block.get_json()["seats"] == ["A-1-4", "A-1-5", "A-1-6"]
    refused = _best(client, buyer, event_id, "A", 2, together=True)  # A-1-1, A-1-2 are left
    assert refused.status_code == 202 and refused.get_json()["seats"] == ["A-1-1", "A-1-2"]
    assert _best(client, buyer, event_id, "A", 1).get_json()["error"] == "sold_out"  # all held


def test_best_available_together_under_concurrency_is_adjacent_and_never_worse(
    client, app, admin, rt, settings
):
    rows = [{"name": str(n), "seats": 15} for n in range(1, 11)]
    hall = {"sections": [{"name": "A", "price": 10, "rows": rows}]}
    event_id = _on_sale(client, admin, hall)["id"]
    buyers = make_users(app, 40)
    answers: dict[str, list[str]] = {}
    refused: list[int] = []
    start = threading.Barrier(len(buyers))

    def buy(account: Account) -> None:
        size = 2 + account.id % 3
        with app.test_client() as own:
            start.wait()
            response = _best(own, account, event_id, "A", size, together=True)
            if response.status_code == 202:
                answers[response.get_json()["ticket_id"]] = response.get_json()["seats"]
            else:
                assert response.get_json()["error"] == "not_enough_adjacent", response.get_json()
                refused.append(size)

    threads = [threading.Thread(target=buy, args=(account,)) for account in buyers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) + len(refused) == len(buyers) and len(answers) > len(buyers) // 2
    product_id = _product(rt, event_id)
    ranks = {
        label: float(score)
        for label, score in rt.inventory_redis.hgetall(
            rt.inventory.keys(product_id).seat_ranks
        ).items()
    }
    free = set(ranks)
    reserves = rt.inventory_redis.xrange(rt.inventory.keys(product_id).events)
    order = [fields["ticket"] for _, fields in reserves if fields.get("action") == "reserve"]
    assert sorted(order) == sorted(answers)
    for ticket in order:  # replayed in the order Redis held them
        seats = answers[ticket]
        row, numbers = seats[0].rsplit("-", 1)[0], [int(s.rsplit("-", 1)[1]) for s in seats]
        assert all(s.rsplit("-", 1)[0] == row for s in seats), seats
        assert numbers == list(range(numbers[0], numbers[0] + len(seats))), seats
        assert set(seats) <= free
        best_now = min(
            min(ranks[s] for s in block) for block in seat_blocks(free, len(seats)) if block
        )
        assert min(ranks[s] for s in seats) == best_now, (ticket, seats)
        free -= set(seats)
    for size in refused:  # free seats only ever went: no block was left when it was refused
        assert not seat_blocks(free, size), size
    seats_held = sum(len(s) for s in answers.values())

    def recorded() -> bool:
        run_workers(settings)
        with rt.sessions() as session:
            return len(live_seats(session, event_id)) == seats_held

    wait_until(recorded, 20, "every accepted ticket to be recorded")


def test_the_seat_map_shows_each_seat_and_skips_an_unchanged_map(client, app, admin, settings):
    body = {
        "sections": [
            {"name": "A", "price": "80.00", "rows": [{"name": "1", "seats": 4}]},
            {"name": "B", "price": 40, "rows": [{"name": "1", "seats": [1, 2, 5]}]},
            {"name": "Floor", "price": 20, "capacity": 10},
        ]
    }
    event_id = _on_sale(client, admin, body)["id"]
    buyer = make_user(app)
    sold = _buy(client, buyer, event_id, ["A-1-1"]).get_json()["ticket_id"]
    assert _settled(client, settings, buyer, sold)["status"] == "confirmed"
    assert _buy(client, buyer, event_id, ["B-1-5"]).status_code == 202

    first = client.get(f"/events/{event_id}/seats")
    assert first.status_code == 200
    assert first.get_json()["sections"] == [
        {"name": "A", "price": "80.00", "rows": [{"name": "1", "seats": 4, "states": "sfff"}]},
        {
            "name": "B",
            "price": "40.00",
            "rows": [{"name": "1", "seats": [1, 2, 5], "states": "ffh"}],
        },
    ]
    etag = first.headers["ETag"]
    unchanged = client.get(f"/events/{event_id}/seats", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert _buy(client, buyer, event_id, ["A-1-2"]).status_code == 202
    changed = client.get(f"/events/{event_id}/seats", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["sections"][0]["rows"][0]["states"] == "shff"
    assert changed.get_json()["version"] > first.get_json()["version"]


BAD_PURCHASES = {
    "seats and a section": {"seats": ["A-1-1"], "section": "A", "quantity": 1},
    "neither": {},
    "no seats": {"seats": []},
    "a seat twice": {"seats": ["A-1-1", "A-1-1"]},
    "eleven seats": {"seats": [f"A-1-{n}" for n in range(1, 12)]},
    "not a seat id": {"seats": ["A 1 1"]},
    "a section without a quantity": {"section": "A"},
    "no seats asked": {"section": "A", "quantity": 0},
    "together with named seats": {"seats": ["A-1-1"], "together": True},
    "together as a string": {"section": "A", "quantity": 2, "together": "yes"},
    "an unknown field": {"seats": ["A-1-1"], "colour": "red"},
}


@pytest.mark.parametrize("body", list(BAD_PURCHASES.values()), ids=list(BAD_PURCHASES))
def test_a_bad_seat_purchase_is_refused_and_holds_nothing(client, app, admin, rt, body):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    request = {"payment_method": "pm_card_visa"} | body
    response = client.post(f"/events/{event_id}/purchase", json=request, headers=buyer.headers)
    assert_error(response, 400)
    assert set(_states(rt, event_id).values()) == {"f"}
    figures = rt.inventory.figures(_product(rt, event_id))
    assert (figures.available, figures.held) == (12, 0)


def test_a_cancelled_show_sells_no_more_seats_and_a_moved_window_follows(client, app, admin):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    moved = client.patch(
        f"/events/{event_id}", json={"sale_starts_at": later}, headers=admin.headers
    )
    assert moved.status_code == 200, moved.get_json()
    assert_error(_buy(client, buyer, event_id, ["A-1-1"]), 409, "sale_not_started")
    opened = client.patch(
        f"/events/{event_id}", json={"sale_starts_at": None}, headers=admin.headers
    )
    assert opened.status_code == 200
    assert _buy(client, buyer, event_id, ["A-1-1"]).status_code == 202
    assert client.post(f"/events/{event_id}/cancel", headers=admin.headers).status_code == 200
    assert_error(_buy(client, buyer, event_id, ["A-1-2"]), 409, "sale_ended")


def test_standing_places_are_sold_through_the_event(client, app, admin, rt, settings):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    placed = _best(client, buyer, event_id, "Floor", 3)
    assert placed.status_code == 202, placed.get_json()
    ticket = placed.get_json()["ticket_id"]
    assert "seats" not in placed.get_json()
    assert _settled(client, settings, buyer, ticket)["amount"] == "75.00"  # 3 x 25.00
    standing = client.get(f"/events/{event_id}/seats").get_json()["standing"]
    assert standing == [{"name": "Floor", "available": 47}]
    listed = [p["id"] for p in client.get("/products").get_json()["products"]]
    assert int(ticket.split("-")[0]) not in listed  # bought through the event only
    too_many = _best(client, buyer, event_id, "Floor", 10)
    assert too_many.status_code == 202  # 47 left: a standing section has no rows to fit


def test_a_new_map_before_the_sale_replaces_the_standing_places_too(client, app, admin, rt):
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = client.post(
        "/events",
        json={"title": "Later", "venue": "Hall", "starts_at": later, "sale_starts_at": later},
        headers=admin.headers,
    ).get_json()
    event_id = created["id"]
    assert (
        client.put(f"/events/{event_id}/seatmap", json=HALL, headers=admin.headers).status_code
        == 200
    )
    assert client.post(f"/events/{event_id}/publish", headers=admin.headers).status_code == 200
    with rt.sessions() as session:
        floor = session.scalar(
            select(Product.id)
            .join(EventSection, Product.section_id == EventSection.id)
            .where(EventSection.event_id == event_id)
        )
    assert rt.inventory.figures(floor).initial == 50
    seated_only = {"sections": HALL["sections"][:2]}
    replaced = client.put(f"/events/{event_id}/seatmap", json=seated_only, headers=admin.headers)
    assert replaced.status_code == 200, replaced.get_json()
    with rt.sessions() as session:
        assert session.get(Product, floor) is None
    assert rt.inventory.figures(floor) is None
    assert rt.inventory.figures(_product(rt, event_id)).initial == 12


# HALL with its standing section Floor replaced by Balcony.
BALCONY_FOR_FLOOR = {
    "sections": [*HALL["sections"][:2], {"name": "Balcony", "price": "30.00", "capacity": 20}]
}


def _put_off_and_remap(client: Any, admin: Account, event_id: int, body: dict[str, Any]) -> None:
    """The sale put off, a new map for the event (it has no order), the sale open again."""
    for starts in (timedelta(days=1), -timedelta(minutes=1)):
        moved = client.patch(
            f"/events/{event_id}",
            json={"sale_starts_at": (datetime.now(UTC) + starts).isoformat()},
            headers=admin.headers,
        )
        assert moved.status_code == 200, moved.get_json()
        if starts > timedelta(0):
            remapped = client.put(f"/events/{event_id}/seatmap", json=body, headers=admin.headers)
            assert remapped.status_code == 200, remapped.get_json()


def test_a_sale_put_off_sells_the_sections_of_its_new_map(client, app, admin):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    assert client.get(f"/events/{event_id}/seats").status_code == 200  # read while on sale
    _put_off_and_remap(client, admin, event_id, BALCONY_FOR_FLOOR)
    assert_error(_best(client, buyer, event_id, "Floor", 1), 400, "unknown_section")
    balcony = _best(client, buyer, event_id, "Balcony", 2)
    assert balcony.status_code == 202, balcony.get_json()
    standing = client.get(f"/events/{event_id}/seats").get_json()["standing"]
    assert standing == [{"name": "Balcony", "available": 18}]


def test_another_process_sells_the_section_a_new_map_added(client, app, admin):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    with app_with() as other:  # another web process, which read the event while on sale
        seller = other.test_client()
        assert seller.get(f"/events/{event_id}/seats").status_code == 200
        _put_off_and_remap(client, admin, event_id, BALCONY_FOR_FLOOR)
        balcony = _best(seller, buyer, event_id, "Balcony", 2)
        assert balcony.status_code == 202, balcony.get_json()


def test_reconciliation_puts_seats_back_as_sql_has_them(client, app, admin, rt, settings):
    event_id = _on_sale(client, admin)["id"]
    buyer = make_user(app)
    sold = _buy(client, buyer, event_id, ["A-1-1", "A-1-2"]).get_json()["ticket_id"]
    assert _settled(client, settings, buyer, sold)["status"] == "confirmed"
    held = _buy(client, buyer, event_id, ["B-1-1"]).get_json()["ticket_id"]
    product_id = _product(rt, event_id)
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"

    keys = rt.inventory.keys(product_id)
    rt.inventory_redis.hset(keys.seats, "A-1-2", "f")  # a sold seat that Redis lost track of
    rt.inventory_redis.zadd(
        keys.free_seats, {"A-1-2": rt.inventory_redis.hget(keys.seat_ranks, "A-1-2")}
    )
    rt.inventory_redis.hset(
        keys.seats, "A-1-6", "h:1-000000000000000000000000"
    )  # held by no ticket
    rt.inventory_redis.zrem(keys.free_seats, "A-1-6")
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "repaired"
    states = _states(rt, event_id)
    assert states["A-1-2"] == f"s:{sold}" and states["A-1-6"] == "f"
    assert states["B-1-1"] == f"h:{held}"  # an open hold's seat is left alone
    free = set(rt.inventory_redis.zrange(keys.free_seats, 0, -1))
    assert "A-1-2" not in free and "A-1-6" in free
    assert reconcile_product(rt.inventory, rt.sessions, product_id).result == "consistent"
    assert (
        _buy(client, make_user(app), event_id, ["A-1-2"]).get_json()["error"] == "seats_unavailable"
    )
