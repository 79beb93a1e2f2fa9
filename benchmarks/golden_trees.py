"""Dump the trees and engine counters of a fixed set of searches, to prove a change token-identical.

    .venv/bin/python -m benchmarks.golden_trees before.json      # on the old code
    .venv/bin/python -m benchmarks.golden_trees after.json       # on the new code
    cmp before.json after.json                                   # identical, or not

32 searches through the app's step engine (llama.cpp for the embedded model) and the arithmetic
checker on the embedded model: beam search N=8 M=4, DVTS N=8 M=2, lookahead N=4 M=2 and weighted
Best-of-N N=4, on 2 prompts with seeds 0 and 1, each once on a fresh engine and once on one
engine shared by all (so what its store carries from run to run counts too). The JSON holds every
node (text, tokens, finish reason, scores, status history), the engine's counters but its times
(calls, forwards, rows per forward, tokens decoded, prefill tokens), and the keys of its store.
About a minute on 2 cores. Same machine, same build, same thread count (`THINKTREE_THREADS`):
llama.cpp's sums depend on all three.
"""

from __future__ import annotations

import argparse
import json
import time

from backend.catalog import catalog
from backend.runtime import get_policy, make_engine
from backend.verifiers.arithmetic import ArithmeticPRM
from strategies.config import SearchConfig
from strategies.registry import run

COUNTERS = ("calls", "decode_forwards", "forward_rows", "decode_tokens", "prefill_tokens")
PROMPTS = (
    "What is 17 + 25?",
    "A baker has 24 muffins and sells 3 boxes of 5. How many are left?",
)
CONFIGS = (
    dict(strategy="beam_search", n=8, beam_width=4, max_iterations=6),
    dict(strategy="dvts", n=8, beam_width=2, max_iterations=6),
    dict(strategy="lookahead", n=4, beam_width=2, max_iterations=4),
    dict(strategy="weighted_best_of_n", n=4),
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the JSON file to write")
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    name = catalog().default_policy
    policy = get_policy(name, args.precision)
    prompt_name = catalog().get(name).prompt
    shared = make_engine(policy, prompt_name)
    out = {"engine": policy.engine, "precision": policy.precision, "runs": []}
    t0 = time.perf_counter()
    for seed in (0, 1):
        for prompt in PROMPTS:
            for c in CONFIGS:
                config = SearchConfig(**c, seed=seed, max_step_tokens=64, max_solution_tokens=256)
                for which in ("fresh", "shared"):
                    engine = shared
                    if which == "fresh":
                        engine = make_engine(policy, prompt_name)
                    tree = run(prompt, config, engine, ArithmeticPRM()).to_dict()
                    tree["compute"].pop("wall_s")
                    tree.pop("meta")
                    out["runs"].append(
                        {
                            "engine": which,
                            "seed": seed,
                            "prompt": prompt,
                            "config": c,
                            "tree": tree,
                            "stats": {k: getattr(engine.stats, k) for k in COUNTERS},
                            "store": sorted(str(k) for k in engine.store),
                        }
                    )
            print(f"seed {seed}, {prompt[:24]}…: {time.perf_counter() - t0:.0f} s", flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
