"""The two small protocols a search talks to: a step generator (the policy) and a step scorer (the PRM).

backend/ implements them with real models; tests implement them with deterministic fakes. Both
are stateless from the strategy's point of view: a partial solution is identified by its content
(question + steps), so a generator may cache per-prefix state (a KV cache) keyed by that content,
and every call carries what it needs to be reproducible (the seed is in `Sampling`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

STEP_DELIMITER = "\n\n"


@dataclass(frozen=True)
class Sampling:
    """How to sample one call's continuations."""

    temperature: float = 0.8  # 0 means greedy
    top_p: float = 1.0
    max_step_tokens: int = 256  # a step longer than this ends with finish_reason "length"
    max_solution_tokens: int = 2048  # a solution longer than this is finished ("length")
    seed: int | None = None  # None: not reproducible
    to_end: bool = False  # ignore the step delimiter and write the rest of the solution
    # Hints about what the search will do with the results; they never change what is sampled.
    # A generator may write next steps ahead (speculatively) for the continuations the search
    # is likely to keep: `keep` of them, the best by `rank` (higher first, ties to the earlier
    # continuation), which a search gives when it can rank a partial solution cheaply
    rank: Callable[[Sequence[str]], float] | None = field(default=None, compare=False, repr=False)
    keep: int = 0
    # k > 0: the k-th call after this one writes its continuations to the end (0: unknown)
    last_call_in: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class GeneratedStep:
    """One sampled continuation of a partial solution."""

    text: str  # the step, delimiter included when it ended on one
    tokens: int  # new tokens generated for it
    finished: bool  # the solution ends here (EOS, empty step, token limit)
    finish_reason: str = "delimiter"  # delimiter / eos / length / empty


@dataclass(frozen=True)
class Scores:
    """Per-step scores for each solution of a `score` call, and what reading them cost."""

    steps: list[list[float]]  # steps[i][j]: score in [0, 1] of step j of solution i
    tokens: int = 0  # tokens the PRM read for this call


Partials = Sequence[Sequence[str]]  # partial solutions, each a list of steps (possibly empty)
Steps = list[list[GeneratedStep]]  # `n` next steps per partial, in order
Streamed = Iterator[tuple[int, GeneratedStep]]  # (i * n + j, step) pairs, in the order they end


@runtime_checkable
class StepGenerator(Protocol):
    """The policy: extends partial solutions by one step."""

    def next_steps(self, question: str, partials: Partials, n: int, sampling: Sampling) -> Steps:
        """For each partial solution (a list of steps, possibly empty), sample `n` next steps.

        Returns one list of `n` results per partial, in order. All continuations of one call
        should be decoded together (one batch).
        """
        ...


@runtime_checkable
class StepScorer(Protocol):
    """The process reward model: scores every step of partial solutions."""

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        """Per-step scores in [0, 1] (higher: more likely correct) for each solution."""
        ...


@runtime_checkable
class CheapStepScorer(StepScorer, Protocol):
    """A step scorer whose calls cost next to nothing beside a generator step (a rule-based
    checker, no model), marked with `cheap = True`.

    Optional: with one, a beam search may score partial solutions while others are still being
    written, so it hands the generator a ranking (`Sampling.rank`) to write ahead for the likely
    survivors. A model PRM leaves `cheap` out: its calls would cost more than the speculation saves.
    """

    cheap: bool


def is_cheap(scorer: StepScorer | None) -> bool:
    return isinstance(scorer, CheapStepScorer) and bool(scorer.cheap)


@runtime_checkable
class StreamingStepGenerator(StepGenerator, Protocol):
    """A step generator that can also hand over each continuation as soon as it ends.

    Optional: a search uses `stream_steps` when the generator has it, so a viewer sees steps
    arrive inside an iteration instead of waiting for its slowest continuation.
    """

    def stream_steps(
        self, question: str, partials: Partials, n: int, sampling: Sampling
    ) -> Streamed:
        """The results of `next_steps`, as `(i * n + j, step)` pairs in the order they end.

        Every index in `range(len(partials) * n)` comes exactly once.
        """
        ...

    def next_steps(self, question, partials, n, sampling):  # typed as in StepGenerator
        """Every streamed continuation, collected in order: a streaming generator's `next_steps`
        (a class that subclasses this protocol inherits it)."""
        return collect(self.stream_steps(question, partials, n, sampling), len(partials), n)


def collect(
    stream: Iterable[tuple[int, GeneratedStep]], partials: int, n: int
) -> list[list[GeneratedStep]]:
    """`next_steps`' result (per partial, its `n` steps) from `stream_steps`' pairs: what a
    streaming generator's `next_steps` returns."""
    results: list[GeneratedStep | None] = [None] * (partials * n)
    for index, step in stream:
        results[index] = step
    return [[results[i * n + j] for j in range(n)] for i in range(partials)]
