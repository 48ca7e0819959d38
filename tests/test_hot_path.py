"""The purchase path's cost in Redis round trips, counted with MONITOR on the real Redis: one for
an accepted purchase, none for a sold-out answer under the process's flag, one for a status poll.
And what the one round trip must still do: the per-buyer rate limit under concurrency, and a
logout refused by every gunicorn worker within a second (no per-request revocation read)."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import pytest

from core.keys import ServiceKeys
from tests.helpers import create_product, make_user, make_users
from tests.redis_monitor import monitored_service
from tests.servers import Gunicorn, clean_env, wait_until

BODY = {"quantity": 1, "payment_method": "pm_card_visa"}


def _buy(client, account, product_id: int):  # type: ignore[no-untyped-def]
    return client.post(f"/purchase/{product_id}", json=BODY, headers=account.headers)


def _hand_off(log, command) -> bool:  # type: ignore[no-untyped-def]
    if command.words[:2] == ["INFO", "server"]:
        return True  # RQ asks the server's version once per connection, on its first enqueue
    keys = log.keys_of(command)
    return bool(keys) and all(k.endswith(":drain-queued") for k in keys)


def _request_path(log) -> list:  # type: ignore[no-untyped-def]
    """What the requests sent: the settlement hand-off of an earlier purchase runs on the
    kicker's own thread up to 50 ms later, and may fall inside the window."""
    return [c for c in log.sent() if not _hand_off(log, c)]


def test_an_accepted_purchase_is_one_redis_round_trip(app, client, admin, settings):
    product = create_product(client, admin, stock=20)
    buyers = make_users(app, 6)
    assert _buy(client, buyers[0], product["id"]).status_code == 202  # scripts loaded
    with monitored_service(settings) as log:
        for buyer in buyers[1:]:
            assert _buy(client, buyer, product["id"]).status_code == 202
    # The settlement hand-off runs on the kicker's own thread, off the request path: RQ's keys
    # and the product's drain-queued mark.
    sent = _request_path(log)
    assert [c.name for c in sent] == ["EVALSHA"] * 5, [c.words[:3] for c in sent]
    assert sum(c.name == "EVALSHA" for c in log.sent()) == 5


def test_a_sold_out_answer_under_the_flag_makes_no_round_trip(app, client, admin, settings):
    product = create_product(client, admin, stock=1)
    buyers = make_users(app, 7)
    assert _buy(client, buyers[0], product["id"]).status_code == 202
    assert _buy(client, buyers[1], product["id"]).status_code == 409  # sets the flag
    with monitored_service(settings) as log:
        for buyer in buyers[2:]:
            refused = _buy(client, buyer, product["id"])
            assert refused.status_code == 409
            assert refused.get_json()["error"] == "sold_out"
    assert _request_path(log) == []


def test_a_status_poll_is_at_most_one_round_trip(app, client, admin, buyer, settings):
    product = create_product(client, admin, stock=3)
    ticket = _buy(client, buyer, product["id"]).get_json()["ticket_id"]
    assert client.get(f"/orders/{ticket}", headers=buyer.headers).status_code == 200
    with monitored_service(settings) as log:
        for _ in range(3):
            polled = client.get(f"/orders/{ticket}", headers=buyer.headers)
            assert polled.status_code == 200
            assert polled.get_json()["ticket_id"] == ticket
    assert [c.name for c in _request_path(log)] == ["EVALSHA"] * 3


SERVER_PREFIX = f"hot{secrets.token_hex(3)}"  # its revocation channel is the server's alone


@pytest.fixture(scope="module")
def limited_server():  # type: ignore[no-untyped-def]
    env = clean_env(
        {
            "RATELIMIT_ENABLED": "true",
            "RATELIMIT_PURCHASE": "5/minute",
            "REDIS_KEY_PREFIX": SERVER_PREFIX,
        }
    )
    server = Gunicorn(env, workers=2, threads=8).start()
    yield server
    server.stop()


def _server_product(server: Gunicorn, admin, stock: int) -> int:  # type: ignore[no-untyped-def]
    body = {"name": "hot path drop", "price": "5.00", "stock": stock}
    created = httpx.post(f"{server.url}/products", json=body, headers=admin.headers, timeout=10)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def _at_once(url: str, token: str, product_id: int, count: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await asyncio.gather(
            *(
                http.post(f"/purchase/{product_id}", json=BODY, headers=headers)
                for _ in range(count)
            )
        )


def test_the_purchase_rate_limit_holds_under_concurrency(app, admin, limited_server):
    product_id = _server_product(limited_server, admin, stock=50)
    eager, patient = make_user(app), make_user(app)
    answers = asyncio.run(_at_once(limited_server.url, eager.token, product_id, 20))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 5 + [429] * 15, codes
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
    served = asyncio.run(_at_once(limited_server.url, patient.token, product_id, 1))
    assert served[0].status_code == 202  # the limit is the buyer's, not everybody's


def test_a_logout_is_refused_by_every_worker_within_a_second(app, limited_server, rt):
    user = make_user(app, password="correct horse")
    with httpx.Client(base_url=limited_server.url, timeout=10) as http:
        login = {"username": user.username, "password": "correct horse"}
        token = http.post("/auth/login", json=login).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        channel = ServiceKeys(SERVER_PREFIX).revocations

        def fresh_connection_me():  # type: ignore[no-untyped-def]
            """A request on a connection of its own: whichever worker accepts it answers."""
            return httpx.get(f"{limited_server.url}/auth/me", headers=headers, timeout=10)

        def both_workers_follow() -> bool:
            for _ in range(8):  # requests start each worker's watch
                assert fresh_connection_me().status_code == 200
            return rt.redis.pubsub_numsub(channel)[0][1] >= 2

        wait_until(both_workers_follow, 10, "both workers to subscribe to revocations")
        assert http.post("/auth/logout", headers=headers).status_code == 200

        def refused_everywhere() -> bool:
            answers = [fresh_connection_me() for _ in range(10)]
            return all(a.status_code == 401 for a in answers)

        wait_until(refused_everywhere, 1.0, "every worker to refuse the logged-out token")


def test_a_purchase_of_a_split_product_is_one_round_trip_while_the_buyers_bucket_has_units(
    app, client, admin, settings
):
    product = create_product(client, admin, stock=40, buckets=4)
    buyers = make_users(app, 6)
    # The process learns the number of buckets from its first purchase (two calls, once).
    assert _buy(client, buyers[0], product["id"]).status_code == 202
    with monitored_service(settings) as log:
        for buyer in buyers[1:]:
            assert _buy(client, buyer, product["id"]).status_code == 202
    sent = _request_path(log)
    assert [c.name for c in sent] == ["EVALSHA"] * 5, [c.words[:3] for c in sent]
    tags = {log.keys_of(c)[0].split(":stock")[0] for c in sent}
    assert len(tags) > 1  # the buyers' own buckets, not one
