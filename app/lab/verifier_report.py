"""How a value head does on problems it never saw: ranking, calibration, and the answers it picks.

On the held-out problems' K samples: AUROC of final steps and of earlier ones, the expected
calibration error of final steps, and the accuracy of weighted and vanilla Best-of-K under the
head (a solution's score: its last step's, or its lowest), under the arithmetic checker, and under
the checker's veto in front of the head, against majority@K and pass@K. Optionally beam search
(N, M=4) under the head and under the checker, on the same problems with the same seeds, and the
bigger model's greedy answer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from app.lab import fitting
from app.request import PRESET
from strategies.answers import answers_equal
from strategies.config import SearchConfig
from strategies.info import Pick
from strategies.registry import run
from strategies.search_run import choose
from strategies.tree import Node


def _pick(answers: list, scores: list[float] | None, rule: Pick) -> str | None:
    """The answer the product's rule `rule` (strategies/search_run.py: choose) picks from K
    finished samples with these final scores."""
    leaves = [
        Node(i + 1, 0, 1, answer=a, agg_score=None if scores is None else scores[i])
        for i, a in enumerate(answers)
    ]
    return choose(leaves, rule)[0]


def evaluate(head, test: list[dict], features, engine, args, loaded) -> dict:
    """`features`: the held-out steps' hidden states, labels, problem ids and "is a final step"."""
    from backend.verifiers.arithmetic import ArithmeticPRM
    from backend.verifiers.judge import CheckedJudgePRM

    x, y, _, final = features
    scores = head.predict(x)
    report: dict[str, Any] = {
        "problems": len(test),
        "auroc_final": _round(fitting.auroc(scores[final], y[final] > 0.5)),
        "auroc_earlier": _round(fitting.auroc(scores[~final], y[~final] > 0.5)),
        "ece": fitting.calibration(scores[final], y[final] > 0.5)["ece"],
        "calibration": fitting.calibration(scores[final], y[final] > 0.5)["bins"],
    }
    checker = ArithmeticPRM()
    picks: dict[str, dict[str, bool]] = {}  # per problem, whether each rule's pick is right
    solution_level: dict[str, list[float]] = {}  # a finished solution's score, per verifier
    solution_labels: list[bool] = []
    k = 0
    for r in test:
        answers = [s["answer"] for s in r["solutions"]]
        per_step = []
        for s in r["solutions"]:
            per_step.append(scores[k : k + len(s["steps"])])
            k += len(s["steps"])
        sols = [s["steps"] for s in r["solutions"]]
        checked = checker.score(r["question"], sols).steps
        known = {
            (r["question"], tuple(steps[: j + 1])): float(h[j])
            for steps, h in zip(sols, per_step)
            for j in range(len(steps))
        }
        vetoed = CheckedJudgePRM(_Scored(known), checker).score(r["question"], sols).steps
        finals = {
            "head": [float(h[-1]) for h in per_step],
            "head_min": [float(h.min()) for h in per_step],
            "checker": [c[-1] for c in checked],
            "veto": [float(v[-1]) for v in vetoed],
        }
        if getattr(args, "confidence", False):  # the policy's own token confidence, no training
            for name, value in _confidences(engine, r).items():
                finals[name] = value
                solution_level.setdefault(name, []).extend(value)
        for name in ("head", "checker", "veto"):
            solution_level.setdefault(name, []).extend(finals[name])
        solution_labels += [s["right"] for s in r["solutions"]]
        choices = {"majority": _pick(answers, None, "majority")}
        for name, fs in finals.items():
            for rule in ("weighted", "vanilla"):
                choices[f"{rule}_{name}"] = _pick(answers, fs, rule)
        right = {n: a is not None and answers_equal(a, r["gold"]) for n, a in choices.items()}
        picks[r["id"]] = right | {"pass": any(s["right"] for s in r["solutions"])}
    report["auroc_solutions"] = {
        name: _round(fitting.auroc(v, solution_labels)) for name, v in solution_level.items()
    }
    report["k"] = len(test[0]["solutions"]) if test else 0
    report["accuracy"] = _shares(picks, [r["id"] for r in test])
    report["by_tier"] = {
        tier: _shares(picks, [r["id"] for r in test if r["tier"] == tier])
        for tier in dict.fromkeys(r["tier"] for r in test)
    }
    # beam search and the bigger model: on the held-out problems of the last problem set named
    # (the hardest, by the tiers' order), the first --beam-problems of them
    few = [r for r in test if r["tier"] == test[-1]["tier"]][: args.beam_problems] if test else []
    if args.beam:
        from backend.verifiers.value_head import ValueHeadPRM

        ids = [r["id"] for r in few]
        report["beam"] = {
            "n": args.beam,
            "problems": len(few),
            **_shares(picks, ids),
            "head": _search_accuracy(few, engine, ValueHeadPRM(engine, head), args.beam),
            "checker": _search_accuracy(few, engine, checker, args.beam),
        }
    if args.bigger:
        report["bigger"] = _bigger_accuracy(few, args.model)
    return report


class _Scored:
    """A judge whose scores are known already (the head's, over the stored hidden states), so
    the checker's veto in front of it is the product's own (CheckedJudgePRM)."""

    def __init__(self, known: dict) -> None:
        self.known = known

    def judge_keys(self, keys: list) -> tuple[dict, int]:
        return {k: self.known[k] for k in keys}, 0


def _confidences(engine, record: dict, window: int = 16) -> dict[str, list[float]]:
    """Per solution: the geometric mean of its tokens' probabilities (self-certainty's simplest
    form) and the lowest such mean over any `window` tokens in a row (DeepConf's lowest group
    confidence, Fu et al. 2025), both from the policy's own log-probabilities."""
    mean, lowest = [], []
    for s in record["solutions"]:
        lp = np.concatenate([np.zeros(0), *engine.token_logprobs(record["question"], s["steps"])])
        lp = lp if len(lp) else np.zeros(1)
        windows = np.convolve(lp, np.ones(window) / window, "valid") if len(lp) >= window else lp
        mean.append(float(np.exp(lp.mean())))
        lowest.append(float(np.exp(windows.min())))
    return {"confidence": mean, "confidence_window": lowest}


def _search_accuracy(test: list[dict], engine, scorer, n: int) -> dict:
    config = SearchConfig(
        strategy="beam_search",
        n=n,
        beam_width=min(4, n),
        max_iterations=10,
        max_step_tokens=96,
        max_solution_tokens=512,
        seed=0,
    )
    return _accuracy(test, lambda r: run(r["question"], config, engine, scorer).answer)


def _bigger_accuracy(test: list[dict], model: str) -> dict:
    from backend.catalog import catalog
    from backend.runtime import POOL

    name = catalog().get(model, "policy").bigger
    if not name:
        return {"model": None}
    _, engine = POOL.bigger(name)
    greedy = replace(PRESET, strategy="majority_vote", n=1, temperature=0.0)
    out = _accuracy(test, lambda r: run(r["question"], greedy, engine, None).answer)
    return {"model": name, **out}


def _accuracy(test: list[dict], answer_of: Callable[[dict], Any]) -> dict:
    right = []
    for i, r in enumerate(test, 1):
        answer = answer_of(r)
        right.append(answer is not None and answers_equal(answer, r["gold"]))
        print(
            f"  [{i}/{len(test)}] {r['id']}: {answer} ({'right' if right[-1] else 'wrong'})",
            file=sys.stderr,
            flush=True,
        )
    return _share(right)


def _shares(picks: dict[str, dict[str, bool]], ids: list[str]) -> dict[str, dict]:
    """Each rule's right picks over the problems `ids`."""
    rules = next(iter(picks.values()), {})
    return {rule: _share([picks[i][rule] for i in ids]) for rule in rules}


def _share(flags: list[bool]) -> dict:
    return {
        "right": int(sum(flags)),
        "of": len(flags),
        "accuracy": round(sum(flags) / len(flags), 3) if flags else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def print_report(report: dict) -> None:
    print(f"held-out problems: {report['problems']} (K={report['k']} samples each)")
    print(
        f"AUROC final steps {report['auroc_final']}, earlier steps {report['auroc_earlier']}, "
        f"ECE {report['ece']}"
    )
    tiers = list(report["by_tier"])
    print(f"  {'rule':20s} {'all':>9s}" + "".join(f"{t[:9]:>12s}" for t in tiers))
    for name, cell in report["accuracy"].items():
        cells = [report["by_tier"][t][name] for t in tiers]
        print(
            f"  {name:20s} {cell['right']:3d}/{cell['of']:<4d}"
            + "".join(f"{c['right']:7d}/{c['of']:<4d}" for c in cells)
        )
    print(f"  AUROC of finished solutions: {report['auroc_solutions']}")
    if "beam" in report:
        b = report["beam"]
        print(
            f"  on {b['problems']} of them: beam N={b['n']} under the head "
            f"{b['head']['right']}, under the checker {b['checker']['right']}; majority@K "
            f"{b['majority']['right']}, weighted under the head {b['weighted_head']['right']}"
        )
    if report.get("bigger", {}).get("model"):
        big = report["bigger"]
        print(f"  {big['model']} greedy  {big['right']}/{big['of']}")
