"""Every strategy against the deterministic fakes: selection rules, tree shape, accounting."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategies.config import SearchConfig
from strategies.info import STRATEGY_NAMES
from strategies.protocols import GeneratedStep, Sampling, Scores
from strategies.registry import STRATEGIES, run, search
from strategies.search_run import aggregate
from strategies.tree import SearchTree
from tests.fakes import FakeGenerator, FakeScorer


def cfg(strategy: str, **kw) -> SearchConfig:
    return SearchConfig(strategy=strategy, **kw)


def scripted(solutions: list[list[str]]) -> FakeGenerator:
    """Root continuation i is solutions[i][0]; each later step follows its own solution."""

    def script(partial: tuple[str, ...], i: int) -> str:
        if not partial:
            return solutions[i][0]
        for sol in solutions:
            if tuple(sol[: len(partial)]) == partial:
                return sol[len(partial)]
        raise AssertionError(f"unscripted partial {partial}")

    return FakeGenerator(script=script)


def statuses_at(tree: SearchTree, iteration: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in tree.nodes[1:]:
        if n.iteration == iteration:
            counts[n.status] = counts.get(n.status, 0) + 1
    return counts


# ---- beam search --------------------------------------------------------------------------
def test_beam_search_keeps_n_over_m_and_reexpands_to_n():
    gen, prm = FakeGenerator(depth=4), FakeScorer()
    n, m = 8, 2
    snapshots = []
    for tree in search("q", cfg("beam_search", n=n, beam_width=m), gen, prm):
        if not tree.done:
            snapshots.append(SearchTree.from_dict(tree.to_dict()))
    # iterations 1..3 end with exactly N/M active beams among the N new candidates
    for snap in snapshots[:3]:
        new = [x for x in snap.nodes if x.iteration == snap.iteration]
        assert len(new) == n
        active = [x for x in new if x.status == "active"]
        assert len(active) == n // m
        # the survivors are the best-scored candidates
        worst_kept = min(x.agg_score for x in active)
        assert all(x.agg_score <= worst_kept for x in new if x.status == "pruned")
    # re-expansion: each survivor of iteration t has exactly M children at t+1
    final = snapshots[-1]
    for it in (1, 2):
        survivors = [
            x
            for x in final.nodes
            if x.iteration == it and any(c.iteration == it + 1 for c in final.children(x.id))
        ]
        assert len(survivors) == n // m
        assert all(len(final.children(x.id)) == m for x in survivors)
    # one generator call per iteration, N continuations each
    assert gen.calls[:3] == [(1, n), (n // m, m), (n // m, m)]


def test_completed_beams_leave_the_active_set():
    # candidate 0 of the first step finishes at once; the others go on
    def script(partial, i):
        if not partial:
            return "\\boxed{7} [s=0.99]" if i == 0 else f"go {i} [s=0.{i}]\n\n"
        return None

    gen, prm = FakeGenerator(depth=3, script=script), FakeScorer()
    tree = run("q", cfg("beam_search", n=4, beam_width=2), gen, prm)
    done = [x for x in tree.nodes if x.iteration == 1 and x.answer == "7"]
    assert len(done) == 1 and done[0].status in ("completed", "selected")
    assert tree.children(done[0].id) == []  # never expanded again
    # iteration 1 still keeps N/M = 2 live beams among the unfinished ones
    kept = [x for x in tree.nodes if x.iteration == 1 and tree.children(x.id)]
    assert len(kept) == 2 and all(x.answer is None for x in kept)


def test_finished_beam_search_leaves_no_active_step():
    tree = run("q", cfg("beam_search", n=4, beam_width=2), FakeGenerator(depth=3), FakeScorer())
    assert [leaf for leaf in tree.leaves() if leaf.status == "active"] == []  # none left running


def test_beam_search_duplicate_filtering():
    def script(partial, i):
        return "same [s=0.9]\n\n" if not partial else None

    gen, prm = FakeGenerator(depth=2, script=script), FakeScorer()
    tree = run("q", cfg("beam_search", n=4, beam_width=2, filter_duplicates=True), gen, prm)
    first = [x for x in tree.nodes if x.depth == 1]
    assert sum(1 for x in first if tree.children(x.id)) == 1  # duplicates collapse to one beam


def test_iteration_limit_writes_to_the_end():
    gen, prm = FakeGenerator(depth=50), FakeScorer()
    tree = run("q", cfg("beam_search", n=4, beam_width=2, max_iterations=3), gen, prm)
    assert tree.iteration == 3 and tree.done
    assert max(x.depth for x in tree.nodes) == 3
    assert tree.answer is not None  # the last iteration was asked to finish (to_end)


# ---- DVTS ------------------------------------------------------------------------------
def test_dvts_subtrees_are_independent_and_greedy():
    gen, prm = FakeGenerator(depth=4), FakeScorer()
    n, m = 12, 3
    tree = run("q", cfg("dvts", n=n, beam_width=m), gen, prm)
    first = [x for x in tree.nodes if x.depth == 1]
    assert sorted({x.subtree for x in first}) == list(range(n // m))
    for x in tree.nodes[1:]:
        if x.depth > 1:
            assert x.subtree == tree.nodes[x.parent].subtree  # never exchange nodes
    for parent in tree.nodes:
        kids = tree.children(parent.id)
        if not kids:
            continue
        if parent.id == 0:
            groups = [[k for k in kids if k.subtree == s] for s in range(n // m)]
        else:
            groups = [kids]
        for group in groups:
            assert len(group) == m
            kept = [k for k in group if k.status != "pruned"]
            assert len(kept) == 1
            assert kept[0].agg_score == max(k.agg_score for k in group)
    assert len(tree.votes) >= 1 and tree.answer in tree.votes


# ---- Best-of-N, majority, aggregation ----------------------------------------------------
SOLS_WEIGHTED = [
    ["a\n\n", "\\boxed{5} [s=0.9]"],
    ["b\n\n", "\\boxed{6} [s=0.6]"],
    ["c\n\n", "\\boxed{6} [s=0.6]"],
]


def test_weighted_and_vanilla_best_of_n_differ():
    vanilla = run("q", cfg("best_of_n", n=3), scripted(SOLS_WEIGHTED), FakeScorer())
    weighted = run("q", cfg("weighted_best_of_n", n=3), scripted(SOLS_WEIGHTED), FakeScorer())
    assert vanilla.answer == "5"
    assert weighted.answer == "6"
    assert weighted.votes["6"]["score_sum"] == pytest.approx(1.2)
    assert weighted.votes["5"]["best_score"] == pytest.approx(0.9)


def test_majority_vote_ties_go_to_first_seen_and_ignore_the_prm():
    sols = [["\\boxed{9} [s=0.1]"], ["\\boxed{4} [s=0.9]"], ["\\boxed{4}"], ["\\boxed{9}"]]
    prm = FakeScorer()
    tree = run("q", cfg("majority_vote", n=4), scripted(sols), prm)
    assert tree.answer == "9"
    assert prm.calls == 0 and tree.compute.scorer_calls == 0
    assert {k: v["count"] for k, v in tree.votes.items()} == {"9": 2, "4": 2}
    assert len(tree.selected) == 2  # both solutions that voted for it


@pytest.mark.parametrize(("how", "expected"), [("last", "1"), ("min", "2"), ("prod", "3")])
def test_aggregation_changes_the_choice(how, expected):
    sols = [
        ["x [s=0.2]\n\n", "\\boxed{1} [s=0.95]"],
        ["y [s=0.9]\n\n", "\\boxed{2} [s=0.9]"],
        ["z [s=1.0]\n\n", "\\boxed{3} [s=0.88]"],
    ]
    tree = run("q", cfg("best_of_n", n=3, aggregation=how), scripted(sols), FakeScorer())
    assert tree.answer == expected


def test_aggregate_values():
    assert aggregate([0.5, 0.2, 0.8], "last") == 0.8
    assert aggregate([0.5, 0.2, 0.8], "min") == 0.2
    assert aggregate([0.5, 0.2, 0.8], "prod") == pytest.approx(0.08)
    assert aggregate([], "last") == 0.0


# ---- accounting, streaming, replay --------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_budget_accounting_adds_up(strategy):
    gen, prm = FakeGenerator(depth=3), FakeScorer()
    tree = run("q", cfg(strategy, n=8, beam_width=2, seed=3), gen, prm)
    assert tree.done
    assert tree.compute.generated_tokens == gen.tokens
    assert tree.compute.scored_tokens == prm.tokens
    assert tree.compute.generator_calls == len(gen.calls)
    assert tree.compute.scorer_calls == prm.calls
    if strategy not in ("lookahead", "compute_optimal"):  # rollouts/pilot are not tree nodes
        assert sum(x.tokens for x in tree.nodes) == gen.tokens
    assert tree.compute.wall_s > 0


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_streams_and_finishes(strategy):
    done_flags, tree = [], None
    for tree in search("q", cfg(strategy, n=4, beam_width=2), FakeGenerator(depth=3), FakeScorer()):
        done_flags.append(tree.done)  # the same tree object grows; record its state per frame
    assert len(done_flags) >= 2 and done_flags[-1] and not any(done_flags[:-1])
    assert tree.answer is not None and tree.selected
    assert all(tree.nodes[i].status == "selected" for i in tree.selected)


def test_seeded_runs_reproduce_and_seeds_differ():
    def go(seed):
        return run(
            "q",
            cfg("beam_search", n=8, beam_width=2, seed=seed),
            FakeGenerator(depth=4),
            FakeScorer(),
        )

    assert go(1).to_dict()["nodes"] == go(1).to_dict()["nodes"]
    assert go(1).to_dict()["nodes"] != go(2).to_dict()["nodes"]


def test_tree_json_round_trip_and_replay():
    tree = run("q", cfg("beam_search", n=8, beam_width=2), FakeGenerator(depth=4), FakeScorer())
    again = SearchTree.from_json(tree.to_json())
    assert again.to_dict() == tree.to_dict()
    for t in range(1, tree.iteration + 1):
        snap = tree.snapshot(t)
        assert all(x.iteration <= t for x in snap.nodes)
        assert len(snap.nodes) == 1 + sum(1 for x in tree.nodes[1:] if x.iteration <= t)
        assert (
            not snap.done
            and snap.answer is None
            and "selected" not in {x.status for x in snap.nodes}
            or t == tree.iteration
        )
    mid = tree.snapshot(1)
    # at iteration 1, first-step nodes are active or pruned, never selected
    assert {x.status for x in mid.nodes[1:]} <= {"active", "pruned", "completed"}
    assert tree.snapshot(tree.iteration).to_dict() == tree.to_dict()


def test_config_validation_messages():
    with pytest.raises(ValueError, match="divisible"):
        SearchConfig(strategy="beam_search", n=6, beam_width=4)
    with pytest.raises(ValueError, match="Unknown strategy"):
        SearchConfig(strategy="nope")
    with pytest.raises(ValueError, match="top_p"):
        SearchConfig(top_p=0)
    with pytest.raises(ValueError, match="Unknown config"):
        SearchConfig.from_dict({"n": 4, "bogus": 1})
    with pytest.raises(ValueError, match="needs a PRM"):
        run("q", cfg("beam_search", n=4, beam_width=2), FakeGenerator(), None)
    with pytest.raises(ValueError, match="empty"):
        run("  ", cfg("majority_vote", n=4), FakeGenerator(), None)


def test_compute_optimal_records_its_choice():
    tree = run("q", cfg("compute_optimal", n=8, beam_width=2), FakeGenerator(depth=3), FakeScorer())
    meta = tree.meta["compute_optimal"]
    assert meta["chosen_strategy"] in STRATEGIES and meta["pilot_samples"] == 2
    assert tree.strategy == "compute_optimal"


# ---- property: random texts and scores never break the tree ------------------------------
class RandomGenerator:
    def __init__(self, data):
        self.data = data

    def next_steps(self, question, partials, n, sampling: Sampling):
        return [
            [
                GeneratedStep(
                    self.data.draw(st.text(max_size=40)),
                    self.data.draw(st.integers(0, 50)),
                    self.data.draw(st.booleans()) or sampling.to_end,
                )
                for _ in range(n)
            ]
            for _ in partials
        ]


class RandomScorer:
    def __init__(self, data):
        self.data = data

    def score(self, question, solutions):
        unit = st.floats(0, 1, allow_nan=False)
        return Scores([[self.data.draw(unit) for _ in s] for s in solutions], 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(STRATEGY_NAMES), st.sampled_from(["last", "min", "prod"]))
def test_random_steps_and_scores_never_break_a_run(data, strategy, how):
    config = cfg(strategy, n=4, beam_width=2, max_iterations=5, aggregation=how)
    tree = run("q", config, RandomGenerator(data), RandomScorer(data))
    assert tree.done
    assert SearchTree.from_json(tree.to_json()).to_dict() == tree.to_dict()
    for x in tree.nodes[1:]:
        assert tree.nodes[x.parent].depth == x.depth - 1
        assert x.score is None or 0 <= x.score <= 1


# ---- steps streamed inside an iteration -------------------------------------------------------
@pytest.mark.parametrize("strategy", ["beam_search", "dvts", "weighted_best_of_n", "lookahead"])
def test_streamed_steps_arrive_inside_iterations_and_change_nothing_else(strategy):
    from tests.fakes import StreamingFakeGenerator

    config = cfg(strategy, n=8, beam_width=2, max_iterations=4, seed=3)
    plain = run("Q?", config, FakeGenerator(depth=3), FakeScorer())
    streaming = StreamingFakeGenerator(depth=3)
    frames = []
    for tree in search("Q?", config, streaming, FakeScorer()):
        frames.append((tree.writing, tree.iteration, len(tree.nodes), tree.done))
    final, same = tree.to_dict(), plain.to_dict()
    final["compute"].pop("wall_s"), same["compute"].pop("wall_s")
    assert final == same  # the same search, node for node, whatever order the steps came in
    writing = [f for f in frames if f[0]]
    assert writing, "no frame was streamed inside an iteration"
    # inside an iteration the tree grows one step per frame, before that iteration's own frame
    for before, after in zip(frames, frames[1:]):
        if after[0] and before[1] == after[1]:
            assert after[2] == before[2] + 1
    assert not frames[-1][0] and frames[-1][3]
    # DVTS: a step is in its subtree from the frame it appears in
    if strategy == "dvts":
        for tree_frame in search("Q?", config, StreamingFakeGenerator(depth=3), FakeScorer()):
            for node in tree_frame.nodes[1:]:
                if node.parent != 0:
                    assert node.subtree == tree_frame.nodes[node.parent].subtree
            if tree_frame.writing and tree_frame.iteration == 1:
                tags = {n.subtree for n in tree_frame.nodes[1:]}
                assert tags <= set(range(config.n // config.beam_width))


def test_a_stream_with_a_bad_index_is_an_error():
    from tests.fakes import StreamingFakeGenerator

    class Repeats(StreamingFakeGenerator):
        def stream_steps(self, question, partials, n, sampling):
            for _, step in super().stream_steps(question, partials, n, sampling):
                yield 0, step

    with pytest.raises(RuntimeError, match="bad index"):
        run("Q?", cfg("beam_search", n=4, beam_width=2), Repeats(), FakeScorer())

    class Short(StreamingFakeGenerator):
        def stream_steps(self, question, partials, n, sampling):
            yield from list(super().stream_steps(question, partials, n, sampling))[:-1]

    with pytest.raises(RuntimeError, match="wrong number"):
        run("Q?", cfg("beam_search", n=4, beam_width=2), Short(), FakeScorer())


def test_a_viewer_that_stops_listening_ends_the_generator_call():
    from tests.fakes import StreamingFakeGenerator

    gen = StreamingFakeGenerator(depth=3)
    frames = search("Q?", cfg("beam_search", n=8, beam_width=2), gen, FakeScorer())
    first = next(frames)
    assert first.writing and len(first.nodes) == 2 and gen.closed == 0
    frames.close()  # e.g. the user pressed Stop
    assert gen.closed == 1 and not first.writing


# ---- hints for a generator that writes ahead ---------------------------------------------------
class _CheapScorer(FakeScorer):
    cheap = True  # a scorer a search may call while steps are still being written


class _Recording(FakeGenerator):
    """Records each call's sampling hints, and what the hint ranks each continuation."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hints: list[tuple[int, list[float] | None]] = []
        self.last_call_in: list[int] = []

    def next_steps(self, question, partials, n, sampling):
        results = super().next_steps(question, partials, n, sampling)
        ranks = None
        if sampling.rank is not None:
            ranks = [
                sampling.rank(list(p) + [s.text]) for p, row in zip(partials, results) for s in row
            ]
        self.hints.append((sampling.keep, ranks))
        self.last_call_in.append(sampling.last_call_in)
        return results


@pytest.mark.parametrize("how", ["last", "min"])
def test_beam_search_hints_which_continuations_it_will_keep(how):
    """A beam search tells the generator how many continuations it keeps and, with a cheap
    scorer, ranks them the way it selects them: the `keep` best by that rank (ties to the
    earlier one) are exactly the beams it goes on with."""
    n, m = 8, 2
    gen = _Recording(depth=4)
    config = cfg("beam_search", n=n, beam_width=m, aggregation=how, max_iterations=4)
    tree = run("q", config, gen, _CheapScorer())
    assert [keep for keep, _ in gen.hints] == [n // m] * 3 + [0]  # not when writing to the end
    assert gen.last_call_in == [3, 2, 1, 0]  # and how many calls later it will write to the end
    for it, (keep, ranks) in enumerate(gen.hints[:3], start=1):
        new = sorted((x for x in tree.nodes if x.iteration == it), key=lambda x: x.id)
        assert len(ranks) == len(new) == n
        for x, r in zip(new, ranks):  # the hint's rank is the score the search selects by
            assert r == (float("-inf") if x.status == "completed" else x.agg_score)
        best = sorted(range(n), key=lambda i: (-ranks[i], i))[:keep]
        kept = {x.id for x in new if tree.children(x.id)}
        assert {new[i].id for i in best if ranks[i] > float("-inf")} == kept


def test_no_ranking_without_a_cheap_scorer_or_with_lookahead():
    gen = _Recording(depth=4)
    run("q", cfg("beam_search", n=8, beam_width=2), gen, FakeScorer())
    assert gen.hints[0] == (4, None)  # how many it keeps, but no ranking (scoring is not cheap)
    gen = _Recording(depth=4)
    run("q", cfg("lookahead", n=8, beam_width=2, lookahead=1), gen, _CheapScorer())
    assert all(h == (0, None) for h in gen.hints)  # lookahead ranks by rollouts it has not run


def test_the_tree_as_a_networkx_graph_and_a_graphml_file(tmp_path):
    import json

    import networkx as nx

    tree = run("q", cfg("dvts", n=4, beam_width=2), FakeGenerator(depth=3), FakeScorer())
    graph = tree.to_networkx()
    assert nx.is_tree(graph) and graph.number_of_nodes() == len(tree.nodes)
    assert set(graph.edges) == {(n.parent, n.id) for n in tree.nodes if n.parent is not None}
    for node in tree.nodes:
        attrs = {"id": node.id, **graph.nodes[node.id]}
        assert attrs == node.to_dict()  # every field, as in the run JSON
    assert graph.graph["answer"] == tree.answer and graph.graph["strategy"] == "dvts"

    path = tmp_path / "run.graphml"
    tree.write_graphml(path)
    back = nx.read_graphml(path, node_type=int)
    assert set(back.edges) == set(graph.edges)
    assert back.graph["question"] == "q" and json.loads(back.graph["config"]) == tree.config
    tree.nodes[1].text += "\x00\x1b[0m"  # a model may write characters XML cannot hold
    tree.write_graphml(path)
    back = nx.read_graphml(path, node_type=int)
    assert back.nodes[1]["text"].endswith("\ufffd\ufffd[0m")
    tree.nodes[1].text = tree.nodes[1].text[: -len("\x00\x1b[0m")]
    for node in tree.nodes[2:]:
        read = back.nodes[node.id]
        assert read["text"] == node.text and read["status"] == node.status
        assert read["depth"] == node.depth and read["subtree"] == node.subtree
        assert read.get("score") == node.score and read.get("answer") == node.answer
        assert json.loads(read["history"]) == [list(h) for h in node.history]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lookahead_with_k_0_is_plain_beam_search_on_the_same_seed(seed):
    beam = run(
        "q", cfg("beam_search", n=8, beam_width=2, seed=seed), FakeGenerator(depth=4), FakeScorer()
    )
    look = run(
        "q",
        cfg("lookahead", n=8, beam_width=2, seed=seed, lookahead=0),
        FakeGenerator(depth=4),
        FakeScorer(),
    )
    strip = lambda t: {k: v for k, v in t.to_dict().items() if k not in ("strategy", "config")}  # noqa: E731
    compute = lambda t: {k: v for k, v in vars(t.compute).items() if k != "wall_s"}  # noqa: E731
    assert strip(look)["nodes"] == strip(beam)["nodes"] and look.answer == beam.answer
    assert compute(look) == compute(beam)
    deeper = run(
        "q",
        cfg("lookahead", n=8, beam_width=2, seed=seed, lookahead=2),
        FakeGenerator(depth=4),
        FakeScorer(),
    )
    assert deeper.compute.generated_tokens > beam.compute.generated_tokens  # k > 0: rollouts


def test_a_scorer_that_fails_inside_a_lookahead_rollout_is_a_step_failure():
    from strategies.search_run import StepFailed

    class Failing(FakeScorer):
        name = "arithmetic"

        def score(self, question, solutions):
            raise ValueError("no")

    with pytest.raises(StepFailed, match=r"the PRM arithmetic failed scoring step 1 \(nodes"):
        run(
            "q", cfg("lookahead", n=4, beam_width=2, lookahead=1), FakeGenerator(depth=4), Failing()
        )


def _restated_finish(leaves, pick):
    """The finish's rule written out again, independently of `search_run.choose`: majority
    voting selects every solution of the biggest answer group; vanilla Best-of-N the single
    best-scored solution, whatever its answer; weighted the best solution of the group with the
    largest score sum. Ties go to the group (solution) seen first."""
    from strategies.answers import group_answers, normalize

    def best(members):
        return max(members, key=lambda n: (n.agg_score or 0.0, -n.id))

    groups = group_answers([n.answer for n in leaves])
    if pick == "vanilla":
        if not leaves:
            return None, []
        top = best(leaves)
        return (normalize(top.answer) if top.answer is not None else None), [top.id]
    if not groups:
        return None, []
    sums = [sum(leaves[i].agg_score or 0.0 for i in g) for g in groups]
    sizes = [len(g) for g in groups]
    key = sizes if pick == "majority" else sums
    winner = max(range(len(groups)), key=lambda g: (key[g], -g))
    members = [leaves[i] for i in groups[winner]]
    chosen = members if pick == "majority" else [best(members)]
    return normalize(members[0].answer or ""), sorted(n.id for n in chosen)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([None, "1", "2", "2.0", "3", "1/2", "0.5"]),
            st.sampled_from([None, 0.0, 0.1, 0.5, 0.9, 1.0]),
        ),
        max_size=9,
    ),
    st.sampled_from(["majority", "vanilla", "weighted"]),
)
def test_the_finish_picks_by_the_rule_written_out_again(solutions, pick):
    """`choose` (which the finish, the invariants and the lab all use) against the rule
    restated here on its own, so a slip in `choose` is caught by more than the golden trees."""
    from strategies.search_run import choose
    from strategies.tree import Node

    leaves = [
        Node(i + 1, 0, 1, answer=answer, agg_score=score)
        for i, (answer, score) in enumerate(solutions)
    ]
    answer, chosen, _ = choose(leaves, pick)
    assert (answer, sorted(n.id for n in chosen)) == _restated_finish(leaves, pick)
