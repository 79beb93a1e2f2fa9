"""Majority voting and Best-of-N: N independent solutions, written one step per iteration.

All three share the sampling loop; they differ only in how the final answer is picked:
- majority voting (self-consistency): the most frequent answer, no verifier;
- Best-of-N (vanilla): the single solution the PRM scores highest;
- Best-of-N (weighted): the answer whose solutions' PRM scores sum highest.
The PRM reads each finished solution once, at the end (that is all these strategies need).
"""

from __future__ import annotations

from collections.abc import Iterator

from strategies.config import SearchConfig
from strategies.protocols import StepGenerator, StepScorer
from strategies.search_run import Pick, SearchRun
from strategies.tree import SearchTree


def sample_solutions(run: SearchRun) -> Iterator[SearchTree]:
    """Grow N independent chains of steps until every one is finished (or the iteration limit)."""
    tree = run.tree
    run.next_iteration()
    frontier = yield from run.expand_stream([tree.root.id], run.config.n)
    yield run.tick()
    while True:
        frontier = [node for node in frontier if node.status == "active"]
        if not frontier:
            break
        run.next_iteration()
        frontier = yield from run.expand_stream([node.id for node in frontier])
        yield run.tick()


def _sample_and_pick(
    question: str,
    config: SearchConfig,
    generator: StepGenerator,
    scorer: StepScorer | None,
    pick: Pick,
) -> Iterator[SearchTree]:
    run = SearchRun(question, config, generator, scorer)
    yield from sample_solutions(run)
    leaves = run.tree.leaves()
    if pick != "majority":
        if scorer is None:
            raise ValueError(f"{config.strategy} needs a PRM (step scorer).")
        run.score(leaves)
    yield run.finish(leaves, pick)


def majority_vote(question, config, generator, scorer=None) -> Iterator[SearchTree]:
    """Self-consistency: the verifier is not consulted, even when one is given."""
    return _sample_and_pick(question, config, generator, None, "majority")


def best_of_n(question, config, generator, scorer) -> Iterator[SearchTree]:
    return _sample_and_pick(question, config, generator, scorer, "vanilla")


def weighted_best_of_n(question, config, generator, scorer) -> Iterator[SearchTree]:
    return _sample_and_pick(question, config, generator, scorer, "weighted")
