"""The scaling harness's numbers: accuracy with a 95% interval, and compute, per strategy and budget.

Pure functions over the harness's records (app/lab/harness.py), one record per problem, seed,
strategy and budget, so they are tested on records written by hand.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

# the published curves the app's Scaling tab shows (`app.cli eval ... --publish`)
STORED = Path(__file__).resolve().parents[2] / "assets" / "scaling"
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `right / n` (sound at 0/n and n/n and for small
    n, where the normal approximation gives intervals outside [0, 1])."""
    if n == 0:
        return (0.0, 1.0)
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{strategy: {budget: {accuracy, low, high, right, n, tokens, verifier_tokens, flops,
    seconds}}}: means per problem-and-seed, the interval over all of them. "greedy" and
    "bigger" (the bigger model's greedy answer) are strategies at budget 1. A strategy's
    variants (another aggregation of the same samples, for compute-optimal's fit) are left out:
    a curve is what the explorer runs with the run's settings."""
    cells: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("variant"):
            continue
        cells[(r["strategy"], r["budget"])].append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (strategy, budget), rs in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        right, n = sum(bool(r["correct"]) for r in rs), len(rs)
        low, high = wilson(right, n)
        out.setdefault(strategy, {})[str(budget)] = {
            "accuracy": right / n,
            "low": low,
            "high": high,
            "right": right,
            "n": n,
            "tokens": sum(r["tokens"] for r in rs) / n,
            "verifier_tokens": sum(r["verifier_tokens"] for r in rs) / n,
            "flops": sum(r["flops"] for r in rs) / n,
            "seconds": sum(r["seconds"] for r in rs) / n,
            "model": rs[0].get("model"),
        }
    return out


REFERENCES = {"greedy": "the policy's greedy answer", "bigger": "the bigger model's greedy answer"}


def table(summary: dict[str, dict[str, dict[str, Any]]], budgets: list[int]) -> str:
    """Accuracy by strategy (rows) and budget (columns), as a markdown table; the greedy
    answers (budget 1, the figure's reference lines) as lines below it."""
    head = "| strategy | " + " | ".join(f"N={b}" for b in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for strategy, by_budget in summary.items():
        if strategy in REFERENCES:
            continue
        cells = [by_budget.get(str(b)) for b in budgets]
        lines.append(f"| {strategy} | " + " | ".join(_cell(c) for c in cells) + " |")
    for strategy, what in REFERENCES.items():
        cell = summary.get(strategy, {}).get("1")
        if cell:
            model = f" ({cell['model']})" if cell.get("model") else ""
            lines.append(f"\n{what}{model}: {_cell(cell)}")
    return "\n".join(lines)


def _cell(cell: dict[str, Any] | None) -> str:
    return f"{cell['accuracy']:.0%} ({cell['right']}/{cell['n']})" if cell else ""
