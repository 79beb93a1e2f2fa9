"""Command line: run one search headless, print the answer and the compute, write the run JSON.

python -m app.cli run --prompt "..." --strategy beam_search --n 8 --beam-width 4 --json run.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from app.service import RunRequest, stream_run
from backend.catalog import catalog
from strategies.config import AGGREGATIONS, STRATEGY_NAMES, SearchConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one search")
    r.add_argument("--prompt", required=True, help="the math question")
    r.add_argument("--strategy", default="beam_search", choices=STRATEGY_NAMES)
    r.add_argument("--n", type=int, default=8, help="budget N (samples or beams)")
    r.add_argument("--beam-width", type=int, default=4, help="M: beam search keeps N/M beams")
    models = catalog()  # the CLI, like the app, chooses only from the catalog
    r.add_argument("--model", default="smollm2-135m", choices=models.names("policy"))
    r.add_argument("--prm", default="arithmetic", choices=(*models.names("prm"), "none"))
    r.add_argument("--precision", default="auto", help="auto, fp32, bf16, int8 or nf4")
    r.add_argument("--temperature", type=float, default=0.8)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--max-steps", type=int, default=40, help="iteration limit (one step each)")
    r.add_argument("--aggregation", default="last", choices=AGGREGATIONS)
    r.add_argument("--lookahead", type=int, default=2, help="lookahead strategy: rollout steps k")
    r.add_argument("--max-step-tokens", type=int, default=64, help="cap on one step's tokens")
    r.add_argument(
        "--max-solution-tokens", type=int, default=512, help="cap on one solution's tokens"
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--expected", default=None, help="the answer you expect (recorded)")
    r.add_argument("--json", type=Path, default=None, help="write the run JSON here")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _progress(tree, t0: float) -> None:
    c = tree.compute
    active = sum(1 for n in tree.nodes if n.status == "active" and n.parent is not None)
    print(
        f"[{time.perf_counter() - t0:6.1f}s] iteration {tree.iteration:2d}: "
        f"{len(tree.nodes) - 1} steps, {active} active, {c.generated_tokens} tokens",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = SearchConfig(
            strategy=args.strategy,
            n=args.n,
            beam_width=args.beam_width,
            max_iterations=args.max_steps,
            aggregation=args.aggregation,
            lookahead=args.lookahead,
            temperature=args.temperature,
            top_p=args.top_p,
            max_step_tokens=args.max_step_tokens,
            max_solution_tokens=args.max_solution_tokens,
            seed=args.seed,
        )
        request = RunRequest(
            prompt=args.prompt,
            config=config,
            model=args.model,
            prm=args.prm,
            precision=args.precision,
            expected=args.expected,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(f"loading {request.model} ...", file=sys.stderr, flush=True)
    tree = None
    try:
        for tree in stream_run(request):
            if not args.quiet and not tree.done and not tree.writing:  # one line per iteration
                _progress(tree, t0)
    except ValueError as err:  # e.g. a model pair that does not fit the GPU
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a hub model that cannot be downloaded here
        print(f"error: could not load {request.model!r}: {err}", file=sys.stderr)
        return 1
    assert tree is not None
    c = tree.compute
    print(f"answer: {tree.answer}")
    for answer, v in tree.votes.items():
        print(f"  {answer!s:>12}  count {int(v['count'])}  PRM sum {v['score_sum']:.2f}")
    print(
        f"compute: {c.generated_tokens} generated tokens, {c.scored_tokens} PRM tokens, "
        f"{c.generator_calls} generator calls, {c.scorer_calls} PRM calls, {c.wall_s:.1f} s "
        f"({tree.meta.get('device')}, {tree.meta.get('precision')}, {tree.meta.get('threads')} threads)"
    )
    if tree.meta.get("precision_reason"):
        print(f"precision: {tree.meta['precision_reason']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(tree.to_dict(), indent=1))
        print(f"run JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
