"""Every strategy by name (the names and facts of strategies/info.py), and the two ways to run one.

A strategy is `(question, config, generator, scorer) -> Iterator[SearchTree]`: it yields the
(same, growing) tree after every iteration and the finished tree last, so a caller can stream it
and can stop it by simply not asking for more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from strategies.beam_search import beam_search, lookahead_search
from strategies.compute_optimal import compute_optimal
from strategies.config import SearchConfig
from strategies.difficulty import Policy
from strategies.dvts import dvts
from strategies.info import STRATEGY_NAMES, check_scorer
from strategies.protocols import StepGenerator, StepScorer
from strategies.sampling import sample_and_pick
from strategies.tree import SearchTree

Strategy = Callable[[str, SearchConfig, StepGenerator, "StepScorer | None"], Iterator[SearchTree]]

STRATEGIES: dict[str, Strategy] = {
    "majority_vote": sample_and_pick,
    "best_of_n": sample_and_pick,
    "weighted_best_of_n": sample_and_pick,
    "beam_search": beam_search,
    "dvts": dvts,
    "lookahead": lookahead_search,
    "compute_optimal": compute_optimal,
}
assert tuple(STRATEGIES) == STRATEGY_NAMES, "strategies/info.py and the registry list one set"


def search(
    question: str,
    config: SearchConfig,
    generator: StepGenerator,
    scorer: StepScorer | None = None,
    *,
    policy: Policy | None = None,
) -> Iterator[SearchTree]:
    """Stream a run: the tree after every iteration, the finished tree last. `policy`: the
    fitted compute-optimal policy for the run's model and verifier (compute_optimal only)."""
    if not question or not question.strip():
        raise ValueError("The question is empty.")
    check_scorer(config.strategy, scorer is not None)
    if config.strategy == "compute_optimal":
        return compute_optimal(question, config, generator, scorer, policy)
    return STRATEGIES[config.strategy](question, config, generator, scorer)


def run(
    question: str,
    config: SearchConfig,
    generator: StepGenerator,
    scorer: StepScorer | None = None,
) -> SearchTree:
    """Run a search to the end and return the finished tree."""
    frames = deque(search(question, config, generator, scorer), maxlen=1)
    tree = frames[0]
    assert tree.done
    return tree
