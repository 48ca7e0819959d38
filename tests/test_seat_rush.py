"""A rush on named seats over real HTTP (gunicorn): 2,000 buyers each asking for 2-4 seats drawn
from overlapping sets of one section. No seat is held or sold twice, every accepted ticket holds
exactly the seats it asked for, every refusal names a seat another ticket holds, and after
settlement SQL and Redis agree seat by seat."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from sqlalchemy import select

from core.models import Product
from core.orders import live_seats
from tests.helpers import make_users, run_workers, seat_blocks, seated_hall
from tests.servers import Gunicorn, clean_env, wait_until

BUYERS = 2000
ROWS, SEATS_PER_ROW = 20, 30
IN_FLIGHT = 200


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    gunicorn = Gunicorn(clean_env({}), workers=2, threads=16).start()
    yield gunicorn
    gunicorn.stop()


def _asks(count: int) -> list[list[str]]:
    """2-4 seats side by side each, drawn so that neighbours' asks overlap."""
    draw = random.Random(2026)
    asks = []
    for _ in range(count):
        row, size = draw.randint(1, ROWS), draw.randint(2, 4)
        first = draw.randint(1, SEATS_PER_ROW - size + 1)
        asks.append([f"A-{row}-{n}" for n in range(first, first + size)])
    return asks


async def _rush(
    url: str, event_id: int, tokens: list[str], asks: list[list[str]]
) -> list[httpx.Response]:
    # A connection a request at a time: gunicorn closes idle kept-alive connections after 2 s,
    # which a busy rush can reuse just as they close (a ReadError that says nothing of seats).
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def one(token: str, seats: list[str]) -> httpx.Response:
            async with gate:
                return await http.post(
                    f"/events/{event_id}/purchase",
                    json={"seats": seats, "payment_method": "pm_card_visa"},
                    headers={"Authorization": f"Bearer {token}"},
                )

        return await asyncio.gather(*(one(t, s) for t, s in zip(tokens, asks, strict=True)))


@pytest.mark.slow
def test_a_rush_on_named_seats_never_sells_one_twice(server, app, settings, rt):
    event = seated_hall(app, "Rush", ROWS, SEATS_PER_ROW)
    buyers, asks = make_users(app, BUYERS), _asks(BUYERS)

    responses = asyncio.run(_rush(server.url, event["id"], [b.token for b in buyers], asks))
    owner: dict[str, str] = {}
    refusals = []
    for seats, response in zip(asks, responses, strict=True):
        body = response.json()
        if response.status_code == 202:
            assert body["seats"] == seats
            for seat in seats:
                assert seat not in owner, f"{seat}: {owner[seat]} and {body['ticket_id']}"
                owner[seat] = body["ticket_id"]
        else:
            assert (response.status_code, body["error"]) == (409, "seats_unavailable"), body
            assert body["seats"] and set(body["seats"]) <= set(seats)
            refusals.append(body["seats"])
    assert refusals and owner
    for named in refusals:
        assert all(seat in owner for seat in named), named  # taken by an accepted ticket

    product_id = _product(rt, event["id"])

    def settled() -> bool:
        run_workers(settings)
        if rt.inventory_redis.hlen(rt.inventory.keys(product_id).holds):
            return False
        with rt.sessions() as session:
            return live_seats(session, event["id"]) == owner

    wait_until(settled, 120, "every accepted ticket to be settled")
    states = rt.inventory_redis.hgetall(rt.inventory.keys(product_id).seats)
    assert {seat for seat, state in states.items() if state != "f"} == set(owner)
    assert all(states[seat] == f"s:{ticket}" for seat, ticket in owner.items())
    figures = rt.inventory.figures(product_id)
    assert (figures.sold, figures.held, figures.available) == (
        len(owner),
        0,
        ROWS * SEATS_PER_ROW - len(owner),
    )


def _product(rt, event_id: int) -> int:  # type: ignore[no-untyped-def]
    with rt.sessions() as session:
        return session.scalar(select(Product.id).where(Product.event_id == event_id))


async def _rush_best(url: str, event_id: int, tokens: list[str], size: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    gate = asyncio.Semaphore(IN_FLIGHT)
    body = {"section": "A", "quantity": size, "together": True, "payment_method": "pm_card_visa"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def one(token: str) -> httpx.Response:
            async with gate:
                return await http.post(
                    f"/events/{event_id}/purchase",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )

        return await asyncio.gather(*(one(t) for t in tokens))


@pytest.mark.slow
def test_a_rush_for_best_seats_together_gets_adjacent_seats_never_worse(server, app, rt):
    """500 buyers asking for 4 together: each ticket's seats are side by side in one row, and
    replayed in the order Redis held them, no block with a better seat was free."""
    event = seated_hall(app, "Best", 30, 38)
    buyers = make_users(app, 500)

    responses = asyncio.run(_rush_best(server.url, event["id"], [b.token for b in buyers], 4))
    held = {r.json()["ticket_id"]: r.json()["seats"] for r in responses if r.status_code == 202}
    refusals = [r.json()["error"] for r in responses if r.status_code != 202]
    assert len(held) + len(refusals) == 500 and held and refusals
    assert set(refusals) <= {"not_enough_adjacent", "sold_out"}, set(refusals)

    product_id = _product(rt, event["id"])
    keys = rt.inventory.keys(product_id)
    ranks = {
        seat: float(score) for seat, score in rt.inventory_redis.hgetall(keys.seat_ranks).items()
    }
    free = set(ranks)
    order = [
        f["ticket"]
        for _, f in rt.inventory_redis.xrange(keys.events)
        if f.get("action") == "reserve"
    ]
    assert sorted(order) == sorted(held)
    for ticket in order:
        seats = held[ticket]
        row = seats[0].rsplit("-", 1)[0]
        numbers = [int(seat.rsplit("-", 1)[1]) for seat in seats]
        assert {seat.rsplit("-", 1)[0] for seat in seats} == {row}, seats
        assert numbers == list(range(numbers[0], numbers[0] + 4)), seats
        assert set(seats) <= free, seats
        best_now = min(min(ranks[s] for s in block) for block in seat_blocks(free, 4))
        assert min(ranks[s] for s in seats) == best_now, (ticket, seats)
        free -= set(seats)
    assert not seat_blocks(free, 4)  # the refused found no four seats side by side
