"""Models in transformers for the tests of the hub path: tiny random PRM checkpoints in the hub
layouts, tiny random causal LMs, and the embedded SmolLM2 read by transformers from its GGUF.

Each family gets a 2-layer model (hidden 64) and the embedded SmolLM2's real tokenizer, extended
by the format's special tokens and given the chat template its format uses. The checkpoint is
written like the hub's: `save_pretrained` of the causal LM, with the PRM head tensors added to the
same model.safetensors under the hub's names.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

# Abridged from the published templates (tool-calling branches removed); what matters here is
# kept: ChatML turns for Qwen; Llama 3's BOS, fixed system header and `| trim` of every message.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@functools.cache
def _smollm2_tokenizer() -> Any:
    """transformers' reading of the embedded SmolLM2's tokenizer, from its GGUF file (~5 s)."""
    from backend.loading.policy import gguf_path

    path = gguf_path("smollm2-135m")
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@functools.cache
def smollm2_in_transformers() -> tuple[Any, Any]:
    """The embedded SmolLM2 as a transformers model (fp32, dequantized from its GGUF file, ~15 s)
    and its tokenizer, set up as a hub policy would be: what the transformers engine's tests run
    on. The app never loads it this way (it runs the GGUF in llama.cpp)."""
    import gguf
    from transformers import AutoModelForCausalLM

    from backend.loading.policy import gguf_path

    path = gguf_path("smollm2-135m")
    # transformers rebuilds gguf's read-only tensor name map once per tensor: build it once
    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        ).eval()
    finally:
        gguf.get_tensor_name_map = original
    tokenizer = smollm2_tokenizer()
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


# the shape of every tiny random model the tests build: seconds to run, nothing to download
TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def tiny_lm(family: str = "llama", vocab_size: int = 300, dtype=None, **extra) -> Any:
    """A tiny random causal LM (Llama, or Qwen2 with q/k/v biases), seeded: for engine tests."""
    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, **TINY_SHAPE) | extra
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.to(dtype or torch.float32).eval()


def smollm2_tokenizer() -> Any:
    """A private copy of the embedded SmolLM2's tokenizer (tests may extend it)."""
    return copy.deepcopy(_smollm2_tokenizer())


def family_tokenizer(family: str) -> Any:
    """SmolLM2's tokenizer dressed as the given PRM family's."""
    tok = smollm2_tokenizer()
    if family == "qwen_prm":
        tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
        tok.chat_template = CHATML_TEMPLATE
    elif family == "skywork":
        tok.add_special_tokens({"bos_token": "<|endoftext|>"})
    elif family == "rlhflow":
        tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
        tok.bos_token = "<|begin_of_text|>"
        tok.chat_template = LLAMA3_TEMPLATE
    elif family == "math_shepherd":
        tok.add_tokens(["ки"])
    else:
        raise ValueError(family)
    return tok


def tiny_config(family: str, vocab_size: int) -> Any:
    common = dict(vocab_size=vocab_size, **TINY_SHAPE)
    if family in ("qwen_prm", "skywork"):
        return Qwen2Config(tie_word_embeddings=True, **common)
    if family == "rlhflow":
        return LlamaConfig(tie_word_embeddings=False, **common)
    return MistralConfig(tie_word_embeddings=False, **common)


def head_tensors(family: str, hidden: int, seed: int = 7) -> dict[str, torch.Tensor]:
    """Random PRM head weights under the hub checkpoint's names (none for the LM-head PRMs)."""
    g = torch.Generator().manual_seed(seed)
    if family == "qwen_prm":
        return {
            "score.0.weight": torch.randn(hidden, hidden, generator=g) * 0.2,
            "score.0.bias": torch.randn(hidden, generator=g) * 0.2,
            "score.2.weight": torch.randn(2, hidden, generator=g) * 0.2,
            "score.2.bias": torch.randn(2, generator=g) * 0.2,
        }
    if family == "skywork":
        return {
            "v_head.summary.weight": torch.randn(1, hidden, generator=g) * 0.2,
            "v_head.summary.bias": torch.randn(1, generator=g) * 0.2,
        }
    return {}


def write_checkpoint(family: str, folder: Path, *, with_head: bool = True) -> dict[str, Any]:
    """Save a tiny `family` PRM checkpoint with its tokenizer; returns what a test compares."""
    tok = family_tokenizer(family)
    config = tiny_config(family, len(tok))
    torch.manual_seed(0)
    cls = {
        "qwen_prm": Qwen2ForCausalLM,
        "skywork": Qwen2ForCausalLM,
        "rlhflow": LlamaForCausalLM,
        "math_shepherd": MistralForCausalLM,
    }[family]
    lm = cls(config)
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    head = head_tensors(family, config.hidden_size) if with_head else {}
    if head:
        path = folder / "model.safetensors"
        tensors = load_file(path)
        tensors.update(head)
        save_file(tensors, path, metadata={"format": "pt"})
    return {"tokenizer": tok, "config": config, "head": head, "lm": lm}
