"""Every strategy's facts, once: its name, label, how it picks its answer, whether it needs a
PRM, how it uses M and k, and its lesson.

The registry (strategies/registry.py) maps the same names to the functions that run them; the
config validates against these names; the finish (strategies/search_run.py: choose), the
invariants, compute-optimal and the scaling lab read the pick rule here; the app draws its menu,
hints, tables and lessons from this table, and the API and the CLI check "needs a PRM" here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# how a finished run picks its answer among its finished solutions (search_run.choose):
# majority: the biggest answer group; vanilla: the best-scored solution; weighted: the answer
# group with the largest sum of scores
Pick = Literal["majority", "vanilla", "weighted"]
PICK_WORDS: dict[str | None, str] = {
    "majority": "the most frequent answer",
    "vanilla": "the best-scored solution",
    "weighted": "the answer whose solutions' scores sum highest",
    None: "the rule of the strategy it chose",
}


@dataclass(frozen=True)
class StrategyInfo:
    label: str  # the menu's and the lessons' name
    short: str  # for narrow tables
    # the answer's rule at the finish; None: the rule of the strategy it chooses (compute-optimal)
    pick: Pick | None
    lesson: str  # the strategy in plain words ("How it works", and the hint under the menu)
    # N independent solutions written to the end: a budget b's answer is the pick among the
    # first b (the scaling lab reads every budget off one run at the largest)
    samples: bool = False
    # N is split into groups of the beam width M (so M must divide N)
    uses_beam_width: bool = False
    uses_lookahead: bool = False  # k greedy rollout steps before each step is scored

    @property
    def needs_scorer(self) -> bool:
        """Runs only with a PRM (step scorer): every rule but majority voting reads scores."""
        return self.pick != "majority"

    @property
    def reads_beam_width(self) -> bool:
        """M changes what runs (the menu enables it): the strategies that use it, and the one
        that may choose one of them."""
        return self.uses_beam_width or self.pick is None


STRATEGY_INFO: dict[str, StrategyInfo] = {
    "majority_vote": StrategyInfo(
        label="Majority voting (self-consistency)",
        short="Majority voting",
        pick="majority",
        samples=True,
        lesson=(
            "The model writes N complete solutions on its own, and we count which final answer comes "
            "up most often. No judge is needed: the crowd decides. It is simple and hard to fool, but "
            "if the model usually makes the same mistake, the crowd is wrong together."
        ),
    ),
    "best_of_n": StrategyInfo(
        label="Best-of-N (vanilla)",
        short="Best-of-N (vanilla)",
        pick="vanilla",
        samples=True,
        lesson=(
            "The model writes N complete solutions, and a *process reward model* (PRM), a judge that "
            "scores every step, rates each one. We keep the single solution with the best score. One "
            "confident-looking wrong solution can win on its own."
        ),
    ),
    "weighted_best_of_n": StrategyInfo(
        label="Best-of-N (weighted)",
        short="Best-of-N (weighted)",
        pick="weighted",
        samples=True,
        lesson=(
            "The same N scored solutions, but solutions that reach the same answer pool their scores. "
            "The answer with the largest total wins, so it combines the crowd (how many agree) with "
            "the judge (how good they look). In the reference work it beats vanilla Best-of-N."
        ),
    ),
    "beam_search": StrategyInfo(
        label="Beam search",
        short="Beam search",
        pick="weighted",
        uses_beam_width=True,
        lesson=(
            "Instead of waiting for whole solutions, the judge scores every step as soon as it is "
            "written. After each step only the best N/M partial solutions (the beams) survive, and "
            "each continues in M different ways. Weak lines of reasoning are pruned early, so the "
            "budget goes to the promising ones."
        ),
    ),
    "dvts": StrategyInfo(
        label="DVTS (diverse verifier tree search)",
        short="DVTS",
        pick="weighted",
        uses_beam_width=True,
        lesson=(
            "The budget is split into N/M independent subtrees (the shaded bands). In each one the "
            "model proposes M next steps and the judge keeps the best, again and again. The subtrees "
            "never compete with each other, so the final answers stay diverse, which pays off at "
            "large budgets."
        ),
    ),
    "lookahead": StrategyInfo(
        label="Lookahead search",
        short="Lookahead search",
        pick="weighted",
        uses_beam_width=True,
        uses_lookahead=True,
        lesson=(
            "Like beam search, but before judging a candidate step the model quickly writes k more "
            "steps (greedily, without randomness) and the judge scores where they lead. Looking ahead "
            "catches steps that look fine now but go nowhere, at the price of extra tokens."
        ),
    ),
    "compute_optimal": StrategyInfo(
        label="Compute-optimal (picks a strategy)",
        short="Compute-optimal",
        pick=None,
        lesson=(
            "First a few quick pilot solutions are scored to guess how hard the question is. Then it "
            "picks the strategy that works best for that difficulty and budget: Best-of-N on easy "
            "questions, beam search on hard ones, DVTS when the budget is large."
        ),
    ),
}
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGY_INFO)
# names results and fitted policies written before the one-name rename use, read as today's
RENAMED = {"majority": "majority_vote"}


def label(strategy: str) -> str:
    """The strategy's label; an unknown name (an old run file) is shown as it is."""
    info = STRATEGY_INFO.get(strategy)
    return info.label if info else strategy


def short_label(strategy: str) -> str:
    info = STRATEGY_INFO.get(strategy)
    return info.short if info else strategy


def needs_scorer(strategy: str) -> bool:
    return STRATEGY_INFO[strategy].needs_scorer


def check_scorer(strategy: str, has_scorer: bool) -> None:
    """ValueError, in words a user understands, when `strategy` needs a PRM and has none."""
    if needs_scorer(strategy) and not has_scorer:
        raise ValueError(
            f"{label(strategy)} needs a PRM (a step judge); choose one, or use majority voting."
        )
