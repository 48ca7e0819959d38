"""The measurements behind docs/SCALING.md: `python -m bench.scaling [--runs N] [--duration S]`.

With bench.rush's stack and options (DATABASE_URL / REDIS_URL, or SQLite and a Redis of its own):
- accepted purchases a second with 1, 2 and 4 gunicorn worker processes (gthread, 4 threads
  each; wrk over 256 connections, every buyer a distinct user buying once);
- settlement from a backlog of 10,000 tickets with 1, 2, 4 and 8 RQ worker processes (payments
  answered at once), orders a second.
Medians of --runs runs; the figures go to bench/results/scaling.json.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.rush import PURCHASE_BODY, RESULTS, Bench, _chunks, parse_args

WEB_PROCESSES = (1, 2, 4)
SETTLERS = (1, 2, 4, 8)


def accepted(bench: Bench, tokens: list[str], processes: int) -> dict[str, Any]:
    bench.options = dataclasses.replace(bench.options, gunicorn_workers=processes)
    url = bench.serve("web:create_app()")
    try:
        product = bench.product(stock=10_000_000)
        chunks = _chunks(tokens, bench.options.runs)
        return bench.median_of(f"accepted_{processes}_web", lambda: bench._rate(
            bench.wrk(url, "POST", [f"/purchase/{product}"], chunks.pop(), PURCHASE_BODY,
                      bench.options.duration, reuse=False), "202"))  # fmt: skip
    finally:
        bench.unserve()


def main() -> None:
    options = parse_args()
    bench = Bench(options, Path(tempfile.mkdtemp(prefix="flashsale-scaling-")))
    figures: dict[str, Any] = {"options": dataclasses.asdict(options)}
    try:
        bench.prepare()
        tokens = bench.tokens(options.buyers)
        share = len(tokens) // len(WEB_PROCESSES)
        for at, processes in enumerate(WEB_PROCESSES):
            mine = tokens[at * share : (at + 1) * share]
            figures[f"accepted_{processes}_web"] = accepted(bench, mine, processes)
            print(f"accepted, {processes} web: {figures[f'accepted_{processes}_web']}", flush=True)
        for workers in SETTLERS:
            runs = [
                bench.settlement(workers, 0, options.settle_orders) for _ in range(options.runs)
            ]
            figures[f"settled_{workers}_workers"] = {
                "median": statistics.median(runs),
                "runs": runs,
            }
            print(f"settled, {workers} workers: {runs}", flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "scaling.json").write_text(json.dumps(figures, indent=2))
    finally:
        bench.procs.stop_all()


if __name__ == "__main__":
    main()
