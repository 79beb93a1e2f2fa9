"""A/B of the step engine's own settings: the benchmark's beam search, engine only, run under each
variant in turn, seed by seed (the order alternates, so a change in the machine's load hits all).

    .venv/bin/python -m benchmarks.compare_engines                       # all variants, 8 seeds
    .venv/bin/python -m benchmarks.compare_engines --variants final,one_copy --seeds 8

Prints one JSON object: per variant the summed seconds, the generated tokens and ms per token, and
the seconds per seed. Variants that only change speed and not numerics (`unpacked`) write the very
same tokens; the others change which rows share a batch and so which paths each seed samples,
which is why many seeds are summed (see the README's speed section).

Variants:
- final: the engine as it ships;
- unpacked: bf16 layers read plain weights instead of oneDNN-packed ones (`backend/kernels/fast_decode.py`);
- one_copy: one continuation written ahead per row, whatever the search hints (`forks=1`);
- one_level: likely survivors write ahead for the next call only, not the one after it;
- stepwise_last: nothing is written ahead to the end for the last call (no `last_call_in` hint);
- no_speculation: nothing is written ahead.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from backend.engine import StepEngine
from backend.prompts import PromptTemplate
from backend.runtime import get_policy
from backend.verifiers.arithmetic import ArithmeticPRM
from benchmarks.bench_search import QUESTION
from strategies.config import SearchConfig
from strategies.registry import run

VARIANTS = ("final", "unpacked", "one_copy", "one_level", "stepwise_last", "no_speculation")


class _WithoutLastCallHint:
    """A step engine whose calls never hear which later call writes to the end."""

    def __init__(self, engine: StepEngine) -> None:
        self.engine = engine

    def next_steps(self, question, partials, n, sampling):
        return self.engine.next_steps(question, partials, n, replace(sampling, last_call_in=0))

    def stream_steps(self, question, partials, n, sampling):
        return self.engine.stream_steps(question, partials, n, replace(sampling, last_call_in=0))


def make_engine(variant: str, policy, template):
    """(a step generator for this variant, a function that undoes what it changed)."""
    undo = lambda: None  # noqa: E731
    if variant == "unpacked":
        engine = StepEngine(policy.model, policy.tokenizer, template)
        linears = engine.fast.linears()
        saved = [lin.packed for lin in linears]
        for lin in linears:
            lin.packed = None

        def undo():
            for lin, packed in zip(linears, saved):
                lin.packed = packed

        return engine, undo
    kwargs = {"one_copy": dict(forks=1), "no_speculation": dict(speculate=False)}.get(variant, {})
    engine = StepEngine(policy.model, policy.tokenizer, template, **kwargs)
    if variant == "one_level":
        engine.levels = 1
    if variant == "stepwise_last":
        return _WithoutLastCallHint(engine), undo
    return engine, undo


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    config = SearchConfig(
        strategy="beam_search", n=16, beam_width=4, max_iterations=4,
        max_step_tokens=64, max_solution_tokens=512,
    )  # fmt: skip
    if args.quick:
        config = replace(config, n=4, beam_width=2, max_iterations=2, max_step_tokens=16,
                         max_solution_tokens=48)  # fmt: skip
    policy = get_policy(precision="auto")  # the embedded model
    template = PromptTemplate.load("fewshot_steps")
    out = {v: {"seconds": 0.0, "tokens": 0, "per_seed": []} for v in variants}
    for k in range(args.seeds):
        for variant in variants if k % 2 == 0 else variants[::-1]:
            generator, undo = make_engine(variant, policy, template)
            try:
                t0 = time.perf_counter()
                tree = run(QUESTION, replace(config, seed=k), generator, ArithmeticPRM())
                seconds = time.perf_counter() - t0
            finally:
                undo()
            cell = out[variant]
            cell["seconds"] += seconds
            cell["tokens"] += tree.compute.generated_tokens
            cell["per_seed"].append(round(seconds, 2))
    for cell in out.values():
        cell["seconds"] = round(cell["seconds"], 2)
        cell["ms_per_token"] = round(1000 * cell["seconds"] / max(1, cell["tokens"]), 2)
    result = {"seeds": args.seeds, "precision": policy.precision, "variants": out}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
