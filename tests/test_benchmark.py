"""A smoke run of the benchmark at tiny settings, so the command never rots (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "engine_s", "naive_s", "speedup", "decode_tok_s", "forward_limit_tok_s", "fraction_of_limit",
    "first_frame_s", "warm_start_s", "peak_rss_mb", "precision", "threads",
    "engine_forward_tok_s", "occupancy", "precision_reason", "precision_by_rows",
    "forward_limit_precision", "forward_limit_tok_s_by_precision",
}  # fmt: skip


@pytest.mark.model
def test_benchmark_quick_prints_every_figure():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_search", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = proc.stdout.index("{")
    result = json.loads(proc.stdout[start:])
    assert set(result) >= KEYS
    assert result["engine_s"] > 0 and result["naive_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["speedup"] == pytest.approx(result["naive_s"] / result["engine_s"], rel=0.02)
    # the naive port replays the engine's paths: the same search, token for token
    assert result["naive_paths"] == "replayed"
    assert result["naive_same_trees"] == len(result["seeds"])
    assert result["naive_tokens"] == result["engine_tokens"]
    assert result["occupancy"] == pytest.approx(
        result["decode_tok_s"] / result["engine_forward_tok_s"], rel=0.02
    )
    limits = result["forward_limit_tok_s_by_precision"]
    assert result["forward_limit_precision"] in limits
    assert result["forward_limit_tok_s"] == max(limits.values())
    if result["device"] == "cpu":
        # the machine it ran on; the limit is the faster precision's forward, whichever was chosen
        cpu = result["cpu"]
        assert cpu["capability"] and result["cpu_summary"].startswith(cpu["model"])
        assert set(limits) == {"fp32", "bf16"}
    assert result["precision"] in result["precision_by_rows"].values()


@pytest.mark.model
def test_gpu_section_runs_end_to_end_on_a_tiny_model():
    """The GPU section's code path (random checkpoint, loads per precision, engine search), run on
    the CPU with a tiny shape so it cannot rot on machines without CUDA."""
    from benchmarks.bench_gpu import QWEN25_15B, gpu_benchmark, qwen25_15b_config
    from tests.tiny_prms import smollm2_tokenizer

    assert qwen25_15b_config().num_hidden_layers == QWEN25_15B["num_hidden_layers"] == 28
    tiny = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    result = gpu_benchmark(
        ["bf16", "nf4"], smollm2_tokenizer(), quick=True, device="cpu", shape=tiny
    )
    assert 9_000_000 < result["parameters"] < 11_000_000  # 151936 x 64 embeddings + 2 layers
    for precision in ("bf16", "nf4"):
        cell = result[precision]
        assert cell["decode_tok_s_b16"] > 0 and cell["prefill_tok_s"] > 0
        engine = cell["engine"]
        assert engine["tokens"] > 0 and engine["nodes"] > 1
        assert 0 < engine["fraction_of_limit"] <= 2
    assert set(result["nf4_vs_bf16"]) == {"weights_memory", "decode_speed_b1", "decode_speed_b16"}


@pytest.mark.model
def test_engine_comparison_runs_every_variant():
    from benchmarks.compare_engines import VARIANTS, main

    result = main(["--quick", "--seeds", "1"])
    cells = result["variants"]
    assert set(cells) == set(VARIANTS)
    assert all(c["tokens"] > 0 and c["seconds"] > 0 for c in cells.values())
    # packed weights change no bits: the same tokens as the engine that ships
    assert cells["unpacked"]["tokens"] == cells["final"]["tokens"]
