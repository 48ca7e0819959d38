"""Where an accepted purchase spends its time: `python -m bench.profile [--seconds N]`.

Serves the API as the benchmark does (gunicorn, wrk, a distinct buyer per purchase) and:
- counts the CPU time each kind of process spends per accepted purchase (gunicorn's workers,
  Redis, wrk), for the `one_trip` ceiling and for the API, alternately, twice each;
- records one gunicorn worker of the API with py-spy while wrk loads it, once on CPU (`--idle`
  off) and once on the wall clock (`--idle`, waiting included), and prints the frames that take
  the most samples, as self time and as time including callees. The raw py-spy files stay in
  bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.rush import PURCHASE_BODY, RESULTS, Bench, Options
from bench.stack import BIN

TOP = 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--target", default="web:create_app()", help="the gunicorn app")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    options = Options(False, 1, args.seconds + 4, 256, 2, 2, args.worker_class, args.threads, 2,
                      120_000, 0, 0, 0, [])  # fmt: skip
    bench = Bench(options, Path(tempfile.mkdtemp(prefix="flashsale-profile-")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        bench.prepare()
        tokens = bench.tokens(options.buyers)
        _cpu_per_purchase(bench, tokens, args.seconds)
        product = bench.product(stock=10_000_000)
        url = bench.serve(args.target)
        pid = _a_worker(bench)
        for mode, tokens_part in (("cpu", tokens[::2]), ("wall", tokens[1::2])):
            out = RESULTS / f"profile-{mode}.txt"
            wrk_args = (url, "POST", [f"/purchase/{product}"], tokens_part, PURCHASE_BODY,
                        options.duration, False)  # fmt: skip
            load = threading.Thread(target=bench.wrk, args=wrk_args)
            load.start()
            _record(pid, out, args.seconds, idle=mode == "wall")
            load.join()
            print(f"\n## {mode} ({out.name})")
            _summarise(out)
    finally:
        bench.procs.stop_all()


def _cpu_per_purchase(bench: Bench, tokens: list[str], seconds: int) -> None:
    targets = {"one_trip": "bench.baselines.one_trip:create_app()", "api": "web:create_app()"}
    print("| app | accepted/s | gunicorn workers | Redis | wrk |  (CPU per accepted purchase)")
    print("|---|---:|---:|---:|---:|")
    for name in [*targets, *targets]:
        url = bench.serve(targets[name])
        workers = _workers(bench)
        redis = bench.procs.redis.process.pid if bench.procs.redis else None
        pids = workers + ([redis] if redis else [])
        before = {pid: _cpu_seconds(pid) for pid in pids}
        wrk_before = _children_cpu()
        path = f"/purchase/{bench.product(stock=10_000_000)}"
        load = bench.wrk(url, "POST", [path], tokens, PURCHASE_BODY, seconds, reuse=False)
        wrk_cpu = _children_cpu() - wrk_before
        accepted = load.codes.get("202", 0)
        spent = {pid: _cpu_seconds(pid) - before[pid] for pid in pids}
        web_us = sum(spent[p] for p in workers) / accepted * 1e6
        redis_us = spent[redis] / accepted * 1e6 if redis else float("nan")
        print(f"| {name} | {accepted / load.seconds:.0f} | {web_us:.0f} us | {redis_us:.0f} us | "
              f"{wrk_cpu / accepted * 1e6:.0f} us |", flush=True)  # fmt: skip
        bench.unserve()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _workers(bench: Bench) -> list[int]:
    master = bench.procs.children[-1].pid
    children = subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True, check=True
    ).stdout.split()
    return [int(pid) for pid in children]


def _a_worker(bench: Bench) -> int:
    return _workers(bench)[0]


def _record(pid: int, out: Path, seconds: int, idle: bool) -> None:
    argv = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(seconds),
            "--format", "raw", "--output", str(out), "--rate", "200", "--nonblocking"]  # fmt: skip
    if idle:
        argv.append("--idle")
    subprocess.run(argv, check=True, capture_output=True)


def _summarise(raw: Path) -> None:
    """py-spy's raw format: one line per stack, frames joined by ';', then the sample count."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # the rest of a frame name that held a line break
            continue
        frames = [f for f in stack.split(";") if f]
        n = int(count)
        samples += n
        if frames:
            own[_short(frames[-1])] += n
        for frame in {_short(f) for f in frames}:
            total[frame] += n
    print(f"{samples} samples\n\n| self | frame |\n|---:|---|")
    for frame, n in own.most_common(TOP):
        print(f"| {n / samples:.1%} | {frame} |")
    print("\n| total | frame |\n|---:|---|")
    for frame, n in total.most_common(TOP * 2):
        print(f"| {n / samples:.1%} | {frame} |")


def _short(frame: str) -> str:
    """`name (path/to/module.py:line)` -> `name (module.py)`: lines of one function merge."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


if __name__ == "__main__":
    sys.exit(main())
