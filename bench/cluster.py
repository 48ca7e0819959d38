"""The inventory on one Redis against a Redis Cluster of three primaries:
`python -m bench.cluster [--runs N] [--seconds S] [--clients C] [--products P]`.

Starts its own redis-server and its own cluster (free ports, no persistence) and drives the
reserve script through `Inventory.reserve` (the purchase path's one call, without HTTP) from C
client processes, each buyer a new user buying one unit:
- `many`: every call picks one of P products at random (a catalogue of concurrent sales);
- `hot`: every call buys the same product (one Black Friday drop);
- `hot-split`: the same, the product's stock split across --buckets buckets (one hash tag
  each, spread over the primaries), each buyer buying from their own bucket.
For each: reserves a second (median of --runs runs), each primary's share of the calls, and the
reserve script's cost inside Redis (INFO commandstats, microseconds a call), from which one Redis
core's ceiling for one product follows.

On two cores the clients, not Redis, set the pace of single calls. `--batch B` (default 32)
measures Redis itself as well: each client sends B reserve calls of one product (of one bucket
of it) in one pipeline (to the primary owning its slot), so the servers' cores bind.

`--api`: the purchase through the API instead (bench.rush's stack: gunicorn, 2 processes x 4
threads, wrk over 256 connections, every buyer buying once), the inventory on one Redis and on
the cluster in alternating runs. Figures go to bench/results/cluster.json (cluster-api.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from bench.rush import RESULTS
from core.config import Settings, cluster_node_url
from core.inventory import CLAIM_MS, RECLAIM_PER_CALL, Inventory, ProductTerms, reserve_keys
from core.keys import new_ticket_id
from core.runtime import Runtime
from scripts.run_stack import RedisClusterProcess, RedisProcess

STOCK = 10**9  # never sold out within a run
USERS_PER_CLIENT = 10**7  # each client's buyers are its own range of ids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--buckets", type=int, default=12)
    parser.add_argument("--shapes", default="many,hot,hot-split")
    parser.add_argument("--api", action="store_true", help="through the API (see above)")
    return parser.parse_args()


def _inventory(url: str) -> Inventory:
    # Only the inventory's Redis is used: REDIS_URL names a port nothing listens on.
    settings = Settings(
        env="development", redis_url="redis://127.0.0.1:1/0", inventory_redis_url=url
    )
    return Runtime(settings).inventory


def _put_on_sale(inventory: Inventory, product_ids: list[int], buckets: int) -> None:
    now = inventory.clock.now_ms()
    for product_id in product_ids:
        terms = ProductTerms(product_id, STOCK, 0, now - 1000, now + 3_600_000, 100, "USD",
                             buckets=buckets)  # fmt: skip
        for bucket in range(buckets):
            view = inventory.begin_rebuild(product_id, bucket)
            assert view is not None, product_id
            assert inventory.restore(terms, 0, [], {}, lease=view.token, bucket=bucket)


def _client(url: str, product_ids: list[int], index: int, seconds: float, start_at: float,
            batch: int, buckets: int) -> int:  # fmt: skip
    inventory = _inventory(url)
    picker = random.Random(index)
    user = index * USERS_PER_CLIENT * buckets
    done = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    while time.time() < deadline:
        product_id = picker.choice(product_ids)
        if batch <= 1:
            user += 1
            reply = inventory.reserve(
                product_id, user, 1, new_ticket_id(product_id), "pm_card_visa"
            )
            assert reply.result == "reserved", reply
            done += 1
            continue
        bucket = picker.randrange(buckets)  # the batch's buyers have this bucket as their own
        k = inventory.keys(product_id, bucket)
        pipe = inventory.scripts.pipeline(k.tag)
        for _ in range(batch):
            user += buckets
            # reserve.lua's ARGV for one unit, no idempotency key, rate limit, seats or pass.
            args = [user + bucket, 1, new_ticket_id(product_id, bucket), 600_000, "",
                    "pm_card_visa", RECLAIM_PER_CALL, 0, 0, "", "", "", "", buckets,
                    "home" if buckets > 1 else "", CLAIM_MS]  # fmt: skip
            inventory.scripts.reserve(keys=reserve_keys(k, user + bucket), args=args, client=pipe)
        replies = pipe.execute()
        assert all(reply[0] == "reserved" for reply in replies), replies[:1]
        done += len(replies)
    return done


def _nodes(url: str) -> list[Redis]:
    node_url = cluster_node_url(url)
    if node_url is None:
        return [Redis.from_url(url, decode_responses=True)]
    seed = Redis.from_url(node_url, decode_responses=True)
    ports = sorted(int(node["port"]) for node in _primaries(seed))
    return [Redis(host="127.0.0.1", port=port, decode_responses=True) for port in ports]


def _primaries(seed: Redis) -> list[dict[str, Any]]:
    nodes = seed.cluster("NODES")
    return [
        {"port": address.split(":")[1].split("@")[0]}
        for address, node in nodes.items()
        if "master" in node["flags"]
    ]


def _evalsha_stats(nodes: list[Redis]) -> list[dict[str, float]]:
    stats = []
    for node in nodes:
        found = node.info("commandstats").get("cmdstat_evalsha", {})
        stats.append({"calls": int(found.get("calls", 0)), "usec": int(found.get("usec", 0))})
    return stats


def measure(url: str, shape: str, batch: int, options: argparse.Namespace) -> dict[str, Any]:
    nodes = _nodes(url)
    rates, shares, costs = [], [], []
    for run in range(options.runs):
        for node in nodes:
            node.flushall()
        base = 1_000 * (run + 1)
        count = options.products if shape == "many" else 1
        buckets = options.buckets if shape == "hot-split" else 1
        product_ids = list(range(base, base + count))
        _put_on_sale(_inventory(url), product_ids, buckets)
        for node in nodes:
            node.config_resetstat()
        start_at = time.time() + 1.0
        with multiprocessing.get_context("spawn").Pool(options.clients) as pool:
            done = pool.starmap(
                _client,
                [
                    (url, product_ids, i + 1, options.seconds, start_at, batch, buckets)
                    for i in range(options.clients)
                ],
            )
        stats = _evalsha_stats(nodes)
        calls = sum(s["calls"] for s in stats)
        rates.append(sum(done) / options.seconds)
        shares.append([round(s["calls"] / calls, 3) for s in stats])
        costs.append(sum(s["usec"] for s in stats) / calls)
        print(f"  {shape} run {run + 1}: {rates[-1]:,.0f}/s, shares {shares[-1]}, "
              f"{costs[-1]:.1f} us a call", flush=True)  # fmt: skip
    for node in nodes:
        node.flushall()
        node.close()
    cost = statistics.median(costs)
    return {
        "reserves_per_s": statistics.median(rates),
        "runs": rates,
        "node_shares": shares[rates.index(statistics.median(rates))]
        if options.runs % 2
        else shares,
        "usec_per_reserve_in_redis": round(cost, 1),
        "one_core_ceiling_per_s": round(1e6 / cost),
    }


def through_the_api(options: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Accepted purchases a second with the inventory on REDIS_URL's Redis, then on a cluster,
    alternating run by run."""
    import os

    from bench.rush import PURCHASE_BODY, Bench, Options

    seconds = int(options.seconds)
    rush = Options(False, options.runs, seconds, 256, 2, 2, "gthread", 4, 0, 0, 0, 0, 0, 0, 0, 0)
    bench = Bench(rush, folder / "api")
    bench.workdir.mkdir(parents=True, exist_ok=True)
    cluster = None
    try:
        bench.prepare()
        cluster = RedisClusterProcess(folder / "api-cluster").start()
        per_run = 3_000 * seconds  # more buyers than a run can serve: each buys once
        tokens = bench.tokens(per_run * options.runs * 2)
        rows: dict[str, list[dict[str, Any]]] = {"single": [], "cluster": []}
        for run in range(options.runs):
            for name, inventory_url in (("single", ""), ("cluster", cluster.url)):
                os.environ["INVENTORY_REDIS_URL"] = inventory_url
                bench.rt = Runtime(Settings.from_env())
                product = bench.product(stock=10_000_000)
                url = bench.serve("web:create_app()", {"INVENTORY_REDIS_URL": inventory_url})
                mine = tokens[:per_run]
                del tokens[:per_run]
                try:
                    load = bench.wrk(url, "POST", [f"/purchase/{product}"], mine, PURCHASE_BODY,
                                     seconds, reuse=False)  # fmt: skip
                finally:
                    bench.unserve()
                rows[name].append(bench._rate(load, "202"))
                print(f"  {name} run {run + 1}: {rows[name][-1]}", flush=True)
        return {
            name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {"runs": runs}
            for name, runs in rows.items()
        }
    finally:
        if cluster is not None:
            cluster.stop()
        bench.procs.stop_all()


def main() -> None:
    options = parse_args()
    folder = Path(tempfile.mkdtemp(prefix="flashsale-cluster-bench-"))
    if options.api:
        figures = {"options": vars(options)} | through_the_api(options, folder)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "cluster-api.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
        return
    folder = Path(tempfile.mkdtemp(prefix="flashsale-cluster-bench-"))
    single = RedisProcess(folder / "single").start()
    cluster = RedisClusterProcess(folder / "cluster").start()
    figures: dict[str, Any] = {"options": vars(options)}
    try:
        for batch in sorted({1, options.batch}):
            for name, url in (("single", single.url), ("cluster", cluster.url)):
                for shape in options.shapes.split(","):
                    print(f"{name}, {shape}, batches of {batch}:", flush=True)
                    figures[f"{name}_{shape}_batch{batch}"] = measure(url, shape, batch, options)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "cluster.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
