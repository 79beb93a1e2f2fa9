"""Golden trees over the fakes: every strategy run over the deterministic fakes, frame by frame.

`python -m tests.fake_trees --write` stores them in tests/golden/fake_trees.json; test_golden.py
checks that a refactor leaves every tree, frame count and answer as it was, in a second. The
real model's golden trees (token-identical, engine counters included) are a command:
`benchmarks.golden_trees` before and after a change, then `cmp`. Rewrite them only
for a change that means to change what a search does, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from backend.fitted_policies import stored_policy
from strategies.config import SearchConfig
from strategies.registry import search
from tests.fakes import FakeGenerator, FakeScorer

GOLDEN = Path(__file__).parent / "golden" / "fake_trees.json"
QUESTION = "What is 6 times 7?"
CASES: dict[str, dict[str, Any]] = {
    "majority_vote-n8": {"strategy": "majority_vote", "n": 8},
    "best_of_n-n8-min": {"strategy": "best_of_n", "n": 8, "aggregation": "min"},
    "weighted_best_of_n-n8": {"strategy": "weighted_best_of_n", "n": 8},
    "weighted_best_of_n-n6-prod": {"strategy": "weighted_best_of_n", "n": 6, "aggregation": "prod"},
    "beam_search-n8-m4": {"strategy": "beam_search", "n": 8, "beam_width": 4},
    "beam_search-n4-m2-dedup": {
        "strategy": "beam_search",
        "n": 4,
        "beam_width": 2,
        "filter_duplicates": True,
    },
    "dvts-n8-m2": {"strategy": "dvts", "n": 8, "beam_width": 2},
    "lookahead-n4-m2-k1": {"strategy": "lookahead", "n": 4, "beam_width": 2, "lookahead": 1},
    "lookahead-n4-m2-k0": {"strategy": "lookahead", "n": 4, "beam_width": 2, "lookahead": 0},
    "compute_optimal-n8-heuristic": {"strategy": "compute_optimal", "n": 8},
    "compute_optimal-n8-fitted": {"strategy": "compute_optimal", "n": 8, "policy": True},
    "compute_optimal-n2-fitted": {"strategy": "compute_optimal", "n": 2, "policy": True},
    "compute_optimal-n16-fitted": {"strategy": "compute_optimal", "n": 16, "policy": True},
    "compute_optimal-n1-fitted-q5": {
        "strategy": "compute_optimal",
        "n": 1,
        "policy": True,
        "question": "Q5",
    },
    "compute_optimal-n4-fitted-q5": {
        "strategy": "compute_optimal",
        "n": 4,
        "policy": True,
        "question": "Q5",
    },
    "compute_optimal-n4-fitted-q2": {
        "strategy": "compute_optimal",
        "n": 4,
        "policy": True,
        "question": "Q2",
    },
}


def run_case(settings: dict[str, Any]) -> dict[str, Any]:
    settings = dict(settings)
    question = settings.pop("question", QUESTION)
    policy = (
        stored_policy("qwen2.5-coder-0.5b", "arithmetic") if settings.pop("policy", 0) else None
    )
    config = SearchConfig(max_iterations=6, seed=3, **settings)
    frames = []
    for frame in search(question, config, FakeGenerator(depth=4), FakeScorer(), policy=policy):
        frames.append(len(frame.nodes))
    tree = frame.to_dict()
    tree["compute"].pop("wall_s")
    return {"frames": frames, "tree": tree}


def golden() -> dict[str, Any]:
    return {name: run_case(settings) for name, settings in CASES.items()}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.fake_trees --write")
    GOLDEN.write_text(json.dumps(golden(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
