"""Writes a run's results: JSON, a Markdown table with ratios, and a PNG chart."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _machine() -> str:
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{platform.machine()}, {cpu} cores, Python {platform.python_version()}"


PATHS = [
    # name, label, target against bare, target against one_trip
    ("bare", "bare Flask (ceiling)", None, None),
    ("one_trip", "one_trip (JWT + body + one EVALSHA)", None, None),
    ("accepted", "purchase accepted (202)", 0.40, 0.90),
    ("sold_out", "purchase sold out (409)", 0.70, None),
    ("status", "status polling (200)", 0.45, None),
    ("lock_then_write", "lock-then-write (202)", None, None),
    ("room_status", "waiting-room status poll (200)", 0.80, None),
]


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Machine: {_machine()}. Options: `{json.dumps(results['options'])}`", ""]
    if "bare" in results:
        lines += _paths_table(results)
    if "settlement" in results:
        lines += ["", "| settlement | orders/s |", "|---|---:|"]
        for name, rate in results["settlement"].items():
            if not name.endswith("_runs"):
                runs = results["settlement"].get(f"{name}_runs")
                shown = ", ".join(f"{r:.0f}" for r in runs) if runs else ""
                lines.append(
                    f"| {name.replace('_', ' ')} | {rate:.0f} {f'({shown})' if shown else ''} |"
                )
    if "sale" in results:
        sale = results["sale"]
        lines += [
            "",
            f"Sale: {sale['units']} units, {sale['buyers']} buyers (wrk): accepted "
            f"{sale['accepted']}, sold out {sale['sold_out']}, other {sale['other']}, confirmed in "
            f"SQL {sale['confirmed_in_sql']}, oversold {sale['oversold']}; answers p99 "
            f"{sale['p99_ms']:.0f} ms; **{sale['first_request_to_all_final_s']:.1f} s from the "
            f"first request until every ticket was final** (target <= 20 s); reconciliation: "
            f"{sale.get('reconciliation', 'not run')}.",
        ]
    if "seated" in results:
        lines += ["", _seated(results["seated"])]
    if "room_status" in results:
        lines += ["", _room_status(results["room_status"], results.get("bare"))]
    if "room_sale" in results:
        lines += ["", _room_sale(results["room_sale"], results.get("accepted"))]
    for step, error in results.get("failed_steps", {}).items():
        lines += ["", f"Step `{step}` failed: {error}"]
    return "\n".join(lines) + "\n"


def _seated(hall: dict[str, Any]) -> str:
    seated, general = hall["seated"], hall["general"]
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(seated["refusals"].items())) or "none"
    return (
        f"Seated: a hall of {hall['seats']} seats ({hall['sections']} sections of {hall['rows']} "
        f"rows of {hall['row_seats']}) to {hall['buyers']} buyers (wrk, each its own JWT, asking "
        f"once for 2, 3 or 4 best available seats together, the sections in turn; RQ workers and "
        f"the scheduler settling), right after a general-admission rush of the same shape on the "
        f"same stack (as many units, as many other buyers asking for the same quantities). "
        f"Answers/s run from the first request to the last answer, sold out is the last ticket "
        f"issued (every later answer a refusal), final the last ticket settled in SQL. Seated: "
        f"{seated['answers']} of {seated['buyers']} answered, accepted {seated['accepted']}, "
        f"refused {refusals}, other {seated['other']}; {seated['units_sold_in_sql']} seats sold "
        f"in SQL, {seated['units_left']} left free ({seated['free_in_seat_map']} in the seat "
        f"map), reconciliation {seated['reconciliation']}, answers p99 {seated['p99_ms']:.0f} ms. "
        f"**{seated['answers_per_s']:.0f} answers/s seated against {general['answers_per_s']:.0f} "
        f"general admission ({hall['answers_ratio']:.2f} : 1)**; first request to sold out "
        f"{seated['first_request_to_sold_out_s']:.1f} s (general "
        f"{general['first_request_to_sold_out_s']:.1f} s), to every ticket final "
        f"{seated['first_request_to_all_final_s']:.1f} s (general "
        f"{general['first_request_to_all_final_s']:.1f} s: {general['answers']} answered, "
        f"accepted {general['accepted']}, {general['units_sold_in_sql']} units sold in SQL)."
    )


def _room_status(polled: dict[str, Any], bare: dict[str, Any] | None) -> str:
    joins = polled["joins"]
    runs = ", ".join(f"{r['ok_per_s']:.0f}" for r in polled["runs"])
    if bare:
        versus = (
            f"against {bare['ok_per_s']:.0f} for `bare` in the same run: "
            f"**{polled['ok_per_s'] / bare['ok_per_s']:.0%} of bare** (target >= 80%)"
        )
    else:
        versus = "`bare` did not run (`--only bare room_status` measures both)"
    return (
        f"Waiting-room status: {polled['buyers']} buyers joined a room admitting 1 a second "
        f"(wrk, each once: {joins['answers']} answers, {joins['answers_per_s']:.0f}/s, codes "
        f"{joins['codes']}), then wrk polled GET /queue/<id>/status with their tokens in turn "
        f"({polled['still_queued']} still queued, {polled['admitted']} admitted at the end). "
        f"**{polled['ok_per_s']:.0f} answers/s** (median; runs {runs}), {versus}; p50 "
        f"{polled['p50_ms']:.1f} ms, p99 {polled['p99_ms']:.1f} ms, other answers "
        f"{polled['other_codes']}."
    )


def _room_sale(sale: dict[str, Any], accepted: dict[str, Any] | None) -> str:
    buys, polls, joins = sale["purchases"], sale["polls"], sale["joins"]
    # The route's capacity: the `product` step's accepted purchases when it ran too.
    capacity = accepted["ok_per_s"] if accepted else sale["capacity_reference_per_s"]
    where = "the `product` step in this run" if accepted else "the `product` step, BENCHMARKS.md"
    over = sum(n > capacity for n in buys["per_s"])
    refusals = ", ".join(f"{k} {v}" for k, v in sorted(buys["reasons"].items())) or "none"
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(sale["outcomes"].items()))
    arrival_s = sale.get("arrival_s", 0)
    arrival = (
        f"arriving evenly over the {arrival_s:.0f} s before the opening"
        if arrival_s
        else "all arriving at the opening"
    )
    return (
        f"Room sale: {sale['units']} units to {sale['buyers']} buyers through a waiting room "
        f"admitting {sale['inlet_per_s']} a second (the purchase route accepts about "
        f"{capacity:.0f}/s: {where}), {sale['rq_workers']} RQ workers and the scheduler "
        f"settling. A Python asyncio "
        f"client ({sale['connections']} keep-alive connections, {sale['client_cpu_s']:.1f} s of "
        f"CPU, {sale['client_cores']:.2f} of a core) drives every buyer, {arrival}: join, "
        f"poll as the API says (poll_after_ms), buy once with the pass. Buyers: {outcomes}. "
        f"Purchases: {buys['count']} sent, at most **{buys['max_per_s']}/s** in any second "
        f"({sale['purchases_over_inlet_s']} seconds above the inlet, {over} above the route's "
        f"capacity), per second {buys['per_s']}; admitted per second (the room's stream, "
        f"{sale['admitted']} places in all: it admits at its rate while units are left to "
        f"buy and, once nothing is held either, tells sold_out those whose place has not come; "
        f"buyers admitted as the last units were held buy and are refused sold_out) "
        f"{sale['admitted_per_s']}; accepted {buys['codes'].get('202', 0)}, refused {refusals}; "
        f"**purchase p50 "
        f"{buys['p50_ms']:.1f} ms, p99 {buys['p99_ms']:.1f} ms** (target < 100 ms; waiting for a "
        f"client connection p99 {buys['waited_p99_ms']:.1f} ms, not included). Status polls: "
        f"{polls['count']}, {polls['mean_per_s']:.0f}/s on average, at most "
        f"{polls['max_per_s']}/s, p50 {polls['p50_ms']:.1f} ms, p99 {polls['p99_ms']:.1f} ms; "
        f"joins {joins['count']}, p99 {joins['p99_ms']:.1f} ms. From the opening: sold out "
        f"(last ticket issued) "
        f"{sale['opening_to_sold_out_s']:.1f} s, every ticket final "
        f"{sale['opening_to_all_final_s']:.1f} s, last buyer told "
        f"{sale['opening_to_last_buyer_told_s']:.1f} s. {sale['units_sold_in_sql']} units sold in "
        f"SQL, oversold {sale['oversold']}, {sale['units_left']} left; reconciliation "
        f"{sale['reconciliation']}."
    )


def _paths_table(results: dict[str, Any]) -> list[str]:
    bare = results["bare"]["ok_per_s"]
    ceiling = results.get("one_trip", {}).get("ok_per_s", 0)
    lines = [
        "| path | answers/s (median) | runs | vs bare | vs one_trip | target | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|---|---:|---:|",
    ]
    for name, label, vs_bare, vs_trip in PATHS:
        if name not in results:
            continue
        r = results[name]
        runs = ", ".join(f"{x['ok_per_s']:.0f}" for x in r.get("runs", []))
        goals = [f">= {g:.0%} of {w}" for g, w in ((vs_bare, "bare"), (vs_trip, "one_trip")) if g]
        trip = f"{r['ok_per_s'] / ceiling:.0%}" if ceiling else ""
        lines.append(
            f"| {label} | {r['ok_per_s']:.0f} | {runs} | {r['ok_per_s'] / bare:.0%} | {trip} | "
            f"{'; '.join(goals)} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    if "accepted" in results and "lock_then_write" in results:
        accepted = results["accepted"]
        lock = results["lock_then_write"]["ok_per_s"]
        lines += [
            "",
            f"Accepted p99 at {results['options']['connections']} connections: "
            f"{accepted['p99_ms']:.0f} ms (target <= 150 ms). Accepted vs lock-then-write: "
            f"**{accepted['ok_per_s'] / lock:.1f}x** (target >= 4x).",
        ]
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    names = [n for n, *_ in PATHS if n in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if names:
        values = [results[n]["ok_per_s"] for n in names]
        colors = ["#888", "#555", "#2a7", "#27a", "#a72", "#a22", "#7a2"][: len(names)]
        left.bar(names, values, color=colors)
        left.set_ylabel("answers per second (median)")
        left.set_title("HTTP paths, 256 connections")
        left.tick_params(axis="x", rotation=20)
    settle = {k: v for k, v in results.get("settlement", {}).items() if not k.endswith("_runs")}
    if settle:
        labels = [k.replace("_workers", "w").replace("_in_flight_", "x").replace("_", " ")
                  for k in settle]  # fmt: skip
        right.bar(labels, list(settle.values()), color="#57a")
        right.set_ylabel("orders settled per second")
        right.set_title("settlement")
        right.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = {
        "json": folder / f"rush-{stamp}.json",
        "markdown": folder / f"rush-{stamp}.md",
        "chart": folder / f"rush-{stamp}.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2, default=str))
    paths["markdown"].write_text(markdown(results))
    chart(results, paths["chart"])
    return paths
