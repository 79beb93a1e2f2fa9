"""The value head: fitting recovers a known separator, problems never straddle the split, a head
file is checked before it serves, scores do not depend on batching, and a search under it on the
real embedded model scores every step as it streams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.lab import fitting
from app.lab.verifier_training import held_out
from backend.verifiers.value_head import HeadError, ValueHead, forward, load_head


def test_fitting_recovers_a_known_separator_on_held_out_problems():
    """Synthetic hidden states whose label is a fixed direction's sign (plus noise), grouped in
    problems: the linear head and the MLP, fitted on some problems, rank the others' states
    almost perfectly."""
    rng = np.random.default_rng(0)
    d, per = 48, 12
    direction = rng.normal(size=d)
    x = rng.normal(size=(60 * per, d)) * 2 + 5  # off-centre, as hidden states are
    y = ((x - 5) @ direction + rng.normal(scale=1.0, size=len(x)) > 0).astype(float)
    groups = [f"p{i // per}" for i in range(len(x))]
    test = np.array([held_out(g, 0.3) for g in groups])
    assert 0 < test.sum() < len(test)
    mean, std = fitting.standardise(x[~test])
    z = (x - mean) / std
    w, b = fitting.fit_linear(z[~test], y[~test], l2=1.0)
    linear = forward([(w[None, :], np.array([b]))], z[test])
    assert fitting.auroc(linear, y[test]) > 0.95
    mlp = forward(fitting.fit_mlp(z[~test], y[~test], l2=1e-2), z[test])
    assert fitting.auroc(mlp, y[test]) > 0.9
    cosine = w @ (direction * std) / np.linalg.norm(w) / np.linalg.norm(direction * std)
    assert cosine > 0.9  # it found the direction itself
    assert fitting.calibration(linear, y[test])["ece"] < 0.15


def test_the_split_puts_every_problem_on_one_side_and_cross_validation_too():
    ids = [f"tier3-{i:03d}" for i in range(1, 121)]
    sides = {i: held_out(i, 0.3) for i in ids}
    assert sides == {i: held_out(i, 0.3) for i in reversed(ids)}  # the id alone decides
    assert 0.2 < sum(sides.values()) / len(ids) < 0.4
    groups = [g for g in ids for _ in range(5)]
    masks = fitting.folds(groups, 5)
    assert sum(m.sum() for m in masks) == len(groups)  # every row in exactly one fold
    for m in masks:
        inside = {g for g, held in zip(groups, m) if held}
        outside = {g for g, held in zip(groups, m) if not held}
        assert not inside & outside  # a problem's steps never on both sides of a fold


def test_auroc_counts_ties_as_half_and_needs_both_kinds():
    assert fitting.auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert fitting.auroc([0.5, 0.5], [1, 0]) == 0.5
    assert fitting.auroc([0.2, 0.9], [1, 0]) == 0.0
    assert fitting.auroc([0.2, 0.9], [1, 1]) is None


def _head(d: int = 8, sha: str = "ab" * 32, **changes) -> dict:
    rng = np.random.default_rng(1)
    data = ValueHead(
        "smollm2-135m",
        sha,
        "linear",
        np.zeros(d),
        np.ones(d),
        [(rng.normal(size=(1, d)), np.zeros(1))],
    ).to_json()
    return data | changes


def test_a_head_file_is_checked_before_it_serves(tmp_path):
    path = tmp_path / "smollm2-135m.json"
    with pytest.raises(
        HeadError,
        match=r"No value head is trained for smollm2-135m: train one "
        r"with `python -m app\.cli train-verifier --model smollm2-135m`",
    ):
        load_head("smollm2-135m", "ab" * 32, path)
    path.write_text(json.dumps(_head()))
    assert load_head("smollm2-135m", "ab" * 32, path).dim == 8
    with pytest.raises(HeadError, match=r"trained for another model file .*train it again"):
        load_head("smollm2-135m", "cd" * 32, path)
    for broken, why in [
        ("{not json", "not a value head"),
        (json.dumps(_head(format=7)), "format 7"),
        (json.dumps(_head(std=[0.0] * 8)), "std positive"),
        (json.dumps(_head(mean=[0.0] * 3)), "one size"),
        (json.dumps({k: v for k, v in _head().items() if k != "layers"}), "KeyError"),
        (
            json.dumps(_head(layers=[{"weight": [[1.0] * 8, [1.0] * 8], "bias": [0, 0]}])),
            "one output",
        ),
        (json.dumps(_head(mean=[float("nan")] * 8)), "finite"),
    ]:
        path.write_text(broken)
        with pytest.raises(HeadError, match=why):
            load_head("smollm2-135m", "ab" * 32, path)


@pytest.fixture
def smollm2_head(policy, engine, tmp_path, monkeypatch):
    """A head for the embedded model's file (random weights: the wiring is tested, not its
    judgement), where the pool looks for heads."""
    import backend.verifiers.value_head as value_head
    from backend.loading.policy import gguf_sha256

    d = policy.model.native.n_embd
    rng = np.random.default_rng(2)
    head = ValueHead(
        "smollm2-135m",
        gguf_sha256("smollm2-135m", policy.model.path),
        "mlp",
        rng.normal(size=d),
        np.abs(rng.normal(size=d)) + 0.5,
        [
            (rng.normal(size=(16, d)) / np.sqrt(d), np.zeros(16)),
            (rng.normal(size=(1, 16)), np.zeros(1)),
        ],
    )
    monkeypatch.setattr(value_head, "HEADS_DIR", tmp_path)
    head.save(tmp_path / "smollm2-135m.json")
    return head


@pytest.mark.model
def test_a_step_scores_the_same_alone_and_in_a_batch(policy, engine, smollm2_head):
    from backend.verifiers.value_head import ValueHeadPRM
    from strategies.protocols import Sampling

    q = "Sara has 5 boxes with 6 pencils each. How many pencils?"
    prm = ValueHeadPRM(engine, smollm2_head)
    steps = [s.text for s in engine.next_steps(q, [[]], 3, Sampling(seed=3, max_step_tokens=32))[0]]
    together = prm.score(q, [[s] for s in steps]).steps
    alone = [prm.score(q, [[s]]).steps[0] for s in steps]
    # the same hidden states; only the rounding of a matrix product may differ with its shape
    np.testing.assert_allclose(together, alone, rtol=1e-9)
    assert all(0.0 < x[0] < 1.0 for x in together)
    assert prm.score(q, [[s] for s in steps]).tokens == 0  # it reads nothing


@pytest.mark.model
def test_a_search_under_the_value_head_on_the_real_model_scores_every_step(smollm2_head):
    """Through the app's path: the PRM choices value-head and checker+value-head, a streamed beam
    search whose every step carries the head's score (the veto's where the arithmetic is wrong)."""
    from app.request import RunRequest
    from app.service import stream_run
    from backend.runtime import ModelPool
    from strategies.config import SearchConfig
    from strategies.invariants import tree_problems

    config = SearchConfig(
        strategy="beam_search", n=4, beam_width=2, max_iterations=3, seed=1, max_step_tokens=48
    )
    for prm in ("value-head", "checker+value-head"):
        request = RunRequest(
            "What is 12 times 7?", config, model="smollm2-135m", prm=prm, compare=False
        )
        writing = []  # one tree is yielded as it grows: note each frame's flag as it comes
        for tree in stream_run(request):
            writing.append(tree.writing)
        assert tree.done and tree_problems(tree) == [] and len(writing) > 3
        assert any(writing)  # steps arrived as they ended
        steps = [n for n in tree.nodes if n.parent is not None]
        assert steps and all(n.score is not None and 0.0 <= n.score <= 1.0 for n in steps)
        assert tree.meta["prm"] == prm and tree.compute.scored_tokens == 0
    pool = ModelPool()
    try:
        with pytest.raises(HeadError, match="No value head is trained for qwen2.5-coder-0.5b"):
            pool.runtime("qwen2.5-coder-0.5b", "value-head")  # none where the test looks
        assert pool.runtime("smollm2-135m", "none").scorer is None  # voting alone needs no head
    finally:
        pool.release()


def test_an_evaluation_under_a_value_head_leaves_out_what_it_was_trained_on(tmp_path, monkeypatch):
    """The scaling lab scores a learned verifier only on problems its head never saw; any other
    verifier gets them all."""
    from argparse import Namespace

    import backend.verifiers.value_head as value_head
    from app.lab.eval_command import plan_from_args
    from app.lab.problem_sets import TIERS, load_problems

    tier = load_problems(TIERS["tier2_two_steps"])
    seen = [p.id for p in tier[:3]]
    monkeypatch.setattr(value_head, "HEADS_DIR", tmp_path)
    (tmp_path / "smollm2-135m.json").write_text(json.dumps(_head(trained_on={"problems": seen})))

    def planned(prm: str) -> set[str]:
        args = Namespace(
            preset=None,
            problems="tier2_two_steps",
            strategies="majority_vote",
            budgets="1",
            limit=5,
            seeds=1,
            model="smollm2-135m",
            prm=prm,
            bigger="none",
            precision="auto",
            beam_width=4,
        )
        return {u.problem.id for u in plan_from_args(args).units}

    assert planned("value-head") == {p.id for p in tier[3:8]}
    assert planned("checker+value-head") == {p.id for p in tier[3:8]}
    assert planned("arithmetic") == {p.id for p in tier[:5]}
