"""Smoke runs of the benchmarks at tiny settings, so the commands never rot (no timing asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.model
def test_a_side_of_the_benchmark_prints_every_figure(capsys):
    """One side, at tiny settings: the searches, their decode rate and memory, and the raw
    replay of the same llama_decode calls."""
    from benchmarks.search_runner import main

    main(["--model", "smollm2-135m", "--limit", "1", "--n", "2", "--beam-width", "1", "--raw"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["meta"]["engine"] == "llama.cpp" and len(out["runs"]) == 1
    run = out["runs"][0]
    assert run["tokens"] > 0 and run["seconds"] > 0 and 0 < run["first_frame_s"] <= run["seconds"]
    assert out["decode_tok_s"] > 0 and out["memory_mb"]["VmRSS"] > 0
    # the replay decodes what the searches decoded (their trunk reads and rows), nothing else
    assert out["raw"]["decodes"] > 0 and out["raw"]["tokens"] >= out["raw"]["decodes"]
    assert math.isfinite(out["fraction_of_raw"]) and out["fraction_of_raw"] > 0


def test_the_benchmark_sets_the_sides_side_by_side(monkeypatch, capsys):
    """The sides it runs, in which checkout and with which variables, and the ratios it prints
    (canned sides: the runs themselves are the test above's)."""
    import benchmarks.bench_search as bench

    calls = []

    def side(cwd, args, env=None):
        calls.append((cwd, env or {}))
        fast = cwd == bench.ROOT
        return {
            "decode_tok_s": 40.0 if fast else 16.0,
            "seconds_per_problem": 10.0 if fast else 30.0,
        }

    monkeypatch.setattr(bench, "run_side", side)
    monkeypatch.setattr(bench, "avx2_lib", lambda: "/avx2/lib")
    monkeypatch.setattr(bench, "old_checkout", lambda rev: Path("/tmp/old-tree/tree"))
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: None)
    monkeypatch.setattr(bench.Path, "mkdir", lambda *a, **k: None)
    monkeypatch.setattr(bench.Path, "symlink_to", lambda *a, **k: None)
    monkeypatch.setattr(bench.shutil, "rmtree", lambda *a, **k: None)
    bench.main(["--old-engine", "d24c173"])
    out = json.loads(capsys.readouterr().out)
    assert set(out["sides"]) == {"llama", "llama_avx2", "old", "old_avx2"}
    envs = [env for _, env in calls]
    assert envs[1] == {"LLAMA_CPP_LIB_PATH": "/avx2/lib"}
    assert envs[3]["ATEN_CPU_CAPABILITY"] == "avx2" and "THINKTREE_CACHE" in envs[3]
    assert out["ratios"]["llama_over_old"] == {"decode_tok_s": 2.5, "seconds_per_problem": 3.0}


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
