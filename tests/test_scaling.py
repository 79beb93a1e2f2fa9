"""The scaling harness and compute-optimal's fitted policy, on fake models whose answers a test
sets per problem and sample, so every accuracy can be worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import backend.runtime
from app.cli import main as cli
from app.lab import eval_command, harness
from app.lab.compute_optimal_fit import fit, halves
from app.lab.harness import evaluate, first_samples_answer, plan
from app.lab.problem_sets import Problem
from app.lab.results import summarize, wilson
from app.request import RunRequest
from app.service import run_to_end
from backend.fitted_policies import store, stored_policy
from strategies.compute_optimal import compute_optimal
from strategies.config import SearchConfig
from strategies.difficulty import BINS, Choice, Policy, bin_of, probe_signal, quantile_edges
from strategies.protocols import GeneratedStep
from tests.fakes import FakeScorer

SETTINGS = dict(
    model="smollm2-135m",
    prm="arithmetic",
    precision="fp32",
    beam_width=2,
    max_iterations=3,
    max_step_tokens=16,
    max_solution_tokens=64,
    temperature=0.8,
    top_p=1.0,
    lookahead=1,
    bigger=None,
    problems="test",
)


class AnswerScript:
    """A one-step policy: sample i of question q answers right when i is in RIGHT[q] (scored
    0.9 by the fake PRM), else "0" (scored 0.2); greedy (temperature 0) answers right on the
    questions in GREEDY_RIGHT."""

    def __init__(self, right: dict[str, set[int]], gold: dict[str, str], greedy: set[str]):
        self.right, self.gold, self.greedy = right, gold, greedy
        self.calls = 0

    def next_steps(self, question, partials, n, sampling):
        self.calls += 1
        out = []
        for _ in partials:
            row = []
            for i in range(n):
                ok = (
                    question in self.greedy
                    if sampling.temperature == 0
                    else i in self.right[question]
                )
                answer, score = (self.gold[question], 0.9) if ok else ("0", 0.2)
                text = f"So the answer is \\boxed{{{answer}}} [s={score}]"
                row.append(GeneratedStep(text, 5 + i, True, "eos"))
            out.append(row)
        return out


class Runtime:
    def __init__(self, generator):
        self.generator, self.scorer = generator, FakeScorer()

    def meta(self):
        return {"model": "fake", "params": 1000, "prm_params": 0, "device": "cpu"}


PROBLEMS = [
    Problem(f"p{k}", f"Question {k}: what is {k} + {k}?", str(2 * k), "test") for k in range(1, 5)
]
GOLD = {p.problem: p.answer for p in PROBLEMS}
# samples right per problem (of 4): p1 all, p2 the last two, p3 only the first, p4 none
RIGHT = {
    PROBLEMS[0].problem: {0, 1, 2, 3},
    PROBLEMS[1].problem: {2, 3},
    PROBLEMS[2].problem: {0},
    PROBLEMS[3].problem: set(),
}


@pytest.fixture
def fake_policy(monkeypatch):
    # copies: a test may add problems of its own without changing another test's
    script = AnswerScript(
        {q: set(r) for q, r in RIGHT.items()},
        dict(GOLD),
        greedy={PROBLEMS[0].problem, PROBLEMS[2].problem},
    )
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: Runtime(script))
    return script


def _plan(strategies="majority_vote,best_of_n,weighted_best_of_n,beam_search", budgets=(1, 2, 4)):
    return plan(PROBLEMS, strategies.split(","), budgets, 1, SETTINGS)


def test_accuracies_match_the_ones_worked_out_by_hand(fake_policy, tmp_path):
    results = evaluate(_plan(), tmp_path, progress=lambda line: None)
    acc = {
        s: {int(b): c["accuracy"] for b, c in cells.items()}
        for s, cells in results["summary"].items()
    }
    # majority over the first b samples, ties to the answer seen first:
    #   b=1: p1 ✓ p2 ✗ p3 ✓ p4 ✗; b=2: p1 ✓, p2 ✗ (0, 0), p3 ✓ (tie 6 vs 0: first), p4 ✗;
    #   b=4: p1 ✓, p2 tie 2-2 → "0" first ✗, p3 ✗ (1 vs 3), p4 ✗
    assert acc["majority_vote"] == {1: 0.5, 2: 0.5, 4: 0.25}
    # Best-of-N picks the best-scored sample: right whenever one of the first b is right
    assert acc["best_of_n"] == {1: 0.5, 2: 0.5, 4: 0.75}
    assert acc["weighted_best_of_n"] == {1: 0.5, 2: 0.5, 4: 0.75}  # 0.9·k vs 0.2·(b-k)
    assert acc["greedy"] == {1: 0.5}
    cell = results["summary"]["best_of_n"]["4"]
    assert (cell["right"], cell["n"]) == (3, 4) and (cell["low"], cell["high"]) == wilson(3, 4)
    assert cell["tokens"] == 5 + 6 + 7 + 8 and cell["flops"] == 2 * 1000 * 26
    assert (tmp_path / "scaling.html").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results.json").read_text())
    # greedy; majority, and both Best-of-N under each of 3 aggregations, × 3 budgets; beam
    assert len(saved["records"]) == 4 * (1 + 3 + 2 * 3 * 3 + 3)
    assert sum(not r.get("variant") for r in saved["records"]) == 4 * (1 + 3 * 3 + 3)


def test_wilson_interval_by_hand():
    low, high = wilson(3, 4)  # p = 0.75, z = 1.96: the textbook values
    assert round(low, 4) == 0.3006 and round(high, 4) == 0.9544
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_summarize_hand_records():
    rows = [
        dict(
            strategy="majority_vote",
            budget=2,
            correct=c,
            tokens=t,
            verifier_tokens=0,
            flops=2.0 * t,
            seconds=1.0,
        )
        for c, t in ((True, 10), (False, 30))
    ]
    cell = summarize(rows)["majority_vote"]["2"]
    assert cell["accuracy"] == 0.5 and cell["tokens"] == 20 and cell["flops"] == 40


def test_a_resumed_evaluation_skips_finished_units_and_gives_the_same_results(
    fake_policy, tmp_path
):
    whole = evaluate(_plan(), tmp_path / "whole", progress=lambda line: None)
    ran = []

    def interrupted(request):
        if len(ran) == 7:
            raise KeyboardInterrupt
        ran.append(request.prompt)
        return run_to_end(request)

    with pytest.raises(KeyboardInterrupt):
        evaluate(_plan(), tmp_path / "cut", runner=interrupted, progress=lambda line: None)
    lines = (tmp_path / "cut" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 7
    again = []
    resumed = evaluate(
        _plan(),
        tmp_path / "cut",
        progress=lambda line: None,
        runner=lambda r: again.append(r) or run_to_end(r),
    )
    assert len(again) == len(_plan().units) - 7  # only what was not finished
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(resumed["records"]) == strip(whole["records"])


def test_a_resumed_run_with_other_settings_is_refused(fake_policy, tmp_path):
    evaluate(_plan(budgets=(1,)), tmp_path, progress=lambda line: None)
    other = plan(PROBLEMS, ["majority_vote"], [1], 1, {**SETTINGS, "model": "qwen2.5-coder-0.5b"})
    with pytest.raises(ValueError, match="holds an evaluation with other settings"):
        evaluate(other, tmp_path, progress=lambda line: None)


def test_samples_are_reused_across_budgets_with_the_answers_of_separate_runs(monkeypatch):
    """Majority and Best-of-N at budget 4 are the first 4 of the 16 samples: on a policy whose
    samples depend on the seed and the sample's index, the same answers as a run at N=4."""
    from tests.fakes import FakeGenerator

    monkeypatch.setattr(
        backend.runtime,
        "get_runtime",
        lambda *a, **k: Runtime(FakeGenerator(depth=3, answers="12345")),
    )
    question = "Tom has 3 apples and gets 4 more. How many?"
    for seed in range(6):

        def tree(strategy, n, seed=seed):
            config = SearchConfig(strategy=strategy, n=n, seed=seed, max_iterations=4)
            return run_to_end(
                RunRequest(question, config, model="smollm2-135m", prm="arithmetic", compare=False)
            )

        big = tree("weighted_best_of_n", 16)
        for b in (1, 2, 4, 8):
            for strategy, pick in (
                ("majority_vote", "majority"),
                ("best_of_n", "vanilla"),
                ("weighted_best_of_n", "weighted"),
            ):
                alone = tree(strategy, b)
                answer, share = first_samples_answer(big, b, pick)
                assert answer == alone.answer, (seed, b, strategy)
                assert round(share * big.compute.generated_tokens) == alone.compute.generated_tokens
            # the other aggregations, read off the same samples' step scores (the fit's
            # candidates): the answers of separate runs under that aggregation
            for how in ("min", "prod"):
                for strategy, pick in (
                    ("best_of_n", "vanilla"),
                    ("weighted_best_of_n", "weighted"),
                ):
                    alone = tree_with(question, strategy, b, seed, how)
                    assert first_samples_answer(big, b, pick, how)[0] == alone.answer, (
                        seed,
                        b,
                        strategy,
                        how,
                    )


def tree_with(question, strategy, n, seed, aggregation):
    config = SearchConfig(
        strategy=strategy, n=n, seed=seed, max_iterations=4, aggregation=aggregation
    )
    return run_to_end(
        RunRequest(question, config, model="smollm2-135m", prm="arithmetic", compare=False)
    )


def test_the_other_aggregations_change_the_pick_as_worked_out_by_hand():
    """Two samples: A's steps score 0.1 then 0.9 (answer 5), B's 0.6 and 0.6 (answer 7). By the
    last step A wins; by the weakest step or the product B does (0.6 vs 0.1, 0.36 vs 0.09)."""
    from strategies.search_run import rescored
    from strategies.tree import SearchTree

    tree = SearchTree(question="q")
    for answer, scores in (("5", (0.1, 0.9)), ("7", (0.6, 0.6))):
        parent = 0
        for k, score in enumerate(scores):
            node = tree.add_node(parent, f"step {k}", tokens=3)
            node.score = score
            parent = node.id
        node.answer, node.agg_score = answer, scores[-1]
        tree.set_status(node.id, "completed")
    for how, winner in (("last", "5"), ("min", "7"), ("prod", "7")):
        assert first_samples_answer(tree, 2, "vanilla", how)[0] == winner, how
        assert first_samples_answer(tree, 2, "weighted", how)[0] == winner, how
    assert [n.agg_score for n in rescored(tree, tree.leaves(), "prod")] == pytest.approx(
        [0.09, 0.36]
    )


def test_a_bad_problems_line_is_an_error_with_its_line_number(tmp_path, capsys):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"problem": "1 + 1?", "answer": "2"}\n{"problem": "2 + 2?"}\n')
    assert cli(["eval", "--problems", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "mine.jsonl" in err and "line 2" in err


# ---- compute-optimal -------------------------------------------------------------------------
def test_the_bin_mapping_is_monotone_in_the_difficulty_signal():
    edges = quantile_edges([i / 100 for i in range(100)])
    assert len(edges) == BINS - 1 and edges == sorted(edges)
    bins = [bin_of(s / 1000, edges) for s in range(1001)]
    assert bins == sorted(bins) and bins[0] == 0 and bins[-1] == BINS - 1
    assert probe_signal([1.0, 1.0], ["3", "3"])["signal"] == 1.0
    assert probe_signal([0.0, 0.0], [None, None])["signal"] == 0.0


def _policy() -> Policy:
    choices = [
        Choice(s, 2, "last", 0.6, "majority_vote", 0.4)
        for s in ("beam_search", "dvts", "weighted_best_of_n", "best_of_n", "majority_vote")
    ]
    return Policy((0.2, 0.4, 0.6, 0.8), {4: tuple(choices)})


@pytest.mark.parametrize("score, expected_bin", [(0.1, 2), (0.5, 3), (0.9, 4)])
def test_the_chosen_strategy_per_bin_is_the_stored_one(score, expected_bin):
    """The fake policy agrees on every sample (agreement 1) and the fake PRM scores `score`:
    the signal (score + 1) / 2 falls in a known bin, and the stored choice for it runs."""
    from tests.fakes import FakeGenerator

    generator = FakeGenerator(depth=1, script=lambda partial, i: f"\\boxed{{7}} [s={score}]")
    policy = _policy()
    signal = (score + 1) / 2
    bin_, choice = policy.choose(signal, 4)
    config = SearchConfig(strategy="compute_optimal", n=4, beam_width=2, max_iterations=3)
    (*_, tree) = compute_optimal("q?", config, generator, FakeScorer(), policy)
    meta = tree.meta["compute_optimal"]
    assert meta["chosen_strategy"] == {"majority": "majority_vote"}.get(
        choice.strategy, choice.strategy
    )
    assert meta["difficulty_bin"] == f"bin {bin_ + 1} of {BINS}" and meta["fitted"]
    assert (
        f"bin {bin_ + 1} of 5" in meta["why"]
        and "best on the fitting half: 60% vs 40%" in (meta["why"])
    )
    assert bin_ == expected_bin  # signal 0.55, 0.75, 0.95 against edges 0.2 … 0.8


def test_the_probes_compute_is_counted():
    from tests.fakes import FakeGenerator

    generator = FakeGenerator(depth=2)
    config = SearchConfig(strategy="compute_optimal", n=4, beam_width=2, max_iterations=3)
    search = Policy(
        (0.2, 0.4, 0.6, 0.8), {4: (Choice("beam_search", 2, "last", 0.6, "dvts", 0.4),) * BINS}
    )
    (*_, tree) = compute_optimal("q?", config, generator, FakeScorer(), search)
    in_tree = sum(n.tokens for n in tree.nodes)
    # a search's tree holds its own steps only: the probe's are counted on top
    assert tree.compute.generated_tokens == generator.tokens > in_tree
    assert tree.meta["compute_optimal"]["pilot_samples"] == 4


def test_the_fitting_and_checking_halves_never_share_a_problem(fake_policy, tmp_path):
    ids = [f"tier-{i:03d}" for i in range(101)]
    fit_ids, check_ids = halves(ids)
    assert not set(fit_ids) & set(check_ids) and sorted(fit_ids + check_ids) == sorted(ids)
    assert halves(list(reversed(ids))) == (fit_ids, check_ids)  # not the file's order
    # a fit on a real (fake-policy) evaluation: the stored policy is the fitted one
    many = [
        Problem(f"q{k}", f"Problem {k}: what is {k} + {k}?", str(2 * k), "t") for k in range(1, 21)
    ]
    fake_policy.right.update({p.problem: set(range(k % 5)) for k, p in enumerate(many)})
    fake_policy.gold.update({p.problem: p.answer for p in many})
    results = evaluate(
        plan(many, ["majority_vote", "weighted_best_of_n", "beam_search"], [4], 1, SETTINGS),
        tmp_path,
        progress=lambda line: None,
    )
    policy, report = fit(results)
    assert report["fitting"] + report["checking"] == 20
    path = tmp_path / "policy.json"
    store(policy, report, "smollm2-135m", "arithmetic", path)
    assert stored_policy("smollm2-135m", "arithmetic", path) == policy
    assert stored_policy("qwen2.5-coder-0.5b", "arithmetic", path) is None


def test_the_eval_command_runs_the_quick_preset_shape(fake_policy, tmp_path, monkeypatch):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(
        "".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n" for p in PROBLEMS)
    )
    assert (
        cli(
            [
                "eval",
                "--problems",
                str(mine),
                "--preset",
                "quick",
                "--model",
                "smollm2-135m",
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    assert results["budgets"] == [1, 2, 4]
    assert set(results["summary"]) == {
        "greedy",
        "majority_vote",
        "weighted_best_of_n",
        "beam_search",
    }
    assert eval_command.PRESETS["quick"]["limit"] == 10
    assert Path(results["settings"]["problems"]) == mine


def test_the_bigger_models_runs_come_last_together():
    """The pool holds one policy: interleaving the bigger model's runs would load a model for
    every problem."""
    units = plan(
        PROBLEMS,
        ["majority_vote", "beam_search"],
        [1, 2],
        1,
        {**SETTINGS, "bigger": "qwen2.5-coder-1.5b"},
    ).units
    kinds = [u.kind for u in units]
    first = kinds.index("bigger")
    assert kinds[first:] == ["bigger"] * len(PROBLEMS) and "bigger" not in kinds[:first]


def test_the_scaling_tab_headline_and_live_run(fake_policy, tmp_path, monkeypatch):
    import app.handlers
    from app import scaling_tab
    from app.admission import Gate

    results = evaluate(
        plan(
            PROBLEMS,
            ["majority_vote", "weighted_best_of_n"],
            [1, 4],
            1,
            {**SETTINGS, "bigger": "qwen2.5-coder-1.5b"},
        ),
        tmp_path,
        runner=run_to_end,
        progress=lambda line: None,
    )
    line = scaling_tab.headline(results)
    # weighted BoN at N=4: 3 of 4 (by hand above); majority@4: 1 of 4; the "bigger" runs on the
    # same fake policy, greedy: right on 2 of 4
    assert line == (
        "test (4 problems): **smollm2-135m + Best-of-N (weighted) at N=4: 75%** — "
        "majority@4: 25% — qwen2.5-coder-1.5b greedy: 50%"
    )
    gate = Gate(max_waiting=4)
    monkeypatch.setattr(scaling_tab, "GATE", gate)
    monkeypatch.setattr(scaling_tab, "TIERS", {"mine": tmp_path / "mine.jsonl"})
    (tmp_path / "mine.jsonl").write_text(
        "".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n" for p in PROBLEMS)
    )
    frames = list(
        scaling_tab.live_eval("mine", ["majority_vote"], [1, 2], 2, "smollm2-135m", "arithmetic")
    )
    assert frames[-1][0].startswith("**Done**: 2 problems")
    assert len(gate.order) == 4  # every run took its turn in the line: greedy + sampling, twice
    last_table = [f[2] for f in frames if isinstance(f[2], str)][-1]
    # p1: every sample right; p2: its first two samples wrong
    assert "| majority_vote | 50% (1/2) | 50% (1/2) |" in last_table
    assert app.handlers.GATE is not gate  # the app's own line is untouched


def _hand_runs():
    """Two scaling runs of 20 problems, written by hand: probe signal k/20 for problem k. Weighted
    Best-of-N under the min aggregation (a variant record) is right on the hard ones (k < 8),
    beam search at M=2 (the second run) on the others, beam search at M=4 on none."""

    def rec(k, strategy, correct, **extra):
        return {
            "problem": f"h{k:02d}",
            "seed": 0,
            "strategy": strategy,
            "budget": 4,
            "correct": correct,
            "tokens": 100,
            "probe": {"signal": k / 20, "tokens": 40},
            **extra,
        }

    settings = {"model": "m", "prm": "p", "problems": "hand.jsonl", "beam_width": 4}
    m4 = {
        "settings": settings,
        "budgets": [4],
        "strategies": ["weighted_best_of_n", "beam_search"],
        "records": [],
    }
    m2 = {
        "settings": {**settings, "beam_width": 2},
        "budgets": [4],
        "strategies": ["beam_search"],
        "records": [],
    }
    for k in range(20):
        m4["records"] += [
            rec(k, "weighted_best_of_n", False, aggregation="last"),
            rec(k, "weighted_best_of_n", k < 8, aggregation="min", variant=True),
            rec(k, "beam_search", False, beam_width=4, aggregation="last"),
        ]
        m2["records"].append(rec(k, "beam_search", k >= 8, beam_width=2, aggregation="last"))
    return m4, m2


def test_the_fit_chooses_among_aggregations_and_beam_widths_as_worked_out_by_hand(tmp_path):
    from app.lab.compute_optimal_fit import main as fit_main

    m4, m2 = _hand_runs()
    policy, report = fit([m4, m2])
    edges = policy.edges
    assert edges == tuple(sorted(edges)) and len(edges) == BINS - 1
    for k in range(20):
        _, choice = policy.choose(k / 20, 4)
        fit_ids, _ = halves([f"h{i:02d}" for i in range(20)])
        lows = [int(p[1:]) for p in fit_ids]
        # a bin of the fitting half holding only hard problems picks the min variant; one with
        # only easy ones, beam search at M=2
        members = [i for i in lows if bin_of(i / 20, edges) == bin_of(k / 20, edges)]
        if members and max(members) < 8:
            assert (choice.strategy, choice.aggregation) == ("weighted_best_of_n", "min")
        if members and min(members) >= 8:
            assert (choice.strategy, choice.beam_width) == ("beam_search", 2)
    assert "weighted_best_of_n (min)" in report["candidates"]
    assert "beam_search M=2" in report["candidates"] and "beam_search M=4" in report["candidates"]
    check = report["budgets"]["4"]
    fit_ids, check_ids = halves([f"h{i:02d}" for i in range(20)])
    easy = sum(int(p[1:]) >= 8 for p in fit_ids)
    # the best single candidate on the fitting half (a tie goes to Best-of-N, listed first)
    assert check["best_single"] == (
        "beam_search M=2" if easy > len(fit_ids) - easy else "weighted_best_of_n (min)"
    )

    def right(k):  # the policy's pick for problem k, graded by the hand-written rule
        c = policy.choose(k / 20, 4)[1]
        return c.aggregation == "min" and k < 8 or c.strategy == "beam_search" and k >= 8

    ks = [int(p[1:]) for p in check_ids]
    assert check["compute_optimal_right"] == sum(map(right, ks))
    assert check["checked"] == len(ks) == 10
    # a search pays for the probe (40 tokens) on top; sampling reuses it (strategies' own 100)
    picks = [policy.choose(int(p[1:]) / 20, 4)[1].strategy for p in check_ids]
    assert check["compute_optimal_tokens"] == sum(
        140 if s == "beam_search" else 100 for s in picks
    ) / len(picks)
    assert check["best_single_tokens"] == 100
    # the command: several results files are fitted as one, and stored
    paths = []
    for name, run in (("m4", m4), ("m2", m2)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    out = tmp_path / "policy.json"
    assert fit_main([*map(str, paths), "--out", str(out)]) == 0
    assert stored_policy("m", "p", out) == policy
    # the Scaling tab's account of it: the check's figures and the choice per bin
    from app.lab.compute_optimal_fit import check_table
    from app.scaling_tab import policy_text
    from backend.fitted_policies import stored_entries

    text = check_table(stored_entries(out)["m|p"])
    row = next(line for line in text.splitlines() if line.startswith("| 4 |"))
    assert f"{check['compute_optimal']:.0%} · {check['compute_optimal_tokens']:,.0f} tokens" in row
    assert f"{check['best_single']}: {check['best_single_accuracy']:.0%} · 100 tokens" in row
    assert row.count("weighted_best_of_n (min)") + row.count("beam_search M=2") >= BINS
    assert policy_text(stored_entries(out)).startswith("**m under p**")
    assert "reference heuristic" in policy_text({})
    with pytest.raises(ValueError, match="differ in problems"):
        fit([m4, {**m2, "settings": {**m2["settings"], "problems": "other.jsonl"}}])


def test_compute_optimal_runs_the_chosen_aggregation_and_reads_its_probe_the_fitted_way():
    from tests.fakes import FakeGenerator

    generator = FakeGenerator(depth=3)
    choice = Choice("weighted_best_of_n", 2, "min", 0.7, "beam_search", 0.5)
    policy = Policy((0.2, 0.4, 0.6, 0.8), {4: (choice,) * BINS})
    config = SearchConfig(
        strategy="compute_optimal", n=4, beam_width=2, max_iterations=3, aggregation="prod"
    )
    (*_, tree) = compute_optimal("q?", config, generator, FakeScorer(), policy)
    assert tree.config["chosen"]["aggregation"] == "min"
    meta = tree.meta["compute_optimal"]
    assert "min of the step scores" in meta["why"]
    # the probe's mean is of its samples' last step scores (the fit's way), not the run's prod
    again = FakeGenerator(depth=3)
    pilot = SearchConfig(strategy="weighted_best_of_n", n=4, max_iterations=3, aggregation="last")
    (*_, probe_tree) = weighted_best_of_n_run("q?", pilot, again)
    lasts = [leaf.agg_score for leaf in probe_tree.leaves()]
    assert meta["probe"]["mean_score"] == pytest.approx(round(sum(lasts) / len(lasts), 4))


def weighted_best_of_n_run(question, config, generator):
    from strategies.sampling import sample_and_pick

    return list(sample_and_pick(question, config, generator, FakeScorer()))


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("strategy", ["weighted_best_of_n", "majority_vote"])
def test_a_sampling_choice_keeps_the_probes_samples_as_its_first(n, strategy):
    """The probe is part of the budget: its samples are the first of the N (all N when N is
    below the probe's 4), only the rest are drawn, and the tree keeps every rule."""
    from strategies.invariants import tree_problems
    from tests.fakes import FakeGenerator

    choice = Choice(strategy, 2, "last", 0.7, "beam_search", 0.5)
    policy = Policy((0.2, 0.4, 0.6, 0.8), {1: (choice,) * BINS})
    config = SearchConfig(strategy="compute_optimal", n=n, beam_width=2, max_iterations=3)
    generator = FakeGenerator(depth=3, answers="123")
    frames = list(compute_optimal("q?", config, generator, FakeScorer(), policy))
    tree = frames[-1]
    meta = tree.meta["compute_optimal"]
    assert meta["reused_probe_samples"] == min(n, 4) and tree.done
    firsts = tree.children(0)
    assert len(firsts) == n
    # the first min(n, 4) samples are the probe's: their answers, in order
    answers = [
        tree.leaves()[k].answer
        for k in range(len(tree.leaves()))
        if tree.path(tree.leaves()[k].id)[0].id in {f.id for f in firsts[:4]}
    ]
    assert answers == meta["pilot_answers"][: min(n, 4)]
    # drawn anew: N - 4 samples, with seeds after the probe's (not copies of its samples)
    assert tree.compute.generated_tokens == generator.tokens
    if n > 4:
        texts = [f.text for f in firsts]
        assert texts[4:] != texts[:4]
    # the probe's scoring, and the new samples' (none to score at N <= 4)
    assert tree.compute.scorer_calls == 1 + (strategy != "majority_vote" and n > 4)
    if strategy == "majority_vote":
        assert all(node.score is None for node in tree.nodes)
    assert [p for f in frames for p in tree_problems(f) if f.done] == []
    assert tree.config["chosen"]["n"] == n
    # the explorer's compute panel says which bin, which strategy, why, and the reuse
    from app.panels import compute_markdown

    row = next(line for line in compute_markdown(tree).splitlines() if "compute-optimal" in line)
    plain = row.replace("\\", "")
    assert meta["why"] in plain and f"the probe's samples are {min(n, 4)} of the N" in plain


def test_the_stored_policies_are_valid_and_say_how_they_were_checked():
    """assets/compute_optimal.json, as the fit stored it: sorted edges, one choice per bin at
    every fitted budget, each a candidate the fit knows with a real aggregation and M, and a
    check on problems the fit did not see."""
    from backend.fitted_policies import POLICY_PATH, stored_entries
    from strategies.compute_optimal import CHOOSABLE
    from strategies.config import AGGREGATIONS

    entries = stored_entries(POLICY_PATH)
    for key, entry in entries.items():
        model, prm = key.split("|")
        policy = stored_policy(model, prm)
        assert list(policy.edges) == sorted(policy.edges) and len(policy.edges) == BINS - 1
        for choices in policy.choices.values():
            assert len(choices) == BINS
            for c in choices:
                assert c.strategy in CHOOSABLE and c.aggregation in AGGREGATIONS
                assert c.beam_width >= 1 and 0 <= c.fit_accuracy <= 1
        check = entry["check"]
        assert check["fitting"] >= 2 * BINS and check["checking"] >= BINS
        assert set(check["budgets"]) == {str(b) for b in policy.choices}


def test_a_policy_or_a_record_under_the_old_name_reads_as_majority_voting(tmp_path):
    """Results and policies written before majority voting had one name read as today's."""
    choice = {
        "strategy": "majority",
        "beam_width": 4,
        "aggregation": "last",
        "fit_accuracy": 0.5,
        "runner_up": "majority",
        "runner_up_accuracy": 0.4,
    }
    policy = Policy.from_dict({"edges": [0.5], "choices": {"1": [choice, choice]}})
    assert {c.strategy for c in policy.choices[1]} == {"majority_vote"}
    assert policy.choices[1][0].runner_up == "majority_vote"
    record = {"strategy": "majority", "budget": 1, "correct": True}
    (tmp_path / "records.jsonl").write_text(json.dumps({"unit": "u", "records": [record]}) + "\n")
    assert harness.load_done(tmp_path, SETTINGS)["u"][0]["strategy"] == "majority_vote"
