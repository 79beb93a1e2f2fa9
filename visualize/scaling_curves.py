"""The scaling figure: accuracy against budget N and against FLOPs, one line per strategy.

Drawn as the reference work draws it (Snell et al. 2024; the Hugging Face "scaling test-time
compute" figures): budgets on a log-2 axis, a line with markers per strategy and its 95%
interval as a band, and the bigger model's greedy accuracy as a dashed line across. Plain data
in (the harness's results, app/lab/harness.py), a plotly Figure out.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from strategies.info import label

# one colour per strategy, steady across figures (greedy and the bigger model are references)
COLOURS = {
    "majority_vote": "#7f7f7f",
    "best_of_n": "#ff7f0e",
    "weighted_best_of_n": "#d62728",
    "beam_search": "#1f77b4",
    "dvts": "#2ca02c",
    "lookahead": "#9467bd",
    "compute_optimal": "#111111",
    "greedy": "#bcbd22",
    "bigger": "#8c564b",
}
NAMES = {"greedy": "greedy (N=1)"}
REFERENCES = ("greedy", "bigger")


def _name(strategy: str, results: dict[str, Any]) -> str:
    if strategy == "bigger":
        name = results.get("settings", {}).get("bigger") or "bigger model"
        return f"{html.escape(str(name))} greedy"
    return NAMES.get(strategy) or label(strategy)


def _band(x: list[float], low: list[float], high: list[float], colour: str) -> go.Scatter:
    return go.Scatter(
        x=x + x[::-1],
        y=high + low[::-1],
        mode="lines",
        fill="toself",
        fillcolor=colour,
        opacity=0.12,
        line=dict(width=0),
        hoverinfo="skip",
        showlegend=False,
    )


def scaling_figure(results: dict[str, Any], title: str | None = None) -> go.Figure:
    """Accuracy against N (left) and against FLOPs per problem (right)."""
    summary = results.get("summary", {})
    budgets = sorted(int(b) for cells in summary.values() for b in cells)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("accuracy vs. budget N", "accuracy vs. compute (FLOPs)")
    )
    for strategy, cells in summary.items():
        if strategy in REFERENCES:
            continue
        colour = COLOURS.get(strategy, "#333333")
        points = sorted((int(b), c) for b, c in cells.items())
        xs = [b for b, _ in points]
        acc = [c["accuracy"] for _, c in points]
        low, high = [c["low"] for _, c in points], [c["high"] for _, c in points]
        flops = [c["flops"] for _, c in points]
        hover = [
            f"{_name(strategy, results)} N={b}: {c['right']}/{c['n']} "
            f"({c['low']:.0%}–{c['high']:.0%}), {c['tokens']:.0f} tokens"
            for b, c in points
        ]
        for col, x in ((1, xs), (2, flops)):
            fig.add_trace(_band(list(map(float, x)), low, high, colour), row=1, col=col)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=acc,
                    mode="lines+markers",
                    name=_name(strategy, results),
                    legendgroup=strategy,
                    showlegend=col == 1,
                    line=dict(color=colour, width=2),
                    marker=dict(size=7),
                    hovertext=hover,
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
    for strategy in REFERENCES:
        cell = summary.get(strategy, {}).get("1")
        if not cell:
            continue
        colour, name = COLOURS[strategy], _name(strategy, results)
        text = f"{name}: {cell['accuracy']:.0%} ({cell['right']}/{cell['n']})"
        span = [min(budgets, default=1), max(budgets, default=1)]
        fig.add_trace(
            go.Scatter(
                x=span,
                y=[cell["accuracy"]] * 2,
                mode="lines",
                name=name,
                legendgroup=strategy,
                line=dict(color=colour, dash="dash", width=2),
                hovertext=[text] * 2,
                hoverinfo="text",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=[cell["flops"]],
                y=[cell["accuracy"]],
                mode="markers",
                name=name,
                legendgroup=strategy,
                showlegend=False,
                marker=dict(color=colour, size=11, symbol="star"),
                hovertext=[text],
                hoverinfo="text",
            ),
            row=1,
            col=2,
        )
        if cell["flops"] > 0:
            fig.add_hline(
                y=cell["accuracy"], line=dict(color=colour, dash="dash", width=1), row=1, col=2
            )
    fig.update_xaxes(
        type="log",
        title_text="generation budget N (log scale)",
        row=1,
        col=1,
        tickvals=budgets,
        ticktext=[str(b) for b in budgets],
    )
    fig.update_xaxes(type="log", title_text="FLOPs per problem (log scale)", row=1, col=2)
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], tickformat=".0%")
    settings = results.get("settings", {})
    fig.update_layout(
        title=html.escape(
            title
            or f"{settings.get('model', '')} · verifier "
            f"{settings.get('prm', '')} · {Path(str(settings.get('problems', ''))).stem}"
            f" · bands: 95% intervals"
        ),
        template="plotly_white",
        height=460,
        margin=dict(l=60, r=20, t=70, b=60),
        legend=dict(orientation="h", y=-0.22),
    )
    return fig
