"""Side-by-side measurements behind the configuration choices: `python -m bench.compare`.

- gunicorn worker classes and counts, on `bare` and on accepted purchases;
- RQ's fork-per-job `Worker` against `SimpleWorker`, on settlement from a backlog.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.rush import PURCHASE_BODY, Bench, Options

GUNICORN = [("gthread", 2, 16), ("gthread", 2, 4), ("gthread", 4, 4), ("sync", 4, 1)]
RQ_CLASSES = ["rq.worker.SimpleWorker", "rq.worker.Worker"]


def main() -> None:
    options = Options(False, 3, 5, 256, 2, 2, "gthread", 16, 2, 80_000, 0, 0, 1000, [])
    bench = Bench(options, Path(tempfile.mkdtemp(prefix="flashsale-compare-")))
    rows: list[str] = []
    try:
        bench.prepare()
        tokens = bench.tokens(options.buyers)
        # Every accepted purchase needs a buyer of its own: 20,000 per configuration.
        chunks = [tokens[i :: len(GUNICORN)] for i in range(len(GUNICORN))]
        for klass, workers, threads in GUNICORN:
            bench.options.worker_class, bench.options.gunicorn_workers = klass, workers
            bench.options.threads = threads
            bare = _median(bench, "bench.baselines.bare:create_app()", tokens, True)
            product = bench.product(stock=10_000_000)
            chunk = chunks.pop()
            accepted = _median(bench, "web:create_app()", chunk, False, product)
            rows.append(
                f"| {klass} {workers} x {threads} | {bare:.0f} | {accepted:.0f} | "
                f"{accepted / bare:.0%} |"
            )
        print("| gunicorn | bare /s | accepted /s | ratio |\n|---|---:|---:|---:|")
        print("\n".join(rows))
        print("\n| RQ worker class | orders/s (2 workers, 0 ms payments, median of 3) |")
        print("|---|---:|")
        for worker_class in RQ_CLASSES:
            rates = [bench.settlement(2, 0, 1000, worker_class) for _ in range(3)]
            print(f"| {worker_class} | {statistics.median(rates):.0f} |")
    finally:
        bench.procs.stop_all()


def _median(
    bench: Bench, target: str, tokens: list[str], reuse: bool, product: int | None = None
) -> float:
    url = bench.serve(target)
    path = f"/purchase/{product or 1}"
    try:
        rates = []
        for run in range(bench.options.runs):
            part = tokens if reuse else tokens[run :: bench.options.runs]
            load = bench.wrk(
                url, "POST", [path], part, PURCHASE_BODY, bench.options.duration, reuse
            )
            rates.append(load.codes.get("202", 0) / load.seconds)
        return statistics.median(rates)
    finally:
        bench.unserve()


if __name__ == "__main__":
    main()
