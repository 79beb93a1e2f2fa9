"""Command line: run one search headless, print the answer and the compute, write the run JSON.

python -m app.cli run --prompt "..." --strategy beam_search --n 8 --beam-width 4 --json run.json
python -m app.cli eval --problems tier2_two_steps --budgets 1,2,4,8 --out runs/tier2
python -m app.cli train-verifier --model qwen2.5-coder-0.5b --samples 8 --out runs/verifier

Every setting the explorer and the API have is a flag of `run`, with the same default; `eval` is
the scaling harness (app/lab/eval_command.py); `train-verifier` trains a value head
(app/lab/verifier_training.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from app.request import REQUEST_HELP, RunRequest, preset_values, setting_choices
from app.service import Frame, Outcome, stream_request
from strategies.config import field_help


def build_parser() -> argparse.ArgumentParser:
    """`run`'s flags: one per request field and per `SearchConfig` field (`--beam-width` for
    beam_width), each defaulting to the app's preset, so a flag left out runs what the explorer
    and the API run."""
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one search")
    choices = setting_choices()  # the CLI, like the app, chooses only from the catalog
    helps = REQUEST_HELP | field_help()
    for name, default in preset_values().items():
        flag = "--" + name.replace("_", "-")
        if name == "prompt":
            r.add_argument(flag, required=True, help=helps[name])
        elif isinstance(default, bool):
            r.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=helps[name]
            )
        else:
            r.add_argument(
                flag,
                type=type(default),
                default=default,
                choices=choices.get(name),
                help=f"{helps[name]} (default: %(default)s)",
            )
    r.add_argument("--json", type=Path, default=None, help="write the run JSON here")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    from app.lab.eval_command import add_arguments

    add_arguments(
        sub.add_parser(
            "eval", help="accuracy against budget: every strategy at every budget on a problem set"
        )
    )
    from app.lab.verifier_training import add_arguments as add_training

    add_training(
        sub.add_parser(
            "train-verifier",
            help="train a value head on the policy's own solutions (app/lab/verifier_training.py)",
        )
    )
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
    if args.command == "eval":
        from app.lab.eval_command import main as evaluate

        return evaluate(args)
    if args.command == "train-verifier":
        from app.lab.verifier_training import main as train

        return train(args)
    values = {k: v for k, v in vars(args).items() if k not in ("command", "json", "quiet")}
    values["expected"] = (values.get("expected") or "").strip() or None
    try:
        request = RunRequest.from_dict(values)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(f"loading {request.model} ...", file=sys.stderr, flush=True)
    outcome = Outcome(request)
    try:
        for frame in stream_request(request):
            _say(outcome, outcome.add(frame), args.quiet, t0)
    except ValueError as err:  # e.g. a model pair that does not fit the GPU
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a hub model that cannot be downloaded here
        print(f"error: could not load {request.model!r}: {err}", file=sys.stderr)
        return 1
    run = outcome.to_json()
    _summary(outcome)
    bigger = run.get("comparison", {}).get("bigger", {})
    if "verdict" in bigger:
        print(bigger["verdict"])
    if args.json:  # kept even when the bigger model could not answer: the search is done
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(run, indent=1))
        print(f"run JSON: {args.json}")
    if "error" in bigger:  # e.g. the bigger model is not installed here
        print(f"error: {bigger['model']}: {bigger['error']}", file=sys.stderr)
        return 1
    return 0


def _say(outcome: Outcome, frame: Frame, quiet: bool, t0: float) -> None:
    """Progress on stderr: one line per iteration of the search, and each comparison part as it
    starts (its first frame carries no run yet)."""
    tree = frame.tree
    if frame.part == "search" and not quiet and not tree.done and not tree.writing:
        _progress(tree, t0)
    elif frame.part == "majority" and tree is None:
        n = outcome.request.config.n
        print(f"majority voting at N={n} ...", file=sys.stderr, flush=True)
    elif frame.part == "bigger" and frame.side is None and frame.error is None:
        print(f"{outcome.request.bigger_model} alone ...", file=sys.stderr, flush=True)


def _summary(outcome: Outcome) -> None:
    """The search's answer, votes and compute, and the majority vote beside it, on stdout."""
    tree, majority = outcome.search, outcome.majority
    c = tree.compute
    print(f"answer: {tree.answer}")
    if tree.stopped:
        print(f"ended early: {tree.stopped}")
    for answer, v in tree.votes.items():
        print(f"  {answer!s:>12}  count {int(v['count'])}  PRM sum {v['score_sum']:.2f}")
    print(
        f"compute: {c.generated_tokens} generated tokens, {c.scored_tokens} PRM tokens, "
        f"{c.generator_calls} generator calls, {c.scorer_calls} PRM calls, {c.wall_s:.1f} s "
        f"({tree.meta.get('engine')} on {tree.meta.get('device')}, {tree.meta.get('threads')} "
        "threads)"
    )
    if tree.meta.get("precision_reason"):
        print(f"weights: {tree.meta['precision_reason']}")
    if majority is not None:
        m = majority.compute
        print(
            f"majority voting at N={outcome.request.config.n}: {majority.answer} "
            f"({m.generated_tokens} generated tokens, {m.wall_s:.1f} s)"
        )


if __name__ == "__main__":
    sys.exit(main())
