"""One side of `benchmarks.bench_search`: beam searches through the app's own runtime, as JSON.

    .venv/bin/python -m benchmarks.search_runner --model qwen2.5-coder-0.5b --limit 5 [--explorer]

It uses only what the project's engines have had in common (`get_runtime`, `search`, the engine's
`stats`, `run_json`), so the benchmark can also run it in a checkout of an older commit (the
transformers engine before llama.cpp) and compare the two in one run. Prints, per problem, the
seconds and tokens of a beam search (N, M; the lab's token limits), the decode tokens/s over
them (tokens that became steps / time in the engine's decode loops), the first tree frame, and
the process's resident memory. With `--raw` (llama.cpp only) it replays the searches' own
`llama_decode` calls (the same batch sizes, in sequences forked from a prompt, no sampling, no
bookkeeping): llama.cpp's limit for the same work. With `--explorer`, first (nothing loaded
yet), the explorer's whole default question (search, majority voting, the bigger model) on a new
question and then warm on another, and the memory with both models loaded.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1]) // 1000
    return out


def _problems(path: str, limit: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [(r.get("problem") or r["question"], str(r["answer"])) for r in rows[:limit]]


def search_arguments(description: str) -> argparse.ArgumentParser:
    """The searches' flags, shared with benchmarks.bench_search, which passes them on."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--problems", default="assets/problems/tier3_multi_step.jsonl")
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--beam-width", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> None:
    p = search_arguments(__doc__.splitlines()[0])
    p.add_argument("--raw", action="store_true")
    p.add_argument("--explorer", action="store_true")
    args = p.parse_args(argv)

    from backend.runtime import get_runtime
    from strategies.answers import answers_equal
    from strategies.config import SearchConfig
    from strategies.registry import search

    problems = _problems(args.problems, args.limit)
    # first, in a process that has loaded nothing: what a user's first question costs
    explorer = _explorer(problems) if args.explorer else None
    t0 = time.perf_counter()
    runtime = get_runtime(args.model, "arithmetic")
    load_s = time.perf_counter() - t0
    engine = runtime.generator
    config = SearchConfig(
        strategy="beam_search",
        n=args.n,
        beam_width=args.beam_width,
        max_iterations=10,
        max_step_tokens=96,
        max_solution_tokens=512,
        seed=0,
    )
    warm = "A farmer has 3 pens of 12 hens. He sells 7 hens. How many hens are left?"
    deque(search(warm, config, engine, runtime.scorer), maxlen=0)  # kernels, prompt head

    schedule: list[int] = []
    kv = getattr(engine, "kv", None)
    if kv is not None:  # llama.cpp: note every decode's batch size
        real = kv.decode

        def noted(entries, hidden=True):
            if hidden:  # the decoding loop's calls (prompt reads pass hidden=False)
                schedule.append(len(entries))
            return real(entries, hidden)

        kv.decode = noted
    before = (engine.stats.decode_tokens, engine.stats.decode_s)
    runs = []
    for question, answer in problems:
        t0 = time.perf_counter()
        first = None
        tree = None
        for tree in search(question, config, engine, runtime.scorer):
            if first is None and len(tree.nodes) > 1:
                first = time.perf_counter() - t0
        runs.append(
            {
                "seconds": round(time.perf_counter() - t0, 2),
                "first_frame_s": round(first or 0.0, 2),
                "tokens": tree.compute.generated_tokens,
                "right": tree.answer is not None and answers_equal(tree.answer, answer),
            }
        )
    tokens = engine.stats.decode_tokens - before[0]
    decode_s = engine.stats.decode_s - before[1]
    out = {
        "model": args.model,
        "n": args.n,
        "beam_width": args.beam_width,
        "meta": {
            k: v
            for k, v in runtime.meta().items()
            if k in ("engine", "precision", "precision_reason", "cpu", "threads")
        },
        "load_s": round(load_s, 2),
        "runs": runs,
        "seconds_per_problem": round(sum(r["seconds"] for r in runs) / len(runs), 2),
        "decode_tokens": tokens,
        "decode_tok_s": round(tokens / decode_s, 1),
        "memory_mb": _status(),
    }
    if args.raw and kv is not None:
        kv.decode = real
        out["raw"] = _replay(engine, schedule, problems[0][0])
        out["fraction_of_raw"] = round(out["decode_tok_s"] / out["raw"]["tok_s"], 3)
    if explorer is not None:
        out["explorer"] = explorer
    print(json.dumps(out))


def _replay(engine, schedule: list[int], question: str) -> dict:
    """The searches' decoding calls again, raw: each batch of b tokens in b sequences forked from
    the first problem's prompt (positions growing as a search's do), llama_decode and nothing
    else."""
    kv = engine.kv
    kv.reset()
    prompt = engine.template.prompt_ids(engine.tokenizer, question)
    root = kv.new()
    kv.prefill(root, prompt, 0, hidden=False)
    width = max(schedule)
    if not kv.fits(width * 520):
        kv.grow(width * 520, width)
        root = kv.new()
        kv.prefill(root, prompt, 0, hidden=False)
    seqs = [kv.new(root) for _ in range(width)]
    pos = [len(prompt)] * width  # each sequence's next position
    t0 = time.perf_counter()
    for b in schedule:
        kv.decode([(100, pos[i], seqs[i], True) for i in range(b)])
        for i in range(b):
            pos[i] += 1
        if pos[0] > len(prompt) + 500:  # as long as a solution: back to the prompt
            for seq in seqs:
                kv.drop(seq)
            seqs = [kv.new(root) for _ in range(width)]
            pos = [len(prompt)] * width
    spent = time.perf_counter() - t0
    return {
        "decodes": len(schedule),
        "tokens": sum(schedule),
        "tok_s": round(sum(schedule) / spent, 1),
    }


def _explorer(problems: list[tuple[str, str]]) -> dict:
    """The explorer's default question (its preset: search, majority voting, the bigger model)
    on a new question, first with nothing read yet, then warm on another."""
    from app.service import run_json

    try:
        from app.request import RunRequest
    except ImportError:  # an older checkout, before the request had its own module
        from app.service import RunRequest

    out = {}
    for name, (question, _) in zip(("cold_s", "warm_s"), problems[-2:]):
        t0 = time.perf_counter()
        run = run_json(RunRequest.from_dict({"prompt": question}))
        out[name] = round(time.perf_counter() - t0, 1)
        out[name.replace("_s", "_verdict")] = (
            run.get("comparison", {}).get("bigger", {}).get("verdict")
        )
    out["memory_mb_both_models"] = _status()
    return out


if __name__ == "__main__":
    main()
