"""Timing and correctness probes for one loaded policy model, shared by the precision script and benchmarks.

Each probe calls the model's forward directly (no `generate`), because that is how the step engine
drives it: prefill a prompt once, then decode one token per step for a batch with a KV cache.
`generate` adds per-step overhead (logits processors, stopping checks) that would blur the
comparison between precisions. `forward_ms` times the step engine's own forward over its KV slab:
the machine's limit for the engine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache

from backend.engine import SlabLayer, StepEngine
from backend.engine.slab import empty_slab


def _device_of(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def sync(device: torch.device | str) -> None:
    """Wait for the device: CUDA kernels run asynchronously, so a timer would see only the launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def forward_ms(
    engine: StepEngine,
    batch: int,
    context: int,
    steps: int = 8,
    warmup: int = 2,
    stock: bool = False,
    shared: int = 0,
) -> float:
    """Median ms of one raw batched one-token forward of `engine` over `context` cached positions.

    The forward the decode loop runs (preallocated KV slab, no padding, no sampling or
    stopping logic; with the lean decoder, the first `shared` positions are one prefix that
    all rows share, as a question's prompt is), or with `stock` the model's own forward over
    a slab of the same size: the machine's limit for the model.
    """
    shared = 0 if stock or engine.fast is None else shared
    model, device = engine.model, engine.device
    with engine.lock, torch.inference_mode():
        layers = []
        for _ in range(model.config.num_hidden_layers):
            k, v = empty_slab(model, batch, context - shared + warmup + steps + 1, device)
            layer = SlabLayer(k, v, context - shared)
            if shared:
                kp, vp = empty_slab(model, 1, shared, device)
                layer.prefix = (kp[0], vp[0])
            layers.append(layer)
        cache = Cache(layers=layers)
        ids = torch.randint(100, engine.vocab, (batch, 1), device=device)
        times = []
        for i in range(warmup + steps):
            pos = torch.full((batch, 1), context + i, device=device)
            sync(device)
            t0 = time.perf_counter()
            engine._forward(ids, pos, cache, stock=stock)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        return 1000 * sorted(times)[len(times) // 2]


def _random_ids(model: PreTrainedModel, batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Stay clear of the special tokens at the start of the vocabulary.
    ids = torch.randint(100, model.config.vocab_size, (batch, length), generator=generator)
    return ids.to(_device_of(model))


@torch.inference_mode()
def measure_decode_ms(
    model: PreTrainedModel,
    batch: int,
    steps: int = 16,
    prefill: int = 100,
    warmup: int = 2,
    seed: int = 0,
) -> float:
    """Median milliseconds of one cached decode step for `batch` rows after a `prefill`-token prompt.

    The prompt is prefilled once at batch 1 and the cache expanded to `batch` rows, as the step
    engine does for N samples of one prefix. The first `warmup` steps are not timed.
    """
    if batch < 1 or steps < 1 or prefill < 1:
        raise ValueError(f"batch, steps and prefill must be >= 1, got {batch}, {steps}, {prefill}")
    device = _device_of(model)
    cache = DynamicCache(config=model.config)
    out = model(_random_ids(model, 1, prefill, seed), past_key_values=cache, use_cache=True)
    cache.batch_repeat_interleave(batch)
    next_ids = out.logits[:, -1:].argmax(-1).repeat_interleave(batch, dim=0)  # (batch, 1)
    times = []
    for step in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        out = model(next_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_ids = out.logits[:, -1:].argmax(-1)
        sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@torch.inference_mode()
def measure_prefill_s(
    model: PreTrainedModel, tokens: int = 200, batch: int = 1, repeats: int = 3, seed: int = 0
) -> float:
    """Median seconds to encode a `tokens`-long prompt of `batch` rows into a fresh KV cache."""
    device = _device_of(model)
    ids = _random_ids(model, batch, tokens, seed)
    model(ids[:, :8], use_cache=True, logits_to_keep=1)  # warm up kernels and allocator
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        model(
            ids, past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1
        )
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def greedy_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, new_tokens: int = 32
) -> list[int]:
    """Greedy continuation (token ids, at most `new_tokens`, EOS included) of a chat prompt."""
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(_device_of(model))
    out = model.generate(
        **enc,
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[0, enc["input_ids"].shape[1] :].tolist()


@torch.inference_mode()
def teacher_forced_top1(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    reference: Sequence[int],
) -> float:
    """Share of `reference` tokens that are also `model`'s argmax when fed the reference prefix.

    Unlike greedy agreement, one early difference does not spoil the rest: every position is
    judged on the same context, so this isolates the numerical error of a precision.
    """
    if not reference:
        return 1.0
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )  # fmt: skip
    prompt_ids = enc["input_ids"][0].tolist()
    ids = torch.tensor([prompt_ids + list(reference)], device=_device_of(model))
    # Positions len(prompt)-1 .. end-1 predict the reference tokens.
    keep = torch.arange(len(prompt_ids) - 1, ids.shape[1] - 1, device=ids.device)
    predicted = model(ids, logits_to_keep=keep).logits[0].argmax(-1)
    return (predicted == ids[0, len(prompt_ids) :]).float().mean().item()


@dataclass
class Agreement:
    """How closely greedy continuations follow the reference model's, over a set of prompts."""

    exact: int  # prompts whose continuation matches the reference token for token
    prompts: int
    prefix_fraction: float  # mean share of reference tokens matched before the first difference


def greedy_agreement(
    reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]]
) -> Agreement:
    """Compare greedy continuations prompt by prompt.

    Counting the matched prefix rather than matching positions is deliberate: once two greedy runs
    differ by one token, everything after it is shifted and positional matches mean nothing.
    """
    if len(reference) != len(candidate):
        raise ValueError("reference and candidate need one continuation per prompt each")
    fractions = []
    exact = 0
    for ref, cand in zip(reference, candidate, strict=True):
        matched = 0
        for a, b in zip(ref, cand, strict=False):
            if a != b:
                break
            matched += 1
        exact += list(ref) == list(cand)
        fractions.append(matched / max(len(ref), 1))
    return Agreement(exact, len(reference), statistics.fmean(fractions) if fractions else 1.0)
