"""The scaling harness and compute-optimal's fitted policy, on fake models whose answers a test
sets per problem and sample, so every accuracy can be worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import backend.runtime
from app import evaluation
from app.cli import main as cli
from app.evaluation import evaluate, first_samples_answer, plan
from app.fit_compute_optimal import fit, halves, store, stored_policy
from app.problems import Problem
from app.scaling import summarize, wilson
from app.service import RunRequest, run_to_end
from strategies.compute_optimal import compute_optimal
from strategies.config import SearchConfig
from strategies.difficulty import BINS, Choice, Policy, bin_of, probe_signal, quantile_edges
from strategies.protocols import GeneratedStep
from tests.fakes import FakeScorer

SETTINGS = dict(model="smollm2-135m", prm="arithmetic", precision="fp32", beam_width=2,
                max_iterations=3, max_step_tokens=16, max_solution_tokens=64, temperature=0.8,
                top_p=1.0, lookahead=1, bigger=None, problems="test")  # fmt: skip


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
                ok = question in self.greedy if sampling.temperature == 0 else i in self.right[
                    question]  # fmt: skip
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


PROBLEMS = [Problem(f"p{k}", f"Question {k}: what is {k} + {k}?", str(2 * k), "test")
            for k in range(1, 5)]  # fmt: skip
GOLD = {p.problem: p.answer for p in PROBLEMS}
# samples right per problem (of 4): p1 all, p2 the last two, p3 only the first, p4 none
RIGHT = {PROBLEMS[0].problem: {0, 1, 2, 3}, PROBLEMS[1].problem: {2, 3},
         PROBLEMS[2].problem: {0}, PROBLEMS[3].problem: set()}  # fmt: skip


@pytest.fixture
def fake_policy(monkeypatch):
    # copies: a test may add problems of its own without changing another test's
    script = AnswerScript({q: set(r) for q, r in RIGHT.items()}, dict(GOLD),
                          greedy={PROBLEMS[0].problem, PROBLEMS[2].problem})  # fmt: skip
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: Runtime(script))
    return script


def _plan(strategies="majority,best_of_n,weighted_best_of_n,beam_search", budgets=(1, 2, 4)):
    return plan(PROBLEMS, strategies.split(","), budgets, 1, SETTINGS)


def test_accuracies_match_the_ones_worked_out_by_hand(fake_policy, tmp_path):
    results = evaluate(_plan(), tmp_path, progress=lambda line: None)
    acc = {s: {int(b): c["accuracy"] for b, c in cells.items()}
           for s, cells in results["summary"].items()}  # fmt: skip
    # majority over the first b samples, ties to the answer seen first:
    #   b=1: p1 ✓ p2 ✗ p3 ✓ p4 ✗; b=2: p1 ✓, p2 ✗ (0, 0), p3 ✓ (tie 6 vs 0: first), p4 ✗;
    #   b=4: p1 ✓, p2 tie 2-2 → "0" first ✗, p3 ✗ (1 vs 3), p4 ✗
    assert acc["majority"] == {1: 0.5, 2: 0.5, 4: 0.25}
    # Best-of-N picks the best-scored sample: right whenever one of the first b is right
    assert acc["best_of_n"] == {1: 0.5, 2: 0.5, 4: 0.75}
    assert acc["weighted_best_of_n"] == {1: 0.5, 2: 0.5, 4: 0.75}  # 0.9·k vs 0.2·(b-k)
    assert acc["greedy"] == {1: 0.5}
    cell = results["summary"]["best_of_n"]["4"]
    assert (cell["right"], cell["n"]) == (3, 4) and (cell["low"], cell["high"]) == wilson(3, 4)
    assert cell["tokens"] == 5 + 6 + 7 + 8 and cell["flops"] == 2 * 1000 * 26
    assert (tmp_path / "scaling.html").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["records"]) == 4 * (1 + 3 * 3 + 3)  # greedy, 3 sampling × 3 budgets, beam


def test_wilson_interval_by_hand():
    low, high = wilson(3, 4)  # p = 0.75, z = 1.96: the textbook values
    assert round(low, 4) == 0.3006 and round(high, 4) == 0.9544
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_summarize_hand_records():
    rows = [dict(strategy="majority", budget=2, correct=c, tokens=t, verifier_tokens=0,
                 flops=2.0 * t, seconds=1.0) for c, t in ((True, 10), (False, 30))]  # fmt: skip
    cell = summarize(rows)["majority"]["2"]
    assert cell["accuracy"] == 0.5 and cell["tokens"] == 20 and cell["flops"] == 40


def test_a_resumed_evaluation_skips_finished_units_and_gives_the_same_results(fake_policy,
                                                                              tmp_path):  # fmt: skip
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
    resumed = evaluate(_plan(), tmp_path / "cut", progress=lambda line: None,
                       runner=lambda r: again.append(r) or run_to_end(r))  # fmt: skip
    assert len(again) == len(_plan().units) - 7  # only what was not finished
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(resumed["records"]) == strip(whole["records"])


def test_a_resumed_run_with_other_settings_is_refused(fake_policy, tmp_path):
    evaluate(_plan(budgets=(1,)), tmp_path, progress=lambda line: None)
    other = plan(PROBLEMS, ["majority"], [1], 1, {**SETTINGS, "model": "qwen2.5-coder-0.5b"})
    with pytest.raises(ValueError, match="holds an evaluation with other settings"):
        evaluate(other, tmp_path, progress=lambda line: None)


def test_samples_are_reused_across_budgets_with_the_answers_of_separate_runs(monkeypatch):
    """Majority and Best-of-N at budget 4 are the first 4 of the 16 samples: on a policy whose
    samples depend on the seed and the sample's index, the same answers as a run at N=4."""
    from tests.fakes import FakeGenerator

    monkeypatch.setattr(backend.runtime, "get_runtime",
                        lambda *a, **k: Runtime(FakeGenerator(depth=3, answers="12345")))  # fmt: skip
    question = "Tom has 3 apples and gets 4 more. How many?"
    for seed in range(6):

        def tree(strategy, n, seed=seed):
            config = SearchConfig(strategy=strategy, n=n, seed=seed, max_iterations=4)
            return run_to_end(RunRequest(question, config, model="smollm2-135m", prm="arithmetic",
                                         compare=False))  # fmt: skip

        big = tree("weighted_best_of_n", 16)
        for b in (1, 2, 4, 8):
            for strategy, pick in (("majority_vote", "majority"), ("best_of_n", "vanilla"),
                                   ("weighted_best_of_n", "weighted")):  # fmt: skip
                alone = tree(strategy, b)
                answer, share = first_samples_answer(big, b, pick)
                assert answer == alone.answer, (seed, b, strategy)
                assert round(share * big.compute.generated_tokens) == alone.compute.generated_tokens


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
    choices = [Choice(s, 2, "last", 0.6, "majority", 0.4) for s in
               ("beam_search", "dvts", "weighted_best_of_n", "best_of_n", "majority")]  # fmt: skip
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
    assert meta["chosen_strategy"] == {"majority": "majority_vote"}.get(choice.strategy,
                                                                       choice.strategy)  # fmt: skip
    assert meta["difficulty_bin"] == f"bin {bin_ + 1} of {BINS}" and meta["fitted"]
    assert f"bin {bin_ + 1} of 5" in meta["why"] and "best on the fitting half: 60% vs 40%" in (
        meta["why"])  # fmt: skip
    assert bin_ == expected_bin  # signal 0.55, 0.75, 0.95 against edges 0.2 … 0.8


def test_the_probes_compute_is_counted():
    from tests.fakes import FakeGenerator

    generator = FakeGenerator(depth=2)
    config = SearchConfig(strategy="compute_optimal", n=4, beam_width=2, max_iterations=3)
    (*_, tree) = compute_optimal("q?", config, generator, FakeScorer(), _policy())
    in_tree = sum(n.tokens for n in tree.nodes)
    assert tree.compute.generated_tokens == generator.tokens > in_tree  # the probe's too
    assert tree.meta["compute_optimal"]["pilot_samples"] == 4


def test_the_fitting_and_checking_halves_never_share_a_problem(fake_policy, tmp_path):
    ids = [f"tier-{i:03d}" for i in range(101)]
    fit_ids, check_ids = halves(ids)
    assert not set(fit_ids) & set(check_ids) and sorted(fit_ids + check_ids) == sorted(ids)
    assert halves(list(reversed(ids))) == (fit_ids, check_ids)  # not the file's order
    # a fit on a real (fake-policy) evaluation: the stored policy is the fitted one
    many = [Problem(f"q{k}", f"Problem {k}: what is {k} + {k}?", str(2 * k), "t")
            for k in range(1, 21)]  # fmt: skip
    fake_policy.right.update({p.problem: set(range(k % 5)) for k, p in enumerate(many)})
    fake_policy.gold.update({p.problem: p.answer for p in many})
    results = evaluate(plan(many, ["majority", "weighted_best_of_n", "beam_search"], [4], 1,
                            SETTINGS), tmp_path, progress=lambda line: None)  # fmt: skip
    policy, report = fit(results)
    assert report["fitting"] + report["checking"] == 20
    path = tmp_path / "policy.json"
    store(policy, report, "smollm2-135m", "arithmetic", path)
    assert stored_policy("smollm2-135m", "arithmetic", path) == policy
    assert stored_policy("qwen2.5-coder-0.5b", "arithmetic", path) is None


def test_the_eval_command_runs_the_quick_preset_shape(fake_policy, tmp_path, monkeypatch):
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer}) + "\n"
                            for p in PROBLEMS))  # fmt: skip
    assert cli(["eval", "--problems", str(mine), "--preset", "quick", "--model", "smollm2-135m",
                "--out", str(tmp_path / "q")]) == 0  # fmt: skip
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    assert results["budgets"] == [1, 2, 4]
    assert set(results["summary"]) == {"greedy", "majority", "weighted_best_of_n", "beam_search"}
    assert evaluation.PRESETS["quick"]["limit"] == 10
    assert Path(results["settings"]["problems"]) == mine


def test_the_bigger_models_runs_come_last_together():
    """The pool holds one policy: interleaving the bigger model's runs would load a model for
    every problem."""
    units = plan(PROBLEMS, ["majority", "beam_search"], [1, 2], 1,
                 {**SETTINGS, "bigger": "qwen2.5-coder-1.5b"}).units  # fmt: skip
    kinds = [u.kind for u in units]
    first = kinds.index("bigger")
    assert kinds[first:] == ["bigger"] * len(PROBLEMS) and "bigger" not in kinds[:first]


def test_the_scaling_tab_headline_and_live_run(fake_policy, tmp_path, monkeypatch):
    import app.handlers
    from app import scaling_tab
    from app.admission import Gate

    results = evaluate(plan(PROBLEMS, ["majority", "weighted_best_of_n"], [1, 4], 1,
                            {**SETTINGS, "bigger": "qwen2.5-coder-1.5b"}), tmp_path,
                       runner=run_to_end, progress=lambda line: None)  # fmt: skip
    line = scaling_tab.headline(results)
    # weighted BoN at N=4: 3 of 4 (by hand above); majority@4: 1 of 4; the "bigger" runs on the
    # same fake policy, greedy: right on 2 of 4
    assert line == ("test (4 problems): **smollm2-135m + Best-of-N (weighted) at N=4: 75%** — "
                    "majority@4: 25% — qwen2.5-coder-1.5b greedy: 50%")  # fmt: skip
    gate = Gate(max_waiting=4)
    monkeypatch.setattr(scaling_tab, "GATE", gate)
    monkeypatch.setattr(scaling_tab, "TIERS", {"mine": tmp_path / "mine.jsonl"})
    (tmp_path / "mine.jsonl").write_text("".join(
        json.dumps({"problem": p.problem, "answer": p.answer}) + "\n" for p in PROBLEMS))  # fmt: skip
    frames = list(scaling_tab.live_eval("mine", ["majority"], [1, 2], 2, "smollm2-135m",
                                        "arithmetic"))  # fmt: skip
    assert frames[-1][0].startswith("**Done**: 2 problems")
    assert len(gate.order) == 4  # every run took its turn in the line: greedy + sampling, twice
    last_table = [f[2] for f in frames if isinstance(f[2], str)][-1]
    # p1: every sample right; p2: its first two samples wrong
    assert "| majority | 50% (1/2) | 50% (1/2) |" in last_table
    assert app.handlers.GATE is not gate  # the app's own line is untouched
