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
        colors = ["#888", "#555", "#2a7", "#27a", "#a72", "#a22"][: len(names)]
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
