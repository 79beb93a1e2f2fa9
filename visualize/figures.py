"""Plotly figures of a search: the tree as it grows, its replay, and an HTML export.

`tree_figure` draws one SearchTree: nodes coloured by PRM step score on a fixed 0..1 scale (so two
runs compare by eye), unscored nodes grey, pruned branches faded, completed steps as squares, the
chosen solution as a bold path ending in a star, answers written under the leaves, DVTS subtrees on
shaded bands. Everything is built as a handful of traces (one per status, edges joined with `None`
breaks) rather than one trace per node, which keeps a 500-node tree well under a second.
`votes_figure` lives in `visualize/votes.py` and is re-exported here.
"""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go

from strategies.tree import SearchTree
from visualize.labels import node_hover, root_hover, short
from visualize.layout import Positions, subtree_spans, tree_layout
from visualize.votes import votes_figure

__all__ = ["replay_figure", "standalone_html", "tree_figure", "votes_figure"]

UIREVISION = "thinktree"  # constant: a user's zoom survives the streamed updates of one plot
COLORSCALE = "RdYlGn"  # red = the PRM doubts the step, green = it trusts it
UNSCORED = "#b8bec6"
EDGE = "#9aa3ad"
PRUNED_EDGE = "#dde1e6"
HIGHLIGHT = "#1d4ed8"  # blue: not on the red-yellow-green score scale, so the path stands out
PRUNED_OPACITY = 0.3
PLOT_PX = 900  # a typical plot width in pixels, for sizes that must fit between neighbours
BAND_COLORS = ("rgba(29,78,216,0.06)", "rgba(100,116,139,0.08)")  # alternate, faint

# status -> (legend label, symbol for steps with that status)
STATUS_STYLE: dict[str, tuple[str, str]] = {
    "active": ("active step", "circle"),
    "completed": ("completed (answer)", "square"),
    "pruned": ("pruned", "circle"),
    "selected": ("selected solution", "star"),
}


def _marker_size(positions: Positions) -> float:
    """Smaller markers for wider trees: about half the space between neighbours on a row."""
    width = max(x for x, _ in positions.values()) + 1
    return max(6.0, min(16.0, PLOT_PX / width * 0.5))


def _highlighted(tree: SearchTree) -> set[int]:
    """Nodes of the chosen solution(s): status "selected" or on the path of a `tree.selected` leaf."""
    ids = {n.id for n in tree.nodes if n.status == "selected"}
    known = {n.id for n in tree.nodes}
    for leaf in tree.selected:
        if leaf in known:
            ids.update(n.id for n in tree.path(leaf))
    return ids


def _edge_traces(tree: SearchTree, pos: Positions, highlight: set[int]) -> list[go.Scatter]:
    """Three line traces (plain, pruned, selected path); the edge into a node takes its status."""
    xs: dict[str, list[float | None]] = {"plain": [], "pruned": [], "selected": []}
    ys: dict[str, list[float | None]] = {"plain": [], "pruned": [], "selected": []}
    for n in tree.nodes:
        if n.parent is None:
            continue
        kind = "selected" if n.id in highlight else "pruned" if n.status == "pruned" else "plain"
        (x0, y0), (x1, y1) = pos[n.parent], pos[n.id]
        xs[kind] += [x0, x1, None]
        ys[kind] += [y0, y1, None]
    style = {
        "plain": dict(color=EDGE, width=1.5),
        "pruned": dict(color=PRUNED_EDGE, width=1),
        "selected": dict(color=HIGHLIGHT, width=4.5),
    }
    # Pruned and selected edges share their nodes' legend group: one click hides both.
    group = {"plain": None, "pruned": "pruned", "selected": "selected"}
    name = {"plain": "edges", "pruned": "pruned edges", "selected": "selected path"}
    return [
        go.Scatter(
            x=xs[k],
            y=ys[k],
            mode="lines",
            line=style[k],
            hoverinfo="skip",
            name=name[k],
            legendgroup=group[k],
            showlegend=k == "selected" and bool(xs[k]),
        )
        for k in ("pruned", "plain", "selected")  # drawn bottom to top: the path on top
    ]


def _node_traces(
    tree: SearchTree, pos: Positions, highlight: set[int], size: float
) -> list[go.Scatter]:
    """Per status, one trace of scored steps (shared colour axis) and one of unscored (grey)."""
    leaves = {n.id for n in tree.leaves()}
    traces: list[go.Scatter] = []
    for status, (label, symbol) in STATUS_STYLE.items():
        members = [n for n in tree.nodes if n.parent is not None and n.status == status]
        for scored in (True, False):
            group = [n for n in members if (n.score is not None) == scored]
            if not group:
                continue
            # Inside the selected path only the final step gets a star; others stay circles.
            symbols = [
                symbol
                if status != "selected" or n.id in leaves or n.id in tree.selected
                else "circle"
                for n in group
            ]
            sizes = [size * (1.7 if s == "star" else 1.0) for s in symbols]
            on_path = [n.id in highlight for n in group]
            traces.append(
                go.Scatter(
                    x=[pos[n.id][0] for n in group],
                    y=[pos[n.id][1] for n in group],
                    mode="markers",
                    name=label if scored else f"{label} (not scored)",
                    legendgroup=status,
                    showlegend=False,  # the legend uses neutral grey stand-ins, see _legend_keys
                    customdata=[n.id for n in group],
                    hovertext=[node_hover(n) for n in group],
                    hoverinfo="text",
                    marker=dict(
                        color=[n.score for n in group] if scored else UNSCORED,
                        coloraxis="coloraxis" if scored else None,
                        symbol=symbols,
                        size=sizes,
                        opacity=PRUNED_OPACITY if status == "pruned" else 1.0,
                        line=dict(
                            color=[HIGHLIGHT if p else "white" for p in on_path],
                            width=[2.5 if p else 1.0 for p in on_path],
                        ),
                    ),
                )
            )
    return traces


def _legend_keys(tree: SearchTree, size: float) -> list[go.Scatter]:
    """Legend entries in neutral grey (a coloured one would suggest a score) for statuses present."""
    present = {n.status for n in tree.nodes if n.parent is not None}
    return [
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=label,
            legendgroup=status,
            marker=dict(
                symbol=symbol,
                size=size,
                color="#6b7280",
                opacity=PRUNED_OPACITY if status == "pruned" else 1.0,
            ),
        )
        for status, (label, symbol) in STATUS_STYLE.items()
        if status in present
    ]


def _answer_labels(tree: SearchTree, pos: Positions) -> go.Scatter | None:
    """Answers written just under the steps that produced them, staggered where crowded."""
    nodes = sorted((n for n in tree.nodes if n.answer is not None), key=lambda n: pos[n.id][::-1])
    if not nodes:
        return None
    # The figure's pixel width is unknown (it is responsive); assume the same ~900 px as
    # _marker_size and ~6.5 px per character of the 10 px font.
    px_per_unit = PLOT_PX / (max(x for x, _ in pos.values()) + 2)
    xs, ys, texts = [], [], []
    prev: tuple[float, float, int] | None = None  # x, y and length of the previous label
    low = False
    for n in nodes:
        x, y = pos[n.id]
        text = short(n.answer, 10)
        chars = len(html.unescape(text))
        crowded = (
            prev is not None
            and prev[1] == y
            and (x - prev[0]) * px_per_unit < (prev[2] + chars) * 6.5 / 2 + 4
        )
        # Alternate two lines under crowded neighbours, so their texts don't run into each other.
        low = not low if crowded else False
        xs.append(x)
        # the chosen solution ends in a larger star: its label sits a little lower
        star = n.id in tree.selected and n.status == "selected"
        ys.append(y - (0.48 if low else 0.26) - (0.1 if star else 0.0))
        texts.append(text)
        prev = (x, y, chars)
    return go.Scatter(
        x=xs,
        y=ys,
        text=texts,
        mode="text",
        textfont=dict(size=10, color="#111827"),
        hoverinfo="skip",
        showlegend=False,
        name="answers",
    )


def _root_trace(tree: SearchTree, pos: Positions, size: float) -> go.Scatter:
    x, y = pos[tree.root.id]
    return go.Scatter(
        x=[x],
        y=[y],
        mode="markers+text",
        text=["Q"],
        textposition="middle center",
        textfont=dict(color="white", size=max(9, size * 0.8)),
        name="question",
        customdata=[tree.root.id],
        hovertext=[root_hover(tree.question)],
        hoverinfo="text",
        marker=dict(size=size * 1.7, color="#334155", line=dict(color="white", width=1)),
        showlegend=False,
    )


def _subtree_bands(
    tree: SearchTree, pos: Positions, bottom: float
) -> tuple[list[dict], list[dict]]:
    """Shaded bands and "subtree k" labels, one per DVTS block; nothing for a single block."""
    spans = subtree_spans(tree, pos)
    if len(spans) < 2:
        return [], []
    shapes, notes = [], []
    for i, (key, (lo, hi)) in enumerate(sorted(spans.items(), key=lambda kv: kv[1])):
        shapes.append(
            dict(
                type="rect",
                layer="below",
                line=dict(width=0),
                fillcolor=BAND_COLORS[i % 2],
                x0=lo - 0.5,
                x1=hi + 0.5,
                y0=-0.62,
                y1=bottom + 0.1,
                xref="x",
                yref="y",
            )
        )
        notes.append(
            dict(
                x=(lo + hi) / 2,
                y=-0.62,
                text=f"subtree {key}",
                showarrow=False,
                yanchor="bottom",
                font=dict(size=10, color="#475569"),
                xref="x",
                yref="y",
            )
        )
    return shapes, notes


def _auto_title(tree: SearchTree) -> str:
    steps = len(tree.nodes) - 1
    done = sum(n.status in ("completed", "selected") and n.answer is not None for n in tree.nodes)
    parts = [
        html.escape(tree.strategy or "search"),
        f"iteration {tree.iteration}",
        f"{steps} steps",
    ]
    parts.append(f"{done} answers")
    if tree.writing:  # steps of this iteration still arriving: grey until the PRM scores them
        parts.append("writing (grey: not scored yet)")
    if tree.answer is not None:
        parts.append(f"answer <b>{short(tree.answer, 30)}</b>")
    if tree.stopped:  # ended early: what is drawn is the tree at that moment
        parts.append(f"<b>ended early</b>: {short(tree.stopped, 60)}")
    return " · ".join(parts)


def tree_figure(
    tree: SearchTree, *, title: str | None = None, height: int | None = None
) -> go.Figure:
    """The search tree as a figure. `title=None` writes a summary of the run; "" writes none.

    A root-only tree draws the question alone; a tree whose steps are all unscored (majority
    voting) draws them grey and shows no colour bar. `title` is used as given (it may hold HTML),
    everything taken from the tree is escaped.
    """
    pos = tree_layout(tree)
    size = _marker_size(pos)
    highlight = _highlighted(tree)
    depth = max(n.depth for n in tree.nodes)
    bottom = -depth - 0.75
    traces: list[Any] = _edge_traces(tree, pos, highlight)
    traces += _node_traces(tree, pos, highlight, size)
    labels = _answer_labels(tree, pos)
    if labels is not None:
        traces.append(labels)
    traces.append(_root_trace(tree, pos, size))
    traces += _legend_keys(tree, size)
    shapes, notes = _subtree_bands(tree, pos, bottom)
    width = max(x for x, _ in pos.values())

    fig = go.Figure(data=traces)
    fig.update_layout(
        template="plotly_white",
        title=dict(text=_auto_title(tree) if title is None else title, x=0.01, font=dict(size=14)),
        height=height or int(min(1000, max(380, 200 + 90 * depth))),
        margin=dict(l=10, r=10, t=50, b=10),
        uirevision=UIREVISION,
        hovermode="closest",
        hoverlabel=dict(bgcolor="white", align="left", font=dict(size=12, family="monospace")),
        coloraxis=dict(
            cmin=0.0,
            cmax=1.0,
            colorscale=COLORSCALE,
            colorbar=dict(title=dict(text="PRM score"), thickness=12, len=0.8),
        ),
        legend=dict(orientation="h", yanchor="top", y=-0.01, x=0.0),
        xaxis=dict(visible=False, range=[-1.0, width + 1.0], zeroline=False),
        yaxis=dict(visible=False, range=[bottom, 0.6], zeroline=False),
        shapes=shapes,
        annotations=notes,
        plot_bgcolor="white",
    )
    return fig


def replay_figure(tree: SearchTree, iteration: int, *, height: int | None = None) -> go.Figure:
    """The tree as it stood at the end of `iteration` (see `SearchTree.snapshot`)."""
    snap = tree.snapshot(iteration)
    title = f"{_auto_title(snap)} · replay {snap.iteration}/{tree.iteration}"
    return tree_figure(snap, title=title, height=height)


def standalone_html(fig: go.Figure) -> str:
    """A self-contained HTML page (plotly.js inline, ~4 MB) that opens offline, for exports."""
    return fig.to_html(include_plotlyjs=True, full_html=True)
