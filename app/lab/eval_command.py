"""The scaling lab's command line: `python -m app.cli eval`, its presets and flags, and publishing.

    python -m app.cli eval --problems tier2_two_steps \\
        --strategies majority_vote,best_of_n,weighted_best_of_n,beam_search,dvts \\
        --budgets 1,2,4,8,16 [--model NAME] [--prm NAME] [--seeds K] [--limit K] \\
        [--preset quick] [--publish] --out DIR

What runs and how it is read: app/lab/harness.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.lab.harness import Plan, evaluate, harness_settings, plan
from strategies.info import STRATEGY_NAMES

# `--preset quick`: what finishes on 2 CPU cores within 10 minutes with the default model and
# verifier (docs/scaling-lab.md); a flag given beside it wins
PRESETS = {
    "quick": dict(
        problems="tier2_two_steps",
        strategies="majority_vote,weighted_best_of_n,beam_search",
        budgets="1,2,4",
        limit=10,
        seeds=1,
    ),
}
DEFAULTS = dict(
    problems="tier3_multi_step",
    strategies="majority_vote,best_of_n,weighted_best_of_n,beam_search,dvts",
    budgets="1,2,4,8,16",
    limit=None,
    seeds=1,
)


def add_arguments(p: Any) -> None:
    """The `eval` subcommand's flags (app/cli.py)."""
    p.add_argument(
        "--problems",
        help="a JSONL problem file, or a tier name (app/lab/problem_sets.py "
        f"TIERS; default {DEFAULTS['problems']})",
    )
    p.add_argument("--strategies", help=f"comma-separated, from {', '.join(STRATEGY_NAMES)}")
    p.add_argument("--budgets", help="comma-separated budgets N (default 1,2,4,8,16)")
    p.add_argument("--model", help="the policy (default: the app's starting model)")
    p.add_argument("--prm", help="the verifier (default: the catalog's)")
    p.add_argument("--precision", default="auto")
    p.add_argument(
        "--bigger",
        default="auto",
        help="the model whose greedy accuracy is the "
        "dashed line ('auto': the catalog's for the policy; 'none')",
    )
    p.add_argument("--beam-width", type=int, default=4, help="M for beam search and DVTS")
    p.add_argument("--seeds", type=int, help="seeds per problem (default 1)")
    p.add_argument("--limit", type=int, help="the first K problems only")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, required=True, help="folder for records, results, figure")
    p.add_argument(
        "--publish",
        action="store_true",
        help="also store the curves (no "
        "per-problem records) in assets/scaling/ for the app's Scaling tab",
    )


def plan_from_args(args: Any) -> Plan:
    """The plan for the `eval` flags: a preset's values, then the flags given, then DEFAULTS."""
    from app.lab.problem_sets import load_problems, resolve_problems
    from app.request import NO_BIGGER, RunRequest, starting_model
    from backend.catalog import catalog
    from backend.verifiers.value_head import trained_on

    base = {**DEFAULTS, **PRESETS.get(args.preset or "", {})}
    pick = {k: getattr(args, k) if getattr(args, k) is not None else base[k] for k in base}
    path = resolve_problems(pick["problems"])
    model = args.model or starting_model()
    prm = args.prm or catalog().default_prm
    seen = trained_on(prm, model)  # a learned verifier is never scored on what it saw
    problems = [p for p in load_problems(path) if p.id not in seen][: pick["limit"]]
    bigger = None
    if args.bigger != NO_BIGGER:
        probe = RunRequest("?", model=model, prm=prm, bigger=args.bigger)
        bigger = probe.bigger_model
    settings = harness_settings(model, prm, path, args.precision, args.beam_width, bigger)
    budgets = [int(b) for b in str(pick["budgets"]).split(",") if b.strip()]
    return plan(problems, str(pick["strategies"]).split(","), budgets, int(pick["seeds"]), settings)


def main(args: Any) -> int:
    from app.lab.results import table

    try:
        plan_ = plan_from_args(args)
        results = evaluate(plan_, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(results["summary"], list(plan_.budgets)))
    print(f"results: {args.out / 'results.json'} · figure: {args.out / 'scaling.html'}")
    if args.publish:
        print(f"published: {publish(results)}")
    return 0


def publish(results: dict[str, Any], folder: Path | None = None) -> Path:
    """Store `results`' curves (settings, budgets, summary) for the Scaling tab, one file per
    problem set and model."""
    from app.lab.results import STORED

    folder = folder or STORED
    folder.mkdir(parents=True, exist_ok=True)
    s = results["settings"]
    path = folder / f"{Path(str(s['problems'])).stem}--{s['model']}--{s['prm']}.json"
    keep = {k: results[k] for k in ("settings", "strategies", "budgets", "summary")}
    path.write_text(json.dumps(keep, indent=1) + "\n")
    return path
