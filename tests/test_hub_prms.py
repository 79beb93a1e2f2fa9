"""Tests for backend/verifiers/hub_prms.py and backend/loading/prm.py: the four hub PRM formats, offline.

Each family runs on a tiny random model (2 layers, hidden 64) with the embedded SmolLM2's real
tokenizer extended by the format's tokens, saved in the hub checkpoint layout (tests/tiny_prms).
The formatted input is compared with hand-written strings, scores with a full forward pass read
the model-card way, and 4-bit NF4 goes through the same loader the GPU uses, on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from backend.loading.prm import load_hub_prm, load_prm_model, make_scorer
from backend.verifiers.hub_prms import QWEN_PRM_SYSTEM
from tests.tiny_prms import write_checkpoint

pytestmark = pytest.mark.model  # reads the embedded SmolLM2's tokenizer

FAMILIES = ("qwen_prm", "skywork", "rlhflow", "math_shepherd")
Q = "Tom has 3 bags with 4 apples each. How many apples?"
STEPS = ["He has 3 x 4 = 12 apples.\n\n", "The answer is \\boxed{12}."]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for family in FAMILIES:
        folder = tmp_path_factory.mktemp(family)
        out[family] = (folder, write_checkpoint(family, folder))
    return out


@pytest.fixture(scope="module")
def loaded(checkpoints):
    """family -> (model, tokenizer) loaded at fp32 by the production loader."""
    return {f: load_prm_model(f, str(checkpoints[f][0]), "fp32", "cpu") for f in FAMILIES}


def scorer(loaded, family):
    """A fresh scorer (empty cache) over the shared model."""
    model, tok = loaded[family]
    return make_scorer(family, model, tok)


# ---- formats: the input each model card prescribes ----------------------------------------
def test_qwen_prm_format(loaded):
    prm = scorer(loaded, "qwen_prm")
    expected = (
        f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{Q}<|im_end|>\n"
        "<|im_start|>assistant\nHe has 3 x 4 = 12 apples.<extra_0>"
        "The answer is \\boxed{12}.<extra_0><|im_end|>\n"
    )
    assert prm.format_text(Q, STEPS) == expected
    enc = prm.encode(Q, STEPS)
    sep = prm.tokenizer.convert_tokens_to_ids("<extra_0>")
    assert [i for i, t in enumerate(enc.ids) if t == sep] == enc.positions
    assert len(enc.positions) == 2
    assert prm.tokenizer.decode(enc.ids[: enc.positions[0] + 1]).endswith("12 apples.<extra_0>")


def test_skywork_format(loaded):
    prm = scorer(loaded, "skywork")
    tok = prm.tokenizer
    assert prm.format_text(Q, STEPS) == (
        f"<|endoftext|>{Q}\nHe has 3 x 4 = 12 apples.\nThe answer is \\boxed{{12}}.\n"
    )
    # token by token: bos + problem + "\n", then each step's tokens and the "\n" token
    enc = tok.encode
    nl = enc("\n", add_special_tokens=False)[-1]
    step1 = [
        tok.bos_token_id,
        *enc(Q + "\n", add_special_tokens=False),
        *enc("He has 3 x 4 = 12 apples.", add_special_tokens=False),
        nl,
    ]
    step2 = [*enc("The answer is \\boxed{12}.", add_special_tokens=False), nl]
    got = prm.encode(Q, STEPS)
    assert got.ids == step1 + step2
    assert got.positions == [len(step1) - 1, len(step1) + len(step2) - 1]


def test_skywork_maps_lines_and_empty_steps(loaded):
    prm = scorer(loaded, "skywork")
    steps = ["First line.\nSecond line.\n\n", "   \n\n"]
    assert prm.format_text("Q?", steps) == "<|endoftext|>Q?\nFirst line.\nSecond line.\n\n"
    enc = prm.encode("Q?", steps)
    nl = prm.newline_id
    assert [enc.ids[p] for p in enc.positions] == [nl, nl]
    assert enc.positions[1] == enc.positions[0] + 1  # an empty step is a lone "\n"


def test_rlhflow_format(loaded):
    prm = scorer(loaded, "rlhflow")
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    expected = (
        "<|begin_of_text|>"
        + head.format("system")
        + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        + head.format("user")
        + Q
        + " He has 3 x 4 = 12 apples.<|eot_id|>"
        + head.format("assistant")
        + "+<|eot_id|>"
        + head.format("user")
        + "The answer is \\boxed{12}.<|eot_id|>"
        + head.format("assistant")
        + "+<|eot_id|>"
    )
    assert prm.format_text(Q, STEPS) == expected
    enc = prm.encode(Q, STEPS)
    assert enc.ids == prm.tokenizer.encode(expected, add_special_tokens=False)
    # each score is read where the model predicts its assistant "+"; the last one is the card's
    # "-3" position (..., "+", "<|eot_id|>")
    assert [enc.ids[p + 1] for p in enc.positions] == [prm.good_id] * 2
    assert enc.positions[-1] == len(enc.ids) - 3
    for p in enc.positions:
        assert prm.tokenizer.decode(enc.ids[: p + 1]).endswith(head.format("assistant"))


def test_math_shepherd_format(loaded):
    prm = scorer(loaded, "math_shepherd")
    expected = f"{Q} He has 3 x 4 = 12 apples. ки\nThe answer is \\boxed{{12}}. ки"
    assert prm.format_text(Q, STEPS) == expected
    enc = prm.encode(Q, STEPS)
    assert enc.ids == prm.tokenizer.encode(expected)
    assert [enc.ids[p] for p in enc.positions] == [prm.tag_id] * 2
    # a literal "ки" in the text cannot fake a step; empty steps keep one space before the tag
    assert len(prm.encode("What is ки?", ["Step ки one.\n\n"]).positions) == 1
    assert prm.format_text("Q?", ["", "A.", "  \n\n"]) == "Q? ки\nA. ки\n ки"


# ---- scores ---------------------------------------------------------------------------------
def reference_scores(family, model, prm, ids: list[int]) -> list[float]:
    """The model card's read-out: full forward, every position, then pick the step positions."""
    x = torch.tensor([ids])
    with torch.no_grad():
        if family == "qwen_prm":
            probs = torch.softmax(model.score(model.model(x).last_hidden_state), -1)[0, :, 1]
            return probs[x[0] == prm.sep_id].tolist()
        if family == "skywork":
            values = torch.sigmoid(model.v_head(model.model(x).last_hidden_state))[0, :, 0]
            return values[prm.encode(Q, STEPS).positions].tolist()
        plus = torch.softmax(model(x).logits[0][:, [prm.good_id, prm.bad_id]], -1)[:, 0]
        if family == "rlhflow":
            return plus[[p for p in range(len(ids) - 1) if ids[p + 1] == prm.good_id]].tolist()
        return plus[x[0] == prm.tag_id].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_match_the_model_card_readout(loaded, family):
    model, _ = loaded[family]
    prm = scorer(loaded, family)
    got = prm.score(Q, [STEPS]).steps[0]
    expected = reference_scores(family, model, prm, prm.encode(Q, STEPS).ids)
    assert len(got) == 2 and all(0 <= s <= 1 for s in got)
    assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_batching_padding_and_prefix_cache(loaded, family):
    short, long = STEPS[:1], [*STEPS, "So Tom has 12 apples.\n\n"]
    alone = [scorer(loaded, family).score(Q, [s]).steps[0] for s in (long, short)]
    prm = scorer(loaded, family)
    first = prm.score(Q, [long, short, long])
    assert first.steps == [
        pytest.approx(alone[0], abs=1e-5),
        pytest.approx(alone[1], abs=1e-5),
        pytest.approx(alone[0], abs=1e-5),
    ]
    assert first.steps[1][0] == first.steps[0][0]  # the short one rode along with the long one
    assert first.tokens == len(prm.encode(Q, long).ids)  # read once, the prefix not at all
    assert prm.score(Q, [short, long]).tokens == 0  # everything cached
    again = prm.score(Q, [[*long, "Done.\n\n"]])
    assert again.steps[0][:3] == first.steps[0] and again.tokens > 0
    assert prm.score(Q, [[]]).steps == [[]]


# ---- checkpoints and precision --------------------------------------------------------------
@pytest.mark.parametrize("family", ["qwen_prm", "skywork"])
def test_hub_checkpoint_head_weights_are_loaded(checkpoints, loaded, family):
    model, _ = loaded[family]
    _, info = checkpoints[family]
    state = model.state_dict()
    assert info["head"], "the tiny checkpoint has a head"
    for name, tensor in info["head"].items():
        assert torch.equal(state[name], tensor), name  # the checkpoint's, not a random init
    assert torch.equal(model.model.embed_tokens.weight, info["lm"].model.embed_tokens.weight)


def test_checkpoint_without_head_is_refused(tmp_path):
    write_checkpoint("skywork", tmp_path, with_head=False)
    with pytest.raises(RuntimeError, match="missing .*v_head.summary"):
        load_prm_model("skywork", str(tmp_path), "fp32", "cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_nf4_on_cpu_through_the_gpu_load_path(checkpoints, loaded, family):
    import bitsandbytes as bnb

    model, tok = load_prm_model(family, str(checkpoints[family][0]), "nf4", "cpu")
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.quant_type == "nf4"
    head = model.get_submodule(
        {"qwen_prm": "score.0", "skywork": "v_head.summary"}.get(family, "lm_head")
    )
    assert type(head) is nn.Linear  # the PRM head stays out of quantization
    got = make_scorer(family, model, tok).score(Q, [STEPS]).steps[0]
    full = scorer(loaded, family).score(Q, [STEPS]).steps[0]
    assert len(got) == 2 and all(0 <= s <= 1 for s in got)
    assert got == pytest.approx(full, abs=0.15)  # 4-bit weights: close, not equal


def test_catalog_names_only(tmp_path):
    with pytest.raises(ValueError, match="Unknown PRM 'gpt-prm'.*skywork-prm-1.5b"):
        load_hub_prm("gpt-prm", "nf4", "cpu")
    with pytest.raises(ValueError, match="not a hub PRM"):
        load_hub_prm("arithmetic", "nf4", "cpu")
    with pytest.raises(RuntimeError, match="Could not load the PRM 'skywork-prm-1.5b' from /"):
        load_hub_prm("skywork-prm-1.5b", "nf4", "cpu", location=str(tmp_path / "missing"))


def test_no_remote_code_anywhere():
    backend = Path(__file__).resolve().parent.parent / "backend"
    for path in backend.rglob("*.py"):  # subpackages too
        assert "trust_remote_code=True" not in path.read_text(), path.name
