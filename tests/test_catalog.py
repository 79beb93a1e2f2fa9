"""Tests for backend/catalog.py and backend/loading/quantization.py: names, memory estimates, the memory
check, and the hub policies' prompts (the step delimiter must survive the chat template)."""

from __future__ import annotations

import json
import types

import pytest
import torch

from backend import catalog as cat
from backend.catalog import CatalogEntry, estimate_bytes, load_catalog
from backend.loading.quantization import InsufficientMemoryError, check_fits, weights_kwargs

POLICIES = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "qwen2.5-coder-0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
    "qwen2.5-coder-1.5b": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "smollm2-1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-math-1.5b": "Qwen/Qwen2.5-Math-1.5B-Instruct",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
}
OFFLINE_PRMS = (
    "arithmetic",
    "value-head",
    "checker+value-head",
    "checker+judge-1.5b",
    "judge-1.5b",
    "self_judge",
)
HUB_PRMS = {
    "skywork-prm-1.5b": ("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", "skywork"),
    "skywork-prm-7b": ("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B", "skywork"),
    "qwen2.5-math-prm-7b": ("Qwen/Qwen2.5-Math-PRM-7B", "qwen_prm"),
    "rlhflow-prm-8b": ("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", "rlhflow"),
    "math-shepherd-7b": ("peiyi9979/math-shepherd-mistral-7b-prm", "math_shepherd"),
}
GB = 1e9


def test_catalog_lists_the_models():
    c = cat.catalog()
    assert {n: c.get(n, "policy").hub_id for n in c.names("policy")} == POLICIES
    assert {n: (c.get(n).hub_id, c.get(n).family) for n in c.hub_prm_names()} == HUB_PRMS
    assert set(c.names("prm")) == {*HUB_PRMS, *OFFLINE_PRMS}
    for name in c.names():
        entry = c.get(name)
        assert entry.label and entry.license
    # the offline models share the measured few-shot prompt; hub models take the reference one
    offline = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
    assert {c.get(n).prompt for n in offline} == {"fewshot_steps"}
    assert {c.get(n).prompt for n in POLICIES if n not in offline} == {"reference"}


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(ValueError, match=r"Unknown model 'gpt-17'.*smollm2-135m.*math-shepherd"):
        cat.get("gpt-17")
    with pytest.raises(ValueError, match=r"Unknown PRM 'qwen2.5-1.5b'; the catalog lists: arithm"):
        cat.get("qwen2.5-1.5b", "prm")
    with pytest.raises(ValueError, match=r"Unknown policy 'skywork-prm-7b'"):
        cat.get("skywork-prm-7b", "policy")


def test_bad_catalog_entries_are_refused(tmp_path):
    base = {"label": "x", "hub_id": "a/b", "license": "x", "params": 10, "params_16bit": 2}
    for fields, problem in [
        ({"prompt": "no-such-template"}, "no prompt template"),
        ({"prompt": "reference", "default_precision": "fp8"}, "default_precision"),
        ({"prompt": "reference", "params_16bit": 20}, "params_16bit <= params"),
    ]:
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"policies": {"m": base | fields}}))
        with pytest.raises(ValueError, match=problem):
            load_catalog(path)
    with pytest.raises(ValueError, match="unknown family"):
        CatalogEntry("p", "prm", "x", "reward_magic", "x", "a/b", params=1)
    policy = base | {"prompt": "reference"}
    judge = {"label": "j", "family": "judge", "license": "x"}
    for data, problem in [
        ({"prms": {"j": judge | {"judge": "nobody"}}}, "'nobody' as its judge, which is not"),
        ({"prms": {"j": judge}}, "names its model in 'judge'"),
        ({"prms": {"j": judge | {"judge": "m", "combine": "vote"}}}, "combine is one of"),
        ({"policies": {"m": policy | {"bigger": "ghost"}}}, "'ghost' as its bigger"),
    ]:
        path = tmp_path / "models.json"
        path.write_text(json.dumps({"policies": {"m": policy}} | data))
        with pytest.raises(ValueError, match=problem):
            load_catalog(path)


def test_memory_estimates_match_published_sizes():
    # REFERENCE.md: 4-bit ~1.1 GB for a 1.5B model, ~5.6 GB for a 7-8B one
    assert cat.get("qwen2.5-1.5b").memory_bytes("nf4") / GB == pytest.approx(1.1, rel=0.1)
    assert cat.get("rlhflow-prm-8b").memory_bytes("nf4") / GB == pytest.approx(5.6, rel=0.1)
    assert cat.get("llama-3.2-1b").memory_bytes("bf16") / GB == pytest.approx(2.47, rel=0.02)
    for name in cat.catalog().names():
        e = cat.get(name)
        m = e.memory_gb()
        assert list(m) == ["fp32", "bf16", "int8", "nf4"]
        if e.params:
            assert m["fp32"] > m["bf16"] > m["int8"] > m["nf4"] > 0
    assert cat.get("self_judge").memory_bytes("bf16") == 0  # reuses the policy
    # a model judge weighs what its model weighs: the numbers are written once, on the policy
    for judge in ("judge-1.5b", "checker+judge-1.5b"):
        assert cat.get(judge).memory_gb() == cat.get("qwen2.5-coder-1.5b").memory_gb()
        assert cat.get(judge).judge == "qwen2.5-coder-1.5b" and not cat.get(judge).is_hub_prm


def _params_16bit(model) -> int:
    """Embeddings, an untied LM head and a PRM head: what the catalog counts as kept 16-bit."""
    names = ("embed_tokens", "lm_head", "score", "v_head")
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if any(part in name for part in names) and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@pytest.mark.model
@pytest.mark.parametrize("family", ["qwen_prm", "rlhflow", "dense"])
def test_memory_estimate_within_20_percent_of_footprint(tmp_path, family):
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.loading.prm import load_prm_model

    if family == "dense":  # little vocabulary, so the quantized layers dominate
        config = LlamaConfig(
            vocab_size=256,
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
        LlamaForCausalLM(config).save_pretrained(tmp_path)
        load = lambda p: LlamaForCausalLM.from_pretrained(tmp_path, **weights_kwargs(p, "cpu"))  # noqa: E731
    else:
        from tests.tiny_prms import write_checkpoint

        write_checkpoint(family, tmp_path)
        load = lambda p: load_prm_model(family, str(tmp_path), p, "cpu")[0]  # noqa: E731
    full = load("fp32")
    params = sum(p.numel() for p in full.parameters())
    p16 = _params_16bit(full)
    for precision in ("fp32", "bf16", "int8", "nf4"):
        footprint = load(precision).get_memory_footprint()
        estimate = estimate_bytes(params, p16, precision)
        assert estimate == pytest.approx(footprint, rel=0.2), precision


def test_weights_kwargs_keep_heads_out_of_quantization():
    nf4 = weights_kwargs("nf4", "cuda", keep_full=["score"])
    q = nf4["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_use_double_quant and q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert q.llm_int8_skip_modules == ["lm_head", "score"]
    assert weights_kwargs("int8", "cuda")["quantization_config"].load_in_8bit
    assert weights_kwargs("bf16", "cpu") == {"dtype": torch.bfloat16, "device_map": "cpu"}
    with pytest.raises(ValueError, match="precision must be one of"):
        weights_kwargs("fp8", "cuda")


def test_memory_check_refuses_what_does_not_fit(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(4 * GB), int(16 * GB)))
    check_fits([("qwen2.5-1.5b", "nf4"), ("skywork-prm-1.5b", "nf4")], "cuda")  # ~2.3 + 1 GB
    with pytest.raises(InsufficientMemoryError) as err:
        check_fits([("llama-3.2-3b", "bf16"), ("rlhflow-prm-8b", "nf4")], "cuda")
    msg = str(err.value)
    assert "llama-3.2-3b at bf16 (~6.4 GB) + rlhflow-prm-8b at nf4 (~5.7 GB)" in msg
    assert "only 4.0 GB of 16.0 GB" in msg and "lower precision" in msg
    # memory held by models the load replaces counts as free
    check_fits([("rlhflow-prm-8b", "nf4")], "cuda", reclaimable=int(3 * GB))
    check_fits([("rlhflow-prm-8b", "bf16")], "cpu")  # the CPU is not checked


def test_runtime_memory_check_counts_only_new_models(monkeypatch):
    from backend.runtime import ModelPool

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(1.5 * GB), int(8 * GB)))
    held = types.SimpleNamespace(
        name="qwen2.5-1.5b",
        precision="nf4",
        model=types.SimpleNamespace(get_memory_footprint=lambda: int(1.1 * GB)),
    )
    pool = ModelPool()
    pool._policy = (("qwen2.5-1.5b", "nf4", "cuda", False), held)
    pool._check_fits(("qwen2.5-1.5b", "nf4", "cuda", False), None)  # already loaded
    with pytest.raises(InsufficientMemoryError, match="skywork-prm-1.5b at nf4"):
        pool._check_fits(
            ("qwen2.5-1.5b", "nf4", "cuda", False), ("skywork-prm-1.5b", "nf4", "cuda")
        )
    # switching the policy frees the old one: 1.5 + 1.1 GB cover qwen2.5-0.5b (~0.4 GB) + 1 GB
    pool._check_fits(("qwen2.5-0.5b", "nf4", "cuda", False), None)


def test_loaders_and_the_app_take_their_names_from_the_catalog():
    from backend.loading import policy

    c = cat.catalog()
    assert c.default_policy == "smollm2-135m" and c.default_prm == "arithmetic"
    assert c.names("policy") == tuple(POLICIES)
    assert {n: c.get(n).hub_id for n in c.names("policy")} == POLICIES
    assert c.get("smollm2-135m").gguf["file"]  # the embedded GGUF path stays
    assert set(c.prm_choices()) == {*HUB_PRMS, *OFFLINE_PRMS, "none"}
    assert c.prm_choices()[: len(OFFLINE_PRMS) + 1] == (*OFFLINE_PRMS, "none")
    assert c.get("qwen2.5-coder-0.5b").bigger == "qwen2.5-coder-1.5b"
    assert c.get("qwen2.5-coder-0.5b").short_name == "0.5B"
    assert all(c.prm_label(n) for n in c.prm_choices())
    assert c.get("llama-3.2-1b").prompt == "reference"
    assert policy.resolve_precision("auto", "cuda", "smollm2-135m") == "gguf"  # its file's
    assert policy.resolve_precision("auto", "cuda", "qwen2.5-1.5b") == "nf4"
    assert policy.resolve_precision("auto", "cpu", "qwen2.5-1.5b") == "fp32"
    assert policy.resolve_precision("int8", "cuda", "qwen2.5-1.5b") == "int8"


# ---- hub policies: the reference prompt in the model's chat template ------------------------
@pytest.mark.model
@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_step_delimiter_survives_the_chat_template(template):
    """The engine appends the raw solution after the generation prompt. For ChatML (Qwen) that
    is exactly `continue_final_message`; Llama 3's template trims every message, so
    `continue_final_message` would drop the trailing "\\n\\n" the next step depends on, while
    the engine keeps it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.engine import StepEngine
    from backend.prompts import PromptTemplate
    from tests.tiny_prms import CHATML_TEMPLATE, LLAMA3_SPECIALS, LLAMA3_TEMPLATE, smollm2_tokenizer

    tok = smollm2_tokenizer()
    if template == "llama3":
        tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
        tok.bos_token = "<|begin_of_text|>"
    tok.chat_template = CHATML_TEMPLATE if template == "chatml" else LLAMA3_TEMPLATE
    prompt = PromptTemplate.load(cat.get("llama-3.2-1b").prompt)
    question = "Tom has 3 bags with 4 apples each. How many apples?"
    steps = ("## Step 1: Count\nHe has 3 x 4 = 12 apples.\n\n", "## Step 2: Answer\n\n")
    engine_text = prompt.prompt_text(tok, question) + "".join(steps)
    continued = tok.apply_chat_template(
        [*prompt.messages(question), {"role": "assistant", "content": "".join(steps)}],
        continue_final_message=True,
        tokenize=False,
    )
    assert engine_text.endswith("## Step 2: Answer\n\n")
    if template == "chatml":
        assert engine_text == continued
    else:  # the same text, less the delimiter the template's `| trim` removed
        assert continued + "\n\n" == engine_text
    # what the engine actually feeds the model for this partial solution
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    engine = StepEngine(LlamaForCausalLM(config), tok, prompt)
    state = engine._state(question, steps)  # the prefix the next step is sampled after
    assert tok.decode(state.ids) == engine_text
    assert tok.decode(state.ids[state.prompt_len :]).endswith("Answer\n\n")
