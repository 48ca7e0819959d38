"""The rush: hundreds of buyers over real HTTP (gunicorn) at once on a small stock."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import func, select

from core.models import Order
from core.stock import reconcile_product
from tests.helpers import create_product, make_user, make_users, run_workers, rush
from tests.servers import Gunicorn, clean_env, wait_until

BUYERS = 320
UNITS = 100


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    gunicorn = Gunicorn(clean_env({}), workers=2, threads=16).start()
    yield gunicorn
    gunicorn.stop()


@pytest.mark.slow
def test_rush_sells_exactly_the_stock(server, app, settings, rt, capsys):
    admin = make_user(app, "admin")
    product = create_product(app.test_client(), admin, stock=UNITS, max_per_user=1)
    buyers = make_users(app, BUYERS)

    started = time.monotonic()
    responses = asyncio.run(rush(server.url, product["id"], [b.token for b in buyers]))
    rush_s = time.monotonic() - started
    codes = [r.status_code for r in responses]
    assert codes.count(202) == UNITS, sorted(set(codes))
    assert codes.count(409) == BUYERS - UNITS
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"sold_out"}
    tickets = {
        r.json()["ticket_id"]: b
        for r, b in zip(responses, buyers, strict=True)
        if r.status_code == 202
    }
    assert len(tickets) == UNITS

    def all_confirmed() -> bool:
        run_workers(settings)
        with rt.sessions() as session:
            confirmed = session.scalar(
                select(func.count()).where(
                    Order.product_id == product["id"], Order.status == "confirmed"
                )
            )
        return confirmed == UNITS

    wait_until(all_confirmed, 120, "every ticket to be confirmed")
    drain_s = time.monotonic() - started - rush_s

    with httpx.Client(base_url=server.url, timeout=10) as http:
        for ticket_id, buyer in list(tickets.items())[:20]:
            body = http.get(f"/orders/{ticket_id}", headers=buyer.headers).json()
            assert body["status"] == "confirmed"
        assert http.get(f"/products/{product['id']}").json()["available"] == 0
    figures = rt.inventory.figures(product["id"])
    assert (figures.available, figures.held, figures.sold) == (0, 0, UNITS)
    assert reconcile_product(rt.inventory, rt.sessions, product["id"]).result == "consistent"
    with capsys.disabled():
        print(
            f"\nrush: buyers={BUYERS} units={UNITS} accepted={codes.count(202)} "
            f"sold_out={codes.count(409)} confirmed={UNITS} rush_s={rush_s:.2f} "
            f"drain_s={drain_s:.2f}"
        )
