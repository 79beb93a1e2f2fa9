"""End to end: the CLI runs beam search on the embedded model with the arithmetic checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from strategies.tree import SearchTree

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.model
def test_cli_beam_search_writes_a_run_json(tmp_path):
    out = tmp_path / "run.json"
    cmd = [
        sys.executable,
        "-m",
        "app.cli",
        "run",
        "--prompt",
        "Tom has 3 bags with 4 apples each. He eats 2 apples. How many are left?",
        "--strategy",
        "beam_search",
        "--n",
        "4",
        "--beam-width",
        "2",
        "--max-iterations",
        "4",
        "--max-step-tokens",
        "48",
        "--seed",
        "1",
        "--json",
        str(out),
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ
    )
    assert proc.returncode == 0, proc.stderr
    assert "answer:" in proc.stdout and "compute:" in proc.stdout
    assert "iteration  1" in proc.stderr  # the progress display
    data = json.loads(out.read_text())
    # the weights as run (the GGUF's own quantization, which llama.cpp build), printed and kept
    assert f"weights: {data['meta']['precision_reason']}" in proc.stdout
    assert data["meta"]["precision_reason"].startswith("Q4_1, as the GGUF file stores it")
    assert "(llama.cpp on cpu, " in proc.stdout
    tree = SearchTree.from_dict(data)
    assert tree.done and tree.strategy == "beam_search"
    steps = [n for n in tree.nodes if n.parent is not None]
    assert steps and all(n.score is not None for n in steps)  # every step has a PRM score
    assert all(0 <= n.score <= 1 for n in steps)
    assert data["meta"]["model"] == "smollm2-135m" and data["meta"]["prm"] == "arithmetic"
    assert data["meta"]["precision"] == "gguf" and data["meta"]["threads"] >= 1
    assert data["compute"]["generated_tokens"] == sum(n.tokens for n in steps)
    # majority voting at the same N ran beside it, printed and in the JSON, as the API has it
    assert "majority voting at N=4:" in proc.stdout
    assert data["comparison"]["strategy"] == "majority_vote"
    assert data["comparison"]["compute"]["generated_tokens"] > 0


def test_cli_flags_are_the_config_fields_with_the_apps_preset():
    from dataclasses import fields

    from app.cli import build_parser
    from app.request import PRESET, RunRequest
    from strategies.config import SearchConfig

    args = vars(build_parser().parse_args(["run", "--prompt", "1+1?"]))
    for f in fields(SearchConfig):
        assert args[f.name] == getattr(PRESET, f.name)  # every setting, defaulting to the preset
    request = RunRequest(prompt="1+1?")
    assert (args["model"], args["prm"], args["precision"]) == (
        request.model,
        request.prm,
        request.precision,
    )
    args = vars(build_parser().parse_args(["run", "--prompt", "q", "--filter-duplicates"]))
    assert args["filter_duplicates"] is True and args["compare"] is True


def test_cli_rejects_bad_config_with_a_message():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "run",
            "--prompt",
            "1+1?",
            "--n",
            "6",
            "--beam-width",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "divisible" in proc.stderr and "Traceback" not in proc.stderr
