"""Fit compute-optimal's policy on one half of a tier's problems and check it on the other.

    python -m app.fit_compute_optimal runs/tier3/results.json [--out assets/compute_optimal.json]

Reads a scaling run (app/evaluation.py) that ran the sampling strategies (their first
`PROBE_SAMPLES` samples are each problem's probe) and the candidates. The problems are split in
two halves by a hash of their ids, so the halves never share a problem and the split does not
depend on the file's order. On the fitting half: the quantile edges of the probe signal, then per
bin and budget the candidate with the best accuracy there. On the checking half: the policy's
accuracy against the best single strategy (the one best on the fitting half overall) at the same
budget. The policy is stored per model and verifier; the report says what the check showed,
whatever it showed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from strategies.difficulty import BINS, Choice, Policy, bin_of, quantile_edges

ROOT = Path(__file__).resolve().parents[1]
POLICY_PATH = ROOT / "assets" / "compute_optimal.json"
CANDIDATES = ("majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts")


def halves(problem_ids: list[str]) -> tuple[list[str], list[str]]:
    """(fitting, checking): every other problem in the order of their ids' sha256."""
    ranked = sorted(set(problem_ids), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    return ranked[0::2], ranked[1::2]


def _table(records: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[bool]]:
    cells: dict[tuple[str, str, int], list[bool]] = defaultdict(list)
    for r in records:
        cells[(r["problem"], r["strategy"], r["budget"])].append(bool(r["correct"]))
    return cells


def _accuracy(cells, problems, strategy: str, budget: int) -> float | None:
    hits = [c for p in problems for c in cells.get((p, strategy, budget), [])]
    return sum(hits) / len(hits) if hits else None


def fit(results: dict[str, Any]) -> tuple[Policy, dict[str, Any]]:
    """The policy fitted on the fitting half, and the check on the other half."""
    records = results["records"]
    probes = {r["problem"]: r["probe"] for r in records if r.get("probe") and r["seed"] == 0}
    if len(probes) < 2 * BINS:
        raise ValueError(f"{len(probes)} problems have a probe; fitting {BINS} bins needs at "
                         f"least {2 * BINS} (run the sampling strategies at budget >= 4)")  # fmt: skip
    fit_ids, check_ids = halves(list(probes))
    edges = quantile_edges([probes[p]["signal"] for p in fit_ids])
    cells = _table(records)
    tokens = {(r["problem"], r["strategy"], r["budget"]): r["tokens"] for r in records
              if r["seed"] == 0}  # fmt: skip
    strategies = [s for s in CANDIDATES if s in results["strategies"]]
    settings = results["settings"]
    choices: dict[int, tuple[Choice, ...]] = {}
    report: dict[str, Any] = {"fitting": len(fit_ids), "checking": len(check_ids), "budgets": {}}
    for budget in results["budgets"]:
        overall = {s: _accuracy(cells, fit_ids, s, budget) for s in strategies}
        ranked = sorted(
            (s for s in strategies if overall[s] is not None), key=lambda s: -overall[s]
        )  # stable: ties keep CANDIDATES order
        if not ranked:
            continue
        per_bin = []
        for k in range(BINS):
            members = [p for p in fit_ids if bin_of(probes[p]["signal"], edges) == k]
            scores = {s: _accuracy(cells, members, s, budget) for s in strategies}
            order = sorted((s for s in strategies if scores[s] is not None),
                           key=lambda s: -scores[s]) or ranked  # fmt: skip
            best = order[0]
            second = order[1] if len(order) > 1 else best
            per_bin.append(Choice(
                best, int(settings.get("beam_width", 4)), "last", scores.get(best) or 0.0,
                second, scores.get(second) or 0.0))  # fmt: skip
        choices[budget] = tuple(per_bin)
        picks = {p: per_bin[bin_of(probes[p]["signal"], edges)].strategy for p in check_ids}
        hits = [c for p in check_ids for c in cells.get((p, picks[p], budget), [])]
        single = ranked[0]
        # tokens per problem: compute-optimal pays for its probe on top of the strategy it picks
        co_tokens = [tokens.get((p, picks[p], budget), 0) + probes[p].get("tokens", 0)
                     for p in check_ids]  # fmt: skip
        single_tokens = [tokens.get((p, single, budget), 0) for p in check_ids]
        report["budgets"][str(budget)] = {
            "compute_optimal": sum(hits) / len(hits) if hits else None,
            "compute_optimal_tokens": sum(co_tokens) / max(1, len(co_tokens)),
            "best_single": single,
            "best_single_accuracy": _accuracy(cells, check_ids, single, budget),
            "best_single_tokens": sum(single_tokens) / max(1, len(single_tokens)),
        }
    policy = Policy(tuple(edges), choices, fitted_on=str(settings.get("problems", "")))
    return policy, report


def store(policy: Policy, report: dict[str, Any], model: str, prm: str,
          path: Path = POLICY_PATH) -> None:  # fmt: skip
    """Keep `policy` for (model, prm) in `path`, beside those of other models."""
    data = json.loads(path.read_text()) if path.is_file() else {"policies": {}}
    data["policies"][f"{model}|{prm}"] = {**policy.to_dict(), "check": report}
    path.write_text(json.dumps(data, indent=1) + "\n")


def stored_policy(model: str, prm: str, path: Path = POLICY_PATH) -> Policy | None:
    """The fitted policy for (model, prm), or None when none was fitted."""
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get("policies", {}).get(f"{model}|{prm}")
    return Policy.from_dict(entry) if entry else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, default=POLICY_PATH)
    args = ap.parse_args(argv)
    results = json.loads(args.results.read_text())
    try:
        policy, report = fit(results)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    s = results["settings"]
    store(policy, report, s["model"], s["prm"], args.out)
    for budget, r in report["budgets"].items():
        co = r["compute_optimal"]
        print(f"N={budget}: compute-optimal {co:.0%} ({r['compute_optimal_tokens']:.0f} tokens, "
              f"its probe included) vs the best single strategy ({r['best_single']}) "
              f"{r['best_single_accuracy']:.0%} ({r['best_single_tokens']:.0f} tokens) on the "
              f"{report['checking']} checking problems")  # fmt: skip
    print(f"stored in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
