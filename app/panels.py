"""The explorer's text panels, from a SearchTree: status line, compute used, the comparison with
majority voting, and the steps table. Pure functions (no Gradio), so they are easy to test.

A model's answers and a user's words enter markdown only through `escape_markdown`, so they read
as what was written: no link, image, HTML, emphasis or table cell of theirs is ever rendered. The
steps table needs none: its text column is plain text (app/ui.py: datatype "str")."""

from __future__ import annotations

import re

import pandas as pd

from strategies.answers import answers_equal
from strategies.info import label, short_label
from strategies.tree import SearchTree

STEP_COLUMNS = ["id", "depth", "score", "agg score", "status", "text"]
TEXT_LIMIT = 300  # characters of a step shown in the table (the run JSON keeps all)
# Any ASCII punctuation may be backslash-escaped in CommonMark and GFM (marked, which Gradio's
# Markdown runs), and an escaped one is always literal: `<` opens no tag, `[` no link, `|` no
# table cell, `:` and `.` no autolink, `$` no math (Gradio cuts `$$…$$` out for KaTeX before
# reading the markdown, and `\$\$` is not `$$`).
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def escape_markdown(text: object) -> str:
    """`text` (a model's answer, a user's question or expected answer) as markdown that renders
    exactly as written, on one line: whitespace runs, newlines included, become one space, so it
    cannot end a table row or start a heading, a list or a code block."""
    return _PUNCTUATION.sub(r"\\\1", " ".join(str(text).split()))


def status_line(tree: SearchTree) -> str:
    """One line: strategy, progress (steps still active while running, answers when done),
    tokens, seconds."""
    steps = len(tree.nodes) - 1
    c = tree.compute
    if tree.done:
        answers = sum(1 for n in tree.nodes if n.answer is not None)
        state = f"done after {tree.iteration} iterations · {steps} steps, {answers} answers"
        if tree.stopped:  # the reason may quote a model's error: escaped
            state = (
                f"ended early in iteration {tree.iteration} "
                f"({escape_markdown(tree.stopped)}) · {steps} steps, {answers} answers"
            )
    else:
        active = sum(1 for n in tree.nodes if n.parent is not None and n.status == "active")
        state = f"iteration {tree.iteration} · {steps} steps ({active} active)"
        if tree.writing:
            fresh = sum(
                1 for n in tree.nodes if n.iteration == tree.iteration and n.parent is not None
            )
            state = (
                f"iteration {tree.iteration} · writing steps, {fresh} done so far · {steps} steps"
            )
    return f"**{label(tree.strategy)}** · {state} · {c.generated_tokens} tokens · {c.wall_s:.1f} s"


def compute_markdown(tree: SearchTree) -> str:
    """What the run cost and where it ran (tree.compute, tree.meta)."""
    c, m = tree.compute, tree.meta
    precision = m.get("precision", "?")
    lines = [
        "| compute used | |",
        "|---|---|",
        f"| generated tokens | {c.generated_tokens} |",
        f"| PRM tokens | {c.scored_tokens} |",
        f"| generator / PRM calls | {c.generator_calls} / {c.scorer_calls} |",
        f"| seconds | {c.wall_s:.1f} |",
        f"| model | {m.get('model', '?')} · PRM {m.get('prm', '?')} |",
        f"| engine · device · precision · threads | {m.get('engine', '?')} · "
        f"{m.get('device', '?')} · {precision} · {m.get('threads', '?')} |",
    ]
    if m.get("precision_reason"):  # the weights as run, and why (a GGUF's own quantization)
        lines.append(f"| weights | {m['precision_reason']} |")
    if m.get("cpu"):
        lines.append(f"| CPU | {m['cpu']} |")
    chosen = m.get("compute_optimal")
    if chosen:  # which bin, which strategy and why, as the run's meta says it
        why = chosen.get("why") or (
            f"{chosen.get('difficulty_bin')} (pilot score "
            f"{chosen.get('difficulty')}) → "
            f"{label(chosen.get('chosen_strategy', '?'))}"
        )
        kept = chosen.get("reused_probe_samples")
        if kept:
            why += f"; the probe's samples are {kept} of the N"
        lines.append(f"| compute-optimal | {escape_markdown(why)} |")
    return "\n".join(lines)


def _verdict(answer: str | None, expected: str | None) -> str:
    if answer is None:
        return "—"
    if not expected:
        return escape_markdown(answer)
    return f"{escape_markdown(answer)} {'✓' if answers_equal(answer, expected) else '✗'}"


def comparison_markdown(
    search: SearchTree, majority: SearchTree | None, expected: str | None = None
) -> str:
    """The search beside majority voting at the same N: answers and the compute each used."""
    # One column per run (it fits beside the votes chart), one row per quantity.
    runs = [search] if majority is None else [search, majority]
    lines = [
        "| | " + " | ".join(short_label(t.strategy) for t in runs) + " |",
        "|---|" + "---|" * len(runs),
        "| answer | " + " | ".join(_verdict(t.answer, expected) for t in runs) + " |",
        "| tokens | " + " | ".join(str(t.compute.generated_tokens) for t in runs) + " |",
        "| PRM calls | " + " | ".join(str(t.compute.scorer_calls) for t in runs) + " |",
        "| seconds | " + " | ".join(f"{t.compute.wall_s:.1f}" for t in runs) + " |",
    ]
    n = search.config.get("n", "?")
    if majority is None:
        if search.strategy == "majority_vote":
            note = "This run *is* majority voting: no verifier was consulted."
        else:
            note = f"Majority voting at the same budget N={n} runs next, for comparison…"
    elif search.answer is None or majority.answer is None:
        note = "One of the two found no answer."
    elif answers_equal(search.answer, majority.answer):
        note = f"Both agree on **{escape_markdown(search.answer)}**."
    else:
        note = (
            f"They disagree: the PRM-guided search says **{escape_markdown(search.answer)}**, "
            f"the crowd of N={n} says **{escape_markdown(majority.answer)}**."
        )
    if expected:
        note += f" Expected: **{escape_markdown(expected)}**."
    return "\n".join(lines) + "\n\n" + note


def steps_table(tree: SearchTree) -> pd.DataFrame:
    """One row per step (the question excluded), in creation order; scores rounded to 3 places."""

    def rnd(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    rows = [
        [
            n.id,
            n.depth,
            rnd(n.score),
            rnd(n.agg_score),
            n.status,
            n.text.strip()[:TEXT_LIMIT],
        ]
        for n in tree.nodes
        if n.parent is not None
    ]
    return pd.DataFrame(rows, columns=STEP_COLUMNS)
