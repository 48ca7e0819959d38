"""The search for seats together (reserve.lua's best_together) in large sections: it never holds
Redis long, whatever the hall, and it still offers the block the rule names: of the blocks of
free seats side by side in one row, one holding the best free seat that is in any block, and of
those the one whose ranks add up lowest."""

from __future__ import annotations

import random
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from core.inventory import (
    SECTION_SCORE,
    TOGETHER_SEARCH_SEATS,
    BestAvailable,
    Inventory,
    SeatPlan,
)
from core.keys import new_ticket_id
from tests.helpers import make_user, seat_blocks, seated_stock, striped_section
from tests.redis_monitor import CommandLog, monitored
from tests.servers import RedisProcess
from tests.test_api_errors import assert_error
from tests.test_seats import _best, _on_sale, _product

SLOW_US = 20_000  # a search that cannot be met took 100-200 ms of Redis; now about 1 ms


@pytest.fixture()
def inventory(rt, settings) -> Inventory:  # type: ignore[no-untyped-def]
    """The test Redis under a key prefix of this module's: products made here, not through SQL."""
    return Inventory(
        rt.inventory_redis, replace(settings, key_prefix=f"search-{secrets.token_hex(4)}")
    )


@pytest.fixture()
def slowlog_redis() -> Iterator[Redis]:
    """A redis-server of the test's own, logging every command slower than SLOW_US."""
    folder = Path(tempfile.mkdtemp(prefix="seat-search-"))
    server = RedisProcess(folder, "--slowlog-log-slower-than", str(SLOW_US)).start()
    yield Redis.from_url(server.url, decode_responses=True)
    server.stop()


def _together(inventory: Inventory, product_id: int, user: int, quantity: int) -> list[str] | str:
    """The seats a purchase of `quantity` together got, or the refusal's code."""
    reservation = inventory.reserve(
        product_id, user, quantity, new_ticket_id(product_id), "pm_card_visa",
        best=BestAvailable("A", True),
    )  # fmt: skip
    if reservation.result != "reserved":
        return reservation.result
    assert reservation.hold is not None
    return list(reservation.hold.seats)


def test_a_search_that_cannot_be_met_does_not_hold_redis(slowlog_redis, settings):
    """5,000 seats whose longest free run is 9, asked for 10 together: refused, and no call is
    in the slow log (the search read 2,000 free seats and tried blocks around each)."""
    inventory = Inventory(slowlog_redis, settings)
    seated_stock(inventory, 1, striped_section(100, 50, 9))
    slowlog_redis.slowlog_reset()  # setting up 5,000 seats is one slow call
    answers = [_together(inventory, 1, user, 10) for user in range(1, 6)]
    assert answers == ["not_enough_adjacent"] * 5
    slow = [(e["duration"], e["command"][:40]) for e in slowlog_redis.slowlog_get(100)]
    assert slow == [], slow


def _seats_looked_at(log: CommandLog, keys: list[str]) -> int:
    """How many seats the scripts in `log` read from those keys (states, ranks, free seats)."""
    looked = 0
    for command in log.commands:
        words = command.words
        if not command.from_script or len(words) < 2 or words[1] not in keys:
            continue
        if command.name == "HGET":
            looked += 1
        elif command.name == "HMGET":
            looked += len(words) - 2
        elif command.name == "ZRANGE":
            looked += int(words[3]) - int(words[2]) + 1
        elif command.name == "ZRANGEBYSCORE" and "LIMIT" in words:
            looked += int(words[-1])
    return looked


def test_a_search_looks_at_no_more_seats_than_its_budget(inventory, settings):
    """The same hall: the refusal comes after the search read TOGETHER_SEARCH_SEATS seats at
    most (it read ten times that and more, a state and a rank at a time)."""
    seated_stock(inventory, 1, striped_section(100, 50, 9))
    with monitored(settings.inventory_url) as log:
        assert _together(inventory, 1, 1, 10) == "not_enough_adjacent"
    looked = _seats_looked_at(log, inventory.keys(1).seat_keys)
    assert TOGETHER_SEARCH_SEATS // 2 < looked <= TOGETHER_SEARCH_SEATS, looked


def test_a_block_far_into_a_large_section_is_found(inventory):
    """Rows 1-5 in runs of 9, rows 6-99 sold, row 100 with one run of 19 (seats 16-34): 10
    together get the middle of that run, the block around the row's best seat."""
    plan = striped_section(100, 50, 9)
    for row in range(6, 101):
        for number in range(1, 51):
            plan.states[f"A-{row}-{number}"] = "f" if row == 100 and 16 <= number <= 34 else "s:x"
    seated_stock(inventory, 7, plan)
    assert _together(inventory, 7, 1, 10) == [f"A-100-{n}" for n in range(21, 31)]
    assert _together(inventory, 7, 2, 10) == "not_enough_adjacent"  # 9 and 9 are left


def _best_block(free: set[str], scores: dict[str, int], quantity: int) -> list[str] | None:
    """The rule, by brute force: the best free seat in any block (by score, then id, as the
    free seats' sorted set orders them), then its block whose scores add up lowest (the
    leftmost of equals)."""
    blocks = seat_blocks(free, quantity)
    if not blocks:
        return None
    best = min((seat for block in blocks for seat in block), key=lambda s: (scores[s], s))
    holding = sorted((b for b in blocks if best in b), key=lambda b: int(b[0].rsplit("-")[2]))
    return min(holding, key=lambda b: sum(scores[s] for s in b))


def _random_hall(draw: random.Random) -> SeatPlan:
    """Up to 6 rows of 1 to 16 seats, some numbers missing (aisles), ranks drawn with ties, a
    share of the seats sold."""
    states, scores = {}, {}
    sold = draw.choice([0.0, 0.2, 0.5, 0.8])
    longest = draw.randint(1, 16)
    for row in range(1, draw.randint(1, 6) + 1):
        for number in range(1, longest + 1):
            if draw.random() < 0.1:
                continue  # an aisle
            label = f"A-{row}-{number}"
            states[label] = "s:x" if draw.random() < sold else "f"
            scores[label] = SECTION_SCORE + draw.randint(0, 40)
    return SeatPlan(states, {"A": (1000, 1, longest)}, scores)


def test_the_search_offers_the_block_the_rule_names(inventory):
    """Random halls bought out by purchases of 1-10 together: each answer is the brute force's
    block, and a refusal comes only when no block of that size is left."""
    draw = random.Random(2026)
    offered = 0
    for product_id in range(1, 41):
        plan = _random_hall(draw)
        seated_stock(inventory, product_id, plan)
        free = {seat for seat, state in plan.states.items() if state == "f"}
        for user in range(1, 30):
            quantity = draw.randint(1, 10)
            expected = _best_block(free, plan.scores, quantity)
            got = _together(inventory, product_id, user, quantity)
            if expected is None:
                assert got in ("not_enough_adjacent", "sold_out"), (product_id, quantity, got)
            else:
                assert got == expected, (product_id, quantity, sorted(free))
                free -= set(got)
                offered += 1
    assert offered > 200  # the halls were not all sold out at once


def test_no_search_for_more_seats_together_than_any_row_has(client, admin, app, settings, rt):
    """Rows of 4 + 4 seats (an aisle between) and of 5: 6 together is refused without a seat
    looked at, 5 together gets the row of 5."""
    rows = [{"name": "1", "seats": [1, 2, 3, 4, 6, 7, 8, 9]}, {"name": "2", "seats": 5}]
    hall = {"sections": [{"name": "A", "price": 10, "rows": rows}]}
    event_id = _on_sale(client, admin, hall)["id"]
    buyer = make_user(app)
    keys = rt.inventory.keys(_product(rt, event_id)).seat_keys
    with monitored(settings.inventory_url) as log:
        refused = _best(client, buyer, event_id, "A", 6, together=True)
    assert_error(refused, 409, "not_enough_adjacent")
    assert _seats_looked_at(log, keys) == 0
    block = _best(client, buyer, event_id, "A", 5, together=True)
    assert block.status_code == 202, block.get_json()
    assert block.get_json()["seats"] == [f"A-2-{n}" for n in range(1, 6)]
