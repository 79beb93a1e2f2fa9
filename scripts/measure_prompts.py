"""Measure prompt templates on the embedded policy: format (steps, boxed answer) and accuracy.

For each template, on the arithmetic problem set (assets/problems/arithmetic.json), through the
app's step engine: one greedy full solution per problem (temperature 0, to the end) and --samples sampled
full solutions per problem (temperature --temperature, seeded per problem). Reports per template:
  multi_step    share of greedy solutions with >= 2 non-empty steps separated by a blank line
  boxed         share of greedy solutions whose last step holds a complete \\boxed{...}
  greedy_acc    share of problems whose greedy answer equals the gold answer
  s_multi_step, s_boxed   the same two shares over all sampled solutions
  sample_acc    mean accuracy of one sampled solution
  maj_acc       majority vote over the samples (ties to the answer seen first) is right
  pass_acc      some sample is right (pass@k)
Prints a table and, with --json, writes the numbers plus every solution text.

    THINKTREE_THREADS=1 .venv/bin/python scripts/measure_prompts.py [--templates a,b]
        [--limit K] [--samples 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.catalog import PROMPTS_DIR  # noqa: E402
from backend.prompts import PromptTemplate  # noqa: E402
from strategies.answers import answers_equal, extract_answer, group_answers  # noqa: E402
from strategies.protocols import STEP_DELIMITER, Sampling  # noqa: E402

PROBLEMS = ROOT / "assets" / "problems" / "arithmetic.json"
# Columns of the table: (key in the summary, header).
COLUMNS = (
    ("multi_step", "steps>=2"),
    ("boxed", "boxed"),
    ("greedy_acc", "greedy"),
    ("s_multi_step", "s.steps>=2"),
    ("s_boxed", "s.boxed"),
    ("sample_acc", "s.acc"),
    ("maj_acc", "maj@k"),
    ("pass_acc", "pass@k"),
    ("mean_tokens", "tokens"),
    ("seconds", "s"),
)
SUMMARY_KEYS = tuple(key for key, _ in COLUMNS) + ("problems", "samples")
_BOX_RE = re.compile(r"\\boxed\s*\{[^{}]*\S[^{}]*\}")


def load_problems(path: Path = PROBLEMS) -> list[dict[str, str]]:
    data = json.loads(Path(path).read_text())
    return data["problems"] if isinstance(data, dict) else data


def steps_of(text: str) -> list[str]:
    """The non-empty steps of a solution (split on the blank-line delimiter)."""
    return [s for s in text.split(STEP_DELIMITER) if s.strip()]


def solution_stats(text: str, gold: str) -> dict:
    steps = steps_of(text)
    answer = extract_answer(text)
    return {
        "steps": len(steps),
        "boxed": bool(steps) and _BOX_RE.search(steps[-1]) is not None,
        "answer": answer,
        "correct": answer is not None and answers_equal(answer, gold),
    }


def majority(answers: list[str | None]) -> str | None:
    """The biggest group's first answer; ties go to the group seen first."""
    groups = group_answers(answers)
    if not groups:
        return None
    best = max(groups, key=len)  # max keeps the first of equal lengths
    return answers[best[0]]


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 3) if values else 0.0


def measure_template(engine, problems, args) -> dict:
    greedy = Sampling(temperature=0, to_end=True, max_solution_tokens=args.max_tokens)
    rows = []
    start = time.perf_counter()
    for i, problem in enumerate(problems):
        question, gold = problem["question"], str(problem["answer"])
        g = engine.next_steps(question, [[]], 1, greedy)[0][0]
        row = {"question": question, "gold": gold, "greedy": {"text": g.text, "tokens": g.tokens}}
        row["greedy"].update(solution_stats(g.text, gold))
        samples = []
        if args.samples:
            sampled = Sampling(
                temperature=args.temperature,
                to_end=True,
                max_solution_tokens=args.max_tokens,
                seed=args.seed + i,  # per problem, so --limit does not change the draws
            )
            for s in engine.next_steps(question, [[]], args.samples, sampled)[0]:
                samples.append({"text": s.text, "tokens": s.tokens, **solution_stats(s.text, gold)})
            vote = majority([s["answer"] for s in samples])
            row["majority"] = vote
            row["majority_correct"] = vote is not None and answers_equal(vote, gold)
        row["samples"] = samples
        rows.append(row)
        logging.info(
            "%s %d/%d greedy=%r gold=%s samples=%s",
            engine.template.name,
            i + 1,
            len(problems),
            row["greedy"]["answer"],
            gold,
            [s["answer"] for s in samples],
        )
    seconds = time.perf_counter() - start
    flat = [s for r in rows for s in r["samples"]]
    summary = {
        "problems": len(rows),
        "samples": args.samples,
        "multi_step": _mean(r["greedy"]["steps"] >= 2 for r in rows),
        "boxed": _mean(r["greedy"]["boxed"] for r in rows),
        "greedy_acc": _mean(r["greedy"]["correct"] for r in rows),
        "s_multi_step": _mean(s["steps"] >= 2 for s in flat),
        "s_boxed": _mean(s["boxed"] for s in flat),
        "sample_acc": _mean(s["correct"] for s in flat),
        "maj_acc": _mean(r.get("majority_correct", False) for r in rows),
        "pass_acc": _mean(any(s["correct"] for s in r["samples"]) for r in rows),
        "mean_tokens": round(
            _mean([r["greedy"]["tokens"] for r in rows] + [s["tokens"] for s in flat]), 1
        ),
        "seconds": round(seconds, 1),
    }
    return {"summary": summary, "per_problem": rows}


def format_table(results: dict[str, dict]) -> str:
    names = list(results)
    width = max([len("template")] + [len(n) for n in names])
    header = f"{'template':<{width}} " + " ".join(f"{h:>10}" for _, h in COLUMNS)
    lines = [header, "-" * len(header)]
    for name in names:
        s = results[name]["summary"]
        cells = []
        for key, _ in COLUMNS:
            v = s[key]
            cells.append(f"{v:>10.1f}" if key in ("mean_tokens", "seconds") else f"{v:>10.3f}")
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--templates", help="comma-separated template names (default: all in assets/prompts)"
    )
    parser.add_argument("--limit", type=int, help="use the first K problems only")
    parser.add_argument("--problems", type=Path, default=PROBLEMS)
    parser.add_argument("--samples", type=int, default=4, help="sampled solutions per problem")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=256, help="max tokens per solution")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every problem")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(message)s",
    )

    names = (
        [t.strip() for t in args.templates.split(",") if t.strip()]
        if args.templates
        else sorted(p.stem for p in PROMPTS_DIR.glob("*.json"))
    )
    templates = [PromptTemplate.load(n) for n in names]  # fails early on an unknown name
    problems = load_problems(args.problems)[: args.limit]

    from backend.runtime import get_policy, make_engine

    loaded = get_policy(args.model, args.precision)
    results = {}
    for template in templates:
        engine = make_engine(loaded, template.name)
        results[template.name] = measure_template(engine, problems, args)
        print(f"done {template.name}: {results[template.name]['summary']}", file=sys.stderr)

    out = {
        "config": {
            "model": args.model,
            "precision": loaded.precision,
            "threads": loaded.threads,
            "problems_file": str(args.problems),
            "problems": len(problems),
            "samples": args.samples,
            "temperature": args.temperature,
            "seed": args.seed,
            "max_tokens": args.max_tokens,
        },
        "templates": results,
    }
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
