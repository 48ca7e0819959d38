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


def markdown(results: dict[str, Any]) -> str:
    bare = results["bare"]["ok_per_s"]
    lock = results["lock_then_write"]["ok_per_s"]
    rows = [
        ("bare Flask (ceiling)", results["bare"], "202", None),
        ("purchase accepted (202)", results["accepted"], "202", 0.70),
        ("purchase sold out (409)", results["sold_out"], "409", 0.90),
        ("status polling (200)", results["status"], "200", 0.80),
        ("lock-then-write (202)", results["lock_then_write"], "202", None),
    ]
    lines = [
        f"Machine: {_machine()}. Options: `{json.dumps(results['options'])}`",
        "",
        "| path | answers/s (median) | vs bare | target | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r, _code, target in rows:
        ratio = r["ok_per_s"] / bare if bare else 0
        goal = f">= {target:.0%}" if target else ""
        lines.append(
            f"| {name} | {r['ok_per_s']:.0f} | {ratio:.0%} | {goal} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    accepted = results["accepted"]["ok_per_s"]
    lines += [
        "",
        f"Accepted purchases vs lock-then-write: **{accepted / lock:.1f}x** (target >= 10x).",
    ]
    lines += ["", "| settlement | orders/s |", "|---|---:|"]
    for name, rate in results["settlement"].items():
        lines.append(f"| {name.replace('_', ' ')} | {rate:.0f} |")
    sale = results["sale"]
    lines += [
        "",
        f"Sale: {sale['units']} units, {sale['buyers']} buyers: accepted {sale['accepted']}, "
        f"sold out {sale['sold_out']}, other {sale['other']}, confirmed in SQL "
        f"{sale['confirmed_in_sql']}, oversold {sale['oversold']}; rush {sale['rush_s']:.1f} s "
        f"(p99 {sale['p99_ms']:.0f} ms), every ticket final "
        f"{sale['final_after_last_request_s']:.1f} s after the last request; reconciliation: "
        f"{sale.get('reconciliation', 'not run')}.",
    ]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    names = ["bare", "accepted", "sold_out", "status", "lock_then_write"]
    values = [results[n]["ok_per_s"] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, values, color=["#888", "#2a7", "#27a", "#a72", "#a22"])
    left.set_ylabel("answers per second (median)")
    left.set_title("HTTP paths")
    left.tick_params(axis="x", rotation=20)
    settle = results["settlement"]
    right.bar(list(settle), list(settle.values()), color="#57a")
    right.set_ylabel("orders settled per second")
    right.set_title("settlement")
    right.tick_params(axis="x", rotation=30)
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
