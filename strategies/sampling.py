"""Majority voting and Best-of-N: N independent solutions, written one step per iteration.

All three share the sampling loop; they differ only in how the final answer is picked, by the
strategy's pick rule (strategies/info.py; the rule itself: strategies/search_run.py `choose`).
The PRM reads each finished solution once, at the end (that is all these strategies need);
majority voting does not consult it, even when one is given.
"""

from __future__ import annotations

from collections.abc import Iterator

from strategies.config import SearchConfig
from strategies.info import STRATEGY_INFO
from strategies.protocols import StepGenerator, StepScorer
from strategies.search_run import SearchRun
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


def sample_and_pick(
    question: str,
    config: SearchConfig,
    generator: StepGenerator,
    scorer: StepScorer | None = None,
) -> Iterator[SearchTree]:
    """Majority voting, Best-of-N (vanilla) or Best-of-N (weighted), by `config.strategy`."""
    verifier = scorer if STRATEGY_INFO[config.strategy].needs_scorer else None
    run = SearchRun(question, config, generator, verifier)
    yield from sample_solutions(run)
    leaves = run.tree.leaves()
    if verifier is not None:
        run.score(leaves)
    yield run.finish(leaves)
