"""Compute-optimal scaling: estimate the prompt's difficulty, then pick the strategy for it.

Following Snell et al. (2024), difficulty is "model-predicted": a small probe of sampled full
solutions, scored by the verifier, its compute counted in the run's. With a fitted policy (one
per model and verifier, fitted on half a tier's problems and checked on the other half:
app/lab/compute_optimal_fit.py, strategies/difficulty.py) the probe's signal picks one of 5 quantile
bins and the policy the strategy and M for that bin and budget. Without one (a model nobody
fitted) the choice falls back to the reference findings, as a documented heuristic: on easy
prompts Best-of-N (weighted) at small budgets and DVTS at large ones; on medium prompts beam
search at small budgets and DVTS at large ones; on hard prompts beam search. The run's meta says
which bin, which strategy and why.

When the choice is a sampling strategy, the probe's samples are its first ones and only the
rest are drawn (the fit read the probe off the first samples of the same kind of run),
so at N >= 4 samples the probe costs nothing extra; a search pays for the probe on top.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

from strategies.beam_search import beam_search
from strategies.config import SearchConfig
from strategies.difficulty import BINS, PROBE_AGGREGATION, PROBE_SAMPLES, Policy, probe_signal
from strategies.dvts import dvts
from strategies.info import STRATEGY_INFO, check_scorer, label
from strategies.sampling import sample_solutions
from strategies.search_run import SearchRun, rescored
from strategies.tree import SearchTree

EASY, HARD = 0.66, 0.33  # bins on the mean pilot score: >= EASY easy, < HARD hard
SMALL_BUDGET = 16
# the searches it chooses among, beside every sampling strategy (those go on from the probe)
SEARCHES = {"beam_search": beam_search, "dvts": dvts}
CHOOSABLE = (*(name for name, info in STRATEGY_INFO.items() if info.samples), *SEARCHES)


def choose_strategy(difficulty: float, n: int) -> str:
    """The strategy for a pilot mean score (higher = easier) at budget n."""
    if difficulty >= EASY:
        return "weighted_best_of_n" if n < SMALL_BUDGET else "dvts"
    if difficulty >= HARD:
        return "beam_search" if n < SMALL_BUDGET else "dvts"
    return "beam_search"


def compute_optimal(
    question, config: SearchConfig, generator, scorer, policy: Policy | None = None
) -> Iterator[SearchTree]:
    check_scorer("compute_optimal", scorer is not None)  # it estimates difficulty with the PRM

    pilot_n = PROBE_SAMPLES if policy is not None else max(2, config.n // 4)
    # a fitted policy's bin edges were fitted on probes aggregated one way: read it the same way
    probe_how = PROBE_AGGREGATION if policy is not None else config.aggregation
    pilot_config = replace(config, strategy="majority_vote", n=pilot_n, aggregation=probe_how)
    pilot = SearchRun(question, pilot_config, generator, scorer)
    for _ in sample_solutions(pilot):
        pass
    leaves = pilot.tree.leaves()
    pilot.score(leaves)
    probe = probe_signal(
        [leaf.agg_score or 0.0 for leaf in leaves], [leaf.answer for leaf in leaves]
    )
    difficulty = probe["mean_score"]
    if policy is not None:
        bin_, choice = policy.choose(probe["signal"], config.n)
        chosen = choice.strategy
        m, how = choice.beam_width, choice.aggregation
        why = choice.why(probe, bin_, BINS)
        where = f"bin {bin_ + 1} of {BINS}"
    else:
        chosen = choose_strategy(difficulty, config.n)
        m, how = config.beam_width, config.aggregation
        where = "easy" if difficulty >= EASY else "medium" if difficulty >= HARD else "hard"
        why = (
            f"probe mean {difficulty:.2f} → {where} (no fitted policy for this model: the "
            f"reference heuristic) → {label(chosen)}"
        )
    m = m if m <= config.n and config.n % m == 0 else 1
    sub_config = replace(config, strategy=chosen, beam_width=m, aggregation=how)
    meta = {
        "difficulty": round(difficulty, 4),
        "probe": {k: round(v, 4) for k, v in probe.items()},
        "difficulty_bin": where,
        "chosen_strategy": chosen,
        "fitted": policy is not None,
        "why": why,
        "pilot_samples": pilot_n,
        "pilot_answers": [leaf.answer for leaf in leaves],
    }
    pilot_compute = pilot.tick().compute
    t0 = time.perf_counter() - pilot_compute.wall_s
    if STRATEGY_INFO[chosen].samples:
        # a sampling choice keeps the probe's samples as its first ones, as the fit read them
        # (the harness's probe is the first samples of the sampling run): the probe is then
        # part of the budget, not spent on top of it
        kept = min(config.n, pilot_n)
        meta["reused_probe_samples"] = kept
        sub_config = replace(
            sub_config, max_iterations=pilot.tree.iteration + config.max_iterations
        )
        frames = _sample_on(pilot, kept, sub_config, generator, scorer)
    else:
        frames = SEARCHES[chosen](question, sub_config, generator, scorer)
    first = True
    for tree in frames:
        if first:  # the pilot's tokens and calls count once; the clock covers both parts
            tree.compute = tree.compute.add(pilot_compute)
            tree.strategy = "compute_optimal"
            tree.config = {**config.to_dict(), "chosen": sub_config.to_dict()}
            tree.meta["compute_optimal"] = meta
            first = False
        tree.compute.wall_s = time.perf_counter() - t0
        yield tree


def _sample_on(
    pilot: SearchRun, kept: int, config: SearchConfig, generator, scorer
) -> Iterator[SearchTree]:
    """Sampling whose first `kept` samples are the probe's (copied into the tree as they were
    written, with their iterations), then `config.n - kept` new ones drawn after them; the
    strategy's pick reads them all. The probe's step scores are re-aggregated the choice's way;
    a majority vote keeps none (it reads no verifier)."""
    verifier = scorer if STRATEGY_INFO[config.strategy].needs_scorer else None
    run = SearchRun(pilot.question, replace(config, n=max(1, config.n - kept)), generator, verifier)
    run.follow(pilot)
    tree = run.tree
    first = {n.id for n in pilot.tree.children(0)[:kept]}
    copied: dict[int, int] = {0: 0}
    for node in pilot.tree.nodes[1:]:
        if node.parent in copied and (node.parent != 0 or node.id in first):
            copy = replace(
                node, id=len(tree.nodes), parent=copied[node.parent], history=list(node.history)
            )
            if verifier is None:
                copy.score = copy.agg_score = None
            tree.nodes.append(copy)
            copied[node.id] = copy.id
    reused = tree.leaves()
    if verifier is not None:  # the probe's step scores, aggregated the choice's way
        for leaf, again in zip(reused, rescored(tree, reused, config.aggregation)):
            leaf.agg_score = again.agg_score
    yield run.tick()
    if config.n > kept:
        yield from sample_solutions(run)
    leaves = tree.leaves()
    old = {leaf.id for leaf in reused}
    run.score([leaf for leaf in leaves if leaf.id not in old])
    yield run.finish(leaves)
