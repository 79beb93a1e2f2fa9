"""Timing probes for one transformers policy model (the GPU benchmark's; GGUF models run in llama.cpp).

Each probe calls the model's forward directly (no `generate`), because that is how the step engine
drives it: prefill a prompt once, then decode one token per step for a batch with a KV cache.
`generate` adds per-step overhead (logits processors, stopping checks) that would blur the
comparison between precisions. `forward_ms` times the transformers step engine's own forward over
its KV slab: the machine's limit for the engine.
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import DynamicCache, PreTrainedModel
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
    engine: StepEngine, batch: int, context: int, steps: int = 8, warmup: int = 2
) -> float:
    """Median ms of one raw batched one-token forward of the transformers `engine` over `context`
    cached positions: the forward its decode loop runs (preallocated KV slab, no padding, no
    sampling or stopping logic), the machine's limit for the engine."""
    model, device = engine.model, engine.device
    with engine.lock, torch.inference_mode():
        layers = []
        for _ in range(model.config.num_hidden_layers):
            k, v = empty_slab(model, batch, context + warmup + steps + 1, device)
            layers.append(SlabLayer(k, v, context))
        cache = Cache(layers=layers)
        ids = torch.randint(100, engine.vocab, (batch, 1), device=device)
        times = []
        for i in range(warmup + steps):
            pos = torch.full((batch, 1), context + i, device=device)
            sync(device)
            t0 = time.perf_counter()
            engine._forward(ids, pos, cache)
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
