"""An event once it has orders: its seat map is fixed even when the sale is put off, an admin's
change that finds its stock missing in Redis brings back what was sold, and the per-buyer limit
counts per product (all the seats together, each standing section on its own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from core.models import EventSection, Order, Product
from tests.helpers import Account, make_user
from tests.test_api_errors import assert_error
from tests.test_seats import _settled

FLOOR = {"sections": [{"name": "Floor", "price": "25.00", "capacity": 2}]}


def _event_on_sale(client: Any, admin: Account, seat_map: dict[str, Any], limit: int) -> int:
    """A published event whose sale is open, with that map and per-buyer limit."""
    starts = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    body = {"title": "Show", "venue": "Hall", "starts_at": starts, "currency": "USD"}
    created = client.post("/events", json=body | {"max_per_user": limit}, headers=admin.headers)
    event_id = created.get_json()["id"]
    assert _put_map(client, admin, event_id, seat_map).status_code == 200
    published = client.post(f"/events/{event_id}/publish", headers=admin.headers)
    assert published.status_code == 200, published.get_json()
    return event_id


def _put_map(client: Any, admin: Account, event_id: int, seat_map: dict[str, Any]) -> Any:
    return client.put(f"/events/{event_id}/seatmap", json=seat_map, headers=admin.headers)


def _sale_starts(client: Any, admin: Account, event_id: int, delta: timedelta) -> None:
    moved = client.patch(
        f"/events/{event_id}",
        json={"sale_starts_at": (datetime.now(UTC) + delta).isoformat()},
        headers=admin.headers,
    )
    assert moved.status_code == 200, moved.get_json()


def _buy(client: Any, buyer: Account, event_id: int, **choice: Any) -> Any:
    body = {"payment_method": "pm_card_visa"} | choice
    return client.post(f"/events/{event_id}/purchase", json=body, headers=buyer.headers)


def _places(
    client: Any, buyer: Account, event_id: int, section: str = "Floor", **extra: Any
) -> Any:
    return _buy(client, buyer, event_id, section=section, quantity=1, **extra)


def _bought(client: Any, settings: Any, buyer: Account, response: Any) -> dict[str, Any]:
    assert response.status_code == 202, response.get_json()
    return _settled(client, settings, buyer, response.get_json()["ticket_id"])


def _section_product(rt: Any, event_id: int, section: str) -> int:
    with rt.sessions() as session:
        return session.scalar(
            select(Product.id)
            .join(EventSection, EventSection.id == Product.section_id)
            .where(EventSection.event_id == event_id, EventSection.name == section)
        )


def _confirmed_per_buyer(rt: Any, product_id: int) -> dict[int, int]:
    with rt.sessions() as session:
        rows = session.execute(
            select(Order.user_id, func.sum(Order.quantity))
            .where(Order.product_id == product_id, Order.status == "confirmed")
            .group_by(Order.user_id)
        )
        return {user_id: int(units) for user_id, units in rows}


def test_a_sold_out_event_put_off_keeps_its_map_and_never_oversells(
    client, app, admin, rt, settings
):
    event_id = _event_on_sale(client, admin, FLOOR, limit=1)
    first, second, late, later = (make_user(app) for _ in range(4))
    for buyer in (first, second):
        assert _bought(client, settings, buyer, _places(client, buyer, event_id))["status"] == (
            "confirmed"
        )

    _sale_starts(client, admin, event_id, timedelta(days=1))
    price_fixed = {"sections": [{"name": "Floor", "price": "30.00", "capacity": 2}]}
    reupload = _put_map(client, admin, event_id, price_fixed)
    _sale_starts(client, admin, event_id, -timedelta(minutes=1))

    for buyer in (first, late, later):
        answer = _places(client, buyer, event_id)
        if answer.status_code == 202:
            _settled(client, settings, buyer, answer.get_json()["ticket_id"])
    sold = _confirmed_per_buyer(rt, _section_product(rt, event_id, "Floor"))
    outcome = (reupload.status_code, reupload.get_json().get("error"))
    assert (*outcome, sum(sold.values()), max(sold.values())) == (409, "event_has_orders", 2, 1)
    figures = rt.inventory.figures(_section_product(rt, event_id, "Floor"))
    assert (figures.available, figures.sold) == (0, 2)
    seen = client.get(f"/events/{event_id}").get_json()["sections"]
    assert [(s["name"], s["price"]) for s in seen] == [("Floor", "25.00")]


def test_a_purchase_not_yet_settled_fixes_the_map_too(client, app, admin, rt):
    event_id = _event_on_sale(client, admin, FLOOR, limit=1)
    held = _places(client, make_user(app), event_id)  # accepted; no worker has written it
    assert held.status_code == 202, held.get_json()
    _sale_starts(client, admin, event_id, timedelta(days=1))
    price_fixed = {"sections": [{"name": "Floor", "price": "30.00", "capacity": 2}]}
    assert_error(_put_map(client, admin, event_id, price_fixed), 409, "event_has_orders")
    figures = rt.inventory.figures(_section_product(rt, event_id, "Floor"))
    assert (figures.available, figures.held) == (1, 1)


def test_a_map_dropping_a_section_with_orders_is_refused_whole(client, app, admin, settings):
    two_floors = {
        "sections": [
            {"name": "Floor", "price": "25.00", "capacity": 2},
            {"name": "Balcony", "price": "15.00", "capacity": 2},
        ]
    }
    event_id = _event_on_sale(client, admin, two_floors, limit=0)
    buyer = make_user(app)
    declined = _places(client, buyer, event_id, payment_method="pm_card_chargeDeclined")
    assert _bought(client, settings, buyer, declined)["status"] == "failed"  # an order still

    _sale_starts(client, admin, event_id, timedelta(days=1))
    refused = _put_map(client, admin, event_id, {"sections": two_floors["sections"][1:]})
    assert_error(refused, 409, "event_has_orders")
    seen = client.get(f"/events/{event_id}").get_json()["sections"]
    assert [s["name"] for s in seen] == ["Floor", "Balcony"]


def test_a_change_that_finds_the_stock_missing_rebuilds_it_from_sql(
    client, app, admin, rt, settings
):
    event_id = _event_on_sale(client, admin, FLOOR, limit=1)
    buyer = make_user(app)
    assert _bought(client, settings, buyer, _places(client, buyer, event_id))["status"] == (
        "confirmed"
    )
    product_id = _section_product(rt, event_id, "Floor")
    rt.inventory_redis.delete(*rt.inventory.keys(product_id).all())  # Redis lost the product

    renamed = client.patch(f"/events/{event_id}", json={"title": "Show II"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.get_json()
    figures = rt.inventory.figures(product_id)
    assert (figures.available, figures.sold) == (1, 1)
    assert_error(_places(client, buyer, event_id), 409, "per_user_limit")


def test_the_limit_counts_per_product_all_seats_together_each_standing_section_alone(
    client, app, admin
):
    hall = {
        "sections": [
            {"name": "A", "price": "80.00", "rows": [{"name": "1", "seats": 4}]},
            {"name": "B", "price": "40.00", "rows": [{"name": "1", "seats": 4}]},
            {"name": "Floor", "price": "25.00", "capacity": 10},
            {"name": "Balcony", "price": "15.00", "capacity": 10},
        ]
    }
    event_id = _event_on_sale(client, admin, hall, limit=1)
    buyer = make_user(app)
    assert _buy(client, buyer, event_id, seats=["A-1-1"]).status_code == 202
    assert_error(_buy(client, buyer, event_id, seats=["B-1-1"]), 409, "per_user_limit")
    assert _places(client, buyer, event_id, "Floor").status_code == 202
    assert _places(client, buyer, event_id, "Balcony").status_code == 202
    assert_error(_places(client, buyer, event_id, "Floor"), 409, "per_user_limit")
    assert_error(_places(client, buyer, event_id, "Balcony"), 409, "per_user_limit")
