"""Fit compute-optimal's policy on one half of a tier's problems and check it on the other.

    python -m app.lab.compute_optimal_fit runs/tier3/results.json [runs/tier3-m2/results.json ...] \
        [--out assets/compute_optimal.json]

Reads a scaling run (app/lab/harness.py) that ran the sampling strategies (their first
`PROBE_SAMPLES` samples are each problem's probe) and the candidates. The problems are split in
two halves by a hash of their ids, so the halves never share a problem and the split does not
depend on the file's order. On the fitting half: the quantile edges of the probe signal, then per
bin and budget the candidate with the best accuracy there. A candidate is a strategy with its
hyperparameters: the aggregation of the step scores (the harness records Best-of-N under each
one, from the same samples) and M (a search's beam width: one run per M, fitted together). On
the checking half: the policy's accuracy against the best single candidate (the one best on the
fitting half overall) at the same budget. The policy is stored per model and verifier; the
report says what the check showed, whatever it showed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from backend.fitted_policies import POLICY_PATH, store
from strategies.compute_optimal import CHOOSABLE
from strategies.difficulty import BINS, Choice, Policy, bin_of, quantile_edges
from strategies.info import STRATEGY_INFO


def halves(problem_ids: list[str]) -> tuple[list[str], list[str]]:
    """(fitting, checking): every other problem in the order of their ids' sha256."""
    ranked = sorted(set(problem_ids), key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    return ranked[0::2], ranked[1::2]


Candidate = tuple[str, str, int | None]  # (strategy, aggregation, M; None for sampling)


def candidate_of(record: dict[str, Any], settings: dict[str, Any]) -> Candidate:
    """What a record measured: its strategy, its aggregation and, for a search, its M."""
    how = record.get("aggregation", "last")
    info = STRATEGY_INFO.get(record["strategy"])  # None: the greedy and bigger references
    if info is not None and info.uses_beam_width:
        m = record.get("beam_width", min(int(settings.get("beam_width", 4)), record["budget"]))
        return (record["strategy"], how, int(m))
    return (record["strategy"], how, None)


def shown(c: Candidate) -> str:
    """A candidate as the report writes it: "beam_search M=2", "best_of_n (min)"."""
    strategy, how, m = c
    return strategy + (f" M={m}" if m else "") + (f" ({how})" if how != "last" else "")


def merged(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several scaling runs of one model, verifier and problem set (another M, say) as one:
    their records, each measurement once (the first run's where two measured the same)."""
    first = runs[0]["settings"]
    for run in runs[1:]:
        s = run["settings"]
        for key in ("model", "prm", "problems"):
            if s.get(key) != first.get(key):
                raise ValueError(f"the runs differ in {key}: {first.get(key)} vs {s.get(key)}")
    seen: set[tuple[Any, ...]] = set()
    records = []
    for run in runs:
        for r in run["records"]:
            candidate = candidate_of(r, run["settings"])
            key = (r["problem"], r["seed"], r["budget"], candidate)
            if key not in seen:
                seen.add(key)
                records.append({**r, "candidate": candidate})
    budgets = sorted({b for run in runs for b in run["budgets"]})
    return {
        "settings": first,
        "budgets": budgets,
        "records": records,
        "strategies": [s for run in runs for s in run["strategies"]],
    }


def _table(records: list[dict[str, Any]]) -> dict[tuple[str, Candidate, int], list[bool]]:
    cells: dict[tuple[str, Candidate, int], list[bool]] = defaultdict(list)
    for r in records:
        cells[(r["problem"], r["candidate"], r["budget"])].append(bool(r["correct"]))
    return cells


def _accuracy(cells, problems, candidate: Candidate, budget: int) -> float | None:
    hits = [c for p in problems for c in cells.get((p, candidate, budget), [])]
    return sum(hits) / len(hits) if hits else None


def fit(results: dict[str, Any] | list[dict[str, Any]]) -> tuple[Policy, dict[str, Any]]:
    """The policy fitted on the fitting half, and the check on the other half, from one
    scaling run or several (`merged`)."""
    results = merged(results if isinstance(results, list) else [results])
    records = results["records"]
    probes = {r["problem"]: r["probe"] for r in records if r.get("probe") and r["seed"] == 0}
    if len(probes) < 2 * BINS:
        raise ValueError(
            f"{len(probes)} problems have a probe; fitting {BINS} bins needs at "
            f"least {2 * BINS} (run the sampling strategies at budget >= 4)"
        )
    fit_ids, check_ids = halves(list(probes))
    edges = quantile_edges([probes[p]["signal"] for p in fit_ids])
    cells = _table(records)
    tokens = {
        (r["problem"], r["candidate"], r["budget"]): r["tokens"] for r in records if r["seed"] == 0
    }
    settings = results["settings"]
    # CHOOSABLE order, then the run's own aggregation and M before their variants: ties go to
    # the simpler choice
    order = {s: i for i, s in enumerate(CHOOSABLE)}
    everyone = sorted(
        {r["candidate"] for r in records if r["candidate"][0] in order},
        key=lambda c: (order[c[0]], c[1] != "last", c[1], -(c[2] or 0)),
    )
    choices: dict[int, tuple[Choice, ...]] = {}
    report: dict[str, Any] = {
        "fitting": len(fit_ids),
        "checking": len(check_ids),
        "candidates": [shown(c) for c in everyone],
        "budgets": {},
    }
    for budget in results["budgets"]:
        here = [c for c in everyone if _accuracy(cells, fit_ids, c, budget) is not None]
        if not here:
            continue
        # stable sorts: ties keep `everyone`'s order
        ranked = sorted(here, key=lambda c: -_accuracy(cells, fit_ids, c, budget))
        per_bin, bin_best, bin_report = [], [], []
        for k in range(BINS):
            members = [p for p in fit_ids if bin_of(probes[p]["signal"], edges) == k]
            scores = {c: _accuracy(cells, members, c, budget) for c in here}
            # a tie in the bin goes to the candidate best on the whole fitting half: a bin of a
            # few problems should not move the choice off it without evidence
            order_k = (
                sorted((c for c in ranked if scores[c] is not None), key=lambda c: -scores[c])
                or ranked
            )
            best = order_k[0]
            second = next((c for c in order_k[1:] if c[0] != best[0]), order_k[-1])
            m = best[2] or int(settings.get("beam_width", 4))
            per_bin.append(
                Choice(
                    best[0],
                    m,
                    best[1],
                    scores.get(best) or 0.0,
                    second[0],
                    scores.get(second) or 0.0,
                )
            )
            bin_best.append(best)
            bin_report.append(
                {"problems": len(members), "choice": shown(best), "accuracy": scores.get(best)}
            )
        choices[budget] = tuple(per_bin)
        picks = {p: bin_best[bin_of(probes[p]["signal"], edges)] for p in check_ids}
        hits = [c for p in check_ids for c in cells.get((p, picks[p], budget), [])]
        single = ranked[0]
        co_tokens = [
            _co_tokens(tokens.get((p, picks[p], budget), 0), picks[p], probes[p].get("tokens", 0))
            for p in check_ids
        ]
        single_tokens = [tokens.get((p, single, budget), 0) for p in check_ids]
        report["budgets"][str(budget)] = {
            "compute_optimal": sum(hits) / len(hits) if hits else None,
            "compute_optimal_right": sum(hits),
            "checked": len(hits),
            "compute_optimal_tokens": sum(co_tokens) / max(1, len(co_tokens)),
            "best_single": shown(single),
            "best_single_accuracy": _accuracy(cells, check_ids, single, budget),
            "best_single_tokens": sum(single_tokens) / max(1, len(single_tokens)),
            "bins": bin_report,
        }
    policy = Policy(tuple(edges), choices, fitted_on=str(settings.get("problems", "")))
    return policy, report


def _co_tokens(tokens: int, pick: Candidate, probe: int) -> int:
    """Compute-optimal's tokens on one problem: a search pays for the probe on top of its own;
    sampling keeps the probe's samples as its first ones (strategies/compute_optimal.py), as
    the harness's probe is the first samples of the sampling run, so it pays for the larger of
    the two (the probe alone when the budget is below the probe's samples)."""
    return max(tokens, probe) if pick[2] is None else tokens + probe


def check_table(entry: dict[str, Any]) -> str:
    """A stored policy's check as markdown: per budget, compute-optimal on the checking half
    (its probe's tokens included) against the best single candidate, and the choice per bin."""
    report = entry.get("check", {})
    lines = [
        f"Fitted on `{entry.get('fitted_on', '?')}`: {report.get('fitting', '?')} problems "
        f"to fit, the other {report.get('checking', '?')} to check.",
        "",
        "| N | compute-optimal | best single candidate | chosen per bin (hardest → easiest) |",
        "|---|---|---|---|",
    ]
    for budget, r in sorted(report.get("budgets", {}).items(), key=lambda kv: int(kv[0])):
        co, single = r.get("compute_optimal"), r.get("best_single_accuracy")
        lines.append(
            f"| {budget} | {_pct(co)} · {r['compute_optimal_tokens']:,.0f} tokens | "
            f"{r['best_single']}: {_pct(single)} · {r['best_single_tokens']:,.0f} tokens | "
            + " · ".join(b["choice"] for b in r.get("bins", []))
            + " |"
        )
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="one scaling run's results.json, or "
        "several of the same problems (another --beam-width): fitted as one",
    )
    ap.add_argument("--out", type=Path, default=POLICY_PATH)
    args = ap.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.results]
    try:
        policy, report = fit(runs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    s = runs[0]["settings"]
    store(policy, report, s["model"], s["prm"], args.out)
    for budget, r in report["budgets"].items():
        co = r["compute_optimal"]
        print(
            f"N={budget}: compute-optimal {co:.0%} ({r['compute_optimal_tokens']:.0f} tokens, "
            f"its probe included) vs the best single strategy ({r['best_single']}) "
            f"{r['best_single_accuracy']:.0%} ({r['best_single_tokens']:.0f} tokens) on the "
            f"{report['checking']} checking problems; per bin: "
            + ", ".join(b["choice"] for b in r["bins"])
        )
    print(f"stored in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
