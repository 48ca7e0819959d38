"""The flash-sale benchmark: `python -m bench.rush [--quick]`.

Starts the real stack (gunicorn, RQ workers, scheduler) against DATABASE_URL / REDIS_URL, or
SQLite and a Redis of its own, and measures with wrk on loopback, in one run:
- `bare`: a Flask endpoint answering the same JSON with no work (the ceiling);
- `one_trip`: the design's ceiling: JWT verify, body parse and one EVALSHA of the reserve script;
- `accepted`: purchases that reserve (202, ticket issued, hand-off to the workers done);
- `sold_out`: purchases of a sold-out product (409);
- `status`: buyers polling their tickets;
- `lock_then_write`: the seed design (lock, read, decrement, INSERT, unlock) on one hot product;
- `settlement`: orders settled per second by N worker processes, with and without payment latency;
- `sale`: S units to B buyers, one purchase each, driven by wrk: sold exactly, and the time from
  the first request until every ticket is final;
- `seated`: a hall of seats to B buyers asking once each for 2-4 best available seats together,
  against a general-admission rush of the same shape in the same run: answers/s over each rush,
  the time until sold out and until every ticket is final;
- `room_status`: buyers in a waiting room (admitting 1 a second, so nearly all stay queued)
  polling their place, against `bare` when both run (`--only bare room_status`);
- `room_sale`: S units to B buyers through a waiting room admitting R a second, below the
  purchase route's capacity: the buyers arrive over the A s before the opening
  (`--room-arrival A`; 0: all at the opening), each joins, polls as the API says and buys once
  with its pass (a Python asyncio client): purchases per second, their latency (p99 per
  second too), the polls, sold exactly.
Each throughput figure is the median of --runs runs. Results go to bench/results/ as JSON, a
Markdown table and a PNG chart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select
from tqdm import tqdm

from bench.stack import ROOT, Processes, environment, wrk_binary

RESULTS = ROOT / "bench" / "results"
WRK_SCRIPT = ROOT / "bench" / "wrk" / "requests.lua"
PURCHASE_BODY = '{"quantity": 1, "payment_method": "pm_card_visa"}'
# Settlement and the sale run first: the HTTP paths leave reserved tickets that no worker settles.
SALE_WINDOW_S = 60  # wrk's duration in the sale: every buyer is answered well within it
RUSH_WINDOW_S = 300  # the seated step's bound: its wrk stops once every buyer is answered
IDLE_MS = 500  # a rush's wrk threads, all their buyers sent, ask /health this often meanwhile
HALL_SECTIONS = ("A", "B")
# The room sale's inlet (admissions a second): an eighth of what the purchase route accepts on
# this machine (the `product` step's accepted purchases, about 2,000/s), because the same two
# cores also settle the orders (RQ workers and PostgreSQL: about 0.8 of a core at 250 orders a
# second), answer the crowd's polls and run the client; at 500 a second the cores are full and
# the purchase p99 passes 100 ms (BENCHMARKS.md). 10,000 units are admitted in 40 s.
ROOM_INLET = 250
# The room sale's crowd arrives evenly over this long before the opening, as a crowd waiting
# for a drop does (`--room-arrival 0`: everyone at the opening second).
ROOM_ARRIVAL_S = 30.0
PURCHASE_CAPACITY = 2000  # accepted purchases/s, `product` step (BENCHMARKS.md), when not measured
ROOM_SALE_WINDOW_S = 300  # the room sale's bound: every buyer is told well within it
STEPS = ["prepare", "settlement", "sale", "seated", "room_sale", "bare", "room_status",
         "one_trip", "lock_then_write", "product", "report"]  # fmt: skip


@dataclass
class Options:
    quick: bool
    runs: int
    duration: int
    connections: int
    wrk_threads: int
    gunicorn_workers: int
    worker_class: str
    threads: int
    rq_workers: int
    buyers: int
    sale_units: int
    sale_buyers: int
    settle_orders: int
    seated_rows: int  # per section
    seated_row_seats: int
    seated_buyers: int
    latency_workers: list[int] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    room_buyers: int = 30_000  # room_status: buyers queued, polling
    room_sale_units: int = 10_000
    room_sale_buyers: int = 30_000
    room_inlet: int = ROOM_INLET
    room_arrival_s: float = ROOM_ARRIVAL_S  # room_sale: buyers arrive over this long before it


@dataclass
class Load:
    seconds: float
    requests_per_s: float
    codes: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    reasons: dict[str, int] = field(default_factory=dict)  # "409 sold_out": count
    first_us: float = 0.0  # the first request sent, wall clock
    last_us: float = 0.0  # the last answer received


def parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync", "gevent"])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rq-workers", type=int, default=2)
    parser.add_argument(
        "--room-inlet", type=int, default=ROOM_INLET, help="room_sale: buyers admitted a second"
    )
    parser.add_argument(
        "--room-arrival", type=float, default=ROOM_ARRIVAL_S, metavar="S",
        help="room_sale: buyers arrive evenly over the S seconds before the opening (0: all at it)",
    )  # fmt: skip
    parser.add_argument(
        "--only", nargs="+", choices=STEPS[1:-1], default=[], help="run only these steps"
    )
    args = parser.parse_args()
    if args.quick:
        return Options(True, 1, 3, 64, 2, args.gunicorn_workers, args.worker_class, args.threads,
                       args.rq_workers, 4000, 300, 900, 400, 25, 100, 3000, [1, 2],
                       args.only, room_buyers=3000, room_sale_units=1000, room_sale_buyers=3000,
                       room_inlet=args.room_inlet,
                       room_arrival_s=min(args.room_arrival, 5.0))  # fmt: skip
    return Options(False, args.runs, args.duration, args.connections, 2, args.gunicorn_workers,
                   args.worker_class, args.threads, args.rq_workers, 240_000, 10_000, 30_000,
                   10_000, 125, 200, 30_000, [1, 2, 4, 8], args.only,
                   room_inlet=args.room_inlet, room_arrival_s=args.room_arrival)  # fmt: skip


class Bench:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.procs = Processes(environment(workdir), workdir)
        self.results: dict[str, Any] = {"options": asdict(options)}

    # --- set-up ---------------------------------------------------------------------------
    def prepare(self) -> None:
        self.procs.start_redis_if_needed()
        for key, value in self.procs.env.items():
            if key in ("APP_ENV", "DATABASE_URL", "REDIS_URL", "JWT_SECRET_KEY", "REDIS_KEY_PREFIX",
                       "SETTLEMENT_QUEUE", "RATELIMIT_ENABLED", "BCRYPT_ROUNDS"):  # fmt: skip
                os.environ[key] = value
        self.procs.run(sys.executable, "-m", "flask", "--app", "web", "db", "upgrade")
        from core.config import Settings
        from core.runtime import Runtime
        from web import create_app

        self.app = create_app()
        self.rt = Runtime(Settings.from_env())

    def product(self, stock: int, max_per_user: int = 0) -> int:
        from core.catalog import create_product
        from core.db import transaction
        from core.stock import setup_stock

        with transaction(self.rt.sessions) as session:
            product = create_product(
                session, "bench drop", 2500, "USD", stock, max_per_user, None, None
            )
        setup_stock(self.rt.inventory, product)
        return product.id

    def tokens(self, count: int, role: str = "buyer") -> list[str]:
        """`count` buyers (or admins), each with an access token (users inserted in bulk, no
        bcrypt)."""
        from flask_jwt_extended import create_access_token

        from core.models import User

        tag = os.urandom(4).hex()
        with self.rt.sessions() as session, session.begin():
            session.execute(
                insert(User),
                [{"username": f"b{tag}_{i}", "password_hash": "x", "role": role}
                 for i in range(count)],
            )  # fmt: skip
        with self.rt.sessions() as session:
            ids = session.scalars(select(User.id).where(User.username.like(f"b{tag}_%"))).all()
        with self.app.app_context():
            return [
                create_access_token(identity=str(i), additional_claims={"role": role}) for i in ids
            ]

    # --- load -----------------------------------------------------------------------------
    def wrk(self, url: str, method: str, paths: list[str], tokens: list[str], body: str,
            duration: int, reuse: bool = True,
            while_running: Callable[[], None] | None = None, bodies: list[str] | None = None,
            until_answered: bool = False) -> Load:  # fmt: skip
        """Loads `url` for `duration` seconds (wrk always runs its whole duration, even when its
        threads have stopped, unless `until_answered`: then it ends once every buyer has been
        answered); `while_running` is called once wrk has started. `bodies`, if given, are
        paired with the tokens in turn, in place of `body`."""
        tokens_file = self.workdir / "tokens.txt"
        paths_file = self.workdir / "paths.txt"
        tokens_file.write_text("\n".join(tokens) + "\n")
        paths_file.write_text("\n".join(paths) + "\n")
        threads = self.options.wrk_threads
        env = os.environ | {
            "WRK_TOKENS": str(tokens_file), "WRK_PATHS": str(paths_file), "WRK_METHOD": method,
            "WRK_BODY": body, "WRK_THREADS": str(threads), "WRK_REUSE": "1" if reuse else "0",
        }  # fmt: skip
        if bodies:
            bodies_file = self.workdir / "bodies.txt"
            bodies_file.write_text("\n".join(bodies) + "\n")
            env["WRK_BODIES"] = str(bodies_file)
        done = self.workdir / f"wrk-done-{os.urandom(4).hex()}"  # + .<thread>, by each thread
        if until_answered:
            env |= {"WRK_IDLE_MS": str(IDLE_MS), "WRK_DONE": str(done)}
        argv = [wrk_binary(), "-t", str(threads), "-c", str(self.options.connections),
                "-d", f"{duration}s", "--latency", "-s", str(WRK_SCRIPT), url]  # fmt: skip
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        if while_running is not None:
            while_running()
        if until_answered:
            _stop_when_answered(child, done, threads)
        out, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"wrk failed ({child.returncode})")
        line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
        data = json.loads(line.removeprefix("WRK_JSON "))
        seconds = data["duration_us"] / 1e6
        return Load(
            seconds=seconds,
            requests_per_s=data["requests"] / seconds,
            codes={k: v for k, v in data["codes"].items()},
            p50_ms=data["p50_us"] / 1000,
            p95_ms=data["p95_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            errors=data["errors"],
            reasons=data.get("reasons", {}),
            first_us=data.get("first_us", 0.0),
            last_us=data.get("last_us", 0.0),
        )

    def median_of(self, name: str, measure) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        runs = [measure() for _ in range(self.options.runs)]
        keys = runs[0].keys()
        summary = {k: statistics.median(r[k] for r in runs) for k in keys}
        self.results[name] = summary | {"runs": runs}
        return summary

    # --- scenarios ------------------------------------------------------------------------
    def bare(self, tokens: list[str]) -> dict[str, Any]:
        url = self.serve("bench.baselines.bare:create_app()")
        try:
            return self.median_of("bare", lambda: self._rate(
                self.wrk(url, "POST", ["/purchase/1"], tokens, PURCHASE_BODY,
                         self.options.duration), "202"))  # fmt: skip
        finally:
            self.unserve()

    def one_trip(self, tokens: list[str]) -> dict[str, Any]:
        """The design's ceiling, on a product of its own, each buyer buying once."""
        product_id = self.product(stock=10_000_000)
        url = self.serve("bench.baselines.one_trip:create_app()")
        chunks = _chunks(tokens, self.options.runs)
        try:
            return self.median_of("one_trip", lambda: self._rate(
                self.wrk(url, "POST", [f"/purchase/{product_id}"], chunks.pop(), PURCHASE_BODY,
                         self.options.duration, reuse=False), "202"))  # fmt: skip
        finally:
            self.unserve()

    def lock_then_write(self, tokens: list[str]) -> dict[str, Any]:
        from bench.baselines.lock_then_write import metadata

        metadata.create_all(self.rt.engine)  # here, not in each gunicorn worker: they would race
        self.rt.redis.set(f"{self.procs.env['REDIS_KEY_PREFIX']}:stock:1", 10_000_000)
        env = {"BENCH_PREFIX": self.procs.env["REDIS_KEY_PREFIX"]}
        url = self.serve("bench.baselines.lock_then_write:create_app()", env)
        try:
            return self.median_of("lock_then_write", lambda: self._rate(
                self.wrk(url, "POST", ["/purchase/1"], tokens, PURCHASE_BODY,
                         self.options.duration), "202"))  # fmt: skip
        finally:
            self.unserve()

    def product_paths(self, tokens: list[str]) -> dict[str, Any]:
        """accepted, sold_out and status: the HTTP paths alone, as the targets compare them with
        `bare` (no settlement competing for the two cores; the sale below runs everything)."""
        url = self.serve("web:create_app()")
        try:
            open_sale = self.product(stock=10_000_000)
            sold_out = self.product(stock=1)
            self.rt.inventory.reserve(sold_out, 0, 1, f"{sold_out}-{'0' * 24}", "pm_card_visa")
            chunks = _chunks(tokens, self.options.runs)
            accepted = self.median_of("accepted", lambda: self._rate(
                self.wrk(url, "POST", [f"/purchase/{open_sale}"], chunks.pop(), PURCHASE_BODY,
                         self.options.duration, reuse=False), "202"))  # fmt: skip
            chunks = _chunks(tokens, self.options.runs)
            refused = self.median_of("sold_out", lambda: self._rate(
                self.wrk(url, "POST", [f"/purchase/{sold_out}"], chunks.pop(), PURCHASE_BODY,
                         self.options.duration, reuse=False), "409"))  # fmt: skip
            tickets = self.rt.redis.hkeys(self.rt.inventory.keys(open_sale).holds)[:5000]
            owners = self._owners(open_sale, tickets, tokens)
            polled = self.median_of("status", lambda: self._rate(
                self.wrk(url, "GET", [f"/orders/{t}" for t in tickets], owners, "",
                         self.options.duration), "200"))  # fmt: skip
            return {"accepted": accepted, "sold_out": refused, "status": polled}
        finally:
            self.unserve()

    def sale(self) -> dict[str, Any]:
        """S units to B buyers, each buying once; settled by the workers and the scheduler."""
        tokens = self.tokens(self.options.sale_buyers)
        product_id = self.product(stock=self.options.sale_units, max_per_user=1)
        url = self.serve_with_settlers()
        try:
            started = time.monotonic()
            sold_out: dict[str, float] = {}

            def until_sold_and_final() -> None:
                # The sale sells out: done when every unit's ticket is final in SQL.
                self._wait_all_final(product_id, self.options.sale_units, timeout=window)
                sold_out["final_s"] = time.monotonic() - started

            # Every buyer buys once; each wrk thread idles when its buyers have been answered.
            path, window = f"/purchase/{product_id}", 15 if self.options.quick else SALE_WINDOW_S
            load = self.wrk(url, "POST", [path], tokens, PURCHASE_BODY, window,
                            reuse=False, while_running=until_sold_and_final)  # fmt: skip
            final = sold_out["final_s"]
            figures = self.rt.inventory.figures(product_id)
            result = {
                "units": self.options.sale_units,
                "buyers": self.options.sale_buyers,
                "accepted": load.codes.get("202", 0),
                "sold_out": load.codes.get("409", 0),
                "other": {k: v for k, v in load.codes.items() if k not in ("202", "409")},
                "first_request_to_all_final_s": final,
                "p50_ms": load.p50_ms, "p95_ms": load.p95_ms, "p99_ms": load.p99_ms,
                "confirmed_in_sql": self._confirmed(product_id),
                "redis": asdict(figures) if figures else None,
            }  # fmt: skip
            result["oversold"] = max(0, result["confirmed_in_sql"] - self.options.sale_units)
            from core.stock import reconcile_product

            result["reconciliation"] = reconcile_product(
                self.rt.inventory, self.rt.sessions, product_id
            ).result
            result["settlement_orders_per_s"] = result["accepted"] / max(
                0.001, result["first_request_to_all_final_s"]
            )
            self.results["sale"] = result
            return result
        finally:
            self.unserve()

    def seated(self) -> dict[str, Any]:
        """A hall of seats to B buyers, each asking once for 2-4 best available seats together
        (sections in turn); right before it, on the same stack, a general-admission rush of the
        same shape: as many units, B other buyers asking for the same quantities."""
        o = self.options
        seats = len(HALL_SECTIONS) * o.seated_rows * o.seated_row_seats
        # Fresh buyers for each rush: a process keeps the tokens it has verified.
        tokens = self.tokens(2 * o.seated_buyers)
        admin = self.tokens(1, role="admin")[0]
        url = self.serve_with_settlers()
        try:
            general_id = self.product(stock=seats)
            general = self.rush(url, f"/purchase/{general_id}", general_id,
                                tokens[: o.seated_buyers], _rush_bodies(seated=False))  # fmt: skip
            event_id, product_id = self.hall(url, admin)
            seated = self.rush(url, f"/events/{event_id}/purchase", product_id,
                               tokens[o.seated_buyers :], _rush_bodies(seated=True))  # fmt: skip
            seated["free_in_seat_map"] = self._free_seats(url, event_id)
            result = {
                "seats": seats, "sections": len(HALL_SECTIONS), "rows": o.seated_rows,
                "row_seats": o.seated_row_seats, "buyers": o.seated_buyers,
                "seated": seated, "general": general,
                "answers_ratio": seated["answers_per_s"] / general["answers_per_s"],
            }  # fmt: skip
            self.results["seated"] = result
            return result
        finally:
            self.unserve()

    def rush(
        self, url: str, path: str, product_id: int, tokens: list[str], bodies: list[str]
    ) -> dict[str, Any]:
        """Each buyer asks once (wrk stops when all are answered), then every ticket issued is
        awaited until final. Times run from the first request: to the last ticket issued (sold
        out: no further answer was a 202) and to the last ticket final, as SQL recorded them."""
        from core.stock import reconcile_product

        window = 30 if self.options.quick else RUSH_WINDOW_S
        load = self.wrk(url, "POST", [path], tokens, "", window, reuse=False, bodies=bodies,
                        until_answered=True)  # fmt: skip
        tickets = self.rt.redis.hlen(self.rt.inventory.keys(product_id).users)  # one a buyer
        self._wait_all_final(product_id, tickets, timeout=window)
        issued, final = self._last_times(product_id)
        first = load.first_us / 1e6
        rush_s = max(0.001, (load.last_us - load.first_us) / 1e6)
        answers = sum(load.codes.values())
        figures = self.rt.inventory.figures(product_id)
        return {
            "buyers": len(tokens),
            "answers": answers,
            "accepted": load.codes.get("202", 0),
            "refusals": load.reasons,
            "other": {k: v for k, v in load.codes.items() if k not in ("202", "409")},
            "socket_errors": load.errors - sum(v for k, v in load.codes.items() if int(k) >= 400),
            "tickets": tickets,
            "rush_s": rush_s,
            "answers_per_s": answers / rush_s,
            "first_request_to_sold_out_s": issued - first,
            "first_request_to_all_final_s": final - first,
            "p50_ms": load.p50_ms, "p95_ms": load.p95_ms, "p99_ms": load.p99_ms,
            "units_sold_in_sql": self._confirmed(product_id),
            "units_left": figures.available if figures else None,
            "redis": asdict(figures) if figures else None,
            "reconciliation": reconcile_product(
                self.rt.inventory, self.rt.sessions, product_id
            ).result,
        }  # fmt: skip

    def hall(self, url: str, admin: str) -> tuple[int, int]:
        """Through the API as an admin: an event whose sections have `seated_rows` rows of
        `seated_row_seats` seats, published with no sale start (on sale at once); answers the
        event's id and that of the product selling its seats."""
        from core.models import Product

        o = self.options
        rows = [{"name": str(n), "seats": o.seated_row_seats} for n in range(1, o.seated_rows + 1)]
        sections = [{"name": name, "price": "50.00", "rows": rows} for name in HALL_SECTIONS]
        event = {"title": "bench hall", "venue": "bench", "currency": "USD",
                 "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat()}  # fmt: skip
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            event_id = http.post("/events", json=event).raise_for_status().json()["id"]
            http.put(f"/events/{event_id}/seatmap", json={"sections": sections}).raise_for_status()
            http.post(f"/events/{event_id}/publish").raise_for_status()
        with self.rt.sessions() as session:
            product_id = session.scalar(select(Product.id).where(Product.event_id == event_id))
        return event_id, int(product_id)

    def room_product(
        self, url: str, admin: str, stock: int, inlet: int, opens_at: float | None = None
    ) -> int:
        """Through the API as an admin: a product behind a waiting room admitting `inlet`
        buyers a second, one unit per buyer, on sale at `opens_at` (wall clock) or at once."""
        product = {"name": "bench room", "price": "25.00", "stock": stock, "max_per_user": 1,
                   "waiting_room": True, "admit_per_second": inlet}  # fmt: skip
        if opens_at is not None:
            product["sale_starts_at"] = datetime.fromtimestamp(opens_at, UTC).isoformat()
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            return int(http.post("/products", json=product).raise_for_status().json()["id"])

    def room_status(self) -> dict[str, Any]:
        """B buyers join a room admitting 1 a second (wrk, each once), then wrk loads GET
        /queue/<id>/status with their tokens in turn (median of --runs): nearly every answer
        is a queued place, as during a sale. Against `bare` when it ran before in this run."""
        o = self.options
        tokens = self.tokens(o.room_buyers)
        admin = self.tokens(1, role="admin")[0]
        url = self.serve("web:create_app()")
        try:
            product_id = self.room_product(url, admin, stock=o.room_buyers, inlet=1)
            window = 60 if o.quick else RUSH_WINDOW_S
            joined = self.wrk(url, "POST", [f"/queue/{product_id}/join"], tokens, "", window,
                              reuse=False, until_answered=True)  # fmt: skip
            polled = self.median_of("room_status", lambda: self._rate(
                self.wrk(url, "GET", [f"/queue/{product_id}/status"], tokens, "",
                         o.duration), "200"))  # fmt: skip
            room = self.rt.inventory.room_figures(product_id, points=1)
            joins = sum(joined.codes.values())
            result = self.results["room_status"]
            result |= {
                "buyers": o.room_buyers,
                "admit_per_second": 1,
                "admitted": room.admitted if room else None,
                "still_queued": room.waiting if room else None,
                "joins": {
                    "answers": joins, "codes": joined.codes,
                    "answers_per_s": joins / max(0.001, (joined.last_us - joined.first_us) / 1e6),
                    "p50_ms": joined.p50_ms, "p99_ms": joined.p99_ms,
                },
            }  # fmt: skip
            if "bare" in self.results:
                result["vs_bare"] = polled["ok_per_s"] / self.results["bare"]["ok_per_s"]
            return result
        finally:
            self.unserve()

    def room_sale(self) -> dict[str, Any]:
        """S units to B buyers through a waiting room admitting `room_inlet` a second, with the
        RQ workers and the scheduler settling: every buyer joins (all at the opening, or
        evenly over the `room_arrival_s` before it), polls as the API says (poll_after_ms) and,
        once admitted, buys once with its pass."""
        from bench.room_driver import run_crowd
        from core.stock import reconcile_product

        o = self.options
        tokens = self.tokens(o.room_sale_buyers)
        admin = self.tokens(1, role="admin")[0]
        url = self.serve_with_settlers()
        try:
            # The sale opens once every buyer has arrived (a second to spare), or at once.
            opens_at = time.time() + o.room_arrival_s + 1 if o.room_arrival_s else None
            product_id = self.room_product(
                url, admin, o.room_sale_units, o.room_inlet, opens_at=opens_at
            )
            window = (60 if o.quick else ROOM_SALE_WINDOW_S) + o.room_arrival_s
            crowd = run_crowd(url, product_id, tokens, o.connections, window,
                              arrival_s=o.room_arrival_s, opening=opens_at)  # fmt: skip
            opening = crowd.opening
            accepted = crowd.purchases.codes.get("202", 0)
            self._wait_all_final(product_id, accepted, timeout=window)
            issued, final = self._last_times(product_id) if accepted else (opening, opening)
            room = self.rt.inventory.room_figures(product_id, points=o.room_sale_buyers)
            figures = self.rt.inventory.figures(product_id)
            sold = self._confirmed(product_id)
            admitted_at = [at / 1000 for at, _ in room.admissions] if room else []
            purchases = _calls(crowd.purchases, opening)
            result = {
                "units": o.room_sale_units, "buyers": o.room_sale_buyers,
                "inlet_per_s": o.room_inlet, "connections": o.connections,
                "arrival_s": o.room_arrival_s,
                "rq_workers": o.rq_workers,
                "capacity_reference_per_s": PURCHASE_CAPACITY,
                "outcomes": dict(crowd.outcomes),
                "joins": _calls(crowd.joins, opening),
                "polls": _calls(crowd.polls, opening),
                "purchases": purchases,
                "purchases_over_inlet_s": sum(n > o.room_inlet for n in purchases["per_s"]),
                "admitted": room.admitted if room else None,
                "admitted_per_s": _per_second(admitted_at, opening),
                "opening_to_sold_out_s": issued - opening,
                "opening_to_all_final_s": final - opening,
                "opening_to_last_buyer_told_s": crowd.last_told - opening,
                "units_sold_in_sql": sold,
                "oversold": max(0, sold - o.room_sale_units),
                "units_left": figures.available if figures else None,
                "redis": asdict(figures) if figures else None,
                "reconciliation": reconcile_product(
                    self.rt.inventory, self.rt.sessions, product_id
                ).result,
                "client_cpu_s": crowd.cpu_s,
                "client_cores": crowd.cpu_s / max(0.001, crowd.last_told - opening),
            }  # fmt: skip
            self.results["room_sale"] = result
            return result
        finally:
            self.unserve()

    def settlements(self) -> dict[str, Any]:
        """Settlement from a backlog: 0 ms payments with 1 and 2 worker processes (median of
        --runs), then 200 ms payments with 8 and 64 in flight per worker, 1 and 2 workers
        (and 4 and 8 workers at 8 in flight)."""
        o = self.options
        rates: dict[str, Any] = {}
        for workers in (1, 2):
            runs = [self.settlement(workers, 0, o.settle_orders) for _ in range(o.runs)]
            rates[f"0ms_{workers}_workers"] = statistics.median(runs)
            rates[f"0ms_{workers}_workers_runs"] = runs
        for concurrency, workers_list in ((8, o.latency_workers), (64, [1, 2])):
            for workers in workers_list:
                orders = (50 if not o.quick else 10) * concurrency * workers
                rates[f"200ms_{concurrency}_in_flight_{workers}_workers"] = self.settlement(
                    workers, 200, orders, concurrency=concurrency
                )
        return rates

    def settlement(
        self,
        workers: int,
        latency_ms: int,
        orders: int,
        worker_class: str = "rq.worker.SimpleWorker",
        concurrency: int = 8,
    ) -> float:
        """Orders per second settled by `workers` processes from a backlog of `orders` tickets."""
        from core.keys import new_ticket_id
        from jobs.queues import enqueue_drains

        product_id = self.product(stock=orders)
        users = self.tokens(1)  # one buyer id is enough: no per-user limit here
        user_id = int(_jwt_subject(users[0]))
        for _ in range(orders):
            ticket = new_ticket_id(product_id)
            self.rt.inventory.reserve(product_id, user_id, 1, ticket, "pm_card_visa")
        extra = {"PAYMENT_LATENCY_MS": str(latency_ms), "PAYMENT_CONCURRENCY": str(concurrency)}
        self.procs.rq_workers(workers, extra, worker_class)
        self._wait_workers(workers)
        started = time.monotonic()
        enqueue_drains(self.rt.settings, [product_id] * workers)
        try:
            self._wait_all_final(product_id, orders, timeout=600)
        finally:
            for child in list(self.procs.children):
                self.procs.stop(child)
        return orders / (time.monotonic() - started)

    # --- helpers --------------------------------------------------------------------------
    def serve(self, target: str, extra_env: dict[str, str] | None = None) -> str:
        self.procs.env.update(extra_env or {})
        o = self.options
        url = self.procs.gunicorn(target, o.gunicorn_workers, o.worker_class, o.threads)
        # Warm every gunicorn worker (imports, connections, scripts) before measuring.
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(50 * o.gunicorn_workers):
                http.get("/health")
        return url

    def unserve(self) -> None:
        for child in list(self.procs.children):
            self.procs.stop(child)

    def _rate(self, load: Load, code: str) -> dict[str, Any]:
        seconds = load.seconds
        return {
            "req_per_s": load.requests_per_s,
            "ok_per_s": load.codes.get(code, 0) / seconds,
            "p50_ms": load.p50_ms,
            "p95_ms": load.p95_ms,
            "p99_ms": load.p99_ms,
            "other_codes": sum(v for k, v in load.codes.items() if k != code),
            "errors": load.errors,
        }

    def _owners(self, product_id: int, tickets: list[str], tokens: list[str]) -> list[str]:
        by_user = {}
        from flask_jwt_extended import decode_token

        with self.app.app_context():
            for token in tokens:
                by_user[decode_token(token)["sub"]] = token
        holds = self.rt.redis.hmget(self.rt.inventory.keys(product_id).holds, tickets)
        return [by_user.get(json.loads(h)["u"], tokens[0]) if h else tokens[0] for h in holds]

    def serve_with_settlers(self) -> str:
        """The API, the RQ workers and the scheduler, as a sale runs them: the API's URL."""
        url = self.serve("web:create_app()")
        self.procs.rq_workers(self.options.rq_workers)
        self.procs.scheduler()
        self._wait_workers(self.options.rq_workers)
        return url

    def _wait_workers(self, count: int) -> None:
        """Until `count` RQ workers listen on the queue (their start-up is not settlement)."""
        from rq import Worker

        from jobs.queues import settlement_queue

        queue = settlement_queue(self.rt.settings)
        deadline = time.monotonic() + 60
        while Worker.count(queue=queue) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} rq workers did not start")
            time.sleep(0.1)

    def _confirmed(self, product_id: int) -> int:
        from core.models import Order

        with self.rt.sessions() as session:
            return int(
                session.scalar(
                    select(func.coalesce(func.sum(Order.quantity), 0)).where(
                        Order.product_id == product_id, Order.status == "confirmed"
                    )
                )
            )

    def _last_times(self, product_id: int) -> tuple[float, float]:
        """When the product's last ticket was issued (its hold's time, by Redis' clock) and when
        the last one became final (by the settler's), in seconds since the epoch."""
        from core.models import Order
        from core.times import to_ms

        with self.rt.sessions() as session:
            issued, final = session.execute(
                select(func.max(Order.created_at), func.max(Order.updated_at)).where(
                    Order.product_id == product_id
                )
            ).one()
        return to_ms(issued) / 1000, to_ms(final) / 1000

    def _free_seats(self, url: str, event_id: int) -> int:
        """Free seats as a buyer sees them: GET /events/<id>/seats, a letter a seat (f: free)."""
        seat_map = httpx.get(f"{url}/events/{event_id}/seats", timeout=30).raise_for_status()
        return sum(
            row["states"].count("f")
            for section in seat_map.json()["sections"]
            for row in section["rows"]
        )

    def _wait_all_final(self, product_id: int, count: int, timeout: float) -> float:
        from core.models import Order
        from core.tickets import OPEN_STATUSES

        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with self.rt.sessions() as session:
                final = session.scalar(
                    select(func.count()).where(
                        Order.product_id == product_id, Order.status.not_in(OPEN_STATUSES)
                    )
                )
            if final >= count:
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"only {final} of {count} tickets final after {timeout}s")


def _stop_when_answered(child: subprocess.Popen, done: Path, threads: int) -> None:
    """Ends wrk once each of its threads has had all its buyers' answers (on SIGINT wrk stops
    and reports as at the end of its duration)."""
    while child.poll() is None:
        if len(list(done.parent.glob(f"{done.name}.*"))) >= threads:
            child.send_signal(signal.SIGINT)
            return
        time.sleep(0.05)


def _rush_bodies(seated: bool) -> list[str]:
    """Buyer i asks for 2 + i % 3 units, or seats together of the sections in turn; wrk pairs
    the bodies with the buyers in turn, so six of them serve every buyer."""
    bodies = []
    for i in range(6):
        ask: dict[str, Any] = {"quantity": 2 + i % 3, "payment_method": "pm_card_visa"}
        if seated:
            ask = {"section": HALL_SECTIONS[i % len(HALL_SECTIONS)], "together": True} | ask
        bodies.append(json.dumps(ask))
    return bodies


def _calls(calls: Any, opening: float) -> dict[str, Any]:
    """One kind of the room sale's requests: counts per second since the opening (by when each
    was sent), latency percentiles (ms) and the answers."""
    latency = sorted(calls.latency)
    per_s = _per_second(calls.sent, opening)
    return {
        "count": len(latency), "codes": dict(calls.codes), "reasons": dict(calls.reasons),
        "failures": calls.failures,
        "per_s": per_s, "max_per_s": max(per_s, default=0),
        "mean_per_s": len(latency) / max(1, len(per_s)),
        "p50_ms": _percentile(latency, 50) * 1000, "p95_ms": _percentile(latency, 95) * 1000,
        "p99_ms": _percentile(latency, 99) * 1000, "max_ms": latency[-1] * 1000 if latency else 0,
        "waited_p99_ms": _percentile(sorted(calls.waited), 99) * 1000,
        "p99_ms_per_s": _percentiles_per_second(calls.sent, calls.latency, opening, 99),
    }  # fmt: skip


def _percentiles_per_second(
    sent: list[float], latency: list[float], since: float, q: float
) -> list[float]:
    """The q-th latency percentile (ms) of the requests sent in each second since `since`."""
    by_second: dict[int, list[float]] = {}
    for at, took in zip(sent, latency, strict=True):
        if at >= since:
            by_second.setdefault(int(at - since), []).append(took)
    last = max(by_second, default=-1)
    return [round(_percentile(sorted(by_second.get(i, [])), q) * 1000, 1) for i in range(last + 1)]


def _per_second(times: list[float], since: float) -> list[int]:
    """How many of `times` fell in each second since `since` (to the last one)."""
    seconds = [int(t - since) for t in times if t >= since]
    counts = [0] * (max(seconds, default=-1) + 1)
    for second in seconds:
        counts[second] += 1
    return counts


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest rank, of sorted values."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _chunks(tokens: list[str], parts: int) -> list[list[str]]:
    size = len(tokens) // parts
    return [tokens[i * size : (i + 1) * size] for i in range(parts)]


def _jwt_subject(token: str) -> str:
    import base64

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def main() -> None:
    options = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="flashsale-bench-"))
    bench = Bench(options, workdir)
    steps = [
        x for x in STEPS if x in ("prepare", "report") or not options.only or x in options.only
    ]
    progress = tqdm(steps, desc="bench", unit="step")
    tokens: list[str] = []
    try:
        for step in progress:
            progress.set_postfix_str(step)
            if step in ("prepare", "report"):
                tokens = _run_step(bench, step, steps, tokens, progress)
                continue
            try:
                tokens = _run_step(bench, step, steps, tokens, progress)
            except Exception as error:  # one failed step must not lose the others' figures
                bench.results.setdefault("failed_steps", {})[step] = repr(error)
                progress.write(f"step {step} failed: {error!r}")
                bench.unserve()
    finally:
        bench.procs.stop_all()


def _run_step(
    bench: Bench, step: str, steps: list[str], tokens: list[str], progress: Any
) -> list[str]:
    """Runs one step; answers the buyers' tokens still unused."""
    if step == "prepare":
        bench.prepare()
        wanted = {"bare", "one_trip", "lock_then_write", "product"}
        return bench.tokens(bench.options.buyers) if wanted.intersection(steps) else []
    if step == "bare":
        bench.bare(tokens)
    elif step == "one_trip":
        bench.one_trip(tokens[: len(tokens) // 2])
        return tokens[len(tokens) // 2 :]  # each buyer buys once
    elif step == "lock_then_write":
        bench.lock_then_write(tokens)
    elif step == "product":
        bench.product_paths(tokens)
    elif step == "settlement":
        bench.results["settlement"] = bench.settlements()
    elif step == "sale":
        bench.sale()
    elif step == "seated":
        bench.seated()
    elif step == "room_sale":
        bench.room_sale()
    elif step == "room_status":
        bench.room_status()
    else:
        from bench.report import write_report

        paths = write_report(bench.results, RESULTS)
        progress.write(paths["markdown"].read_text())
        progress.write(f"results: {', '.join(str(p) for p in paths.values())}")
    return tokens


if __name__ == "__main__":
    main()
