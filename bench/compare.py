"""Side-by-side measurements behind the configuration choices: `python -m bench.compare`.

- gunicorn worker classes and counts: `bare`, the `one_trip` ceiling and accepted purchases,
  each configuration measured in one go (3 runs of 5 s, medians);
- RQ's fork-per-job `Worker` against `SimpleWorker`, on settlement from a backlog.

Every run buys a product of its own, so a buyer's token serves once per product and 60,000
buyers cover every configuration.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.rush import PURCHASE_BODY, Bench, Options

GUNICORN = [("gthread", 2, 4), ("gthread", 2, 8), ("gthread", 4, 4), ("sync", 4, 1),
            ("sync", 6, 1), ("gevent", 2, 1), ("gevent", 4, 1)]  # fmt: skip
RQ_CLASSES = ["rq.worker.SimpleWorker", "rq.worker.Worker"]
TARGETS = {
    "bare": "bench.baselines.bare:create_app()",
    "one_trip": "bench.baselines.one_trip:create_app()",
    "accepted": "web:create_app()",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-rq", action="store_true", help="gunicorn classes only")
    args = parser.parse_args()
    options = Options(False, 3, 5, 256, 2, 2, "gthread", 4, 2, 60_000, 0, 0, 1000, [])
    bench = Bench(options, Path(tempfile.mkdtemp(prefix="flashsale-compare-")))
    rows: list[str] = []
    try:
        bench.prepare()
        tokens = bench.tokens(options.buyers)
        for klass, workers, threads in GUNICORN:
            bench.options.worker_class, bench.options.gunicorn_workers = klass, workers
            bench.options.threads = threads
            rates = {name: _median(bench, target, tokens) for name, target in TARGETS.items()}
            rows.append(
                f"| {klass} {workers} x {threads} | {rates['bare']:.0f} | "
                f"{rates['one_trip']:.0f} | {rates['accepted']:.0f} | "
                f"{rates['accepted'] / rates['bare']:.0%} | "
                f"{rates['accepted'] / rates['one_trip']:.0%} |"
            )
            print(rows[-1], flush=True)
        print("| gunicorn | bare /s | one_trip /s | accepted /s | accepted vs bare | "
              "accepted vs one_trip |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
        print("\n".join(rows))
        if args.skip_rq:
            return
        print("\n| RQ worker class | orders/s (2 workers, 0 ms payments, median of 3) |")
        print("|---|---:|")
        for worker_class in RQ_CLASSES:
            settled = [bench.settlement(2, 0, 1000, worker_class) for _ in range(3)]
            print(f"| {worker_class} | {statistics.median(settled):.0f} |")
    finally:
        bench.procs.stop_all()


def _median(bench: Bench, target: str, tokens: list[str]) -> float:
    url = bench.serve(target)
    try:
        rates = []
        for _ in range(bench.options.runs):
            path = f"/purchase/{bench.product(stock=10_000_000)}"
            load = bench.wrk(url, "POST", [path], tokens, PURCHASE_BODY, bench.options.duration,
                             reuse=False)  # fmt: skip
            rates.append(load.codes.get("202", 0) / load.seconds)
        return statistics.median(rates)
    finally:
        bench.unserve()


if __name__ == "__main__":
    main()
