"""Benchmark: how well each verifier ranks steps, and what it does to weighted Best-of-N.

    .venv/bin/python -m benchmarks.verifiers --solutions prompts.json --template qwen_steps
    .venv/bin/python -m benchmarks.verifiers --samples 4          # sample the solutions here

Labelled steps are built from the project's problems (assets/problems) and a policy's own
solutions to them: every sampled (and the greedy) solution, split into steps on the blank line.
- "right path": the steps of a solution whose answer is right (label 1);
- "wrong path": the steps of a solution whose answer is wrong (label 0; its early steps may be
  fine, which is what outcome labels cost);
- "wrong arithmetic": a right-path step whose checked calculation had its result changed
  ("12 - 5 = 7" becomes "12 - 5 = 8"; label 0), in the context of the steps before it.
Solutions come from `scripts/measure_prompts.py --json` (its texts, no generation here) or are
sampled here with the app's step engine (--samples, temperature 0.8, seeded per problem).
For each verifier (arithmetic checker, the model judge, the checker in front of the judge in
both ways of combining them, the policy judging itself, the policy's value head alone and behind
the checker's veto) it prints AUROC over all labelled
steps and over each pair of groups, and the accuracy of weighted Best-of-N over each problem's
samples (last-step scores, summed per answer), beside majority voting and pass@k.
Prints a table and, with --json, writes every score.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from backend.verifiers.arithmetic import ArithmeticPRM, check_step
from strategies.answers import answers_equal, extract_answer, group_answers
from strategies.protocols import STEP_DELIMITER, Sampling

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ROOT / "assets" / "problems" / "multistep.json"
GROUPS = ("right path", "wrong path", "wrong arithmetic")
VERIFIERS = (
    "arithmetic",
    "judge",
    "veto",
    "fallback",
    "self_judge",
    "value_head",
    "checker_value_head",
)


@dataclass
class Solution:
    problem: int
    question: str
    gold: str
    steps: list[str]
    answer: str | None
    correct: bool
    sampled: bool  # False: the greedy solution (not counted in Best-of-N)


def split_steps(text: str) -> list[str]:
    """Steps as the engine hands them over: each keeps its trailing delimiter."""
    parts = text.split(STEP_DELIMITER)
    steps = [p + STEP_DELIMITER for p in parts[:-1]] + [parts[-1]]
    return [s for s in steps if s.strip()]


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """P(a random positive scores above a random negative), ties counting half; None if a
    group is empty."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def corrupt(step: str) -> str | None:
    """The step with the result of its first right calculation changed so that it is wrong;
    None when it has no checked calculation."""
    for calc in check_step(step).calculations:
        if not calc.ok or calc.written is None or calc.written != int(calc.written):
            continue
        written = int(calc.written)
        eq = step.rfind("=", 0, step.find(str(written), step.find("=")) + 1)
        if eq < 0:
            continue
        m = _NUMBER.search(step, eq)
        if m is None or float(m.group()) != written:
            continue
        bad = written + max(1, abs(written) // 10)
        out = step[: m.start()] + str(bad) + step[m.end() :]
        if check_step(out).verdict == "wrong":
            return out
    return None


def solutions_from_json(path: Path, template: str, problems: list[dict]) -> list[Solution]:
    data = json.loads(path.read_text())
    rows = data["templates"][template]["per_problem"]
    out = []
    for i, row in enumerate(rows):
        for sampled, sol in [(False, row["greedy"])] + [(True, s) for s in row["samples"]]:
            answer = extract_answer(sol["text"])
            correct = answer is not None and answers_equal(answer, row["gold"])
            out.append(
                Solution(
                    i,
                    row["question"],
                    row["gold"],
                    split_steps(sol["text"]),
                    answer,
                    correct,
                    sampled,
                )
            )
    return out


def sample_solutions(engine, problems: list[dict], samples: int, max_tokens: int) -> list[Solution]:
    out = []
    for i, p in enumerate(problems):
        q, gold = p["question"], str(p["answer"])
        greedy = Sampling(temperature=0, to_end=True, max_solution_tokens=max_tokens)
        sampled = Sampling(temperature=0.8, to_end=True, max_solution_tokens=max_tokens, seed=i)
        texts = [(False, engine.next_steps(q, [[]], 1, greedy)[0][0].text)]
        texts += [(True, s.text) for s in engine.next_steps(q, [[]], samples, sampled)[0]]
        for is_sample, text in texts:
            answer = extract_answer(text)
            ok = answer is not None and answers_equal(answer, gold)
            out.append(Solution(i, q, gold, split_steps(text), answer, ok, is_sample))
        logging.info("sampled problem %d/%d", i + 1, len(problems))
    return out


def labelled_steps(solutions: list[Solution]) -> list[dict]:
    """(question, steps up to and including the labelled one, group) for every step."""
    items = []
    for s in solutions:
        group = "right path" if s.correct else "wrong path"
        for j in range(len(s.steps)):
            items.append({"question": s.question, "steps": s.steps[: j + 1], "group": group})
            bad = corrupt(s.steps[j]) if s.correct else None
            if bad is not None:
                steps = [*s.steps[:j], bad]
                items.append({"question": s.question, "steps": steps, "group": "wrong arithmetic"})
    return items


def score_items(scorer, items: list[dict]) -> list[float]:
    """Each item's last-step score, one `score` call per question (the scorer batches and caches)."""
    by_question = defaultdict(list)
    for k, it in enumerate(items):
        by_question[it["question"]].append(k)
    out = [0.0] * len(items)
    for question, ks in by_question.items():
        scores = scorer.score(question, [items[k]["steps"] for k in ks]).steps
        for k, row in zip(ks, scores):
            out[k] = row[-1]
    return out


def best_of_n(solutions: list[Solution], final: dict[int, float]) -> float:
    """Weighted Best-of-N accuracy over each problem's sampled solutions."""
    by_problem = defaultdict(list)
    for k, s in enumerate(solutions):
        if s.sampled:
            by_problem[s.problem].append(k)
    right = 0
    for ks in by_problem.values():
        answers = [solutions[k].answer for k in ks]
        groups = group_answers(answers)
        if not groups:
            continue
        best = max(groups, key=lambda g: sum(final[ks[i]] for i in g))
        right += solutions[ks[best[0]]].correct
    return right / len(by_problem) if by_problem else 0.0


def baselines(solutions: list[Solution]) -> dict[str, float]:
    by_problem = defaultdict(list)
    for s in solutions:
        if s.sampled:
            by_problem[s.problem].append(s)
    greedy = [s.correct for s in solutions if not s.sampled]
    maj, passk = [], []
    for sols in by_problem.values():
        groups = group_answers([s.answer for s in sols])
        maj.append(bool(groups) and sols[max(groups, key=len)[0]].correct)
        passk.append(any(s.correct for s in sols))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {"greedy": mean(greedy), "majority": mean(maj), "pass@k": mean(passk)}


def build_scorers(names: list[str], policy_name: str, judge_name: str, precision: str) -> dict:
    from backend.runtime import POOL
    from backend.verifiers.judge import CheckedJudgePRM, JudgePRM

    scorers = {}
    checker = ArithmeticPRM()
    judge = None
    if {"judge", "veto", "fallback"} & set(names):
        loaded, _ = POOL.bigger(judge_name, precision)
        judge = JudgePRM(loaded.model, loaded.tokenizer, name="judge")
    for name in names:
        if name == "arithmetic":
            scorers[name] = checker
        elif name == "judge":
            scorers[name] = judge
        elif name in ("veto", "fallback"):
            scorers[name] = CheckedJudgePRM(judge, checker, name, name=name)  # shares its cache
        elif name == "self_judge":
            policy = POOL.policy(policy_name, precision)
            scorers[name] = JudgePRM(policy.model, policy.tokenizer)
        elif name in ("value_head", "checker_value_head"):  # the PRM choices value-head and
            prm = "value-head" if name == "value_head" else "checker+value-head"  # checker+…
            scorers[name] = POOL.runtime(policy_name, prm, precision).scorer
    return scorers


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=Path, default=PROBLEMS)
    ap.add_argument("--solutions", type=Path, help="a scripts/measure_prompts.py --json file")
    ap.add_argument("--template", help="the template whose solutions to read from --solutions")
    ap.add_argument("--samples", type=int, default=4, help="without --solutions: sampled here")
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--policy", default="qwen2.5-coder-0.5b")
    ap.add_argument("--judge", default="qwen2.5-coder-1.5b")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--verifiers", default=",".join(VERIFIERS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    names = [v for v in args.verifiers.split(",") if v]
    unknown = set(names) - set(VERIFIERS)
    if unknown:
        ap.error(f"unknown verifiers {sorted(unknown)}; known: {', '.join(VERIFIERS)}")
    problems = json.loads(args.problems.read_text())[: args.limit]
    start = time.perf_counter()
    if args.solutions:
        if not args.template:
            ap.error("--solutions needs --template")
        solutions = [
            s
            for s in solutions_from_json(args.solutions, args.template, problems)
            if s.problem < len(problems)
        ]
    else:
        from backend.catalog import catalog
        from backend.runtime import POOL, make_engine

        policy = POOL.policy(args.policy, args.precision)
        engine = make_engine(policy, args.template or catalog().get(args.policy).prompt)
        solutions = sample_solutions(engine, problems, args.samples, args.max_tokens)
    sampled_s = time.perf_counter() - start
    items = labelled_steps(solutions)
    finals = [(k, s) for k, s in enumerate(solutions)]
    scorers = build_scorers(names, args.policy, args.judge, args.precision)
    results = {}
    for name, scorer in scorers.items():
        t0 = time.perf_counter()
        step_scores = score_items(scorer, items)
        whole = score_items(scorer, [{"question": s.question, "steps": s.steps} for _, s in finals])
        final = {k: v for (k, _), v in zip(finals, whole)}
        by_group = {g: [x for x, it in zip(step_scores, items) if it["group"] == g] for g in GROUPS}
        results[name] = {
            "auroc_all": auroc(
                by_group["right path"], by_group["wrong path"] + by_group["wrong arithmetic"]
            ),
            "auroc_right_vs_wrong_path": auroc(by_group["right path"], by_group["wrong path"]),
            "auroc_right_vs_wrong_arithmetic": auroc(
                by_group["right path"], by_group["wrong arithmetic"]
            ),
            "auroc_final_step": auroc(
                [final[k] for k, s in finals if s.correct and s.steps],
                [final[k] for k, s in finals if not s.correct and s.steps],
            ),
            "weighted_bon": best_of_n(solutions, final),
            "seconds": round(time.perf_counter() - t0, 1),
            "scores": step_scores,
        }
        logging.info("%s: %s", name, {k: v for k, v in results[name].items() if k != "scores"})
    counts = {g: sum(it["group"] == g for it in items) for g in GROUPS}
    out = {
        "config": vars(args) | {"problems": len(problems), "solutions": len(solutions)},
        "groups": counts,
        "baselines": baselines(solutions),
        "sampling_s": round(sampled_s, 1),
        "verifiers": results,
        "items": items,
    }
    print(format_table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return out


def format_table(out: dict) -> str:
    cols = (
        "auroc_all",
        "auroc_right_vs_wrong_path",
        "auroc_right_vs_wrong_arithmetic",
        "auroc_final_step",
        "weighted_bon",
        "seconds",
    )
    heads = ("AUROC all", "right/wrong path", "right/wrong arith", "final step", "w-BoN", "s")
    lines = [
        f"steps: {out['groups']} · {out['config']['solutions']} solutions of "
        f"{out['config']['problems']} problems · baselines {out['baselines']}",
        f"{'verifier':<12}" + "".join(f"{h:>19}" for h in heads),
    ]
    for name, r in out["verifiers"].items():
        cells = [r[c] for c in cols]
        lines.append(
            f"{name:<12}"
            + "".join(
                f"{'—':>19}" if v is None else f"{v:>19.3f}" if isinstance(v, float) else f"{v:>19}"
                for v in cells
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
