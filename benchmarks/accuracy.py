"""Benchmark: accuracy and seconds per problem of each strategy, per model and verifier.

    .venv/bin/python -m benchmarks.accuracy --model qwen2.5-coder-0.5b \\
        --problems assets/problems/multistep.json --n 8 --beam-width 4 [--limit K] [--json out]

Runs every problem through the app's own path (`app.service.run_to_end`: the catalog's prompt
template for the model, the app's preset token limits, seed 0), one search per strategy:
- greedy: one solution at temperature 0 (majority voting with N=1);
- weighted Best-of-N at N: its N samples also give majority@N (the biggest answer group of the
  same samples) and vanilla Best-of-N (the single best-scoring sample), so the three columns
  compare rules on one set of samples, as the reference work does;
- beam search and DVTS at N with beam width M.
Prints one table row per strategy: problems right, accuracy, mean seconds and mean generated /
verifier tokens per problem. --json writes every answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from app.request import PRESET, RunRequest
from app.service import run_to_end
from backend.catalog import NO_PRM, catalog
from strategies.answers import answers_equal
from strategies.info import STRATEGY_NAMES

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("greedy", "weighted_best_of_n", "beam_search", "dvts")


def _votes_pick(votes: dict[str, dict[str, float]], metric: str) -> str | None:
    """The answer with the largest `metric` (ties to the group seen first), or None."""
    if not votes:
        return None
    return max(votes, key=lambda k: votes[k][metric])  # max keeps the first of equal values


def run_problem(problem: dict, strategy: str, args) -> dict[str, dict]:
    """Answers of one problem under `strategy`: {column: {answer, correct, seconds, tokens}}."""
    config = dataclasses.replace(PRESET, n=args.n, beam_width=args.beam_width, seed=args.seed)
    prm = args.prm
    if strategy == "greedy":
        config = dataclasses.replace(config, strategy="majority_vote", n=1, temperature=0.0)
        prm = NO_PRM
    else:
        config = dataclasses.replace(config, strategy=strategy)
    request = RunRequest(
        problem["question"], config, args.model, prm, args.precision, compare=False
    )
    start = time.perf_counter()
    tree = run_to_end(request)
    seconds = time.perf_counter() - start
    gold = str(problem["answer"])
    common = {
        "seconds": seconds,
        "tokens": tree.compute.generated_tokens,
        "verifier_tokens": tree.compute.scored_tokens,
    }
    answers = {strategy: tree.answer}
    if strategy == "weighted_best_of_n":  # the same samples, two other rules
        answers["majority"] = _votes_pick(tree.votes, "count")
        answers["best_of_n"] = _votes_pick(tree.votes, "best_score")
    return {
        col: {"answer": a, "correct": a is not None and answers_equal(a, gold), **common}
        for col, a in answers.items()
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=catalog().default_policy)
    ap.add_argument("--prm", default="arithmetic")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--problems", type=Path, default=ROOT / "assets/problems/multistep.json")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--json", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(strategies) - set(STRATEGIES) - set(STRATEGY_NAMES)
    if unknown:
        ap.error(f"unknown strategies {sorted(unknown)}; choose from greedy, {STRATEGY_NAMES}")
    problems = json.loads(args.problems.read_text())[: args.limit]
    rows: dict[str, list[dict]] = {}
    out: dict = {}
    for strategy in strategies:
        for i, problem in enumerate(problems):
            for col, result in run_problem(problem, strategy, args).items():
                rows.setdefault(col, []).append(result)
                logging.info(
                    "%s %d/%d %s gold=%s %.1f s",
                    col,
                    i + 1,
                    len(problems),
                    result["answer"],
                    problem["answer"],
                    result["seconds"],
                )
        out = {
            "config": {k: str(v) for k, v in vars(args).items()},
            "summary": summarize(rows),
            "rows": rows,
        }
        print(format_table(out), file=sys.stderr, flush=True)  # so far, in case of a later failure
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
    print(format_table(out))
    return out


def summarize(rows: dict[str, list[dict]]) -> dict[str, dict]:
    return {
        col: {
            "right": sum(r["correct"] for r in rs),
            "problems": len(rs),
            "accuracy": round(sum(r["correct"] for r in rs) / len(rs), 3),
            "seconds": round(sum(r["seconds"] for r in rs) / len(rs), 1),
            "tokens": round(sum(r["tokens"] for r in rs) / len(rs)),
            "verifier_tokens": round(sum(r["verifier_tokens"] for r in rs) / len(rs)),
        }
        for col, rs in rows.items()
    }


def format_table(out: dict) -> str:
    c = out["config"]
    lines = [
        f"{c['model']} · PRM {c['prm']} · N={c['n']} M={c['beam_width']} · {c['problems']}",
        f"{'strategy':<20}{'right':>8}{'acc':>8}{'s/problem':>11}{'tokens':>9}{'verifier':>10}",
    ]
    for col, s in out["summary"].items():
        lines.append(
            f"{col:<20}{s['right']:>5}/{s['problems']:<2}{s['accuracy']:>8.3f}"
            f"{s['seconds']:>11.1f}{s['tokens']:>9}{s['verifier_tokens']:>10}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
