"""Waiting rooms: places first come first served after the opening, drawn at random (and
reproducibly) for those who came before it, admission at the room's rate and in the order of
the places, and passes that let their buyer buy once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer

from core.rooms import BOARD_MAX_AGE_S, PASS_SALT, issue_pass
from core.stock import rebuild_stock
from tests.helpers import Account, create_product, make_user, make_users, run_workers
from tests.redis_monitor import monitored_service
from tests.servers import wait_until
from tests.test_api_errors import assert_error


def _room(client: Any, admin: Account, rate: int, **fields: Any) -> int:
    product = create_product(
        client, admin, stock=1000, waiting_room=True, admit_per_second=rate, **fields
    )
    assert product["waiting_room"] is True and product["admit_per_second"] == rate
    return product["id"]


def _join(client: Any, buyer: Account, product_id: int) -> Any:
    return client.post(f"/queue/{product_id}/join", headers=buyer.headers)


def _status(client: Any, buyer: Account, product_id: int) -> dict[str, Any]:
    response = client.get(f"/queue/{product_id}/status", headers=buyer.headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _buy(client: Any, buyer: Account, product_id: int, queue_pass: str | None = None) -> Any:
    headers = buyer.headers | ({"X-Queue-Pass": queue_pass} if queue_pass else {})
    body = {"quantity": 1, "payment_method": "pm_card_visa"}
    return client.post(f"/purchase/{product_id}", json=body, headers=headers)


def _together(app: Any, buyers: list[Account], act) -> dict[int, Any]:  # type: ignore[no-untyped-def]
    """Each buyer acts at once, in a thread of its own; their answers by buyer id."""
    answers: dict[int, Any] = {}
    start = threading.Barrier(len(buyers))

    def one(buyer: Account) -> None:
        with app.test_client() as own:
            start.wait()
            answers[buyer.id] = act(own, buyer)

    threads = [threading.Thread(target=one, args=(buyer,)) for buyer in buyers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_places_after_the_opening_are_first_come_first_served_and_admitted_at_the_rate(
    client, app, admin, rt
):
    rate = 80
    product_id = _room(client, admin, rate)
    buyers = make_users(app, 240)
    joined = _together(app, buyers, lambda own, b: _join(own, b, product_id).get_json())
    assert all("position" in body for body in joined.values()), list(joined.values())[:3]
    positions = {buyer_id: body["position"] for buyer_id, body in joined.items()}
    assert sorted(positions.values()) == list(range(1, len(buyers) + 1))
    keys = rt.inventory.keys(product_id)
    recorded = {
        int(b): int(p) for b, p in rt.inventory_redis.zrange(keys.queue, 0, -1, withscores=True)
    }
    assert recorded == positions  # the order Redis took the joins in
    again = _join(client, buyers[0], product_id).get_json()
    assert again["position"] == positions[buyers[0].id]  # one place per buyer

    admitted_seen: set[int] = set()

    def all_admitted() -> bool:
        # Asked from the back (the web process answers from a copy of the serving counter a
        # few hundred ms old, which only grows): a place answered admitted means every place
        # before it, asked after it, is admitted too.
        answers = [_status(client, b, product_id) for b in reversed(buyers)]
        answers.sort(key=lambda a: a["position"])
        admitted = [a["position"] for a in answers if a["status"] == "admitted"]
        assert admitted == list(range(1, len(admitted) + 1)), "admission skipped a place"
        assert set(admitted) >= admitted_seen  # nobody admitted is sent back
        admitted_seen.update(admitted)
        queued = [a for a in answers if a["status"] == "queued"]
        for answer in queued:
            assert answer["ahead"] >= 0 and answer["poll_after_ms"] >= 500
        # Told to ask again about when their turn comes: later the further back.
        waits = [a["poll_after_ms"] for a in queued]
        assert waits == sorted(waits)
        return len(admitted) == len(buyers)

    by_position = sorted(buyers, key=lambda b: positions[b.id])
    buyers = by_position
    wait_until(all_admitted, 30, "every buyer to be admitted")
    admits = [(int(f["position"]), int(f["at"])) for _, f in rt.inventory_redis.xrange(keys.admits)]
    assert [position for position, _ in admits] == list(range(1, len(buyers) + 1))
    moments = [at for _, at in admits]
    for i, start in enumerate(moments):  # no second ever admits more than the rate
        assert sum(1 for m in moments[i:] if m < start + 1000) <= rate


def _xorshift_order(buyers: list[str], seed: int) -> list[str]:
    """The opening's draw as core/lua/lib.lua makes it (LuaBitOp: 32-bit signed values)."""

    def i32(value: int) -> int:
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value

    state = seed
    order = sorted(buyers)
    for i in range(len(order), 1, -1):
        state = i32(state ^ i32(state << 13))
        state = i32(state ^ ((state & 0xFFFFFFFF) >> 17))
        state = i32(state ^ i32(state << 5))
        j = state % i
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


def test_those_who_came_before_the_opening_are_drawn_at_random_and_reproducibly(
    client, app, admin, rt, settings
):
    opens = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    product_id = _room(client, admin, 10_000, sale_starts_at=opens)
    buyers = make_users(app, 2000)
    for buyer in buyers:  # in a known order
        body = _join(client, buyer, product_id).get_json()
        assert (body["status"], body["position"]) == ("waiting", None)
    waiting = _status(client, buyers[0], product_id)
    # An hour before the opening: asked back within half a minute, for a fresh estimate.
    assert waiting["status"] == "waiting" and 15_000 <= waiting["poll_after_ms"] <= 30_000
    opened = client.patch(
        f"/products/{product_id}",
        json={"sale_starts_at": datetime.now(UTC).isoformat()},
        headers=admin.headers,
    )
    assert opened.status_code == 200, opened.get_json()

    # Within the web process's copy's age of the opening, the draw is seen: all drawn at once,
    # and read by the process in one call, so the crowd's polls cost no round trip of their own
    # (only the board, read again every 250 ms).
    late = make_user(app)  # the first to ask after the opening: a join, which sees the draw
    assert _join(client, late, product_id).get_json()["position"] == len(buyers) + 1
    with monitored_service(settings) as log:
        started = time.monotonic()
        positions = [_status(client, b, product_id)["position"] for b in buyers]
        took_s = time.monotonic() - started
    sent = [c.name for c in log.sent()]
    assert set(sent) <= {"EVALSHA"} and len(sent) <= 2 + took_s / BOARD_MAX_AGE_S, [
        c.words[:2] for c in log.sent()
    ]
    assert sorted(positions) == list(range(1, len(buyers) + 1))
    # Drawn, not in the order they came: the rank correlation of a random order is near 0.
    n = len(buyers)
    d2 = sum((p - (i + 1)) ** 2 for i, p in enumerate(positions))
    spearman = 1 - 6 * d2 / (n * (n * n - 1))
    assert abs(spearman) < 0.3, spearman
    later = make_user(app)
    assert _join(client, later, product_id).get_json()["position"] == n + 2  # behind them

    seed = int(rt.inventory_redis.hget(rt.inventory.keys(product_id).room, "seed"))
    order = _xorshift_order([str(b.id) for b in buyers], seed)
    assert [order.index(str(b.id)) + 1 for b in buyers] == positions


def _admitted_pass(client: Any, buyer: Account, product_id: int) -> str:
    _join(client, buyer, product_id)

    def admitted() -> str | None:
        return _status(client, buyer, product_id).get("queue_pass")

    return wait_until(admitted, 10, "the buyer to be admitted")


class _Backdated(URLSafeTimedSerializer):
    """Signs passes as if an hour ago."""

    def make_signer(self, salt=None):  # type: ignore[no-untyped-def]
        signer = super().make_signer(salt)
        signer.get_timestamp = lambda: int(time.time()) - 3600  # type: ignore[method-assign]
        return signer


def test_a_pass_buys_once_for_its_buyer_and_sale_and_nothing_else_does(
    client, app, admin, rt, settings
):
    product_id, other_sale = _room(client, admin, 1000), _room(client, admin, 1000)
    buyer, other = make_user(app), make_user(app)
    good = _admitted_pass(client, buyer, product_id)
    others = _admitted_pass(client, other, product_id)
    elsewhere = _admitted_pass(client, buyer, other_sale)
    expired = _Backdated(settings.jwt_secret_key, salt=PASS_SALT).dumps(
        {"p": product_id, "u": buyer.id, "n": 1}
    )
    forged = issue_pass("not-the-secret-" * 3, product_id, buyer.id, 1, "")
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    held_before = rt.inventory.figures(product_id).held

    assert_error(_buy(client, buyer, product_id), 403, "queue_pass_required")
    for refused in (others, elsewhere, expired, forged, tampered):
        assert_error(_buy(client, buyer, product_id, refused), 403, "queue_pass_invalid")
    assert rt.inventory.figures(product_id).held == held_before  # nothing held

    assert _buy(client, buyer, product_id, good).status_code == 202
    assert_error(_buy(client, buyer, product_id, good), 403, "queue_pass_invalid")  # used
    assert rt.inventory.figures(product_id).held == held_before + 1


def test_admission_pauses_while_nothing_is_left_and_owes_no_burst_when_a_unit_comes_back(
    client, app, admin, rt
):
    rate = 50
    product_id = create_product(
        client, admin, stock=1, max_per_user=1, waiting_room=True, admit_per_second=rate
    )["id"]
    first, *later = make_users(app, 40)
    good = _admitted_pass(client, first, product_id)
    for buyer in later:
        _join(client, buyer, product_id)
    ticket = _buy(client, first, product_id, good).get_json()["ticket_id"]  # nothing left
    keys = rt.inventory.keys(product_id)

    def served() -> int:  # as a web process reads the board, admitting what the clock allows
        return int(rt.inventory.scripts.room_board(keys=[keys.stock, *keys.room_keys])[2])

    def redis_ms() -> int:
        seconds, micros = rt.inventory_redis.time()
        return seconds * 1000 + micros // 1000

    paused_at, start = served(), redis_ms()

    def a_second_sold_out() -> bool:
        assert served() == paused_at, "admitted while nothing was left to buy"
        return redis_ms() - start >= 1000

    wait_until(a_second_sold_out, 10, "a second of Redis' clock with the sale sold out")
    assert paused_at < len(later)  # places are still waiting
    last_asked = redis_ms()
    assert client.post(f"/orders/{ticket}/cancel", headers=first.headers).status_code == 200
    admitted = served() - paused_at
    elapsed_ms = redis_ms() - last_asked
    # The clock starts again when the unit comes back: no second's worth of admissions at once.
    assert admitted <= 1 + elapsed_ms * rate // 1000


def _token(app: Any, buyer: Account, **options: Any) -> dict[str, str]:
    from flask_jwt_extended import create_access_token, create_refresh_token

    make = create_refresh_token if options.pop("refresh", False) else create_access_token
    with app.app_context():
        return {"Authorization": f"Bearer {make(identity=str(buyer.id), **options)}"}


def test_joins_and_polls_skip_flask_and_answer_as_the_routes_would(client, app, admin, monkeypatch):
    product_id = _room(client, admin, 1)
    first, buyer, stranger = make_users(app, 3)
    routed: list[str] = []
    for endpoint in ("queue.join", "queue.status"):
        view = app.view_functions[endpoint]

        def counted(view: Any = view, endpoint: str = endpoint, **kwargs: Any) -> Any:
            routed.append(endpoint)
            return view(**kwargs)

        monkeypatch.setitem(app.view_functions, endpoint, counted)
    url = f"/queue/{product_id}/status"
    for each in (first, buyer):
        assert _join(client, each, product_id).get_json()["status"] == "queued"
    short = client.get(url, headers=buyer.headers)
    fresh = client.get(url, headers=_token(app, buyer))  # a token not seen yet, verified
    assert routed == []
    by_route = client.get(f"{url}?via=route", headers=buyer.headers)
    assert routed == ["queue.status"]
    for answer in (short, fresh):
        assert answer.status_code == by_route.status_code == 200
        for field in ("status", "queue_id", "position"):
            assert answer.get_json()[field] == by_route.get_json()[field]
        assert answer.get_json().keys() == by_route.get_json().keys()
        for name in ("Content-Type", "Retry-After", "X-Content-Type-Options", "X-Frame-Options"):
            assert answer.headers[name] == by_route.headers[name]

    # Whatever has no place to answer, or a token that may not ask, goes to the routes.
    routed.clear()
    assert_error(client.get(url, headers=stranger.headers), 404, "not_in_queue")
    assert routed == ["queue.status"]
    refresh = _token(app, buyer, refresh=True)
    assert client.get(url, headers=refresh).status_code in (401, 422)
    assert client.post(f"/queue/{product_id}/join", headers=refresh).status_code in (401, 422)
    assert_error(client.get(url, headers={"Authorization": "Bearer x.y.z"}), 401, "invalid_token")
    short_lived = _token(app, buyer, expires_delta=timedelta(seconds=1))
    assert client.get(url, headers=short_lived).status_code == 200
    wait_until(lambda: client.get(url, headers=short_lived).status_code == 401, 10, "expiry")
    assert client.post("/auth/logout", headers=buyer.headers).status_code == 200
    assert_error(client.get(url, headers=buyer.headers), 401, "token_revoked")
    assert_error(_join(client, buyer, product_id), 401, "token_revoked")
    assert routed.count("queue.join") == 2 and routed.count("queue.status") >= 5


def test_a_sale_without_a_room_answers_a_join_with_a_pass_and_needs_none(client, app, admin):
    product_id = create_product(client, admin, stock=5)["id"]
    buyer = make_user(app)
    joined = _join(client, buyer, product_id).get_json()
    assert joined["status"] == "admitted" and joined["queue_pass"]
    assert _buy(client, buyer, product_id).status_code == 202


@pytest.mark.parametrize("body", [{"waiting_room": True}, {"admit_per_second": -1}])
def test_a_room_without_a_rate_is_refused(client, admin, body):
    assert_error(
        client.post(
            "/products", json={"name": "x", "price": 1, "stock": 1} | body, headers=admin.headers
        ),
        400,
    )


def test_those_not_admitted_are_told_when_the_sale_sells_out(client, app, admin, settings):
    product_id = create_product(client, admin, stock=1, waiting_room=True, admit_per_second=1)["id"]
    first, *later = make_users(app, 11)
    good = _admitted_pass(client, first, product_id)
    for buyer in later:  # places 2 to 11: the last would be admitted 10 s after the first
        _join(client, buyer, product_id)
    ticket = _buy(client, first, product_id, good).get_json()["ticket_id"]

    def sold() -> bool:
        run_workers(settings)
        return client.get(f"/orders/{ticket}", headers=first.headers).get_json()["status"] == (
            "confirmed"
        )

    wait_until(sold, 20, "the only unit to be sold")

    def told() -> bool:  # within the web process's copy's age of the sale
        last = _status(client, later[-1], product_id)
        assert last["status"] in ("queued", "sold_out") and last["position"] == 11
        return last["status"] == "sold_out"

    wait_until(told, 5, "the last place to be told the sale sold out")


def test_a_room_redis_lost_answers_503_until_rebuilt_as_a_new_room(client, app, admin, rt):
    product_id = _room(client, admin, 1000)
    buyer, late = make_user(app), make_user(app)
    good = _admitted_pass(client, buyer, product_id)
    keys = rt.inventory.keys(product_id)
    rt.inventory_redis.delete(*keys.all())  # Redis lost the sale
    assert_error(_join(client, late, product_id), 503, "queue_unavailable")
    assert_error(
        client.get(f"/queue/{product_id}/status", headers=late.headers), 503, "queue_unavailable"
    )
    assert rebuild_stock(rt.inventory, rt.sessions, product_id)
    assert _join(client, late, product_id).get_json()["position"] == 1  # open again, empty
    assert_error(_buy(client, late, product_id), 403, "queue_pass_required")  # still a room
    # Its places start again from 1: a pass of the room Redis lost buys no more (its buyer
    # joins again), so it can never be taken for one of the new room's.
    assert_error(_buy(client, buyer, product_id, good), 403, "queue_pass_invalid")
    assert _buy(client, late, product_id, _admitted_pass(client, late, product_id)).status_code == (
        202
    )
