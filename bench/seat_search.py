"""How long one "N seats together" purchase holds Redis, in microseconds inside the server.

The worst case for the search: a large section (100 rows of 50 seats) whose every 10th seat of
a row is sold, so no run of 10 free seats exists, asked for 10 together: every answer is the
refusal, after the search looked at as much of the section as it may. Beside it, the same
section with every seat free (the block is found at once). Each call is timed by Redis itself
(SLOWLOG on a redis-server of the bench's own, logging every command), so neither the client
nor the network counts; the figures are medians of the rounds' medians.

    .venv/bin/python -m bench.seat_search [--requests 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from redis import Redis

from core.config import Settings
from core.inventory import BestAvailable, Inventory
from core.keys import new_ticket_id
from scripts.run_stack import RedisProcess
from tests.helpers import seated_stock, striped_section


def _round(
    inventory: Inventory, product_id: int, quantity: int, requests: int, answer: str
) -> list[int]:
    """Microseconds of each reserve call, as SLOWLOG has them."""
    redis = inventory.redis
    redis.slowlog_reset()
    for user in range(1, requests + 1):
        ticket = new_ticket_id(product_id)
        reservation = inventory.reserve(
            product_id, user, quantity, ticket, "pm_card_visa", best=BestAvailable("A", True)
        )
        assert reservation.result == answer, reservation
    entries = redis.slowlog_get(10 * requests)
    return [e["duration"] for e in entries if e["command"].startswith(b"EVALSHA")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--seats", type=int, default=50, help="seats a row")
    parser.add_argument("--quantity", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20, help="reserve calls a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-seat-search-"))
    server = RedisProcess(folder, "--slowlog-log-slower-than", "0", "--slowlog-max-len", "10000")
    server.start()
    try:
        redis = Redis.from_url(server.url, decode_responses=True)
        inventory = Inventory(redis, replace(Settings(), key_prefix="bench"))
        halls = {  # the hall, and the answer every purchase gets
            "no run that long": (
                striped_section(args.rows, args.seats, args.quantity - 1),
                "not_enough_adjacent",
            ),
            "every seat free": (
                striped_section(args.rows, args.seats, args.rows * args.seats),
                "reserved",
            ),
        }
        print(f"{args.rows * args.seats} seats, {args.quantity} together, us per reserve call")
        print(f"{'hall':<20}{'median':>10}{'max':>10}")
        for product_id, (name, (plan, answer)) in enumerate(halls.items(), start=1):
            seated_stock(inventory, product_id, plan)
            rounds = [
                _round(inventory, product_id, args.quantity, args.requests, answer)
                for _ in range(args.rounds)
            ]
            median = statistics.median(statistics.median(r) for r in rounds)
            print(f"{name:<20}{median:>10.0f}{max(max(r) for r in rounds):>10}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
