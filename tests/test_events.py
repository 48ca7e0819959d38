"""Events and their seat maps in SQL: an admin creates, edits, uploads the map, publishes and
cancels; everyone else sees published events only; bad maps are refused whole; the database
refuses one seat in two live orders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from core.db import transaction
from core.events.seatmap import MAX_SEATS
from core.inventory import Hold
from core.keys import new_ticket_id
from core.models import Seat
from core.orders import live_seats, record_orders, transition
from core.tickets import OrderStatus
from tests.helpers import buyer_ids, stocked_product
from tests.test_api_errors import assert_error
from web.extensions import db

SOON = datetime.now(UTC) + timedelta(days=30)


def _event(client: Any, admin: Any, **fields: Any) -> dict[str, Any]:
    body = {"title": "Night concert", "venue": "Main hall", "starts_at": SOON.isoformat()}
    response = client.post("/events", json=body | fields, headers=admin.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _map(*sections: dict[str, Any]) -> dict[str, Any]:
    return {"sections": list(sections)}


HALL = _map(
    {"name": "A", "price": "80.00", "rows": [{"name": "1", "seats": 5}, {"name": "2", "seats": 4}]},
    {"name": "B", "price": 40, "rows": [{"name": "1", "seats": [1, 2, 4, 5]}]},
    {"name": "Floor", "price": "25.50", "capacity": 300},
)


def _put_map(client: Any, admin: Any, event_id: int, body: dict[str, Any]) -> Any:
    return client.put(f"/events/{event_id}/seatmap", json=body, headers=admin.headers)


def _seats(app: Any, event_id: int) -> dict[str, int]:
    """label -> rank of the event's seats in SQL."""
    with app.app_context():
        query = select(Seat.label, Seat.rank).where(Seat.event_id == event_id)
        found = {label: rank for label, rank in db.session.execute(query)}
        db.session.rollback()
        return found


def test_an_event_goes_from_draft_to_published_with_its_seat_map(client, app, admin, buyer):
    event = _event(client, admin, category="music", currency="EUR")
    assert event["status"] == "draft" and event["sections"] == []
    assert_error(client.get(f"/events/{event['id']}", headers=buyer.headers), 404, "not_found")
    assert event["id"] not in [e["id"] for e in client.get("/events").get_json()["events"]]
    refused = client.post(f"/events/{event['id']}/publish", headers=admin.headers)
    assert_error(refused, 409, "no_seat_map")

    stored = _put_map(client, admin, event["id"], HALL)
    assert stored.status_code == 200, stored.get_json()
    assert stored.get_json() == {
        "event_id": event["id"],
        "sections": 3,
        "seats": 13,
        "standing": 300,
    }
    published = client.post(f"/events/{event['id']}/publish", headers=admin.headers)
    assert published.status_code == 200 and published.get_json()["status"] == "published"

    seen = client.get(f"/events/{event['id']}").get_json()
    assert [(s["name"], s["price"], s["kind"], s["seats"]) for s in seen["sections"]] == [
        ("A", "80.00", "seated", 9),
        ("B", "40.00", "seated", 4),
        ("Floor", "25.50", "standing", 300),
    ]
    assert event["id"] in [e["id"] for e in client.get("/events").get_json()["events"]]


def test_seat_ids_and_default_ranks_put_front_rows_and_the_middle_first(client, app, admin):
    event = _event(client, admin)
    assert _put_map(client, admin, event["id"], HALL).status_code == 200
    seats = _seats(app, event["id"])
    assert set(seats) == {
        *(f"A-1-{n}" for n in range(1, 6)),
        *(f"A-2-{n}" for n in range(1, 5)),
        *(f"B-1-{n}" for n in (1, 2, 4, 5)),
    }
    best_first = sorted(seats, key=seats.__getitem__)
    assert best_first[0] == "A-1-3"  # the middle of the front row of the first section
    assert best_first.index("A-1-5") < best_first.index("A-2-2") < best_first.index("B-1-2")


def test_a_row_may_give_its_own_ranks(client, app, admin):
    event = _event(client, admin)
    body = _map({"name": "A", "price": 10, "rows": [{"name": "1", "seats": 3, "ranks": [5, 1, 9]}]})
    assert _put_map(client, admin, event["id"], body).status_code == 200
    assert _seats(app, event["id"]) == {
        "A-1-1": 5,
        "A-1-2": 1,
        "A-1-3": 9,
    }


def test_a_new_map_replaces_the_old_one_until_the_sale_starts(client, app, admin):
    starts = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    event = _event(client, admin, sale_starts_at=starts)
    assert _put_map(client, admin, event["id"], HALL).status_code == 200
    client.post(f"/events/{event['id']}/publish", headers=admin.headers)
    smaller = _map({"name": "C", "price": 5, "rows": [{"name": "1", "seats": 2}]})
    assert _put_map(client, admin, event["id"], smaller).status_code == 200
    assert sorted(_seats(app, event["id"])) == ["C-1-1", "C-1-2"]

    opened = client.patch(
        f"/events/{event['id']}",
        json={"sale_starts_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
        headers=admin.headers,
    )
    assert opened.status_code == 200, opened.get_json()
    assert_error(_put_map(client, admin, event["id"], HALL), 409, "sale_started")
    assert sorted(_seats(app, event["id"])) == ["C-1-1", "C-1-2"]


BAD_MAPS = {
    "no sections": {"sections": []},
    "unknown field": _map({"name": "A", "price": 1, "capacity": 5, "colour": "red"}),
    "unknown top field": {"sections": [{"name": "A", "price": 1, "capacity": 5}], "x": 1},
    "duplicate section": _map(
        {"name": "A", "price": 1, "capacity": 5}, {"name": "A", "price": 1, "capacity": 5}
    ),
    "duplicate row": _map(
        {"name": "A", "price": 1, "rows": [{"name": "1", "seats": 2}, {"name": "1", "seats": 2}]}
    ),
    "duplicate seat": _map({"name": "A", "price": 1, "rows": [{"name": "1", "seats": [3, 3]}]}),
    "empty section": _map({"name": "A", "price": 1, "rows": []}),
    "empty row": _map({"name": "A", "price": 1, "rows": [{"name": "1", "seats": []}]}),
    "rows and capacity": _map(
        {"name": "A", "price": 1, "capacity": 5, "rows": [{"name": "1", "seats": 2}]}
    ),
    "neither rows nor capacity": _map({"name": "A", "price": 1}),
    "a dash in a name": _map({"name": "A-1", "price": 1, "capacity": 5}),
    "ranks of the wrong length": _map(
        {"name": "A", "price": 1, "rows": [{"name": "1", "seats": 3, "ranks": [1, 2]}]}
    ),
    "free seats": _map({"name": "A", "price": 0, "capacity": 5}),
    "a price the currency cannot hold": _map({"name": "A", "price": "1.001", "capacity": 5}),
    "a count as a string": _map({"name": "A", "price": 1, "rows": [{"name": "1", "seats": "2"}]}),
    "over the seat limit": _map(
        {
            "name": "A",
            "price": 1,
            "rows": [{"name": str(n), "seats": 1000} for n in range(MAX_SEATS // 1000 + 1)],
        }
    ),
}


@pytest.mark.parametrize("body", list(BAD_MAPS.values()), ids=list(BAD_MAPS))
def test_a_malformed_seat_map_is_refused_and_the_old_one_stays(client, app, admin, body):
    event = _event(client, admin)
    assert _put_map(client, admin, event["id"], HALL).status_code == 200
    before = sorted(_seats(app, event["id"]))
    assert_error(_put_map(client, admin, event["id"], body), 400)
    assert sorted(_seats(app, event["id"])) == before
    sections = client.get(f"/events/{event['id']}", headers=admin.headers).get_json()["sections"]
    assert [s["name"] for s in sections] == ["A", "B", "Floor"]


def test_a_hall_of_a_hundred_thousand_seats_is_stored(client, app, admin):
    event = _event(client, admin)
    rows = [{"name": str(n), "seats": 500} for n in range(1, 101)]
    body = _map(*({"name": name, "price": 50, "rows": rows} for name in ("A", "B")))
    stored = _put_map(client, admin, event["id"], body)
    assert stored.status_code == 200, stored.get_json()
    assert stored.get_json()["seats"] == MAX_SEATS
    with app.app_context():
        count = db.session.scalar(select(func.count()).where(Seat.event_id == event["id"]))
        db.session.rollback()
    assert count == MAX_SEATS


def test_only_admins_change_events_and_seat_maps(client, admin, buyer):
    event = _event(client, admin)
    path = f"/events/{event['id']}"
    body = {"title": "x", "venue": "y", "starts_at": SOON.isoformat()}
    assert_error(client.post("/events", json=body, headers=buyer.headers), 403, "forbidden")
    assert_error(client.patch(path, json={"title": "z"}, headers=buyer.headers), 403)
    assert_error(client.put(f"{path}/seatmap", json=HALL, headers=buyer.headers), 403)
    assert_error(client.post(f"{path}/publish", headers=buyer.headers), 403)
    assert_error(client.post(f"{path}/cancel"), 401)


@pytest.mark.parametrize(
    "change",
    [
        {"title": None},
        {"starts_at": None},
        {"title": ""},
        {"image_url": "javascript:alert(1)"},
        {"ends_at": (SOON - timedelta(hours=1)).isoformat()},
        {"max_per_user": -1},
        {"status": "published"},
        {"currency": "USD"},
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(client, admin, change):
    event = _event(client, admin)
    assert_error(client.patch(f"/events/{event['id']}", json=change, headers=admin.headers), 400)
    assert client.get(f"/events/{event['id']}", headers=admin.headers).get_json() == event


def test_a_cancelled_event_stays_listed_and_changes_no_more(client, admin):
    event = _event(client, admin)
    assert _put_map(client, admin, event["id"], HALL).status_code == 200
    client.post(f"/events/{event['id']}/publish", headers=admin.headers)
    cancelled = client.post(f"/events/{event['id']}/cancel", headers=admin.headers)
    assert cancelled.get_json()["status"] == "cancelled"
    assert client.get(f"/events/{event['id']}").get_json()["status"] == "cancelled"
    again = client.post(f"/events/{event['id']}/cancel", headers=admin.headers)
    assert_error(again, 409, "event_cancelled")
    assert_error(_put_map(client, admin, event["id"], HALL), 409, "event_cancelled")
    renamed = client.patch(f"/events/{event['id']}", json={"title": "x"}, headers=admin.headers)
    assert_error(renamed, 409, "event_cancelled")
    assert_error(client.post(f"/events/{event['id']}/publish", headers=admin.headers), 409)


def _hold(product_id: int, user_id: int, seats: tuple[str, ...]) -> Hold:
    now = int(datetime.now(UTC).timestamp() * 1000)
    return Hold(
        ticket_id=new_ticket_id(product_id),
        user_id=user_id,
        quantity=len(seats),
        amount_minor=100,
        deadline_ms=now + 600_000,
        status=OrderStatus.RESERVED.value,
        reason=None,
        payment_method="pm_card_visa",
        created_ms=now,
        modified_ms=now,
        seats=seats,
    )


def test_the_database_refuses_one_seat_in_two_live_orders(client, admin, rt):
    event_id = _event(client, admin)["id"]
    assert _put_map(client, admin, event_id, HALL).status_code == 200
    product_id, (one, two) = stocked_product(rt, stock=5), buyer_ids(rt, 2)
    first = _hold(product_id, one, ("A-1-1", "A-1-2"))
    second = _hold(product_id, two, ("A-1-2", "A-1-3"))
    reserved = OrderStatus.RESERVED

    def record(hold: Hold) -> set[str]:
        with transaction(rt.sessions) as session:
            return record_orders(session, [(hold, reserved)], product_id, "USD", event_id)

    assert record(first) == set()
    assert record(second) == {second.ticket_id}  # A-1-2 is the first order's
    assert record(first) == set()  # recording again changes nothing
    with rt.sessions() as session:
        assert live_seats(session, event_id) == {
            "A-1-1": first.ticket_id,
            "A-1-2": first.ticket_id,
            "A-1-3": second.ticket_id,
        }

    with transaction(rt.sessions) as session:  # the first order fails: its seats come back
        assert transition(session, [first.ticket_id, second.ticket_id], OrderStatus.FAILED) == 2
    later = _hold(product_id, two, ("A-1-2",))
    assert record(later) == set()
    with transaction(rt.sessions) as session:
        assert transition(session, [later.ticket_id], OrderStatus.CONFIRMED) == 1
    with transaction(rt.sessions) as session:  # a refused move keeps a confirmed order's seats
        assert transition(session, [later.ticket_id], OrderStatus.FAILED) == 0
    with rt.sessions() as session:
        assert live_seats(session, event_id) == {"A-1-2": later.ticket_id}
