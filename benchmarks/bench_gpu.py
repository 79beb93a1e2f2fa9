"""GPU section of the benchmark: a random-weight model of Qwen2.5-1.5B's shape, NF4 vs bf16, on CUDA.

    .venv/bin/python -m benchmarks.bench_gpu [--tokenizer DIR|none] [--quick]

No hub is needed: the model is built from its config with random weights, saved once to a
temporary folder and loaded back through the project's own loading arguments
(`backend.loading.quantization.weights_kwargs`), so NF4 goes through bitsandbytes exactly as a hub model
would. For each precision it reports the weights' GPU memory, the peak memory of the run, the load
time, prefill throughput and decode tokens/s at several batch sizes (one-token forwards with a KV
cache); with a tokenizer (the embedded SmolLM2's, or any other) it also runs a beam search
through the step engine on the random model and reports its decode tokens/s against the forward
limit at the same batch. Random weights make the text meaningless; the timings are what count.
`benchmarks.bench_search` calls this when torch sees a CUDA device.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from backend.engine import StepEngine
from backend.loading.quantization import weights_kwargs
from backend.prompts import PromptTemplate
from backend.verifiers.arithmetic import ArithmeticPRM
from benchmarks.probes import forward_ms, measure_decode_ms, measure_prefill_s, sync
from strategies.config import SearchConfig
from strategies.registry import run

# Qwen/Qwen2.5-1.5B-Instruct's config.json (the architecture fields)
QWEN25_15B = dict(
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)
QUESTION = "A farmer has 17 sheep and buys 8 more. How many sheep does he have?"


def qwen25_15b_config(**overrides: Any) -> Qwen2Config:
    return Qwen2Config(**{**QWEN25_15B, **overrides})


def _gib(n: float) -> float:
    return round(n / 2**30, 3)


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def build_random_checkpoint(folder: str, config: Qwen2Config, device: str, seed: int = 0) -> int:
    """Random bf16 weights of `config` saved to `folder`; returns the parameter count."""
    torch.manual_seed(seed)
    with torch.device(device):  # initialising 1.5B parameters is quick on the GPU
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    _free(device)
    return params


def measure_precision(
    folder: str,
    precision: str,
    batches: list[int],
    tokenizer: Any | None,
    quick: bool,
    device: str = "cuda",
) -> dict[str, Any]:
    """Load the checkpoint in `precision` and time it; free it again before returning."""
    _free(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, **weights_kwargs(precision, device))
    model.eval()
    sync(device)
    cell: dict[str, Any] = {
        "load_s": round(time.perf_counter() - t0, 2),
        "weights_gib": _gib(model.get_memory_footprint()),
    }
    context = 64 if quick else 512
    for b in batches:
        ms = measure_decode_ms(model, batch=b, steps=8 if quick else 32, prefill=context)
        cell[f"decode_ms_b{b}"] = round(ms, 2)
        cell[f"decode_tok_s_b{b}"] = round(b / (ms / 1000), 1)
    tokens = 64 if quick else 2048
    cell["prefill_tok_s"] = round(tokens / measure_prefill_s(model, tokens=tokens, repeats=3), 1)
    if tokenizer is not None:
        cell["engine"] = engine_search(model, tokenizer, quick)
    if device == "cuda":
        cell["peak_gib"] = _gib(torch.cuda.max_memory_allocated())
    del model
    _free(device)
    return cell


def engine_search(model: Any, tokenizer: Any, quick: bool) -> dict[str, Any]:
    """Beam search (N=16, M=4) through the step engine on CUDA; its decode rate vs the limit."""
    n = 4 if quick else 16
    config = SearchConfig(
        strategy="beam_search",
        n=n,
        beam_width=2 if quick else 4,
        max_iterations=2 if quick else 4,
        max_step_tokens=16 if quick else 48,
        max_solution_tokens=256,
        seed=0,
    )
    engine = StepEngine(model, tokenizer, PromptTemplate.load("fewshot_steps"))
    device = engine.device.type
    sync(device)
    t0 = time.perf_counter()
    tree = run(QUESTION, config, engine, ArithmeticPRM())
    sync(device)
    wall = time.perf_counter() - t0
    st = engine.stats
    decode_tok_s = st.decode_tokens / max(st.decode_s, 1e-9)
    prompt_len = len(engine.template.prompt_ids(tokenizer, QUESTION))
    context = prompt_len + tree.compute.generated_tokens // max(1, 2 * n)
    limit_ms = forward_ms(engine, n, context, steps=16)
    limit = n / (limit_ms / 1000)
    return {
        "search_s": round(wall, 2),
        "tokens": tree.compute.generated_tokens,
        "nodes": len(tree.nodes),
        "decode_tok_s": round(decode_tok_s, 1),
        "forward_limit_tok_s": round(limit, 1),
        "fraction_of_limit": round(decode_tok_s / limit, 3),
        "mean_batch": round(st.forward_rows / max(1, st.decode_forwards), 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokenizer",
        help="a tokenizer folder for the step-engine search (default: the embedded SmolLM2's, "
        "read from its GGUF file); 'none' skips the search",
    )
    ap.add_argument("--quick", action="store_true", help="small settings: a smoke run")
    ap.add_argument("--precisions", default="bf16,nf4")
    args = ap.parse_args(argv)
    tokenizer = None
    if args.tokenizer is None:
        from backend.loading.policy import gguf_path

        path = gguf_path("smollm2-135m")
        if path is not None:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    elif args.tokenizer != "none":
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    result = gpu_benchmark(args.precisions.split(","), tokenizer, quick=args.quick)
    print(json.dumps(result, indent=1))
    return result


def gpu_benchmark(
    precisions: list[str],
    tokenizer: Any | None = None,
    *,
    quick: bool = False,
    device: str = "cuda",
    shape: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole GPU section. `device` and `shape` exist for the test suite's CPU smoke run."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the GPU benchmark needs a CUDA device")
    config = qwen25_15b_config(**(shape or {}))
    result: dict[str, Any] = {
        "model": "random weights, Qwen2.5-1.5B's shape" if not shape else f"random, {shape}",
        "device": torch.cuda.get_device_name() if device == "cuda" else device,
        "torch": torch.__version__,
    }
    batches = [1, 16] if quick else [1, 16, 64]
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        result["parameters"] = build_random_checkpoint(folder, config, device)
        result["build_s"] = round(time.perf_counter() - t0, 1)
        for precision in precisions:
            result[precision] = measure_precision(
                folder, precision, batches, tokenizer, quick, device
            )
    if "bf16" in result and "nf4" in result:
        bf, nf = result["bf16"], result["nf4"]
        result["nf4_vs_bf16"] = {
            "weights_memory": round(nf["weights_gib"] / bf["weights_gib"], 3),
            **{
                f"decode_speed_b{b}": round(nf[f"decode_tok_s_b{b}"] / bf[f"decode_tok_s_b{b}"], 3)
                for b in batches
            },
        }
    return result


if __name__ == "__main__":
    main()
