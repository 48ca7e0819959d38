"""The search benchmark: `python -m bench.search [--events N] [--quick]`.

Against DATABASE_URL (or SQLite in a folder of its own) and REDIS_URL (or a Redis of its own):
migrates, generates N events (100,000 on PostgreSQL, 20,000 on SQLite by default; kept between
runs, topped up when fewer) with a product each whose availability is in Redis, then serves the
API with gunicorn and loads it with wrk over C connections (64), one kind of request at a time:
- `exact`: an artist's name, as typed;
- `typo`: an artist's name with two letters swapped (no event holds it: the fallback runs);
- `prefix`: the first four letters of an artist's name;
- `korean`: two characters from inside a Korean artist's name;
- `filters`: a genre word with its category, a price ceiling and a 30-day window;
- `suggest`: /events/suggest for the first 2 to 5 letters of an artist's name.
Each kind cycles through 300 different requests, measured three ways:
- `none, saturated`: every request asks SQL (SEARCH_CACHE_ENTRIES=0); wrk keeps all 64
  connections busy, so the latency is mostly queueing (64 / the rate);
- `none, R/s`: the same at half that rate, sent on time whatever the answers (an open loop over
  64 connections, bench/room_driver.py's client): the latency a searcher sees under load;
- `kept, saturated`: as deployed, each web process keeping its answers, after one unmeasured pass.
Figures: the median of --runs runs of p50, p95 and requests per second. Results go to
bench/results/search-<database>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import func, insert, select, text
from tqdm import tqdm

from bench.room_driver import Calls, Pool
from bench.stack import ROOT, Processes, environment, wrk_binary

RESULTS = ROOT / "bench" / "results"
WRK_SCRIPT = ROOT / "bench" / "wrk" / "paths.lua"
KINDS = ("exact", "typo", "prefix", "korean", "filters", "suggest")
REQUESTS_PER_KIND = 300
BATCH = 2000
TARGET_P95_MS = {"suggest": 20.0}  # the others: 50 ms
LOAD_SHARE = 0.5  # the open loop's rate: this share of the saturated rate without the cache
FIRST_DAY = datetime(2027, 1, 1, tzinfo=UTC)  # events spread over the two years from here

_SYLLABLES = ("ka", "lo", "ri", "ven", "ta", "mi", "sol", "dra", "ne", "qui")
_SYLLABLES += ("zo", "bel", "mar", "tin", "ey", "ros", "ul", "fa", "gen", "ho")
_HANGUL = tuple("가나다라마바사아자차카타파하민지수현윤서준혜영태")
_GENRES = {
    "jazz": "jazz", "rock": "rock", "pop": "pop", "classical": "symphony", "kpop": "idol",
    "comedy": "comedy", "theatre": "musical", "electronic": "techno", "folk": "acoustic",
    "trot": "trot",
}  # fmt: skip
_CITIES = ["Seoul", "Busan", "London", "Paris", "Berlin", "Madrid", "Tokyo", "Osaka", "Chicago",
           "Toronto", "Sydney", "Dublin", "Vienna", "Lisbon", "Prague", "Oslo"]  # fmt: skip
_PLACES = ["Arena", "Hall", "Stadium", "Theatre", "Dome", "Club", "Pavilion", "Garden"]


@dataclass(frozen=True)
class Options:
    events: int
    runs: int
    duration: int
    connections: int
    gunicorn_workers: int
    threads: int
    only: list[str]
    caches: list[str]


def parse_args() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=0, help="0: 100,000 (PG) / 20,000 (SQLite)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument(
        "--cache", nargs="*", default=["kept", "none"], choices=["kept", "none"],
        help="kept: each web process keeps its answers (the default set-up); none: every "
        "request asks SQL (SEARCH_CACHE_ENTRIES=0)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s each")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 3
    return Options(
        args.events, args.runs, args.duration, args.connections, args.gunicorn_workers,
        args.threads, args.only, args.cache,
    )  # fmt: skip


@dataclass(frozen=True)
class Artist:
    name: str
    korean: bool
    genre: str


def artists(count: int, seed: int = 16) -> list[Artist]:
    """Made-up artists (one in four with a Korean name), each touring a few dozen dates."""
    draw = random.Random(seed)
    found: dict[str, Artist] = {}
    while len(found) < count:
        if len(found) % 4 == 3:
            name = "".join(draw.choices(_HANGUL, k=draw.randrange(3, 5)))
            korean = True
        else:
            first = "".join(draw.choices(_SYLLABLES, k=draw.randrange(2, 4))).capitalize()
            last = "".join(draw.choices(_SYLLABLES, k=draw.randrange(2, 3))).capitalize()
            name, korean = f"{first} {last}", False
        found.setdefault(name, Artist(name, korean, draw.choice(list(_GENRES))))
    return list(found.values())


def event_rows(first: int, count: int, cast: list[Artist]) -> list[dict[str, Any]]:
    """Events `first` to `first + count` (the same for the same numbers, run after run)."""
    rows = []
    for number in range(first, first + count):
        draw = random.Random(number)
        artist = cast[number % len(cast)]
        city = draw.choice(_CITIES)
        word = _GENRES[artist.genre]
        if artist.korean:
            title = f"{artist.name} 전국투어 콘서트 - {city}"
            description = f"{artist.name}의 {word} 무대. 특별 게스트와 함께하는 밤."
        else:
            title = f"{artist.name} Live in {city}"
            description = f"An evening of {word} with {artist.name} and special guests."
        low = draw.randrange(15, 150)
        rows.append(
            {
                "title": title,
                "description": description,
                "category": artist.genre,
                "venue": f"{city} {draw.choice(_PLACES)}",
                "location": city,
                "starts_at": FIRST_DAY + timedelta(hours=draw.randrange(0, 2 * 365 * 24)),
                "status": "published" if draw.random() > 0.05 else "draft",
                "currency": "USD",
                "max_per_user": 4,
                "transfers_allowed": True,
                "price_min_minor": low * 100,
                "price_max_minor": (low + draw.randrange(0, 200)) * 100,
            }
        )
    return rows


def seed(rt: Any, wanted: int) -> int:
    """Events, with a product each, until there are `wanted`."""
    from core.models import Event, Product

    cast = artists(max(1, wanted // 30))
    with rt.sessions() as session:
        have = session.scalar(select(func.count()).select_from(Event)) or 0
    for start in tqdm(range(have, wanted, BATCH), desc="events", disable=have >= wanted):
        rows = event_rows(start, min(BATCH, wanted - start), cast)
        with rt.sessions() as session:
            ids = session.scalars(insert(Event).returning(Event.id), rows).all()
            session.execute(
                insert(Product),
                [
                    {"name": row["title"], "price_minor": row["price_min_minor"],
                     "currency": "USD", "initial_stock": 500, "max_per_user": 4, "event_id": i}
                    for i, row in zip(ids, rows, strict=True)
                ],
            )  # fmt: skip
            session.commit()
    # The planner's statistics, as autovacuum keeps them.
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            text("VACUUM ANALYZE" if rt.engine.dialect.name == "postgresql" else "ANALYZE")
        )
    return max(have, wanted)


def stock_in_redis(rt: Any) -> None:
    """Each product's availability, as a sale keeps it in Redis (under this run's prefix)."""
    from core.models import Product

    with rt.sessions() as session:
        product_ids = session.scalars(select(Product.id)).all()
    draw = random.Random(3)
    for start in range(0, len(product_ids), BATCH):
        pipe = rt.redis.pipeline(transaction=False)
        for product_id in product_ids[start : start + BATCH]:
            pipe.hset(rt.inventory.keys(product_id).stock, "available", draw.randrange(0, 500))
        pipe.execute()


def forget_redis(rt: Any, prefix: str) -> None:
    keys = list(rt.redis.scan_iter(match=f"{prefix}:*", count=5000))
    for start in range(0, len(keys), 5000):
        rt.redis.delete(*keys[start : start + 5000])


def requests_of(kind: str, cast: list[Artist], seed: int = 7) -> list[str]:
    draw = random.Random(seed)
    latin = [a for a in cast if not a.korean]
    korean = [a for a in cast if a.korean]
    paths = []
    for _ in range(REQUESTS_PER_KIND):
        artist = draw.choice(latin)
        surname = artist.name.split()[-1].lower()
        if kind == "exact":
            query = {"q": artist.name}
        elif kind == "typo":
            at = draw.randrange(1, len(surname) - 1)
            swapped = surname[:at] + surname[at + 1] + surname[at] + surname[at + 2 :]
            query = {"q": artist.name.split()[0] + " " + swapped}
        elif kind == "prefix":
            query = {"q": surname[:4]}
        elif kind == "korean":
            name = draw.choice(korean).name
            at = draw.randrange(0, len(name) - 1)
            query = {"q": name[at : at + 2]}
        elif kind == "filters":
            genre = draw.choice(list(_GENRES))
            since = FIRST_DAY + timedelta(days=draw.randrange(0, 600))
            query = {
                "q": _GENRES[genre], "category": genre, "max_price": str(draw.randrange(30, 120)),
                "from": since.date().isoformat(),
                "to": (since + timedelta(days=30)).date().isoformat(),
            }  # fmt: skip
        else:
            query = {"q": surname[: draw.randrange(2, 6)]}
        route = "/events/suggest" if kind == "suggest" else "/events/search"
        if kind != "suggest" and "from" not in query:
            query["from"] = FIRST_DAY.date().isoformat()
        paths.append(f"{route}?{urlencode(query)}")
    return paths


def wrk(url: str, paths: list[str], options: Options, workdir: Path) -> dict[str, float]:
    paths_file = workdir / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    argv = [wrk_binary(), "-t", "2", "-c", str(options.connections), "-d", f"{options.duration}s",
            "--latency", "-s", str(WRK_SCRIPT), url]  # fmt: skip
    out = subprocess.run(
        argv, env=os.environ | {"WRK_PATHS": str(paths_file)}, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    seconds = data["duration_us"] / 1e6
    ok = data["codes"].get("200", 0)
    if ok != data["requests"] or data["errors"]:
        raise RuntimeError(f"not every answer was 200: {data}")
    return {
        "req_per_s": data["requests"] / seconds,
        "p50_ms": data["p50_us"] / 1000,
        "p95_ms": data["p95_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
    }


async def _at_rate(url: str, paths: list[str], rate: float, seconds: float, size: int) -> Calls:
    pool, calls = Pool(url, size), Calls()
    messages = [pool.head("GET", path, "") for path in paths]
    started = time.perf_counter()
    late: list[float] = []

    async def one(number: int) -> None:
        due = started + number / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await pool.request(calls, messages[number % len(messages)])
        late.append(time.perf_counter() - due)  # from when it was due: queueing included

    await asyncio.gather(*(one(n) for n in range(int(rate * seconds))))
    pool.close()
    calls.latency = late
    return calls


def at_rate(url: str, paths: list[str], rate: float, options: Options) -> dict[str, float]:
    """Requests sent at `rate` a second whatever the answers (an open loop) over the same number
    of connections: the latency from when each was due until its answer."""
    calls = asyncio.run(_at_rate(url, paths, rate, options.duration, options.connections))
    if calls.failures or set(calls.codes) != {"200"}:
        raise RuntimeError(f"not every answer was 200: {calls.codes}, {calls.failures} failed")
    late = sorted(calls.latency)
    return {
        "rate": rate,
        "p50_ms": late[len(late) // 2] * 1000,
        "p95_ms": late[int(len(late) * 0.95)] * 1000,
        "p99_ms": late[int(len(late) * 0.99)] * 1000,
    }


def check_answers(url: str, paths: list[str]) -> float:
    """The share of requests that find something (a benchmark of empty answers proves little)."""
    found = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        for path in paths[:50]:
            body = http.get(path).json()
            found += bool(body.get("hits") or body.get("suggestions"))
    return found / min(50, len(paths))


def measure(
    kind: str, cache: str, url: str, cast: list[Artist], options: Options, workdir: Path
) -> dict[str, Any]:
    paths = requests_of(kind, cast)
    found = check_answers(url, paths)
    if cache == "kept":  # the steady state: every process has met every request once
        wrk(url, paths, options, workdir)
    runs = [wrk(url, paths, options, workdir) for _ in range(options.runs)]
    summary = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    target = TARGET_P95_MS.get(kind, 50.0)
    _say(kind, f"{cache}, saturated", summary, target, f"{summary['req_per_s']:6.0f} req/s")
    result = summary | {"found_share": found, "target_p95_ms": target, "runs": runs}
    if cache == "none":  # the latency at half the rate this set-up sustains
        rate = round(summary["req_per_s"] * LOAD_SHARE)
        paced = [at_rate(url, paths, rate, options) for _ in range(options.runs)]
        at_half = {k: statistics.median(r[k] for r in paced) for k in paced[0]}
        _say(kind, f"{cache}, {rate}/s", at_half, target, "")
        result["at_half_rate"] = at_half | {"runs": paced}
    return result


def _say(kind: str, how: str, figures: dict[str, float], target: float, extra: str) -> None:
    print(
        f"{kind:8} {how:18} p50 {figures['p50_ms']:7.1f} ms  p95 {figures['p95_ms']:7.1f} ms "
        f"(target {target:.0f})  {extra}",
        flush=True,
    )


def main() -> None:
    options = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-"))
    env = environment(workdir) | {"RATELIMIT_ENABLED": "false"}
    procs = Processes(env, workdir)
    procs.start_redis_if_needed()
    os.environ.update(procs.env)
    database = "postgresql" if procs.env["DATABASE_URL"].startswith("postgres") else "sqlite"
    wanted = options.events or (100_000 if database == "postgresql" else 20_000)
    results: dict[str, Any] = {"database": database, "options": options.__dict__}
    rt = None
    try:
        procs.run(sys.executable, "-m", "flask", "--app", "web", "db", "upgrade")
        from jobs.runtime import runtime

        rt = runtime()
        results["events"] = seed(rt, wanted)
        stock_in_redis(rt)
        cast = artists(max(1, wanted // 30))
        for cache in options.caches:
            procs.env["SEARCH_CACHE_ENTRIES"] = "2000" if cache == "kept" else "0"
            url = procs.gunicorn(
                "web:create_app()", options.gunicorn_workers, "gthread", options.threads
            )
            for kind in options.only:
                results[f"{kind}/{cache}"] = measure(kind, cache, url, cast, options, workdir)
            procs.stop_all_but_redis()
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"search-{database}.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results: {out.relative_to(ROOT)}")
    finally:
        if rt is not None:
            forget_redis(rt, procs.env["REDIS_KEY_PREFIX"])
        procs.stop_all()


if __name__ == "__main__":
    main()
