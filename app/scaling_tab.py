"""The Scaling tab: the stored accuracy-vs-budget curves, their headline, and a small live run.

The stored curves are the harness's results (app/lab/harness.py) published into assets/scaling/
(`python -m app.cli eval ... --publish`); the headline line reads them: the small model's best
search against its majority vote at the same N and against the bigger model's greedy answer.
The live evaluation runs a few problems of a tier here, each run taking its turn in the app's
line of runs (`handlers.GATE`) like anyone's Run, and redraws the curve after every run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from app.handlers import GATE, MODEL_QUEUE, as_user_error
from app.lab.compute_optimal_fit import check_table
from app.lab.harness import harness_settings, plan, run_unit
from app.lab.problem_sets import TIERS, load_problems
from app.lab.results import STORED, summarize, table
from app.request import starting_model
from backend.catalog import catalog
from backend.fitted_policies import stored_entries
from strategies.info import label, short_label
from visualize.scaling_curves import scaling_figure

LIVE_STRATEGIES = ("majority_vote", "weighted_best_of_n", "beam_search", "dvts")
LIVE_BUDGETS = (1, 2, 4, 8)
LIVE_MAX_PROBLEMS = 8  # a live run is a demo: minutes, not an hour, on two cores


def stored_results() -> dict[str, dict[str, Any]]:
    """The published results by file stem (newest format only: settings, budgets, summary)."""
    out = {}
    for path in sorted(STORED.glob("*.json")):
        data = json.loads(path.read_text())
        if {"settings", "budgets", "summary"} <= set(data):
            out[path.stem] = data
    return out


def headline(results: dict[str, Any]) -> str:
    """One line: the best search at the largest budget vs. majority there vs. the bigger model."""
    summary, budgets = results["summary"], results["budgets"]
    settings = results["settings"]
    top = str(max(budgets))
    searches = {
        s: c[top]
        for s, c in summary.items()
        if s not in ("greedy", "bigger", "majority_vote") and top in c
    }
    if not searches:
        return ""
    best = max(searches, key=lambda s: searches[s]["accuracy"])
    parts = [
        f"**{settings['model']} + {label(best)} at N={top}: {searches[best]['accuracy']:.0%}**"
    ]
    if top in summary.get("majority_vote", {}):
        parts.append(f"majority@{top}: {summary['majority_vote'][top]['accuracy']:.0%}")
    if "1" in summary.get("bigger", {}):
        parts.append(f"{settings.get('bigger')} greedy: {summary['bigger']['1']['accuracy']:.0%}")
    n = searches[best]["n"]
    tier = Path(str(settings.get("problems", ""))).stem
    return f"{tier} ({n} problems): " + " — ".join(parts)


def show_stored(name: str | None) -> tuple[Any, str, str]:
    results = stored_results().get(name or "")
    if results is None:
        return None, "", "*No stored results yet: `python -m app.cli eval ... --publish`.*"
    return (
        scaling_figure(results),
        table(results["summary"], results["budgets"]),
        headline(results),
    )


def live_eval(
    tier: str, strategies: list[str], budgets: list[Any], limit: float, model: str, prm: str
) -> Iterator[tuple[Any, ...]]:
    """Evaluate the first `limit` problems of `tier`; (status, figure, table) after every run."""
    from app.service import run_to_end

    try:
        if not strategies or not budgets:
            raise ValueError("Pick at least one strategy and one budget.")
        problems = load_problems(TIERS[tier])[: max(1, min(LIVE_MAX_PROBLEMS, int(limit)))]
        settings = harness_settings(model, prm, TIERS[tier])
        the_plan = plan(problems, strategies, [int(b) for b in budgets], 1, settings)
    except (ValueError, KeyError) as err:
        raise as_user_error(ValueError(str(err))) from None
    records: list[dict[str, Any]] = []
    total = len(the_plan.units)
    for i, unit in enumerate(the_plan.units, 1):
        ticket = GATE.join(model)
        try:
            with contextlib.closing(GATE.wait(ticket)) as line:
                for ahead, eta in line:
                    yield (
                        f"Run {i}/{total}: waiting for the models ({ahead} ahead, about "
                        f"{eta:.0f} s)…",
                        gr.skip(),
                        gr.skip(),
                    )
            try:
                records += run_unit(unit, the_plan, run_to_end)
            except Exception as err:
                raise as_user_error(err) from None
        finally:
            GATE.leave(ticket)
        results = {
            "settings": settings,
            "budgets": list(the_plan.budgets),
            "summary": summarize(records),
        }
        yield (
            f"Run {i}/{total} done ({unit.problem.id}, {unit.kind} at N={unit.budget})",
            scaling_figure(results),
            table(results["summary"], results["budgets"]),
        )
    yield f"**Done**: {len(problems)} problems of {tier}.", gr.skip(), gr.skip()


def policy_text(policies: dict[str, dict[str, Any]]) -> str:
    """The stored compute-optimal policies' checks, one block per model and verifier."""
    if not policies:
        return (
            "*No fitted policy yet: compute-optimal runs on the reference heuristic. "
            "`python -m app.lab.compute_optimal_fit runs/tier3/results.json` fits one.*"
        )
    return "\n\n".join(
        f"**{key.replace('|', ' under ')}**\n\n{check_table(entry)}"
        for key, entry in policies.items()
    )


def scaling_tab() -> None:
    """The tab's layout and wiring (app/ui.py calls it inside the tab)."""
    stored = stored_results()
    names = list(stored)
    first = names[0] if names else None
    figure, summary_table, line = show_stored(first)
    head = gr.Markdown(line or "*No stored results yet.*", elem_id="scaling-headline")
    pick = gr.Dropdown(names, value=first, label="Stored results", interactive=bool(names))
    plot = gr.Plot(figure, label="Accuracy against budget and compute", elem_id="scaling-plot")
    numbers = gr.Markdown(summary_table)
    pick.change(show_stored, pick, [plot, numbers, head], api_visibility="private")
    policies = stored_entries()
    with gr.Accordion("Compute-optimal: the fitted policy and its check", open=False):
        gr.Markdown(policy_text(policies), elem_id="scaling-policy")
    with gr.Accordion("Run a small evaluation here", open=False):
        with gr.Row():
            tier = gr.Dropdown(list(TIERS), value="tier2_two_steps", label="Problem tier")
            limit = gr.Slider(1, LIVE_MAX_PROBLEMS, value=4, step=1, label="Problems")
            model = gr.Dropdown(
                list(catalog().names("policy")), value=starting_model(), label="Policy"
            )
            prm = gr.Dropdown(
                list(catalog().prm_choices()), value=catalog().default_prm, label="Verifier"
            )
        with gr.Row():
            strategies = gr.CheckboxGroup(
                [(short_label(s), s) for s in LIVE_STRATEGIES],
                value=["majority_vote", "beam_search"],
                label="Strategies",
            )
            budgets = gr.CheckboxGroup(list(LIVE_BUDGETS), value=[1, 2, 4], label="Budgets N")
        with gr.Row():
            go = gr.Button("Evaluate", variant="primary", elem_id="scaling-run")
            stop = gr.Button("Stop", variant="stop")
        status = gr.Markdown(elem_id="scaling-status")
        live_plot = gr.Plot(label="Live: accuracy against budget", elem_id="scaling-live")
        live_table = gr.Markdown()
        event = go.click(
            live_eval,
            [tier, strategies, budgets, limit, model, prm],
            [status, live_plot, live_table],
            api_visibility="private",
            **MODEL_QUEUE,
        )
        stop.click(None, None, None, cancels=[event], api_visibility="private")
