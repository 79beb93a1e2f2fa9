"""Benchmark: the search engine side by side, in one run: llama.cpp against its own raw decode, and
against the transformers engine it replaced (while that is at hand), natively and as AVX2 only.

    .venv/bin/python -m benchmarks.bench_search                        # llama.cpp, native + AVX2
    .venv/bin/python -m benchmarks.bench_search --old-engine d24c173   # + the engine before it
    .venv/bin/python -m benchmarks.bench_search --quick                # smoke run (SmolLM2, tiny)

Each side runs `benchmarks/search_runner.py` in a process of its own, one after the other (never
two at once): beam search N=8, M=4 (the lab's token limits, seed 0) on the first --limit problems
of --problems (tier3: three to five steps), through the app's own runtime and the arithmetic
checker, after one warm-up search. Printed as one JSON object:
- `sides`: per side, seconds per problem, the first tree frame, decode tokens/s (tokens that
  became steps / time in the decode loops), resident memory, what ran (engine, weights, CPU);
  the llama.cpp sides also `raw` (the same llama_decode calls replayed with nothing else: the
  limit) and `fraction_of_raw`; the native llama.cpp side also `explorer`: the explorer's whole
  default question on a new question first thing in a fresh process (loading both models), then
  warm, and the memory with both models loaded.
- sides: `llama` (this CPU's build), `llama_avx2` (llama.cpp's AVX2-only build, loaded through
  LLAMA_CPP_LIB_PATH: what a CPU without AVX-512 runs), and with --old-engine REV, `old` and
  `old_avx2` (a checkout of REV in a temporary worktree, its transformers engine with "auto",
  torch held to AVX2 for the second: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2; its first
  load converts the GGUF, outside the timed searches).
- `ratios`: decode tokens/s and seconds per problem, llama.cpp over the old engine, per CPU
  level. The sides sample different paths (different engines, different random draws), so
  tokens/s, not seconds, is the like-for-like figure.
The figures and the machine they came from are in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from backend.catalog import models_cache_dir
from benchmarks.search_runner import search_arguments

ROOT = Path(__file__).resolve().parent.parent
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def run_side(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> dict:
    """The runner in `cwd` (this checkout or an older one) with `args`; its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.search_runner", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def avx2_lib() -> str | None:
    """The folder of llama.cpp's AVX2-only build (built once per CPU), on x86 only."""
    if platform.machine() != "x86_64":
        return None
    done = subprocess.run(
        ["bash", "scripts/build_llama.sh", "--avx2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 else None


def old_checkout(rev: str) -> Path:
    """A worktree of `rev` in a temporary folder, with this checkout's runner copied in."""
    where = Path(tempfile.mkdtemp(prefix="thinktree-old-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(where), rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    shutil.copy(ROOT / "benchmarks" / "search_runner.py", where / "benchmarks")
    return where


def main(argv: list[str] | None = None) -> None:
    p = search_arguments(__doc__.splitlines()[0])
    p.add_argument("--old-engine", metavar="REV", help="also run the engine of this commit")
    p.add_argument("--quick", action="store_true", help="SmolLM2, 2 problems, N=4")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.limit, args.n, args.beam_width = "smollm2-135m", 2, 4, 2
    common = [
        "--model",
        args.model,
        "--problems",
        str(ROOT / args.problems),
        "--limit",
        str(args.limit),
        "--n",
        str(args.n),
        "--beam-width",
        str(args.beam_width),
    ]
    sides: dict[str, dict] = {}
    explorer = [] if args.quick else ["--explorer"]
    sides["llama"] = run_side(ROOT, [*common, "--raw", *explorer])
    lib = avx2_lib()
    if lib:
        sides["llama_avx2"] = run_side(ROOT, [*common, "--raw"], {"LLAMA_CPP_LIB_PATH": lib})
    if args.old_engine:
        old = old_checkout(args.old_engine)
        # its converted copies go to a cache of its own (removed after), beside the GGUF files
        cache = old.parent / "cache"
        (cache / "models").mkdir(parents=True)
        (cache / "models" / "gguf").symlink_to(Path(models_cache_dir()) / "gguf")
        env = {"THINKTREE_CACHE": str(cache)}
        try:
            sides["old"] = run_side(old, common, env)
            sides["old_avx2"] = run_side(old, common, {**env, **AVX2})
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)],
                cwd=ROOT,
                check=False,
                capture_output=True,
            )
            shutil.rmtree(old.parent, ignore_errors=True)
    ratios = {}
    for new, old in (("llama", "old"), ("llama_avx2", "old_avx2")):
        a, b = sides.get(new, {}), sides.get(old, {})
        if "decode_tok_s" in a and "decode_tok_s" in b:
            ratios[f"{new}_over_{old}"] = {
                "decode_tok_s": round(a["decode_tok_s"] / b["decode_tok_s"], 2),
                "seconds_per_problem": round(
                    b["seconds_per_problem"] / a["seconds_per_problem"], 2
                ),
            }
    print(json.dumps({"machine": platform.machine(), "sides": sides, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
