"""Benchmark: greedy decoding at batch 1 per model, and the memory of the models held together.

    .venv/bin/python -m benchmarks.greedy_speed        # the 0.5B policy, then the 1.5B beside it
    .venv/bin/python -m benchmarks.greedy_speed --models smollm2-135m --tokens 256

Loads the first model as the pool's policy and the next as its second model (the one that judges
steps and answers alone in the comparison), as the app holds them, each at --precision. For
each it writes --tokens tokens greedily at batch 1 through the step engine (the app's path: the
lean decoder and the small-batch copies where the model has them), --rounds times on questions
it has not seen, and prints the best tokens/s without the prompt's prefill (a 1-token run of the
same question reads the prompt first; the engine keeps it) and with it. Then the resident memory (VmRSS) of the
process holding all of them, and its peak (VmHWM, which includes a first load's conversion).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from strategies.protocols import Sampling

QUESTIONS = (
    "A train travels at 60 km per hour for 3 hours. How far does it go?",
    "Ana reads 12 pages a day for 5 days. How many pages does she read?",
    "A box holds 12 eggs. How many boxes do 144 eggs fill?",
    "Leo saves $15 a week for 6 weeks. How much does he save?",
)


def memory_mb() -> dict[str, float]:
    """The process's resident memory now and at its peak, from /proc (Linux)."""
    status = Path("/proc/self/status").read_text().splitlines()
    values = {line.split(":")[0]: line.split()[1] for line in status if line.startswith("Vm")}
    return {"rss_mb": int(values["VmRSS"]) / 1024, "peak_rss_mb": int(values["VmHWM"]) / 1024}


def time_greedy(engine, question: str, tokens: int) -> tuple[float, int]:
    sampling = Sampling(temperature=0, to_end=True, max_step_tokens=tokens,
                        max_solution_tokens=tokens)  # fmt: skip
    start = time.perf_counter()
    step = engine.next_steps(question, [[]], 1, sampling)[0][0]
    return time.perf_counter() - start, step.tokens


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from backend import machine
    from backend.catalog import catalog
    from backend.engine import StepEngine
    from backend.prompts import PromptTemplate
    from backend.runtime import POOL

    names = [m for m in args.models.split(",") if m]
    out: dict = {"cpu": machine.cpu_info().summary(), "models": {}}
    for i, name in enumerate(names):
        t0 = time.perf_counter()
        if i == 0:
            loaded = POOL.policy(name, args.precision)
            engine = StepEngine(loaded.model, loaded.tokenizer,
                                PromptTemplate.load(catalog().get(name).prompt))  # fmt: skip
        else:
            loaded, engine = POOL.bigger(name, args.precision)
        load_s = time.perf_counter() - t0
        best = best_total = 0.0
        written = 0
        for r in range(args.rounds):
            question = QUESTIONS[r % len(QUESTIONS)] + f" (round {r})"
            # a new question: a 1-token run reads its prompt, which the engine then keeps
            prefill_s, _ = time_greedy(engine, question, 1)
            decode_s, written = time_greedy(engine, question, args.tokens)
            best = max(best, written / decode_s)
            best_total = max(best_total, written / (prefill_s + decode_s))
        out["models"][name] = {
            "precision": loaded.precision,
            "small_batch_int8": loaded.small_batch_int8,
            "small_batch_int4": loaded.small_batch_int4,
            "load_s": round(load_s, 1),
            "tokens": written,
            "decode_tok_s": round(best, 1),
            "tok_s_with_prefill": round(best_total, 1),
        }
        print(json.dumps({name: out["models"][name]}), file=sys.stderr, flush=True)
    out["memory"] = {k: round(v) for k, v in memory_mb().items()}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
