"""The "How it works" tab: every strategy drawn from a tiny run on a toy model (its lesson text is
in strategies/info.py, beside its other facts).

No model is loaded here. `ToyPolicy` writes one line of arithmetic per step for one fixed word
problem and sometimes slips (a wrong result); `ToyPRM` checks each line's arithmetic the way the
offline arithmetic PRM does. Both are deterministic (hash of the partial solution, the sample index
and the seed), so the pictures are the same on every start and every strategy runs in milliseconds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import plotly.graph_objects as go

from strategies.config import SearchConfig
from strategies.info import label
from strategies.protocols import GeneratedStep, Sampling, Scores
from strategies.registry import run
from strategies.tree import SearchTree
from visualize import tree_figure

QUESTION = "Mia has 3 boxes with 5 pencils each. She gives away 4 pencils. How many are left?"
SLIP_RATE = 0.35  # how often a sampled (not greedy) step gets its arithmetic wrong
# The toy config every lesson runs: budget N=4, beam width M=2, lookahead k=2.
LESSON_CONFIG = dict(n=4, beam_width=2, max_iterations=5, lookahead=2, seed=5)

_CALC = re.compile(r"(\d+) ([x+\-]) (\d+) = (\d+)")

LEGEND_MD = (
    "Every picture is a search tree. **Q** is the question; each dot is one reasoning step, "
    "coloured by the PRM's score (red: the judge doubts it, green: it trusts it; grey: not "
    "scored). Squares end a solution and carry its answer; faded dots were pruned; the blue path "
    "ending in a star is the solution the strategy chose. The toy question below is "
    f"*{QUESTION}* (answer 11); the toy model slips on about a third of its calculations."
)


def _hash(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


def _running_value(partial: Sequence[str]) -> int | None:
    """The last result written so far (`... = 15`), or None before the first calculation."""
    for step in reversed(partial):
        found = _CALC.findall(step)
        if found:
            return int(found[-1][3])
    return None


class ToyPolicy:
    """A step generator for QUESTION: 3 x 5, then (result) - 4, then the boxed answer."""

    def _step(self, partial: Sequence[str], key: tuple, greedy: bool) -> tuple[str, bool]:
        depth = len(partial)
        h = _hash(*key)
        slip = not greedy and (h % 100) / 100 < SLIP_RATE
        error = 1 + (h >> 8) % 3  # a slip is off by 1..3
        if depth == 0:
            value = 15 + (error if slip else 0)
            return f"Mia has 3 x 5 = {value} pencils.\n\n", False
        prev = _running_value(partial)
        if depth == 1 and prev is not None:
            value = prev - 4 + (-error if slip else 0)
            return f"After giving 4 away: {prev} - 4 = {value}.\n\n", False
        return f"The answer is \\boxed{{{prev}}}.", True

    def next_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ) -> list[list[GeneratedStep]]:
        out = []
        for j, partial in enumerate(partials):
            row = []
            for i in range(n):
                key = (tuple(partial), j, i, sampling.seed)
                text, finished = self._step(partial, key, sampling.greedy)
                if sampling.to_end:  # write the remaining steps in one go
                    steps = list(partial) + [text]
                    while not finished:
                        more, finished = self._step(steps, key + (len(steps),), sampling.greedy)
                        steps.append(more)
                    text = "".join(steps[len(partial) :])
                reason = "eos" if finished else "delimiter"
                row.append(GeneratedStep(text, len(text.split()), finished, reason))
            out.append(row)
        return out


class ToyPRM:
    """Scores a step ~0.9 when its arithmetic is right, ~0.15 when wrong; an answer step ~0.9 when
    every calculation before it was right, else ~0.3. A little jitter keeps the colours apart."""

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        rows = []
        for steps in solutions:
            row, all_right = [], True
            for j, step in enumerate(steps):
                jitter = (_hash(tuple(steps[: j + 1])) % 9) / 100
                calcs = _CALC.findall(step)
                if calcs:
                    right = all(_check(*c) for c in calcs)
                    all_right &= right
                    row.append((0.86 if right else 0.12) + jitter)
                else:
                    row.append((0.86 if all_right else 0.3) + jitter)
            rows.append(row)
        return Scores(rows, sum(len(s) for s in solutions))


def _check(a: str, op: str, b: str, c: str) -> bool:
    x, y = int(a), int(b)
    return {"x": x * y, "+": x + y, "-": x - y}[op] == int(c)


def lesson_tree(strategy: str) -> SearchTree:
    """The finished toy run of `strategy` at N=4 (M=2), in milliseconds."""
    config = SearchConfig(strategy=strategy, **LESSON_CONFIG)
    return run(QUESTION, config, ToyPolicy(), ToyPRM())


def lesson_figure(strategy: str) -> go.Figure:
    tree = lesson_tree(strategy)
    title = f"{label(strategy)} · N=4 · answer <b>{tree.answer}</b>"
    chosen = tree.meta.get("compute_optimal", {}).get("chosen_strategy")
    if chosen:
        title += f" · chose {chosen}"
    return tree_figure(tree, title=title, height=400)
