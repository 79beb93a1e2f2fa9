"""The tree checker (strategies/invariants.py) and a slice of the soak (benchmarks/soak.py).

The checker passes every strategy's trees from the fakes, frame by frame, and fails each kind of
hand-broken tree, so a soak that reports nothing has really been looking. The slice runs the soak's
runs over the real engine: native in this process, avx2 in a second one.
"""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from strategies.config import SearchConfig
from strategies.info import STRATEGY_NAMES
from strategies.invariants import tree_problems
from strategies.registry import search
from strategies.tree import SearchTree
from tests.fakes import FakeGenerator, FakeScorer, StreamingFakeGenerator

# (N, M, iterations, filter duplicates): one and several iterations, subtrees of 1 step and more
SHAPES = [(4, 2, 1, False), (4, 2, 5, False), (8, 4, 3, True), (6, 3, 4, False), (8, 8, 2, False)]
SOAK_SLICE = [i for i in range(28) if i % 14 < 7]  # every strategy, speculation on, then off


def frames(strategy: str, n=4, m=2, iterations=4, dedupe=False, seed=0, depth=3, stream=False):
    config = SearchConfig(
        strategy=strategy,
        n=n,
        beam_width=m,
        max_iterations=iterations,
        filter_duplicates=dedupe,
        seed=seed,
    )
    generator = (StreamingFakeGenerator if stream else FakeGenerator)(depth=depth)
    return search("What is 1 + 2?", config, generator, FakeScorer())


def finished(strategy: str = "beam_search", **kwargs) -> SearchTree:
    tree = deque(frames(strategy, **kwargs), maxlen=1)[0]
    assert tree.done and tree_problems(tree) == []
    return tree


def problems_of(tree: SearchTree) -> str:
    return "\n".join(tree_problems(tree))


# ---- the checker ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategys_trees_keep_every_rule_in_every_frame(strategy):
    checked = 0
    for (n, m, iterations, dedupe), seed, depth, stream in itertools.product(
        SHAPES, range(2), (2, 4), (False, True)
    ):
        for tree in frames(strategy, n, m, iterations, dedupe, seed, depth, stream):
            assert tree_problems(tree) == [], (
                n,
                m,
                iterations,
                seed,
                depth,
                stream,
                tree.iteration,
            )
            checked += 1
        assert tree.done and tree.stopped == ""
    assert checked > 100


def test_a_tree_stopped_midway_keeps_every_rule():
    for strategy, after in itertools.product(STRATEGY_NAMES, (1, 3, 6)):
        stream = frames(strategy, n=8, m=4, stream=True)
        tree = next(itertools.islice(stream, after - 1, None))
        stream.close()
        tree.stop("stopped")
        assert tree_problems(tree) == [], (strategy, after)


def test_a_parent_after_its_child_is_found():
    tree = finished()
    node = tree.nodes[-1]
    assert node.depth == 3
    node.parent = node.id + 1
    assert f"parent {node.id + 1} is not an earlier node" in problems_of(tree)
    node.parent = 0
    assert "depth 3 under a parent of depth 0" in problems_of(tree)


def test_a_status_its_history_does_not_end_with_is_found():
    tree = finished()
    node = next(n for n in tree.nodes if n.status == "pruned")
    node.status = "active"
    assert f"node {node.id}: status 'active', but its history ends" in problems_of(tree)


def test_a_pruned_node_coming_back_is_found():
    tree = finished()
    node = next(n for n in tree.nodes if n.status == "pruned")
    node.history.append((node.history[-1][0], "active"))
    node.status = "active"
    assert "status went from 'pruned' to 'active'" in problems_of(tree)


def test_tokens_the_steps_do_not_add_up_to_are_found():
    tree = finished("dvts", n=8, m=4)
    tree.compute.generated_tokens += 1
    assert "generated tokens, the steps" in problems_of(tree)


def test_a_selected_leaf_that_never_completed_is_found():
    tree = finished("weighted_best_of_n")
    (leaf,) = [tree.nodes[i] for i in tree.selected]
    leaf.history = [(leaf.iteration, "active"), (tree.iteration, "selected")]
    text = problems_of(tree)
    assert f"selected {leaf.id} is not a completed leaf" in text
    assert "never completed" in text  # its step wrote the boxed answer


def test_a_stopped_tree_with_an_answer_or_a_selection_is_found():
    tree = finished("majority_vote")
    tree.stopped = "time limit (60 s)"
    assert "stopped ('time limit (60 s)'), yet it has an answer" in problems_of(tree)


def test_an_answer_the_finish_would_not_pick_is_found():
    tree = finished("majority_vote", n=8)
    tree.answer = "not one of the answers"
    assert "the finish's rule picks" in problems_of(tree)
    tree = finished("best_of_n", n=8)
    loser = next(n for n in tree.nodes if n.status == "completed")
    loser.agg_score = 1.0  # it now scores best, but the run selected another
    assert "the finish's rule picks" in problems_of(tree)


def test_a_selected_path_with_a_gap_is_found():
    tree = finished("beam_search", iterations=5, depth=4)
    (leaf,) = tree.selected
    middle = tree.path(leaf)[0]
    middle.history.pop()
    middle.status = middle.history[-1][1]
    assert "nodes marked selected" in problems_of(tree)


def test_a_child_of_a_completed_or_pruned_node_is_found():
    tree = finished("beam_search", iterations=5, depth=4)
    pruned = next(n for n in tree.nodes if n.status == "pruned" and n.iteration < tree.iteration)
    tree.iteration += 1
    tree.add_node(pruned.id, "Step again\n\n", tokens=2, finish_reason="delimiter")
    tree.compute.generated_tokens += 2
    assert f"pruned at iteration {pruned.history[-1][0]}, yet children" in problems_of(tree)


def test_a_wrong_node_answer_and_a_bad_score_are_found():
    tree = finished("best_of_n")
    leaf = tree.nodes[tree.selected[0]]
    leaf.answer = "42"
    leaf.score = 1.5
    text = problems_of(tree)
    assert "answer '42', but its solution's answer is" in text
    assert "score 1.5 is not in [0, 1]" in text


# ---- the soak's slice ----------------------------------------------------------------------------
def test_the_soaks_runs_are_fixed_by_their_index_and_cover_the_app():
    from app.ui import BEAM_WIDTHS
    from benchmarks.soak import BUDGETS, plan, soak_run

    runs = plan(200, seed_base=3, cpu="both")
    assert runs[57] == soak_run(57, seed_base=3, cpu="both")
    assert runs[57] != soak_run(57, seed_base=4, cpu="both")
    assert {r.strategy for r in runs} == set(STRATEGY_NAMES)
    assert {r.settings["n"] for r in runs} == set(BUDGETS)
    assert {r.settings["beam_width"] for r in runs} == set(BEAM_WIDTHS)
    assert {(r.cpu, r.speculate) for r in runs} == set(
        itertools.product(("native", "avx2"), (0, 1))
    )
    assert {r.prm for r in runs} == {"arithmetic", "none"} and any(r.stop_after for r in runs)


@pytest.mark.model
def test_a_slice_of_the_soak_crashes_nowhere_and_breaks_no_rule():
    """Every strategy with speculation on and off, native here and held to AVX2 in a second
    process (the soak's own avx2 path), on the embedded model (~2 min on 2 cores)."""
    from benchmarks.soak import soak, summary_line

    summary = soak(indices=SOAK_SLICE, cpu="both")
    assert summary["failures"] == [], summary_line(summary)
    assert summary["crashes"] == summary["invariant_failures"] == 0
    covered = summary["covered"]
    assert covered["strategies"] == sorted(STRATEGY_NAMES)
    assert covered["speculate"] == [False, True]
    assert covered["cpu"] == ["avx2", "native"]
    assert sum(summary["by_cpu"].values()) == len(SOAK_SLICE)
