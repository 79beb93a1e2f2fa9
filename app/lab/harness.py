"""The scaling harness: every strategy at every budget on a problem set, graded, resumable.

Run by `python -m app.cli eval` (app/lab/eval_command.py). The work is cut into units, each one run of the app's own path (`app.service.run_to_end`):
- sampling strategies (majority voting, Best-of-N, weighted Best-of-N) share one run per problem and
  seed at the largest budget: the answer at budget b is read off its first b samples with the
  strategy's own rule (`strategies.search_run.choose`), as the reference work does. A policy whose
  samples depend only on the seed and the sample's index gives the very answers of a separate
  run at b (tested on the fakes); the real engine draws a batch's rows from one generator, so
  there the first b samples are a fair sample of b, not the same one;
- search strategies (beam search, DVTS, lookahead, compute-optimal) run once per budget;
- the policy's greedy answer and, for the dashed line, the bigger model's (`--bigger`).
Each finished unit is appended to DIR/records.jsonl at once, so an interrupted run resumes where
it stopped; DIR/results.json (accuracy with a 95% interval, tokens, FLOPs, per-problem records)
and DIR/scaling.html (the figure) are written from the records at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.lab.problem_sets import Problem
from app.versus import flops
from backend.catalog import NO_PRM
from strategies.answers import answers_equal
from strategies.config import AGGREGATIONS, SearchConfig
from strategies.difficulty import PROBE_AGGREGATION, PROBE_SAMPLES, probe_signal
from strategies.info import RENAMED, STRATEGY_INFO, STRATEGY_NAMES, Pick
from strategies.search_run import choose, rescored
from strategies.tree import Node, SearchTree

# the sampling strategies share one run per problem, every budget read off its first samples
SAMPLING = tuple(name for name, info in STRATEGY_INFO.items() if info.samples)
SEARCHES = tuple(name for name in STRATEGY_NAMES if name not in SAMPLING)
# the explorer's settings a curve runs with (app/request.py: PRESET), so it measures what the
# explorer runs
PRESET_FIELDS = (
    "max_iterations",
    "max_step_tokens",
    "max_solution_tokens",
    "temperature",
    "top_p",
    "lookahead",
)
# what a run's results depend on besides the problems: a resumed run must match them
SETTINGS = ("model", "prm", "precision", "beam_width", *PRESET_FIELDS, "bigger")


@dataclass(frozen=True)
class Unit:
    """One run: a problem, a seed, what to run ("sampling", a search, "greedy", "bigger") and
    its budget (the largest one for "sampling")."""

    problem: Problem
    seed: int
    kind: str
    budget: int

    @property
    def key(self) -> str:
        return f"{self.problem.id}|{self.seed}|{self.kind}|{self.budget}"


@dataclass(frozen=True)
class Plan:
    """What an evaluation runs: settings shared by every unit, and the units."""

    settings: dict[str, Any]
    strategies: tuple[str, ...]
    budgets: tuple[int, ...]
    units: tuple[Unit, ...]


def plan(
    problems: Iterable[Problem],
    strategies: Iterable[str],
    budgets: Iterable[int],
    seeds: int,
    settings: dict[str, Any],
) -> Plan:
    """The units for these problems, strategies, budgets and seeds (ValueError for a bad name
    or budget)."""
    strategies = tuple(dict.fromkeys(s.strip() for s in strategies if s.strip()))
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise ValueError(f"Unknown strategies {unknown}; choose from {', '.join(STRATEGY_NAMES)}.")
    budgets = tuple(sorted(set(budgets)))
    if not budgets or budgets[0] < 1:
        raise ValueError("Budgets are whole numbers of at least 1.")
    if seeds < 1:
        raise ValueError("--seeds must be at least 1.")
    units: list[Unit] = []
    problems = list(problems)
    for problem in problems:
        units.append(Unit(problem, 0, "greedy", 1))
        for seed in range(seeds):
            if any(s in SAMPLING for s in strategies):
                units.append(Unit(problem, seed, "sampling", budgets[-1]))
            for strategy in strategies:
                if strategy in SEARCHES:
                    units += [Unit(problem, seed, strategy, b) for b in budgets]
    if settings.get("bigger"):  # last, all together: the pool holds one policy at a time
        units += [Unit(problem, 0, "bigger", 1) for problem in problems]
    return Plan(dict(settings), strategies, budgets, tuple(units))


# ---- one unit --------------------------------------------------------------------------------
Runner = Callable[[Any], SearchTree]  # a RunRequest in, the finished tree out


def config_for(unit: Unit, settings: dict[str, Any], strategies: tuple[str, ...]) -> SearchConfig:
    """The search settings of `unit`'s run."""
    base = {k: settings[k] for k in PRESET_FIELDS if k in settings}
    if unit.kind in ("greedy", "bigger"):
        return SearchConfig(
            strategy="majority_vote",
            n=1,
            temperature=0.0,
            seed=unit.seed,
            **{k: v for k, v in base.items() if k != "temperature"},
        )
    if unit.kind == "sampling":
        scored = any(STRATEGY_INFO[s].needs_scorer for s in strategies if s in SAMPLING)
        strategy = "weighted_best_of_n" if scored else "majority_vote"
        return SearchConfig(strategy=strategy, n=unit.budget, seed=unit.seed, **base)
    beam_width = min(int(settings.get("beam_width", 4)), unit.budget)
    return SearchConfig(
        strategy=unit.kind, n=unit.budget, beam_width=beam_width, seed=unit.seed, **base
    )


def run_unit(unit: Unit, plan_: Plan, runner: Runner) -> list[dict[str, Any]]:
    """Run `unit`; one record per (strategy, budget) it answers."""
    from app.request import RunRequest

    s = plan_.settings
    model = s["bigger"] if unit.kind == "bigger" else s["model"]
    config = config_for(unit, s, plan_.strategies)
    # majority voting (greedy answers, a majority-only sampling run) reads no verifier
    prm = s["prm"] if STRATEGY_INFO[config.strategy].needs_scorer else NO_PRM
    request = RunRequest(
        unit.problem.problem,
        config,
        model=model,
        prm=prm,
        precision=s.get("precision", "auto"),
        compare=False,
    )
    t0 = time.perf_counter()
    tree = runner(request)
    seconds = time.perf_counter() - t0
    if unit.kind != "sampling":
        record = _record(unit, unit.kind, unit.budget, tree.answer, tree, seconds, 1.0)
        if unit.kind in SEARCHES:
            record |= {"beam_width": config.beam_width, "aggregation": config.aggregation}
        return [record]
    records = []
    probe = probe_of(tree)
    for strategy in plan_.strategies:
        if strategy not in SAMPLING:
            continue
        # the verifier strategies also under the other aggregations of the same step scores
        # (compute-optimal's fit chooses among them); the curves show the run's own only
        info = STRATEGY_INFO[strategy]
        ways = [config.aggregation]
        if info.needs_scorer:
            ways += [a for a in AGGREGATIONS if a != config.aggregation]
        for how in ways:
            for b in plan_.budgets:
                answer, share = first_samples_answer(tree, b, info.pick, how)
                record = _record(unit, strategy, b, answer, tree, seconds * share, share)
                record["aggregation"] = how
                if how != config.aggregation:
                    record["variant"] = True
                if probe is not None:
                    record["probe"] = probe
                records.append(record)
    return records


def first_leaves(tree: SearchTree, b: int) -> tuple[list[Node], int]:
    """The finished solutions of the tree's first `b` samples (one per child of the root, in
    order), and the tokens those samples wrote."""
    kept = {n.id for n in tree.children(0)[:b]}
    sample_of: dict[int, int] = {}
    for node in tree.nodes[1:]:  # a parent comes before its children
        sample_of[node.id] = node.id if node.parent == 0 else sample_of.get(node.parent, -1)
    leaves = [n for n in tree.leaves() if sample_of.get(n.id) in kept]
    tokens = sum(n.tokens for n in tree.nodes[1:] if sample_of.get(n.id) in kept)
    return leaves, tokens


def first_samples_answer(
    tree: SearchTree, b: int, pick: Pick, aggregation: str | None = None
) -> tuple[str | None, float]:
    """The answer `pick` chooses among the tree's first `b` samples (their scores aggregated
    from the steps' scores by `aggregation`; None: as the run aggregated them), and the share
    of the run's generated tokens those samples wrote."""
    leaves, tokens = first_leaves(tree, b)
    if aggregation is not None:
        leaves = rescored(tree, leaves, aggregation)
    answer, _, _ = choose(leaves, pick)
    return answer, tokens / max(1, tree.compute.generated_tokens)


def probe_of(tree: SearchTree) -> dict[str, float] | None:
    """Compute-optimal's probe read off a scored sampling run: its first PROBE_SAMPLES samples
    under the probe's aggregation (None when it has fewer, or the verifier did not score them)."""
    if tree.compute.scorer_calls == 0 or len(tree.children(0)) < PROBE_SAMPLES:
        return None
    leaves, tokens = first_leaves(tree, PROBE_SAMPLES)
    leaves = rescored(tree, leaves, PROBE_AGGREGATION)
    probe = probe_signal([n.agg_score or 0.0 for n in leaves], [n.answer for n in leaves])
    return {**probe, "tokens": tokens}


def _record(
    unit: Unit,
    strategy: str,
    budget: int,
    answer: str | None,
    tree: SearchTree,
    seconds: float,
    share: float,
) -> dict[str, Any]:
    c, m = tree.compute, tree.meta
    tokens = round(c.generated_tokens * share)
    # the verifier's reading of b samples: its share of the run's (it reads each sample once)
    verifier = round(c.scored_tokens * share)
    gold = unit.problem.answer
    record = {
        "problem": unit.problem.id,
        "tier": unit.problem.tier,
        "seed": unit.seed,
        "strategy": strategy,
        "budget": budget,
        "answer": answer,
        "gold": gold,
        "correct": answer is not None and answers_equal(answer, gold),
        "tokens": tokens,
        "verifier_tokens": verifier,
        "flops": flops(m, tokens, verifier),
        "seconds": round(seconds, 3),
        "model": m.get("model"),
    }
    if tree.stopped:
        record["stopped"] = tree.stopped
    if "compute_optimal" in m:
        record["compute_optimal"] = m["compute_optimal"]
    return record


def harness_settings(
    model: str,
    prm: str,
    problems: Path,
    precision: str = "auto",
    beam_width: int = 4,
    bigger: str | None = None,
) -> dict[str, Any]:
    """An evaluation's settings: these, and the app's preset token and sampling limits (so a
    curve measures what the explorer runs)."""
    from app.request import PRESET

    return {
        "model": model,
        "prm": prm,
        "precision": precision,
        "beam_width": beam_width,
        **{k: getattr(PRESET, k) for k in PRESET_FIELDS},
        "bigger": bigger,
        "problems": _shown_path(problems),
    }


def _shown_path(path: Path) -> str:
    """A problem file as results name it: relative to the repository when inside it."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


# ---- the whole evaluation --------------------------------------------------------------------
def settings_hash(settings: dict[str, Any]) -> str:
    picked = {k: settings.get(k) for k in SETTINGS}
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def load_done(out: Path, settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The records of units already finished in `out` (a resumed run), by unit key; ValueError
    when `out` holds a run with other settings."""
    config = out / "config.json"
    if config.is_file():
        held = json.loads(config.read_text())
        if held.get("settings_hash") != settings_hash(settings):
            raise ValueError(
                f"{out} holds an evaluation with other settings ({held.get('settings')}); "
                "use another --out, or delete it to start again."
            )
    done: dict[str, list[dict[str, Any]]] = {}
    path = out / "records.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line an interruption cut short: redone
                continue
            done[entry["unit"]] = [
                r | {"strategy": RENAMED.get(r["strategy"], r["strategy"])}
                for r in entry["records"]
            ]
    return done


def evaluate(
    plan_: Plan,
    out: Path,
    runner: Runner | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every unit of `plan_` not yet in `out`, append each as it finishes, and write
    results.json and scaling.html. Returns the results."""
    from app.lab.results import summarize
    from visualize.scaling_curves import scaling_figure

    if runner is None:
        from app.service import run_to_end as runner
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    out.mkdir(parents=True, exist_ok=True)
    done = load_done(out, plan_.settings)
    (out / "config.json").write_text(
        json.dumps(
            {
                "settings": plan_.settings,
                "settings_hash": settings_hash(plan_.settings),
                "strategies": plan_.strategies,
                "budgets": plan_.budgets,
            },
            indent=1,
        )
    )
    todo = [u for u in plan_.units if u.key not in done]
    say(f"{len(plan_.units)} runs, {len(plan_.units) - len(todo)} already done in {out}")
    t0 = time.perf_counter()
    with (out / "records.jsonl").open("a") as log:
        for i, unit in enumerate(todo, 1):
            records = run_unit(unit, plan_, runner)
            done[unit.key] = records
            log.write(json.dumps({"unit": unit.key, "records": records}) + "\n")
            log.flush()
            elapsed = time.perf_counter() - t0
            left = elapsed / i * (len(todo) - i)
            right = sum(r["correct"] for r in records)
            say(
                f"[{i}/{len(todo)}] {unit.problem.id} {unit.kind}@{unit.budget} seed {unit.seed}: "
                f"{right}/{len(records)} right · {elapsed:.0f} s · about {_clock(left)} left"
            )
    records = [r for u in plan_.units for r in done.get(u.key, [])]
    results = {
        "settings": plan_.settings,
        "strategies": list(plan_.strategies),
        "budgets": list(plan_.budgets),
        "summary": summarize(records),
        "records": records,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    scaling_figure(results).write_html(out / "scaling.html", include_plotlyjs=True)
    return results


def _clock(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds} s"
