"""Train a value head on the policy's own solutions: `python -m app.cli train-verifier`.

1. The problems (tiers or any problem file) are split into train and held-out by a hash of their
   id, so no problem is ever on both sides (`held_out`).
2. Each problem gets K solutions written step by step by the app's engine (DVTS with M=1: K
   independent solutions, T=0.8, seeded per problem), and the hidden state after each step, which
   the engine kept while writing (no extra forward pass). Every step is labelled 1 if its
   solution's answer is right, else 0 (outcome labels); with --rollouts R a step that is not the
   last is labelled by the share of R completions from it that end right (Monte-Carlo labels).
3. Candidate heads are fitted on the train problems and one is chosen by AUROC cross-validated
   with folds by problem: logistic regression at several strengths, and a small MLP (the
   simplest within 0.005 of the best).
4. On the held-out problems it reports (`evaluate`): AUROC of final and of earlier steps,
   calibration, and the answer picked from the K samples by weighted and vanilla Best-of-K under
   the head, the arithmetic checker and the checker's veto in front of the head, against
   majority@K and pass@K; with --beam, beam search under the head; with --bigger, the bigger
   model's greedy answer.
5. The chosen head goes to assets/verifiers/<model>.json with what it saw and how it did.
Work is kept in --out (a line and a .npy of hidden states per problem): a run resumes where it
stopped, and a folder holding other settings is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from app.lab import fitting
from app.lab.problem_sets import Problem, load_problems, resolve_problems
from app.lab.verifier_report import evaluate, print_report
from backend.verifiers.value_head import ValueHead, forward, head_path
from strategies.answers import answers_equal
from strategies.config import SearchConfig
from strategies.registry import run

L2_GRID = (1.0, 10.0, 100.0, 1000.0)
FOLDS = 5
SIMPLER = 0.005  # cross-validated AUROC a simpler head may lose and still be chosen
MIN_AUROC = 0.6  # a head ranking held-out finished solutions worse than this is not written


def held_out(problem_id: str, fraction: float) -> bool:
    """Whether a problem is held out: a hash of its id alone decides, so a problem is on one side
    whatever file or order it comes in."""
    digest = int(hashlib.sha256(problem_id.encode()).hexdigest()[:8], 16)
    return digest % 1000 < round(fraction * 1000)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="the policy (a GGUF one)")
    p.add_argument(
        "--problems",
        default="tier1_one_step,tier2_two_steps,tier3_multi_step",
        help="tiers or problem files, comma-separated",
    )
    p.add_argument("--limit", type=int, default=0, help="problems per file (0: all)")
    p.add_argument("--samples", type=int, default=8, help="solutions per problem (K)")
    p.add_argument(
        "--rollouts", type=int, default=0, help="Monte-Carlo labels: completions per step"
    )
    p.add_argument("--held-out", type=float, default=0.3, help="share of problems held out")
    p.add_argument(
        "--beam", type=int, default=0, help="beam search N under the head (M=4), 0: none"
    )
    p.add_argument(
        "--beam-problems",
        type=int,
        default=20,
        help="beam search and --bigger run on the first "
        "K held-out problems of the last problem set named",
    )
    p.add_argument("--bigger", action="store_true", help="the bigger model's greedy answers too")
    p.add_argument(
        "--confidence",
        action="store_true",
        help="also the policy's own token confidence (no training) as a verifier",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head", type=Path, default=None, help="where to write the head")
    p.add_argument("--out", type=Path, default=Path("runs/verifier"), help="work folder")


def main(args: argparse.Namespace) -> int:
    from backend.loading.policy import gguf_sha256
    from backend.runtime import POOL, make_engine

    loaded = POOL.policy(args.model)
    if loaded.source != "gguf":
        print(
            f"error: {args.model} is no GGUF policy: a value head reads llama.cpp's hidden states",
            file=sys.stderr,
        )
        return 2
    engine = make_engine(loaded, _catalog_prompt(args.model))
    problems = _problems(args.problems, args.limit)
    settings = {
        "model": args.model,
        "model_sha256": gguf_sha256(args.model, loaded.model.path),
        "samples": args.samples,
        "rollouts": args.rollouts,
        "seed": args.seed,
        "held_out": args.held_out,
    }
    _check_folder(args.out, settings)
    records = sample_all(engine, problems, args, settings)
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "held_out"]
    t0 = time.perf_counter()
    head, candidates = fit(train, args.out, settings)
    fit_s = time.perf_counter() - t0
    report = evaluate(head, test, rows(test, args.out), engine, args, loaded)
    report |= {
        "candidates": candidates,
        "fit_s": round(fit_s, 1),
        "sampling_s": round(sum(r["seconds"] for r in records), 1),
    }
    head.info = {
        "trained_on": {
            "problems": sorted(r["id"] for r in train),
            "files": args.problems,
            "solutions": sum(len(r["solutions"]) for r in train),
            "steps": sum(len(s["steps"]) for r in train for s in r["solutions"]),
            "samples_per_problem": args.samples,
            "rollouts": args.rollouts,
            "seed": args.seed,
            "labels": "monte-carlo" if args.rollouts else "outcome",
        },
        "held_out": {k: report[k] for k in ("problems", "auroc_final", "auroc_earlier", "ece")},
        "created": time.strftime("%Y-%m-%d"),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print_report(report)
    if (report["auroc_final"] or 0.0) < MIN_AUROC:
        print(
            f"no head written: on the held-out problems it ranks finished solutions at AUROC "
            f"{report['auroc_final']} (needs {MIN_AUROC}): it learned too little to guide a "
            f"search; report: {args.out / 'report.json'}",
            file=sys.stderr,
        )
        return 1
    path = args.head or head_path(args.model)
    head.save(path)
    print(f"head: {path}; report: {args.out / 'report.json'}")
    return 0


def _catalog_prompt(name: str) -> str:
    from backend.catalog import catalog

    return catalog().get(name, "policy").prompt


def _problems(names: str, limit: int) -> list[Problem]:
    out: list[Problem] = []
    for name in [n for n in names.split(",") if n]:
        found = load_problems(resolve_problems(name))
        out += found[:limit] if limit else found
    return out


def _check_folder(out: Path, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != settings:
        raise SystemExit(
            f"error: {out} holds a run with other settings ({stamp}); choose another --out"
        )
    stamp.write_text(json.dumps(settings, indent=1))


def _feature_file(out: Path, problem_id: str) -> Path:
    return out / "hidden" / (re.sub(r"[^A-Za-z0-9_.-]", "_", problem_id) + ".npy")


def sample_all(engine, problems: list[Problem], args, settings: dict) -> list[dict]:
    """Every problem's record (solutions, labels, split), sampling those not done yet; prints
    progress with the time left."""
    path = args.out / "records.jsonl"
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if _feature_file(args.out, record["id"]).is_file():
                done[record["id"]] = record
    todo = [p for p in problems if p.id not in done]
    print(
        f"{len(problems)} problems: {len(done)} sampled before, {len(todo)} to sample",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    with path.open("a") as sink:
        for k, problem in enumerate(todo, 1):
            record, hidden = sample_problem(engine, problem, args)
            np.save(_feature_file(args.out, problem.id), hidden.astype(np.float32))
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            done[problem.id] = record
            spent = time.perf_counter() - t0
            left = spent / k * (len(todo) - k)
            print(
                f"[{k}/{len(todo)}] {problem.id}: {sum(s['right'] for s in record['solutions'])}"
                f"/{args.samples} right, {record['seconds']:.0f} s; about {left / 60:.0f} min "
                "left",
                file=sys.stderr,
                flush=True,
            )
    return [done[p.id] for p in problems]


def sample_problem(engine, problem: Problem, args) -> tuple[dict, np.ndarray]:
    """K solutions to one problem, written step by step, with each step's hidden state and label."""
    from backend.verifiers.arithmetic import ArithmeticPRM

    (args.out / "hidden").mkdir(exist_ok=True)
    seed = int(hashlib.sha256(f"{args.seed}:{problem.id}".encode()).hexdigest()[:8], 16)
    config = SearchConfig(
        strategy="dvts",
        n=args.samples,
        beam_width=1,
        max_iterations=10,
        max_step_tokens=96,
        max_solution_tokens=512,
        seed=seed,
    )
    t0 = time.perf_counter()
    tree = run(problem.problem, config, engine, ArithmeticPRM())  # M=1: the checker picks nothing
    solutions, hidden = [], []
    for leaf in tree.leaves():
        steps = tree.steps(leaf.id)
        right = leaf.answer is not None and answers_equal(leaf.answer, problem.answer)
        labels = [float(right)] * len(steps)
        if args.rollouts:
            labels[:-1] = [
                _rollout_label(engine, problem, steps[: j + 1], args, seed + j)
                for j in range(len(steps) - 1)
            ]
        hidden += [engine.hidden_state(problem.problem, steps[: j + 1]) for j in range(len(steps))]
        solutions.append({"steps": steps, "answer": leaf.answer, "right": right, "labels": labels})
    record = {
        "id": problem.id,
        "tier": problem.tier,
        "question": problem.problem,
        "gold": problem.answer,
        "split": "held_out" if held_out(problem.id, args.held_out) else "train",
        "solutions": solutions,
        "tokens": tree.compute.generated_tokens,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return record, np.stack(hidden)


def _rollout_label(engine, problem: Problem, steps: list[str], args, seed: int) -> float:
    """The share of R completions from `steps` that end at the right answer."""
    from strategies.answers import extract_answer
    from strategies.protocols import Sampling

    sampling = Sampling(
        temperature=0.8, max_step_tokens=96, max_solution_tokens=512, seed=seed, to_end=True
    )
    ends = engine.next_steps(problem.problem, [steps], args.rollouts, sampling)[0]
    answers = [extract_answer(e.text) or extract_answer("".join(steps)) for e in ends]
    return sum(a is not None and answers_equal(a, problem.answer) for a in answers) / len(ends)


def rows(records: list[dict], out: Path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Hidden states, labels, problem ids and "is a final step" of every step of `records`."""
    xs, ys, groups, final = [], [], [], []
    for r in records:
        xs.append(np.load(_feature_file(out, r["id"])))
        for s in r["solutions"]:
            ys += s["labels"]
            groups += [r["id"]] * len(s["labels"])
            final += [j == len(s["labels"]) - 1 for j in range(len(s["labels"]))]
    return np.concatenate(xs).astype(np.float64), np.array(ys), groups, np.array(final)


def fit(train: list[dict], out: Path, settings: dict) -> tuple[ValueHead, list[dict]]:
    """The candidate with the best cross-validated AUROC, refitted on all of `train`."""
    x, y, groups, _ = rows(train, out)
    masks = fitting.folds(groups, FOLDS)
    candidates = [("linear", l2) for l2 in L2_GRID] + [("mlp", 1e-2), ("mlp", 1e-1)]
    scored = []
    for kind, l2 in candidates:
        cv = np.zeros(len(y))
        for held in masks:
            mean, std = fitting.standardise(x[~held])
            layers = _fit(kind, (x[~held] - mean) / std, y[~held], l2)
            cv[held] = forward(layers, (x[held] - mean) / std)
        auc = fitting.auroc(cv, y > 0.5)
        scored.append({"kind": kind, "l2": l2, "cv_auroc": None if auc is None else round(auc, 4)})
        print(f"  {kind} l2={l2}: cross-validated AUROC {auc}", file=sys.stderr)
    # the simplest candidate within SIMPLER of the best (linear before MLP, stronger L2 first):
    # a difference that small is noise, and a linear head is 60 times smaller
    top = max(c["cv_auroc"] or 0.0 for c in scored)
    simplest = sorted(scored, key=lambda c: (c["kind"] != "linear", -c["l2"]))
    best = next(c for c in simplest if (c["cv_auroc"] or 0.0) >= top - SIMPLER)
    mean, std = fitting.standardise(x)
    layers = _fit(best["kind"], (x - mean) / std, y, best["l2"])
    head = ValueHead(settings["model"], settings["model_sha256"], best["kind"], mean, std, layers)
    return head, scored


def _fit(kind: str, z: np.ndarray, y: np.ndarray, l2: float):
    if kind == "linear":
        w, b = fitting.fit_linear(z, y, l2)
        return [(w[None, :], np.array([b]))]
    return fitting.fit_mlp(z, y, l2=l2)
