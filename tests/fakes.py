"""Deterministic fake policy and PRM for strategy tests: no model, milliseconds per run."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from strategies.protocols import GeneratedStep, Sampling, Scores

SCORE_TAG = re.compile(r"\[s=(\d+(?:\.\d+)?)\]")


def _h(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


class FakeGenerator:
    """Writes `Step d.v [s=score]` lines; a solution ends with a boxed answer at `depth`.

    Continuation i of a partial depends on (partial, i, seed), so runs are reproducible and
    different seeds differ. `script(partial, i)` may override the text for scenario tests.
    """

    def __init__(
        self,
        depth: int = 3,
        answers: Sequence[str] = ("1", "2", "3"),
        script: Callable[[tuple[str, ...], int], str | None] | None = None,
    ) -> None:
        self.depth = depth
        self.answers = list(answers)
        self.script = script
        self.calls: list[tuple[int, int]] = []  # (len(partials), n) per call
        self.tokens = 0

    def next_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ) -> list[list[GeneratedStep]]:
        self.calls.append((len(partials), n))
        out = []
        for partial in partials:
            row = []
            for i in range(n):
                key = (question, tuple(partial), i, None if sampling.greedy else sampling.seed)
                text = self.script(tuple(partial), i) if self.script else None
                if text is None:
                    v = _h(*key)
                    score = (v % 100) / 100
                    if len(partial) + 1 >= self.depth or sampling.to_end:
                        ans = self.answers[v % len(self.answers)]
                        text = f"So the answer is \\boxed{{{ans}}} [s={score:.2f}]"
                    else:
                        text = f"Step {len(partial) + 1}.{v % 97} [s={score:.2f}]\n\n"
                tokens = max(1, len(text.split()))
                self.tokens += tokens
                finished = text.strip() == "" or "<eos>" in text
                row.append(
                    GeneratedStep(text, tokens, finished, "eos" if finished else "delimiter")
                )
            out.append(row)
        return out


class FakeScorer:
    """Scores a step by its `[s=0.7]` tag (0.5 when it has none); reads 1 token per step."""

    def __init__(self) -> None:
        self.calls = 0
        self.tokens = 0

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        self.calls += 1
        steps = []
        for sol in solutions:
            row = []
            for step in sol:
                m = SCORE_TAG.search(step)
                row.append(min(1.0, float(m.group(1))) if m else 0.5)
            steps.append(row)
        tokens = sum(len(sol) for sol in solutions)
        self.tokens += tokens
        return Scores(steps, tokens)


class StreamingFakeGenerator(FakeGenerator):
    """FakeGenerator that also streams, handing steps over in a scrambled order (last first)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.closed = 0  # streams that ended (run out or closed by the caller)

    def stream_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ):
        results = self.next_steps(question, partials, n, sampling)
        flat = [step for row in results for step in row]
        try:
            for index in reversed(range(len(flat))):
                yield index, flat[index]
        finally:
            self.closed += 1
