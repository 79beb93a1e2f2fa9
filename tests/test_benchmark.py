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
