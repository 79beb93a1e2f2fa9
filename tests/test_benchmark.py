"""A smoke run of the benchmark at tiny settings, so the command never rots (no timing asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from backend.catalog import catalog

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
    # with no --model: the catalog's default policy, in its own prompt template
    default = catalog().default_policy
    assert result["model"] == default
    assert result["prompt"] == catalog().get(default, "policy").prompt
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


def test_model_option_takes_the_catalog_policies_only(capsys):
    from benchmarks.bench_search import parse_args

    assert parse_args([]).model == catalog().default_policy
    policies = catalog().names("policy")
    assert "qwen2.5-coder-0.5b" in policies
    for name in policies:
        assert parse_args(["--model", name, "--skip-cold"]).model == name
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--model", "no-such-model"])
    assert exit_.value.code == 2
    assert "invalid choice: 'no-such-model'" in capsys.readouterr().err


def test_cold_start_runs_in_a_temporary_cache(monkeypatch):
    """The cold start converts into a fresh folder of its own, never the user's model cache, and
    loads the policy it is given; a process that reports another cache is an error."""
    import benchmarks.bench_search as bench
    from backend.catalog import models_cache_dir

    calls = []

    def fake_run(cmd, *, env, **kwargs):
        calls.append((cmd[-1], env["THINKTREE_CACHE"]))
        cache = Path(env["THINKTREE_CACHE"]) / "models"
        out = {"load_s": 1.0, "process_s": 2.0, "source": "gguf", "cache": str(cache)}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out) + "\n")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    result = bench.cold_and_warm_start("qwen2.5-coder-0.5b", "auto")
    assert result == {
        "cold_start_s": 1.0, "cold_process_s": 2.0, "warm_start_s": 1.0, "warm_process_s": 2.0,
    }  # fmt: skip
    (code, cold), (_, warm) = calls
    assert "load_policy('qwen2.5-coder-0.5b', 'auto')" in code
    assert cold == warm and not Path(cold).exists()  # one folder for both, removed after
    assert not Path(cold).resolve().is_relative_to(models_cache_dir().resolve().parent)

    def elsewhere(cmd, *, env, **kwargs):
        out = {"load_s": 1.0, "process_s": 2.0, "source": "gguf", "cache": str(models_cache_dir())}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out))

    monkeypatch.setattr(bench.subprocess, "run", elsewhere)
    with pytest.raises(RuntimeError, match="used the cache"):
        bench.cold_and_warm_start("smollm2-135m", "auto")


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
        # A ratio of two timings on a tiny model: the test checks that it is computed, not how
        # fast this machine was today (CI saw 2.55 on a loaded machine).
        assert math.isfinite(engine["fraction_of_limit"]) and engine["fraction_of_limit"] > 0
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
