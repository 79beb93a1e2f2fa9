"""The answer chart: majority vote beside the PRM-weighted vote, per answer.

Two horizontal bar charts share one answer axis, so one reads across a row: how many solutions
reached this answer (majority voting / self-consistency), and how much PRM score they carry
(weighted Best-of-N). The winner of each is drawn dark and starred; the vanilla Best-of-N pick (the
answer of the single best-scored solution) gets a diamond and an orange outline; the expected
answer, when given, a green check. This is where the three aggregation rules of the reference work
visibly disagree.

Answers are compared by the same rule as everywhere else (`strategies.answers.answers_equal`): the
two trees' spellings of one answer share a row, and `0.5` is the expected `\\frac{1}{2}`, as the
comparison table says too.
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from strategies.answers import answers_equal
from strategies.tree import SearchTree
from visualize.labels import short

MAJORITY_MARK = "★ majority"
WEIGHTED_MARK = "★ weighted"
BEST_OF_N_MARK = "◆ best single"
EXPECTED_MARK = "✓"
EXPECTED_COLOR = "#15803d"
BAR = {"majority": ("#cbd5e1", "#334155"), "weighted": ("#93c5fd", "#1d4ed8")}  # (plain, winner)
BEST_OF_N_OUTLINE = "#ea580c"

Votes = Mapping[str, Mapping[str, float]]


def _argmax(values: dict[str, float]) -> str | None:
    """Key of the largest value; ties go to the first key (the answer seen first)."""
    best: str | None = None
    for key, v in values.items():
        if best is None or v > values[best]:
            best = key
    return best


def _merge(search: Votes, majority: Votes | None) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Rows per answer (count, score_sum, best_score; best_score -1: never scored) and the order
    the majority count saw the answers in, for its tie-break. Keys are the first spelling seen."""
    rows: dict[str, dict[str, float]] = {}

    def name(answer: str) -> str:
        """The first spelling seen of an answer equal to `answer` (strategies.answers' rule)."""
        return next((k for k in rows if answers_equal(k, answer)), answer)

    def row(answer: str) -> dict[str, float]:
        return rows.setdefault(name(answer), {"count": 0.0, "score_sum": 0.0, "best_score": -1.0})

    for a, v in search.items():
        r = row(a)
        r["score_sum"] += float(v.get("score_sum", 0.0))
        r["best_score"] = max(r["best_score"], float(v.get("best_score", -1.0)))
        if majority is None:
            r["count"] += float(v.get("count", 0))
    for a, v in (majority or {}).items():
        row(a)["count"] += float(v.get("count", 0))
    count_order = [name(a) for a in (search if majority is None else majority)]
    return rows, count_order


def _labels(answers: list[str], expected: str | None) -> list[str]:
    """Escaped, cut, unique tick labels (two long answers may cut to the same text)."""
    out: list[str] = []
    for a in answers:
        label = short(a, 24) or "(empty)"
        base, k = label, 2
        while label in out:
            label, k = f"{base} ({k})", k + 1
        out.append(label)
    if expected is not None:
        out = [
            f'<span style="color:{EXPECTED_COLOR}"><b>{EXPECTED_MARK} {lab}</b></span>'
            if answers_equal(a, expected)
            else lab
            for a, lab in zip(answers, out, strict=True)
        ]
    return out


def _color(chart: str, winner: bool) -> str:
    plain, win = BAR[chart]
    return win if winner else plain


def _marks(*pairs: tuple[bool, str]) -> str:
    """The texts whose condition holds, joined; "" for none."""
    return " · ".join(text for ok, text in pairs if ok)


def votes_figure(
    search: SearchTree, majority: SearchTree | None = None, expected: str | None = None
) -> go.Figure:
    """Majority counts (from `majority.votes`, else `search.votes`) beside PRM-weighted sums.

    Rows are sorted by weighted sum, then count, then first appearance. With no votes at all the
    figure is an empty frame saying "no answers yet".
    """
    rows, count_order = _merge(search.votes, majority.votes if majority is not None else None)
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=("majority vote (solutions)", "PRM-weighted vote (score sum)"),
    )
    fig.update_layout(
        template="plotly_white",
        uirevision="thinktree-votes",
        showlegend=False,
        title=dict(text="Answers", x=0.01, font=dict(size=14)),
        margin=dict(l=10, r=10, t=60, b=30),
        bargap=0.3,
    )
    if not rows:
        fig.add_annotation(
            text="no answers yet",
            showarrow=False,
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            font=dict(size=16, color="#6b7280"),
        )
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.update_layout(height=260)
        return fig

    first_seen = {a: i for i, a in enumerate(rows)}
    answers = sorted(rows, key=lambda a: (-rows[a]["score_sum"], -rows[a]["count"], first_seen[a]))
    labels = _labels(answers, expected)
    counts = {a: rows[a]["count"] for a in count_order}
    sums = {a: rows[a]["score_sum"] for a in rows}
    best = {a: rows[a]["best_score"] for a in rows if rows[a]["best_score"] >= 0}
    # Winners are taken in first-seen order so ties break as the strategies break them.
    win_m = _argmax(counts) if any(counts.values()) else None
    win_w = _argmax(sums) if any(sums.values()) else None
    pick = _argmax(best) if best else None

    hover = [
        f"{lab}<br>solutions: {int(rows[a]['count'])}<br>score sum: {rows[a]['score_sum']:.3f}"
        f"<br>best single score: {max(rows[a]['best_score'], 0.0):.3f}"
        for a, lab in zip(answers, labels, strict=True)
    ]
    # what both panels' bars share: one bar per answer, its mark beside it, the same hover
    bars = dict(
        orientation="h",
        y=labels,
        textposition="outside",
        cliponaxis=False,
        hovertext=hover,
        hoverinfo="text",
    )
    fig.add_trace(
        go.Bar(
            name="majority",
            x=[rows[a]["count"] for a in answers],
            marker=dict(color=[_color("majority", a == win_m) for a in answers]),
            text=[_marks((a == win_m, MAJORITY_MARK)) for a in answers],
            **bars,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            name="weighted",
            x=[sums[a] for a in answers],
            marker=dict(
                color=[_color("weighted", a == win_w) for a in answers],
                line=dict(color=BEST_OF_N_OUTLINE, width=[3 if a == pick else 0 for a in answers]),
            ),
            text=[
                _marks((a == win_w, WEIGHTED_MARK), (a == pick, BEST_OF_N_MARK)) for a in answers
            ],
            **bars,
        ),
        row=1,
        col=2,
    )

    if expected is not None and not any(answers_equal(a, expected) for a in answers):
        fig.add_annotation(
            text=f"expected {short(expected, 30)}: not among the answers",
            showarrow=False,
            x=0,
            y=-0.02,
            xref="paper",
            yref="paper",
            yanchor="top",
            xanchor="left",
            font=dict(size=11, color=EXPECTED_COLOR),
        )
    # Room on the right of each bar for its marks; answers top to bottom in sorted order.
    fig.update_xaxes(range=[0, max(r["count"] for r in rows.values()) * 1.6 or 1], row=1, col=1)
    fig.update_xaxes(range=[0, max(sums.values()) * 1.8 or 1], row=1, col=2)
    fig.update_yaxes(
        categoryorder="array", categoryarray=labels, autorange="reversed", automargin=True
    )
    fig.update_layout(height=int(min(900, max(260, 130 + 34 * len(answers)))))
    return fig
