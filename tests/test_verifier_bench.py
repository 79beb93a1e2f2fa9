"""The verifier and accuracy benchmarks' own arithmetic: AUROC, corrupted steps, labels, Best-of-N
over samples, and picks from a tree's votes (no model loads)."""

from __future__ import annotations

import pytest

from backend.verifiers.arithmetic import ArithmeticPRM, check_step
from benchmarks.accuracy import _votes_pick
from benchmarks.verifiers import (
    Solution,
    auroc,
    baselines,
    best_of_n,
    corrupt,
    labelled_steps,
    score_items,
    split_steps,
)


def test_auroc_counts_wins_and_half_ties():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5
    assert auroc([0.9, 0.5], [0.5, 0.1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert auroc([], [0.1]) is None


def test_a_corrupted_step_is_wrong_where_it_was_right():
    step = "He gives away 5, so 12 - 5 = 7 are left.\n\n"
    bad = corrupt(step)
    assert bad == "He gives away 5, so 12 - 5 = 8 are left.\n\n"
    assert check_step(step).verdict == "right" and check_step(bad).verdict == "wrong"
    assert corrupt("$24 - 15 = 9$ muffins") == "$24 - 15 = 10$ muffins"
    assert corrupt("120 + 30 = 150") == "120 + 30 = 165"  # off by a tenth, not by one
    assert corrupt("Nothing to compute here.") is None
    assert corrupt("12 - 5 = 8") is None  # already wrong: nothing right to corrupt


def _sol(problem, steps, answer, correct, sampled=True):
    return Solution(problem, f"q{problem}", "7", steps, answer, correct, sampled)


def test_labels_come_from_the_answer_and_from_corrupting_right_steps():
    right = _sol(0, ["12 - 5 = 7 left.\n\n", "The answer is \\boxed{7}."], "7", True)
    wrong = _sol(0, ["12 - 5 = 8 left.\n\n", "The answer is \\boxed{8}."], "8", False)
    items = labelled_steps([right, wrong])
    groups = [it["group"] for it in items]
    assert groups.count("right path") == 2 and groups.count("wrong path") == 2
    (bad,) = [it for it in items if it["group"] == "wrong arithmetic"]
    assert bad["steps"] == ["12 - 5 = 8 left.\n\n"]  # the corrupted step, in its context
    scores = score_items(ArithmeticPRM(), items)
    assert scores[groups.index("wrong arithmetic")] == ArithmeticPRM().wrong
    assert split_steps("a\n\nb\n\nc") == ["a\n\n", "b\n\n", "c"]


def test_best_of_n_and_baselines_over_each_problems_samples():
    sols = [
        _sol(0, ["x"], "7", True, sampled=False),  # greedy: not a Best-of-N sample
        _sol(0, ["x"], "7", True),
        _sol(0, ["x"], "8", False),
        _sol(0, ["x"], "8", False),
        _sol(1, ["x"], "3", False, sampled=False),
        _sol(1, ["x"], "3", False),
    ]
    # the verifier likes the lone right answer more than the two wrong ones together
    final = {0: 0.0, 1: 0.9, 2: 0.3, 3: 0.3, 4: 0.0, 5: 0.5}
    assert best_of_n(sols, final) == 0.5  # problem 0 right, problem 1 wrong
    assert best_of_n(sols, final | {1: 0.5}) == 0.0  # 0.5 < 0.3 + 0.3
    assert baselines(sols) == {"greedy": 0.5, "majority": 0.0, "pass@k": 0.5}


def test_votes_pick_ties_to_the_first_group():
    votes = {"7": {"count": 2, "best_score": 0.5}, "8": {"count": 2, "best_score": 0.9}}
    assert _votes_pick(votes, "count") == "7"
    assert _votes_pick(votes, "best_score") == "8"
    assert _votes_pick({}, "count") is None


def test_the_accuracy_benchmark_names_real_strategies():
    from benchmarks.accuracy import STRATEGIES
    from strategies.info import STRATEGY_NAMES

    assert set(STRATEGIES) - {"greedy"} <= set(STRATEGY_NAMES)
