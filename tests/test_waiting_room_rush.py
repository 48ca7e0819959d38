"""5,000 buyers join a waiting room at once over real HTTP (gunicorn): their places are a
permutation of 1..5,000 in the order Redis took the joins, admission follows the places exactly,
and no second admits more than the room's rate."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.helpers import create_product, make_user, make_users
from tests.servers import Gunicorn, clean_env, wait_until

BUYERS = 5000
RATE = 2500
IN_FLIGHT = 200


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    gunicorn = Gunicorn(clean_env({}), workers=2, threads=16).start()
    yield gunicorn
    gunicorn.stop()


async def _join_all(url: str, product_id: int, tokens: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=0)
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:

        async def one(token: str) -> httpx.Response:
            async with gate:
                return await http.post(
                    f"/queue/{product_id}/join", headers={"Authorization": f"Bearer {token}"}
                )

        return await asyncio.gather(*(one(token) for token in tokens))


@pytest.mark.slow
def test_five_thousand_joins_get_places_in_order_and_admission_keeps_the_rate(server, app, rt):
    admin = make_user(app, "admin")
    product = create_product(
        app.test_client(), admin, stock=10_000, waiting_room=True, admit_per_second=RATE
    )
    buyers = make_users(app, BUYERS)
    answers = asyncio.run(_join_all(server.url, product["id"], [b.token for b in buyers]))
    assert {a.status_code for a in answers} == {200}
    positions = {b.id: a.json()["position"] for b, a in zip(buyers, answers, strict=True)}
    assert sorted(positions.values()) == list(range(1, BUYERS + 1))
    keys = rt.inventory.keys(product["id"])
    taken = {
        int(b): int(p) for b, p in rt.inventory_redis.zrange(keys.queue, 0, -1, withscores=True)
    }
    assert taken == positions

    last = max(buyers, key=lambda b: positions[b.id])

    def everyone_admitted() -> bool:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            answer = http.get(f"/queue/{product['id']}/status", headers=last.headers)
        return answer.json()["status"] == "admitted"

    wait_until(everyone_admitted, 60, "the last place to be admitted", every=0.2)
    admits = [(int(f["position"]), int(f["at"])) for _, f in rt.inventory_redis.xrange(keys.admits)]
    assert [position for position, _ in admits] == list(range(1, BUYERS + 1))
    moments = [at for _, at in admits]
    end = 0
    for start_index, start in enumerate(moments):  # any second: at most RATE admissions
        while end < len(moments) and moments[end] < start + 1000:
            end += 1
        assert end - start_index <= RATE
