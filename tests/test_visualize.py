"""visualize/: the tidy-tree layout's guarantees (property-based) and what the figures show."""

from __future__ import annotations

import time
from collections import defaultdict

import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.tree import SearchTree
from visualize import (
    replay_figure,
    standalone_html,
    subtree_spans,
    tree_figure,
    tree_layout,
    votes_figure,
)
from visualize.figures import PRUNED_OPACITY, UIREVISION, UNSCORED
from visualize.labels import MAX_CHARS, WRAP, wrap_html
from visualize.votes import BEST_OF_N_MARK, MAJORITY_MARK, WEIGHTED_MARK

EPS = 1e-9


# ---- trees ------------------------------------------------------------------------------------
@st.composite
def trees(draw: st.DrawFn, max_nodes: int = 200) -> SearchTree:
    """Random shapes: `spread` 0 grows a chain, small spreads grow deep bushes, large ones wide
    trees; depth-1 nodes get a random DVTS subtree that their descendants inherit."""
    n = draw(st.integers(1, max_nodes))
    spread = draw(st.sampled_from([0, 1, 3, 10, max_nodes]))
    n_subtrees = draw(st.integers(1, 4))
    tree = SearchTree(question="q")
    for i in range(1, n):
        parent = max(0, i - 1 - draw(st.integers(0, spread)))
        fields = {}
        if parent == 0:
            fields["subtree"] = draw(st.integers(0, n_subtrees - 1))
        tree.add_node(parent, f"step {i}", **fields)
    return tree


def rows(pos: dict[int, tuple[float, float]]) -> dict[float, list[float]]:
    out: dict[float, list[float]] = defaultdict(list)
    for x, y in pos.values():
        out[y].append(x)
    return out


def width(pos: dict[int, tuple[float, float]]) -> float:
    xs = [x for x, _ in pos.values()]
    return max(xs) - min(xs)


def beam_like() -> SearchTree:
    """16 first steps, the best 4 kept and expanded 4 ways, twice; one path selected."""
    tree = SearchTree(question="How many apples?", strategy="beam_search")
    tree.iteration = 1
    # Scores in a shuffled order, so survivors are spread among the first steps as in a real run.
    scores = [((5 * i) % 16) / 16 for i in range(16)]
    level = [tree.add_node(0, f"a{i}", score=s, agg_score=s) for i, s in enumerate(scores)]
    for it in (2, 3):
        level.sort(key=lambda n: -(n.score or 0))
        for n in level[4:]:
            tree.set_status(n.id, "pruned")
        tree.iteration = it
        level = [
            tree.add_node(p.id, f"s{it}", score=(j + 1) / 5, agg_score=(j + 1) / 5)
            for p in level[:4]
            for j in range(4)
        ]
    for n in level:
        n.answer = "19" if n.id % 2 else "38"
        tree.set_status(n.id, "completed")
    tree.select_path(level[-1].id)
    return tree


# ---- layout -----------------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(trees())
def test_layout_is_tidy(tree: SearchTree) -> None:
    pos = tree_layout(tree)
    assert set(pos) == {n.id for n in tree.nodes}
    assert pos[0][1] == 0 and all(y <= 0 for _, y in pos.values())
    for n in tree.nodes:
        assert pos[n.id][1] == -n.depth
    for xs in rows(pos).values():
        xs.sort()
        assert all(b - a >= 1 - EPS for a, b in zip(xs, xs[1:], strict=False))
    for n in tree.nodes:
        kids = tree.children(n.id)
        if kids:
            kx = [pos[k.id][0] for k in kids]
            assert abs(pos[n.id][0] - (min(kx) + max(kx)) / 2) < EPS
            # Siblings keep creation order left to right (the root's: within DVTS blocks).
            order = sorted(kids, key=lambda k: (k.subtree, k.id) if n.id == 0 else k.id)
            assert [pos[k.id][0] for k in order] == sorted(kx)
    assert min(x for x, _ in pos.values()) == pytest.approx(0)


@settings(max_examples=60, deadline=None)
@given(trees())
def test_dvts_subtrees_own_disjoint_x_ranges(tree: SearchTree) -> None:
    pos = tree_layout(tree)
    by_block = subtree_spans(tree, pos)
    spans = sorted(by_block.values())
    for (_, hi), (lo, _) in zip(spans, spans[1:], strict=False):
        assert lo - hi >= 1 - EPS  # a gap, not merely no overlap of nodes on a row
    for n in tree.nodes:  # every node lies inside its own block's range
        if n.depth >= 1:
            lo, hi = by_block[tree.path(n.id)[0].subtree]
            assert lo - EPS <= pos[n.id][0] <= hi + EPS


def test_wide_tree_stays_compact() -> None:
    tree = SearchTree(question="q")
    for _ in range(64):
        tree.add_node(tree.add_node(0, "a").id, "b")
    assert width(tree_layout(tree)) <= 64


def test_narrow_subtrees_tuck_in() -> None:
    tree = SearchTree(question="q")
    a, b, c = (tree.add_node(0, t) for t in "abc")
    for _ in range(10):
        tree.add_node(b.id, "x")
    pos = tree_layout(tree)
    assert width(pos) == pytest.approx(9)  # leaves a and c sit beside b, not beyond its children
    assert pos[b.id][0] - pos[a.id][0] == pytest.approx(1)
    assert width(tree_layout(beam_like())) <= 20  # one slot per leaf would take 39


def test_layout_rejects_broken_nodes() -> None:
    tree = SearchTree(question="q")
    tree.add_node(0, "a")
    with pytest.raises(ValueError):
        tree_layout(tree.nodes[1:])  # no root


# ---- tree figure ------------------------------------------------------------------------------
def node_traces(fig: go.Figure) -> list[go.Scatter]:
    return [t for t in fig.data if t.customdata is not None and t.name != "question"]


def trace_of(fig: go.Figure, node_id: int) -> go.Scatter:
    return next(t for t in node_traces(fig) if node_id in t.customdata)


def test_colours_are_scores_on_a_fixed_scale() -> None:
    tree = beam_like()
    tree.add_node(1, "unscored")
    fig = tree_figure(tree)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0, 1)
    assert fig.layout.coloraxis.colorbar.title.text == "PRM score"
    seen = set()
    for t in node_traces(fig):
        for nid, colour in zip(t.customdata, t.marker.color or [], strict=False):
            if t.marker.coloraxis:
                assert colour == tree.nodes[nid].score
            seen.add(nid)
    assert seen == {n.id for n in tree.nodes[1:]}
    unscored = trace_of(fig, len(tree.nodes) - 1)
    assert unscored.marker.color == UNSCORED and unscored.marker.coloraxis is None


def test_statuses_are_drawn_apart() -> None:
    tree = beam_like()
    fig = tree_figure(tree)
    pruned = next(n.id for n in tree.nodes if n.status == "pruned")
    active = next(n.id for n in tree.nodes if n.status == "active" and n.parent is not None)
    assert trace_of(fig, pruned).marker.opacity == PRUNED_OPACITY < 1
    assert trace_of(fig, active).marker.opacity == 1
    done = next(n.id for n in tree.nodes if n.status == "completed")
    t = trace_of(fig, done)
    assert t.marker.symbol[list(t.customdata).index(done)] == "square"
    leaf = tree.selected[0]
    t = trace_of(fig, leaf)
    assert t.marker.symbol[list(t.customdata).index(leaf)] == "star"
    assert [t for t in fig.data if t.mode == "text"][0].text  # answers written at the leaves


def test_selected_path_is_the_highlighted_trace() -> None:
    tree = beam_like()
    fig = tree_figure(tree)
    pos = tree_layout(tree)
    path = next(t for t in fig.data if t.name == "selected path")
    segments = {
        (path.x[i], path.y[i], path.x[i + 1], path.y[i + 1]) for i in range(0, len(path.x), 3)
    }
    want = {(*pos[n.parent], *pos[n.id]) for n in tree.path(tree.selected[0])}
    assert segments == want
    assert path.line.width > max(t.line.width for t in fig.data if t.mode == "lines" and t != path)


def test_model_text_is_escaped() -> None:
    evil = "<script>alert(1)</script> & 1 < 2"
    tree = SearchTree(question=evil)
    node = tree.add_node(0, evil, score=0.5, answer="<b>x</b>")
    tree.set_status(node.id, "completed")
    fig = tree_figure(tree)
    hover = trace_of(fig, node.id).hovertext[0]
    assert "&lt;script&gt;" in hover and "&amp; 1 &lt; 2" in hover
    texts = [s for t in fig.data for s in (t.hovertext or ()) + (t.text or ())]
    assert texts and not any("<script" in s or "<b>x" in s for s in texts)


def test_long_text_is_wrapped_and_cut() -> None:
    text = " ".join(["word"] * 300)
    lines = wrap_html(text).split("<br>")
    assert all(len(line) <= WRAP for line in lines)
    assert lines[-1].endswith("…") and sum(map(len, lines)) <= MAX_CHARS


def test_root_only_tree_and_streaming_settings() -> None:
    fig = tree_figure(SearchTree(question="What is 2+2?"))
    root = next(t for t in fig.data if t.name == "question")
    assert root.text == ("Q",) and "What is 2+2?" in root.hovertext[0]
    assert fig.layout.uirevision == UIREVISION == tree_figure(beam_like()).layout.uirevision
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False


def test_dvts_blocks_are_labelled() -> None:
    tree = SearchTree(question="q", strategy="dvts")
    for s in range(4):
        tree.add_node(tree.add_node(0, "a", subtree=s).id, "b")
    notes = [a.text for a in tree_figure(tree).layout.annotations]
    assert notes == [f"subtree {s}" for s in range(4)]
    assert not tree_figure(beam_like()).layout.annotations  # one block: no bands


def test_big_tree_is_fast() -> None:
    tree = SearchTree(question="q")
    for i in range(1, 500):
        tree.add_node(max(0, i - 1 - (i * 7919) % 37), "step " * 40, score=(i % 10) / 10)
    tree_figure(tree)  # first call pays plotly's one-time validator imports
    start = time.perf_counter()
    tree_figure(tree)
    assert time.perf_counter() - start < 1.0


def test_replay_and_export() -> None:
    tree = beam_like()
    fig = replay_figure(tree, 2)
    assert "replay 2/3" in fig.layout.title.text
    shown = {i for t in node_traces(fig) for i in t.customdata}
    assert shown == {n.id for n in tree.snapshot(2).nodes[1:]}
    page = standalone_html(fig)
    assert page.lstrip().startswith("<html") and len(page) > 1_000_000  # plotly.js inline


# ---- votes figure -----------------------------------------------------------------------------
def bars(fig: go.Figure, name: str) -> dict[str, tuple[float, str]]:
    t = next(t for t in fig.data if t.name == name)
    return {y: (x, text) for y, x, text in zip(t.y, t.x, t.text, strict=True)}


def test_votes_figure_marks_the_three_rules() -> None:
    search = SearchTree(question="q")
    search.votes = {
        "19": {"count": 3, "score_sum": 2.1, "best_score": 0.8},
        "38": {"count": 4, "score_sum": 1.2, "best_score": 0.9},
        "$12$": {"count": 1, "score_sum": 0.1, "best_score": 0.1},
    }
    majority = SearchTree(question="q")
    majority.votes = {"38": {"count": 5}, "12": {"count": 2}, "7": {"count": 1}}
    fig = votes_figure(search, majority, expected="$ 19$")
    weighted, counts = bars(fig, "weighted"), bars(fig, "majority")
    check = next(y for y in weighted if "19" in y)
    assert "✓" in check  # the expected answer's label
    assert counts["38"] == (5, MAJORITY_MARK)
    assert counts["$12$"][0] == 2  # "$12$" and "12" are one answer
    assert counts["7"] == (1, "")
    assert weighted[check] == (2.1, WEIGHTED_MARK)
    assert weighted["38"] == (1.2, BEST_OF_N_MARK)  # the single best solution said 38
    assert weighted["7"][0] == 0
    assert list(fig.layout.yaxis.categoryarray)[0] == check  # sorted by weighted sum


def test_votes_without_majority_tree_and_escaping() -> None:
    search = SearchTree(question="q")
    search.votes = {"<i>a</i>": {"count": 2, "score_sum": 0.5, "best_score": 0.5}}
    fig = votes_figure(search, expected="zzz")
    label, (count, mark) = next(iter(bars(fig, "majority").items()))
    assert label == "&lt;i&gt;a&lt;/i&gt;" and count == 2 and mark == MAJORITY_MARK
    assert any("not among" in a.text for a in fig.layout.annotations)


def test_the_votes_chart_and_the_comparison_table_agree_on_equal_answers() -> None:
    """Expected 0.5, answer \\frac{1}{2}: one rule (answers_equal) for the chart and the table."""
    from app.panels import comparison_markdown

    search = SearchTree(question="q", strategy="beam_search")
    search.answer = "\\frac{1}{2}"
    search.votes = {"\\frac{1}{2}": {"count": 3, "score_sum": 2.0, "best_score": 0.9}}
    majority = SearchTree(question="q", strategy="majority_vote")
    majority.answer = "0.5"
    majority.votes = {"0.5": {"count": 3}, "1/3": {"count": 1}}
    assert "✓" in comparison_markdown(search, majority, expected="0.5").splitlines()[2]
    fig = votes_figure(search, majority, expected="0.5")
    assert not any("not among" in a.text for a in fig.layout.annotations)
    counts = bars(fig, "majority")
    assert len(counts) == 2  # 0.5 and \\frac{1}{2} share one row
    (check,) = [y for y in counts if "✓" in y]
    assert "frac" in check and counts[check][0] == 3


def test_votes_figure_without_answers() -> None:
    fig = votes_figure(SearchTree(question="q"))
    assert any(a.text == "no answers yet" for a in fig.layout.annotations)
    assert not [t for t in fig.data if isinstance(t, go.Bar)]


def test_a_frame_streamed_inside_an_iteration_says_so() -> None:
    tree = SearchTree(question="q", strategy="beam_search")
    tree.iteration = 1
    tree.add_node(0, "step one\n\n")  # arrived, not scored yet
    tree.writing = True
    title = tree_figure(tree).layout.title.text
    assert "writing" in title and "not scored yet" in title
    tree.writing = False
    assert "writing" not in tree_figure(tree).layout.title.text
    assert "writing" not in SearchTree.from_dict(tree.to_dict()).to_json()  # not in the run JSON
