"""Small model + search against a bigger model alone: compute in FLOPs, and the verdict a class reads.

The thesis the explorer shows: a small policy that searches under a verifier can match a model a
few times its size answering alone. Both sides' compute is counted the same way, FLOPs ≈ 2 ×
parameters × tokens (a forward pass costs about two FLOPs per parameter per token): the tokens the
policy generated and the tokens its verifier read (a checker with no model reads for free). The
prompt's prefill is left out on both sides: it is the same question. Pure functions over finished
trees (their meta carries `params` and `prm_params`), so they are tested on fakes. The verdict
line is plain text (the `/run` JSON's, the CLI's); in the explorer's markdown its answers are
escaped (`markdown=True`).
"""

from __future__ import annotations

import math
from typing import Any

from app.panels import escape_markdown
from strategies.answers import answers_equal
from strategies.info import short_label
from strategies.tree import SearchTree

MIN_VOTERS = 3  # the bigger model votes only when equal compute buys it at least this many samples


def flops(meta: dict[str, Any], generated_tokens: float, verifier_tokens: float) -> float:
    """≈ 2 × (policy parameters × generated tokens + verifier parameters × tokens it read), the
    parameters from a run's meta."""
    return 2.0 * (
        meta.get("params", 0) * generated_tokens + meta.get("prm_params", 0) * verifier_tokens
    )


def run_flops(tree: SearchTree) -> float:
    return flops(tree.meta, tree.compute.generated_tokens, tree.compute.scored_tokens)


def equal_compute_voters(search: SearchTree, greedy: SearchTree, cap: int) -> int:
    """How many samples of the bigger model cost what the search cost, estimating a sample's
    tokens by its greedy answer's; at most `cap`, 0 when the greedy answer cost nothing."""
    per_answer = run_flops(greedy)
    if per_answer <= 0:
        return 0
    return min(cap, math.floor(run_flops(search) / per_answer))


def _mark(answer: str | None, expected: str | None, markdown: bool = False) -> str:
    if answer is None:
        return "no answer"
    shown = escape_markdown(answer) if markdown else answer
    if not expected:
        return shown
    return f"{shown} {'✓' if answers_equal(answer, expected) else '✗'}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b > 0 else "—"


def verdict_line(
    search: SearchTree,
    greedy: SearchTree,
    majority: SearchTree | None,
    small: str,
    big: str,
    expected: str | None = None,
    *,
    markdown: bool = False,
) -> str:
    """E.g. "0.5B + beam search (N=8): 16 ✓ — 1.5B alone: 3 ✗ — at 1.9× the 1.5B's compute";
    with `markdown`, the answers escaped for a markdown panel (the model names are the catalog's)."""
    n = search.config.get("n", "?")

    def mark(tree: SearchTree) -> str:
        return _mark(tree.answer, expected, markdown)

    parts = [
        f"{small} + {short_label(search.strategy)} (N={n}): {mark(search)}",
        f"{big} alone: {mark(greedy)}",
    ]
    if majority is not None:
        k = majority.config.get("n", "?")
        parts.append(f"{big} majority@{k}: {mark(majority)}")
    line = " — ".join(parts)
    return f"{line} — at {_ratio(run_flops(search), run_flops(greedy))} the {big}'s compute"


def versus(
    search: SearchTree, greedy: SearchTree, majority: SearchTree | None, expected: str | None
) -> dict[str, Any]:
    """The comparison as plain data (the `/run` JSON's comparison.bigger)."""

    def side(tree: SearchTree) -> dict[str, Any]:
        right = None
        if expected and tree.answer is not None:
            right = answers_equal(tree.answer, expected)
        return {
            "model": tree.meta.get("model"),
            "strategy": tree.strategy,
            "n": tree.config.get("n"),
            "temperature": tree.config.get("temperature"),
            "answer": tree.answer,
            "correct": right,
            "tokens": tree.compute.generated_tokens + tree.compute.scored_tokens,
            "flops": run_flops(tree),
            "seconds": round(tree.compute.wall_s, 2),
        }

    out = {"search": side(search), "greedy": side(greedy), "majority": None}
    if majority is not None:
        out["majority"] = side(majority)
    out["compute_ratio"] = run_flops(search) / run_flops(greedy) if run_flops(greedy) > 0 else None
    return out


def versus_markdown(
    search: SearchTree,
    greedy: SearchTree | None,
    majority: SearchTree | None,
    small: str,
    big: str,
    expected: str | None = None,
) -> str:
    """The table beside the majority-vote comparison: each side's answer and compute, and the
    verdict line under it (a note that the bigger model is still writing until it is done)."""
    if greedy is None:
        return f"*{big} is answering the same question on its own…*"
    runs = [(f"{small} + {short_label(search.strategy)}", search), (f"{big} alone", greedy)]
    if majority is not None:
        runs.append((f"{big} majority@{majority.config.get('n')}", majority))
    head = "| | " + " | ".join(name for name, _ in runs) + " |"
    rows = [
        head,
        "|---|" + "---|" * len(runs),
        "| answer | " + " | ".join(_mark(t.answer, expected, True) for _, t in runs) + " |",
        "| tokens (+ verifier) | "
        + " | ".join(
            f"{t.compute.generated_tokens}"
            + (f" + {t.compute.scored_tokens}" if t.meta.get("prm_params") else "")
            for _, t in runs
        )
        + " |",
        "| FLOPs | " + " | ".join(f"{run_flops(t):.2e}" for _, t in runs) + " |",
        "| seconds | " + " | ".join(f"{t.compute.wall_s:.1f}" for _, t in runs) + " |",
    ]
    verdict = verdict_line(search, greedy, majority, small, big, expected, markdown=True)
    return "\n".join(rows) + f"\n\n**{verdict}**"
