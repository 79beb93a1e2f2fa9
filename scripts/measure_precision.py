"""Measure the policy model's speed and greedy agreement per precision, to choose "auto".

For each precision: median ms per cached decode step at several batch sizes after a 100-token
prefill, seconds to prefill 200 tokens at batch 1, and how closely greedy 32-token continuations
of a few prompts follow fp32's (whole-run prefix, and per token with fp32's text as context).
"auto" is measured too, as it loads on this machine (backend/machine.py: fp32 or bf16, with
low-bit weight copies for small batches). Prints the CPU, JSON and a table; the fastest precision
(mean decode ms over the batch sizes) whose per-token top-1 agreement with fp32 is
>= --min-agreement is named beside what "auto" chose.

    .venv/bin/python scripts/measure_precision.py [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.loading.policy import load_policy  # noqa: E402
from backend.machine import cpu_info  # noqa: E402
from benchmarks.probes import (  # noqa: E402
    greedy_agreement,
    greedy_tokens,
    measure_decode_ms,
    measure_prefill_s,
    teacher_forced_top1,
)

PROMPTS = [
    "What is 12 times 7?",
    "Tom has 5 apples and buys 3 more. How many apples does he have?",
    "Explain in one sentence why the sky is blue.",
    "Write the first five prime numbers.",
]


def measure_round(loaded, batches: list[int], steps: int) -> dict[str, float]:
    cells = {}
    for batch in batches:
        cells[f"decode_ms_b{batch}"] = round(measure_decode_ms(loaded.model, batch, steps=steps), 1)
    cells["prefill200_s"] = round(measure_prefill_s(loaded.model, tokens=200), 3)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "nf4", "auto"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--steps", type=int, default=16, help="timed decode steps per batch size")
    parser.add_argument("--rounds", type=int, default=3, help="each cell keeps its best round")
    parser.add_argument(
        "--min-agreement", type=float, default=0.9, help="least teacher-forced top-1 agreement"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.precisions[0] != "fp32":
        parser.error("fp32 must come first: it is the reference for agreement")

    models = {p: load_policy(precision=p, device=args.device) for p in args.precisions}
    tokens = {
        p: [greedy_tokens(m.model, m.tokenizer, prompt, new_tokens=32) for prompt in PROMPTS]
        for p, m in models.items()
    }
    rows = {
        p: {
            "precision": p if p != "auto" else f"auto ({m.precision})",
            "load_s": round(m.load_s, 2),
            "threads": m.threads,
            "small_batch": {"int4": m.small_batch_int4, "int8": m.small_batch_int8},
            "reason": m.precision_reason,
        }
        for p, m in models.items()
    }
    # Rounds interleave the precisions and each cell keeps its best round, so a neighbour process
    # that steals a core for a while penalizes no precision in particular.
    for round_index in range(args.rounds):
        for precision, loaded in models.items():
            cells = measure_round(loaded, args.batches, args.steps)
            logging.info("round %d %s %s", round_index, precision, cells)
            for key, value in cells.items():
                rows[precision][key] = min(value, rows[precision].get(key, value))
    for precision, row in rows.items():
        row["agreement"] = asdict(greedy_agreement(tokens["fp32"], tokens[precision]))
        loaded = models[precision]
        top1 = [
            teacher_forced_top1(loaded.model, loaded.tokenizer, prompt, ref)
            for prompt, ref in zip(PROMPTS, tokens["fp32"], strict=True)
        ]
        row["top1_vs_fp32"] = round(statistics.fmean(top1), 3)
    rows = list(rows.values())
    print(json.dumps({"cpu": cpu_info().as_json(), "rows": rows}))
    print(f"\nCPU: {cpu_info().summary()}")
    if "auto" in models:
        print(f"auto: {models['auto'].precision_reason}")

    decode_cols = [f"decode_ms_b{b}" for b in args.batches]
    print(
        "\n| precision | "
        + " | ".join(decode_cols)
        + " | prefill200_s | top1 vs fp32 | greedy exact | greedy prefix |"
    )
    print("|---" * (len(decode_cols) + 5) + "|")
    for row in rows:
        agree = row["agreement"]
        cells = [str(row[c]) for c in decode_cols]
        print(
            f"| {row['precision']} | "
            + " | ".join(cells)
            + f" | {row['prefill200_s']} | {row['top1_vs_fp32']} | "
            f"{agree['exact']}/{agree['prompts']} | {agree['prefix_fraction']:.2f} |"
        )
    correct = [r for r in rows if r["top1_vs_fp32"] >= args.min_agreement]
    best = min(correct, key=lambda r: statistics.fmean(r[c] for c in decode_cols))
    print(f"\nfastest with top-1 agreement >= {args.min_agreement}: {best['precision']}")
    if args.json:
        out = {"cpu": cpu_info().as_json(), "rows": rows, "fastest": best["precision"]}
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
