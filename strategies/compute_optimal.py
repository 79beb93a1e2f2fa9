"""Compute-optimal scaling: estimate the prompt's difficulty, then pick the strategy for it.

Following Snell et al. (2024), difficulty is "model-predicted": the PRM's mean final score over
a small pilot of sampled solutions (P = max(2, N/4), full solutions, counted in the compute). The
choice per difficulty bin follows the reference findings: on easy prompts Best-of-N (weighted) at
small budgets and DVTS at large ones; on medium prompts beam search at small budgets and DVTS at
large ones; on hard prompts beam search. The thresholds are a documented heuristic (the papers
choose per bin on held-out data), recorded in the run's meta so a user can see why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

from strategies.beam_search import beam_search
from strategies.config import SearchConfig
from strategies.dvts import dvts
from strategies.info import check_scorer
from strategies.sampling import sample_solutions, weighted_best_of_n
from strategies.search_run import SearchRun
from strategies.tree import SearchTree

EASY, HARD = 0.66, 0.33  # bins on the mean pilot score: >= EASY easy, < HARD hard
SMALL_BUDGET = 16
# the strategies it chooses among
CHOICES = {"weighted_best_of_n": weighted_best_of_n, "beam_search": beam_search, "dvts": dvts}


def choose_strategy(difficulty: float, n: int) -> str:
    """The strategy for a pilot mean score (higher = easier) at budget n."""
    if difficulty >= EASY:
        return "weighted_best_of_n" if n < SMALL_BUDGET else "dvts"
    if difficulty >= HARD:
        return "beam_search" if n < SMALL_BUDGET else "dvts"
    return "beam_search"


def compute_optimal(question, config: SearchConfig, generator, scorer) -> Iterator[SearchTree]:
    check_scorer("compute_optimal", scorer is not None)  # it estimates difficulty with the PRM

    pilot_n = max(2, config.n // 4)
    pilot = SearchRun(
        question, replace(config, strategy="majority_vote", n=pilot_n), generator, scorer
    )
    for _ in sample_solutions(pilot):
        pass
    leaves = pilot.tree.leaves()
    pilot.score(leaves)
    difficulty = sum(leaf.agg_score or 0.0 for leaf in leaves) / max(1, len(leaves))
    chosen = choose_strategy(difficulty, config.n)
    m = config.beam_width if config.n % config.beam_width == 0 else 1
    sub_config = replace(config, strategy=chosen, beam_width=m)
    meta = {
        "difficulty": round(difficulty, 4),
        "difficulty_bin": "easy"
        if difficulty >= EASY
        else "medium"
        if difficulty >= HARD
        else "hard",
        "chosen_strategy": chosen,
        "pilot_samples": pilot_n,
        "pilot_answers": [leaf.answer for leaf in leaves],
    }
    pilot_compute = pilot.tick().compute
    t0 = time.perf_counter() - pilot_compute.wall_s
    first = True
    for tree in CHOICES[chosen](question, sub_config, generator, scorer):
        if first:  # the pilot's tokens and calls count once; the clock covers both parts
            tree.compute = tree.compute.add(pilot_compute)
            tree.strategy = "compute_optimal"
            tree.config = {**config.to_dict(), "chosen": sub_config.to_dict()}
            tree.meta["compute_optimal"] = meta
            first = False
        tree.compute.wall_s = time.perf_counter() - t0
        yield tree
