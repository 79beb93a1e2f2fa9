"""Small model + search against a bigger model alone: FLOPs, equal-compute voters, the verdict line,
the explorer's panel and the `/run` comparison, on fakes (no model loads)."""

from __future__ import annotations

import dataclasses
import types

import pytest

import app.request
import app.service
import backend.runtime
from app.handlers import DEFAULTS, explore
from app.request import RunRequest
from app.service import run_json
from app.versus import MIN_VOTERS, equal_compute_voters, run_flops, verdict_line, versus_markdown
from backend.catalog import catalog
from strategies.tree import Compute, SearchTree
from tests.fakes import FakeGenerator, FakeScorer

QUESTION = "A baker makes 24 muffins and sells 15. How many are left?"
SMALL, BIG = "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


def _tree(
    answer, generated, scored=0, params=494_032_768, prm_params=0, n=8, strategy="beam_search"
):
    tree = SearchTree(QUESTION, strategy=strategy, config={"n": n})
    tree.answer = answer
    tree.compute = Compute(generated_tokens=generated, scored_tokens=scored)
    tree.meta.update(params=params, prm_params=prm_params)
    return tree


def test_flops_count_the_policy_and_the_verifier_two_per_parameter_per_token():
    search = _tree("9", generated=1000, scored=3000, prm_params=1_543_714_304)
    assert run_flops(search) == 2 * (494_032_768 * 1000 + 1_543_714_304 * 3000)
    assert run_flops(_tree("9", generated=1000, scored=3000)) == 2 * 494_032_768 * 1000  # checker
    greedy = _tree("7", generated=200, params=1_543_714_304, n=1)
    # 10.2e12 FLOPs of search buy 16 samples of 200 tokens from the 1.5B; capped at N
    assert equal_compute_voters(search, greedy, cap=64) == 16
    assert equal_compute_voters(search, greedy, cap=8) == 8
    assert equal_compute_voters(search, _tree("7", generated=0), cap=8) == 0


def test_the_verdict_line_reads_like_the_issue_asks():
    search = _tree("16", generated=1200, params=494_032_768)
    greedy = _tree("3", generated=200, params=1_543_714_304, n=1, strategy="majority_vote")
    line = verdict_line(search, greedy, None, "0.5B", "1.5B", expected="16")
    ratio = run_flops(search) / run_flops(greedy)
    assert (
        line
        == f"0.5B + Beam search (N=8): 16 ✓ — 1.5B alone: 3 ✗ — at {ratio:.1f}× the 1.5B's compute"
    )
    voted = _tree("16", generated=600, params=1_543_714_304, n=3, strategy="majority_vote")
    line = verdict_line(search, greedy, voted, "0.5B", "1.5B")  # no expected answer: no marks
    assert "1.5B alone: 3 — 1.5B majority@3: 16 —" in line and "✓" not in line
    table = versus_markdown(search, greedy, voted, "0.5B", "1.5B", "16")
    assert table.count("\n| ") == 4 and "| FLOPs |" in table and line.split(" — ")[0] in table
    assert "answering the same question" in versus_markdown(search, None, None, "0.5B", "1.5B")


def test_which_bigger_model_a_request_compares_with():
    assert catalog().get(SMALL).bigger == BIG
    assert RunRequest(QUESTION, model=SMALL).bigger_model == BIG  # auto: the catalog's
    assert RunRequest(QUESTION, model="smollm2-135m").bigger_model is None  # none listed
    assert RunRequest(QUESTION, model="smollm2-135m", bigger=SMALL).bigger_model == SMALL
    assert RunRequest(QUESTION, model=SMALL, bigger="none").bigger_model is None
    assert RunRequest(QUESTION, model=SMALL, compare=False).bigger_model is None
    assert RunRequest(QUESTION, model=BIG).bigger_model is None  # not compared with itself
    with pytest.raises(ValueError, match="Unknown bigger model 'gpt-9'"):
        RunRequest(QUESTION, bigger="gpt-9")


def test_a_request_that_names_no_model_starts_on_the_showcase_where_it_is_installed(monkeypatch):
    from app.request import starting_model
    from backend.loading import gguf_parts

    assert catalog().showcase_policy == SMALL and catalog().default_policy == "smollm2-135m"
    monkeypatch.delenv("THINKTREE_MODEL", raising=False)
    monkeypatch.setattr(gguf_parts, "installed", lambda name, cache: True)
    assert starting_model() == SMALL and RunRequest(QUESTION).model == SMALL
    monkeypatch.setattr(gguf_parts, "installed", lambda name, cache: name != SMALL)
    assert starting_model() == "smollm2-135m"  # `setup.sh --small`: the embedded model
    monkeypatch.setenv("THINKTREE_MODEL", BIG)
    assert starting_model() == BIG
    monkeypatch.setenv("THINKTREE_MODEL", "gpt-9")
    with pytest.raises(ValueError, match="Unknown policy 'gpt-9'"):
        starting_model()


def test_installed_means_embedded_assembled_or_parts_present(tmp_path, monkeypatch):
    from backend.loading import gguf_parts

    assert gguf_parts.installed("smollm2-135m", tmp_path)  # no parts: embedded or the hub
    monkeypatch.setattr(gguf_parts.PartedGGUF, "part_files", lambda self: None)
    assert not gguf_parts.installed(SMALL, tmp_path)  # an empty cache and no part wheels
    monkeypatch.setattr(gguf_parts.PartedGGUF, "part_files", lambda self: [tmp_path / "p1"])
    assert gguf_parts.installed(SMALL, tmp_path)


class FakeRuntime:
    def __init__(self) -> None:
        self.generator = FakeGenerator(depth=3, answers=("9",))
        self.scorer = FakeScorer()

    def meta(self) -> dict:
        return {"model": SMALL, "params": 494_032_768, "prm": "fake", "prm_params": 0}


@pytest.fixture
def fakes(monkeypatch):
    """The 0.5B's search on a fake that answers 9; the 1.5B on a fake that answers 7."""
    big = FakeGenerator(depth=2, answers=("7",))
    loaded = types.SimpleNamespace(device="cpu", precision="fp32")
    calls = []

    def bigger(name, precision="auto"):
        calls.append(name)
        return loaded, big

    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: FakeRuntime())
    monkeypatch.setattr(backend.runtime.POOL, "bigger", bigger)
    return types.SimpleNamespace(calls=calls, big=big)


def test_run_json_carries_the_bigger_models_answers_and_the_verdict(fakes):
    request = RunRequest(QUESTION, model=SMALL, expected="9")
    run = run_json(request)
    bigger = run["comparison"]["bigger"]
    assert fakes.calls and set(fakes.calls) == {BIG}
    greedy, search = bigger["greedy"], bigger["search"]
    assert greedy["model"] == BIG and greedy["n"] == 1 and greedy["answer"] == "7"
    assert greedy["correct"] is False and search["correct"] is True
    tokens = greedy["tokens"]
    assert greedy["flops"] == 2 * catalog().get(BIG).params * tokens > 0
    assert search["flops"] == 2 * 494_032_768 * run["compute"]["generated_tokens"]
    voters = min(request.config.n, int(search["flops"] // greedy["flops"]))
    if voters >= MIN_VOTERS:
        assert bigger["majority"]["n"] == voters and bigger["majority"]["answer"] == "7"
    else:
        assert bigger["majority"] is None
    assert bigger["verdict"].startswith("0.5B + ") and "1.5B alone: 7 ✗" in bigger["verdict"]
    assert bigger["compute_ratio"] == pytest.approx(search["flops"] / greedy["flops"])
    assert greedy["temperature"] == 0.0  # its own answer is its greedy one
    assert run_json(dataclasses.replace(request, bigger="none"))["comparison"].get("bigger") is None


def test_the_bigger_model_votes_when_equal_compute_buys_enough_samples(fakes, monkeypatch):
    monkeypatch.setattr(app.service, "equal_compute_voters", lambda *a, **k: 4)
    run = run_json(RunRequest(QUESTION, model=SMALL))
    majority = run["comparison"]["bigger"]["majority"]
    assert majority["n"] == 4 and majority["strategy"] == "majority_vote"
    assert majority["temperature"] == app.request.PRESET.temperature  # sampled, as the search
    assert "1.5B majority@4: 7" in run["comparison"]["bigger"]["verdict"]


def test_the_explorer_shows_the_bigger_model_beside_majority_voting(fakes):
    updates = list(explore({**DEFAULTS, "prompt": QUESTION, "model": SMALL, "expected": "9"}))
    panels = [u["versus"] for u in updates if u.get("versus")]
    assert "answering the same question" in panels[0]  # said before the bigger model writes
    final = panels[-1]
    assert "| answer | 9 ✓ | 7 ✗" in final and "1.5B alone: 7 ✗" in final
    assert final.index("| FLOPs |") < final.index("**0.5B + ")
    # the majority-vote comparison came first, and a policy with no bigger model shows none
    first_versus = next(i for i, u in enumerate(updates) if u.get("versus"))
    assert any("comparison" in u and u["comparison"] for u in updates[:first_versus])
    updates = list(explore({**DEFAULTS, "prompt": QUESTION, "model": "smollm2-135m"}))
    assert not any(u.get("versus") for u in updates)


def test_a_bigger_model_that_fails_costs_neither_the_run_nor_the_page(fakes, monkeypatch):
    def broken(name, precision="auto"):
        raise RuntimeError("no room for the 1.5B")

    monkeypatch.setattr(backend.runtime.POOL, "bigger", broken)
    run = run_json(RunRequest(QUESTION, model=SMALL))
    assert run["answer"] is not None and run["comparison"]["strategy"] == "majority_vote"
    assert run["comparison"]["bigger"] == {
        "model": BIG,
        "error": "RuntimeError: no room for the 1.5B",
    }
    updates = list(explore({**DEFAULTS, "prompt": QUESTION, "model": SMALL}))
    # the error is model-side text: escaped for markdown (it renders as written)
    assert r"could not answer here: no room for the 1\.5B" in updates[-1]["versus"]
    assert updates[-1]["status"].startswith("Done")


def test_the_cli_prints_the_verdict_and_writes_the_comparison(fakes, tmp_path, capsys):
    from app.cli import main

    out = tmp_path / "run.json"
    assert (
        main(
            [
                "run",
                "--prompt",
                QUESTION,
                "--model",
                SMALL,
                "--expected",
                "9",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "0.5B + Beam search (N=4): 9 ✓ — 1.5B alone: 7 ✗" in printed.out
    # each comparison part is announced as it starts, --quiet or not
    assert "majority voting at N=4 ..." in printed.err and f"{BIG} alone ..." in printed.err
    import json

    assert json.loads(out.read_text())["comparison"]["bigger"]["greedy"]["answer"] == "7"


def test_the_cli_keeps_the_run_when_the_bigger_model_fails(fakes, tmp_path, capsys, monkeypatch):
    import json

    from app.cli import main

    def broken(name, precision="auto"):
        raise RuntimeError("no room for the 1.5B")

    monkeypatch.setattr(backend.runtime.POOL, "bigger", broken)
    out = tmp_path / "run.json"
    args = ["run", "--prompt", QUESTION, "--model", SMALL, "--quiet", "--json", str(out)]
    assert main(args) == 1
    assert "no room for the 1.5B" in capsys.readouterr().err
    run = json.loads(out.read_text())  # the search and its majority vote are kept
    assert run["answer"] is not None and run["comparison"]["strategy"] == "majority_vote"
    assert run["comparison"]["bigger"]["error"] == "RuntimeError: no room for the 1.5B"


@pytest.mark.model
def test_the_comparison_runs_on_real_models_smollm2_against_the_0_5b():
    """The real path: SmolLM2's search, then the 0.5B loaded as the second model (the pool's
    slot that holds a judge or the bigger model), greedy and, if the FLOPs buy it, voting."""
    from backend.loading.policy import gguf_path

    if gguf_path(SMALL) is None:
        pytest.skip("set up with --small: the Qwen2.5-Coder parts are not installed")
    config = dataclasses.replace(app.request.PRESET, n=4, max_iterations=3)
    request = RunRequest("What is 12 times 7?", config, "smollm2-135m", bigger=SMALL, expected="84")
    try:
        run = run_json(request)
        bigger = run["comparison"]["bigger"]
        assert bigger["greedy"]["model"] == SMALL and bigger["greedy"]["n"] == 1
        assert bigger["greedy"]["tokens"] > 0 and bigger["greedy"]["flops"] > 0
        assert bigger["search"]["model"] == "smollm2-135m"
        assert bigger["verdict"].startswith("SmolLM2 135M + Beam search (N=4): ")
        assert " — 0.5B alone: " in bigger["verdict"]
        loaded, engine = backend.runtime.POOL.bigger(SMALL)
        assert loaded.name == SMALL and loaded is not backend.runtime.POOL.policy("smollm2-135m")
    finally:
        backend.runtime.POOL.release()  # the other tests' models load again when asked for
