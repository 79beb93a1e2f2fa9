"""Soak: many short searches through the real StepEngine, looking for paths that crash or break a tree.

    .venv/bin/python -m benchmarks.soak                          # 500 runs, this CPU as it is
    .venv/bin/python -m benchmarks.soak --runs 500 --cpu both    # half native, half held to AVX2
                                                                 # (~8-11 min on 2 shared cores)
    .venv/bin/python -m benchmarks.soak --model tiny --runs 2000 # a tiny random model: fast
    .venv/bin/python -m benchmarks.soak --only 17 --cpu avx2     # replay run 17 (on a fresh engine)

Run i's settings come from (--seed-base, i) alone: strategy `i % 7` (every one in
strategies/info.py), speculation on for `i // 14` even, and at random a budget N and beam width M
of those the app offers (app/ui.py; pairs the config refuses are counted as skipped), the PRM (the
arithmetic checker; majority voting also runs without one), iterations, step and solution token
limits (small, so a run takes a second or so), temperature, top_p, aggregation, duplicate
filtering, lookahead k, seed and question (a few one-line sums, the first ones of
assets/problems/). One run in eight is stopped after a few frames, as the app's Stop does (the
stream closed, `SearchTree.stop`), and the engine serves the next run anyway. With `--cpu both`
even runs are native and odd ones avx2: a second process running llama.cpp's AVX2-only build
(LLAMA_CPP_LIB_PATH, scripts/build_llama.sh --avx2), with torch held to AVX2 too
(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2, set before torch loads) for the tiny model.

Every frame at an iteration's end and the last one go through `strategies.invariants.tree_problems`;
a run that raises is a crash, one that hangs past --run-timeout prints every thread's stack and
ends its process (a second process goes on from the next run). One engine per speculation
setting serves all runs of a process, as the app's does, so what a run leaves in the engine's
store reaches the next: `--only` replays one run on a fresh engine, `--runs i+1` the sequence.
Prints progress and a last line "500 runs, 0 crashes, 0 invariant failures, ...";
--out writes the summary and every failure (settings, traceback or broken rules, replay command)
as JSON. Exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.ui import BEAM_WIDTHS, budgets
from backend.catalog import NO_PRM
from backend.limits import limits_for
from strategies.answers import answer_written
from strategies.config import AGGREGATIONS, SearchConfig
from strategies.info import STRATEGY_NAMES, needs_scorer
from strategies.invariants import tree_problems
from strategies.registry import search
from strategies.tree import SearchTree

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = budgets(limits_for("smollm2-135m", "cpu"))  # the explorer's menu on a CPU
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
MODELS = ("smollm2-135m", "tiny")
QUESTIONS_PER_FILE = 3
SHORT_QUESTIONS = ("What is 2 + 3?", "What is 17 + 25?", "Compute 6 x 7.")
RUN_TIMEOUT_S = 180.0  # far beyond any run's few seconds: a run this long hangs


@functools.cache
def questions() -> tuple[str, ...]:
    """A few one-line sums (short steps: deep trees) and the first questions of each problem set."""
    found = list(SHORT_QUESTIONS)
    for path in sorted((ROOT / "assets" / "problems").glob("*.json")):
        found += [p["question"] for p in json.loads(path.read_text())[:QUESTIONS_PER_FILE]]
    return tuple(found)


@dataclass(frozen=True)
class SoakRun:
    """One run of the soak: which process runs it, the engine, the PRM, the question, the search."""

    index: int
    cpu: str  # "native" or "avx2"
    strategy: str
    speculate: bool
    prm: str  # "arithmetic" or NO_PRM
    question: str
    stop_after: int  # frames after which the run is stopped, as by Stop (0: never)
    settings: dict[str, Any] = field(default_factory=dict)  # SearchConfig's fields

    def config(self) -> SearchConfig:
        """The search's config; ValueError when it refuses these settings (the run is skipped)."""
        return SearchConfig(strategy=self.strategy, **self.settings)


def soak_run(index: int, seed_base: int = 0, cpu: str = "native") -> SoakRun:
    """Run `index` of the soak: the same for the same (seed_base, index), whatever --runs is.
    `cpu` is the mode (native, avx2, both: even runs native, odd ones avx2)."""
    rng = random.Random(f"soak:{seed_base}:{index}")
    strategy = STRATEGY_NAMES[index % len(STRATEGY_NAMES)]
    n = rng.choices(BUDGETS, weights=[max(1, 4 - k) for k in range(len(BUDGETS))])[0]
    # big budgets are drawn less often, and get shorter limits: they cover the wide batches
    small = n <= 16
    settings = dict(
        n=n,
        beam_width=rng.choice(BEAM_WIDTHS),
        max_iterations=rng.choice((1, 2, 3, 4) if small else (1, 2, 2)),
        max_step_tokens=rng.choice((8, 16, 24) if small else (4, 8, 12)),
        max_solution_tokens=rng.choice((24, 40, 64) if small else (12, 24)),
        temperature=rng.choice((0.0, 0.5, 0.8, 0.8, 1.0, 1.3)),
        top_p=rng.choice((1.0, 1.0, 0.95, 0.8, 0.5)),
        aggregation=rng.choice(AGGREGATIONS),
        filter_duplicates=rng.random() < 0.3,
        lookahead=rng.choice((1, 2)),
        seed=rng.randrange(2**31),
    )
    no_prm = rng.random() < 0.5 and not needs_scorer(strategy)
    question = rng.choice(questions())
    stop_after = rng.randint(1, 6) if rng.random() < 0.125 else 0
    label = cpu if cpu != "both" else ("native", "avx2")[index % 2]
    speculate = (index // (2 * len(STRATEGY_NAMES))) % 2 == 0
    prm = NO_PRM if no_prm else "arithmetic"
    return SoakRun(index, label, strategy, speculate, prm, question, stop_after, settings)


def plan(runs: int, seed_base: int = 0, cpu: str = "native") -> list[SoakRun]:
    return [soak_run(i, seed_base, cpu) for i in range(runs)]


# ---- the models -------------------------------------------------------------------------------
def load_model(name: str) -> tuple[Any, Any, Any, str]:
    """(model, tokenizer, prompt template, precision) for --model: the embedded SmolLM2 at the
    "auto" precision of this process's CPU, or the tiny random model at the same dtype."""
    from backend.catalog import catalog
    from backend.loading.policy import choose_precision
    from backend.prompts import PromptTemplate
    from backend.runtime import get_policy

    template = PromptTemplate.load(catalog().get("smollm2-135m", "policy").prompt)
    if name != "tiny":
        policy = get_policy(name, "auto")
        return policy.model, policy.tokenizer, template, policy.precision
    precision = choose_precision("auto", "cpu")[0]
    tokenizer = _smollm2_tokenizer()
    return tiny_model(tokenizer, precision), tokenizer, template, precision


def _smollm2_tokenizer() -> Any:
    """The embedded SmolLM2's tokenizer as transformers reads it from the GGUF file."""
    from transformers import AutoTokenizer

    from backend.loading.policy import gguf_path

    path = gguf_path("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_model(tokenizer: Any, precision: str = "fp32") -> Any:
    """A 2-layer random Llama over `tokenizer` whose head writes only math-looking tokens
    (digits, operators, "the answer is", pieces of `\\boxed{`, newlines, the step delimiter
    most of all, EOS now and then), so steps end at the delimiter and trees grow deep; and whose
    padding rows past the tokenizer's vocabulary score highest of all, which the engine must
    never sample."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    vocab = len(tokenizer) + 64  # padded, as a model's embedding often is
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    words = [
        *"0123456789",
        " + ",
        " - ",
        " x ",
        " = ",
        " ",
        ".",
        "\n",
        "\n\n",
        " so",
        " the answer is",
        " \\boxed{",
        "}",
        "$",
    ]
    ids = sorted({i for w in words for i in tokenizer.encode(w, add_special_tokens=False)})
    head = torch.nn.Linear(config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[ids] = torch.randn(len(ids), config.hidden_size) * 0.3
        head.bias.fill_(-40.0)
        head.bias[ids] = 0.0
        head.bias[tokenizer.encode("\n\n", add_special_tokens=False)] = 1.5  # steps end
        head.bias[tokenizer.eos_token_id] = -3.0
        head.bias[len(tokenizer) :] = 5.0
    model.lm_head = head
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return model.to(dtype).eval()


# ---- running, in this process --------------------------------------------------------------------
class Soaker:
    """The model, one engine per speculation setting, and the PRM that this process's runs share."""

    def __init__(self, model: str) -> None:
        from backend.verifiers.arithmetic import ArithmeticPRM

        self.model, self.tokenizer, self.template, self.precision = load_model(model)
        self.scorer = ArithmeticPRM()
        self.engines: dict[bool, Any] = {}

    def engine(self, speculate: bool):
        """The engine for a run: llama.cpp's for a GGUF model (one: it writes nothing ahead),
        transformers' (with or without writing ahead) for the tiny random model."""
        if hasattr(self.model, "kv"):
            speculate = False
        if speculate not in self.engines:
            if hasattr(self.model, "kv"):
                from backend.llama.engine import LlamaStepEngine

                self.engines[speculate] = LlamaStepEngine(self.model, self.template)
            else:
                from backend.engine import StepEngine

                self.engines[speculate] = StepEngine(
                    self.model, self.tokenizer, self.template, speculate=speculate
                )
        return self.engines[speculate]

    def run(self, r: SoakRun) -> dict[str, Any]:
        """One run's outcome: status ok / skipped / crash / invariant, and what went wrong."""
        out: dict[str, Any] = {"index": r.index, "cpu": r.cpu, "status": "ok"}
        try:
            config = r.config()
        except ValueError as err:
            return out | {"status": "skipped", "why": str(err)}
        t0 = time.perf_counter()
        problems: list[str] = []
        tree: SearchTree | None = None
        try:
            scorer = self.scorer if r.prm == "arithmetic" else None
            frames = search(r.question, config, self.engine(r.speculate), scorer)
            for count, tree in enumerate(frames, 1):
                if not problems and (not tree.writing or tree.done):
                    problems = [f"frame {count}: {p}" for p in tree_problems(tree)]
                if r.stop_after and count >= r.stop_after and not tree.done:
                    frames.close()  # as the app's Stop: the engine's call ends with the stream
                    tree.stop("stopped")
                    break
        except Exception:
            out |= {"status": "crash", "traceback": traceback.format_exc()}
        out["seconds"] = round(time.perf_counter() - t0, 3)
        if out["status"] == "crash":
            return out
        problems += _final_problems(tree)
        out |= _shape(tree)
        return out | ({"status": "invariant", "problems": problems} if problems else {})


def _final_problems(tree: SearchTree | None) -> list[str]:
    if tree is None:
        return ["the search yielded no tree"]
    problems = [f"last frame: {p}" for p in tree_problems(tree)]
    if not tree.done:
        problems.append("the last frame is not done")
    if SearchTree.from_json(tree.to_json()).to_dict() != tree.to_dict():
        problems.append("the run JSON does not read back as the same tree")
    return problems


def _shape(tree: SearchTree | None) -> dict[str, Any]:
    """What the run covered: its size, how its steps ended, whether it was stopped."""
    if tree is None:
        return {}
    return {
        "nodes": len(tree.nodes),
        "iterations": tree.iteration,
        "finish_reasons": dict(Counter(n.finish_reason for n in tree.nodes[1:])),
        "boxed": sum(answer_written(n.text) for n in tree.nodes),
        "stopped": bool(tree.stopped),
        "answered": tree.answer is not None,
    }


@contextlib.contextmanager
def watchdog(seconds: float | None, what: str):
    """End this process, with every thread's stack, when the block runs over `seconds`."""
    if not seconds:
        yield
        return

    def fire() -> None:
        print(f"HANG: {what} ran over {seconds:g} s; the stacks:", flush=True)
        faulthandler.dump_traceback(sys.stdout, all_threads=True)
        sys.stdout.flush()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def run_here(
    runs: Iterable[SoakRun],
    model: str,
    run_timeout_s: float | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """The runs in this process (its CPU as it is), each outcome passed to `report` as it ends."""
    runs = list(runs)
    if not runs:
        return []
    soaker = Soaker(model)
    _say(f"{runs[0].cpu}: {_machine()} {model} in {soaker.precision}, {len(runs)} runs")
    outcomes, t0 = [], time.perf_counter()
    for k, r in enumerate(runs, 1):
        with watchdog(run_timeout_s, f"run {r.index} ({r.strategy})"):
            outcome = soaker.run(r)
        outcomes.append(outcome)
        if report is not None:
            report(outcome)
        if outcome["status"] in ("crash", "invariant"):
            _say(_failure_text(r, outcome))
        if k % 25 == 0 or k == len(runs):
            _say(
                f"{r.cpu}: {k}/{len(runs)} runs, {_tally(outcomes)}, {time.perf_counter() - t0:.0f} s"
            )
    return outcomes


def _machine() -> str:
    from backend.llama.native import cpu_build

    return f"{cpu_build()},"


# ---- running in an avx2 process ------------------------------------------------------------------
def run_avx2(runs: list[SoakRun], seed_base: int, model: str, cpu: str) -> list[dict[str, Any]]:
    """The runs in child processes held to AVX2; one that dies (a hang, a crash in native code)
    marks its run a crash, and the next child goes on from the run after it."""
    lib = (
        subprocess.run(
            ["bash", "scripts/build_llama.sh", "--avx2"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    env = {**os.environ, **AVX2_ENV, "LLAMA_CPP_LIB_PATH": lib}
    outcomes: dict[int, dict[str, Any]] = {}
    todo = [r.index for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "outcomes.jsonl"
        while todo:
            command = [
                sys.executable,
                "-m",
                "benchmarks.soak",
                "--worker",
                str(results),
                "--seed-base",
                str(seed_base),
                "--model",
                model,
                "--cpu",
                cpu,
                "--indices",
                ",".join(map(str, todo)),
            ]
            rc = subprocess.run(command, env=env, cwd=ROOT).returncode
            if results.is_file():
                for line in results.read_text().splitlines():
                    outcome = json.loads(line)
                    outcomes[outcome["index"]] = outcome
            todo = [i for i in todo if i not in outcomes]
            if todo and rc == 0:
                raise RuntimeError(f"the avx2 process ended without runs {todo}")
            if todo:
                why = f"the avx2 process died (exit status {rc}) during this run; see its output"
                outcomes[todo[0]] = {
                    "index": todo[0],
                    "cpu": "avx2",
                    "status": "crash",
                    "traceback": why,
                }
                todo = todo[1:]
    return [outcomes[r.index] for r in runs]


def _worker(args: argparse.Namespace) -> int:
    """The child process's side of `run_avx2`: its runs, each outcome a JSON line as it ends."""
    if any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        raise SystemExit(f"the avx2 worker needs {AVX2_ENV} in its environment")
    runs = [soak_run(int(i), args.seed_base, args.cpu) for i in args.indices.split(",") if i]
    with open(args.worker, "a") as sink:

        def report(outcome: dict[str, Any]) -> None:
            sink.write(json.dumps(outcome) + "\n")
            sink.flush()

        run_here(runs, args.model, args.run_timeout, report)
    return 0


# ---- the whole soak ---------------------------------------------------------------------------
def soak(
    runs: int = 500,
    seed_base: int = 0,
    model: str = "smollm2-135m",
    cpu: str = "native",
    indices: Iterable[int] | None = None,
    run_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run the soak's first `runs` runs (or those of `indices`, in that order); returns the
    summary (`failures`: every failed run, with its replay command)."""
    t0 = time.perf_counter()
    if indices is None:
        indices = range(runs)
    todo = [soak_run(i, seed_base, cpu) for i in indices]
    native = [r for r in todo if r.cpu == "native"]
    avx2 = [r for r in todo if r.cpu == "avx2"]
    if native and any(os.environ.get(k) for k in AVX2_ENV) and "torch" not in sys.modules:
        for k in AVX2_ENV:  # "native" is this CPU as it is, not as a variable holds it back
            os.environ.pop(k, None)
    outcomes = run_here(native, model, run_timeout_s)
    if avx2:
        outcomes += run_avx2(avx2, seed_base, model, cpu)
    by_index = {r.index: r for r in todo}
    failures = [
        {**o, "run": asdict(by_index[o["index"]]), "replay": _replay(o, seed_base, model)}
        for o in outcomes
        if o["status"] in ("crash", "invariant")
    ]
    done = [o for o in outcomes if o["status"] != "skipped"]
    ran = [by_index[o["index"]] for o in done]
    return {
        "runs": len(outcomes),
        "crashes": sum(o["status"] == "crash" for o in outcomes),
        "invariant_failures": sum(o["status"] == "invariant" for o in outcomes),
        "skipped": len(outcomes) - len(done),
        "by_cpu": dict(Counter(o["cpu"] for o in outcomes)),
        "seed_base": seed_base,
        "model": model,
        "cpu": cpu,
        "wall_s": round(time.perf_counter() - t0, 1),
        "covered": {
            "strategies": sorted({r.strategy for r in ran}),
            "speculate": sorted({r.speculate for r in ran}),
            "cpu": sorted({r.cpu for r in ran}),
            "prm": sorted({r.prm for r in ran}),
            "stopped": sum(bool(o.get("stopped")) for o in done),
            "answered": sum(bool(o.get("answered")) for o in done),
            "boxed_steps": sum(o.get("boxed", 0) for o in done),
            "finish_reasons": dict(
                sum((Counter(o.get("finish_reasons", {})) for o in done), Counter())
            ),
        },
        "slowest": sorted(
            ({"index": o["index"], "seconds": o.get("seconds", 0.0)} for o in done),
            key=lambda x: -x["seconds"],
        )[:5],
        "failures": failures,
    }


def summary_line(summary: dict[str, Any]) -> str:
    per_cpu = ", ".join(f"{k}: {v}" for k, v in sorted(summary["by_cpu"].items()))
    return (
        f"{summary['runs']} runs, {summary['crashes']} crashes, "
        f"{summary['invariant_failures']} invariant failures, {summary['skipped']} skipped "
        f"({per_cpu}) in {summary['wall_s']:.0f} s"
    )


def _tally(outcomes: list[dict[str, Any]]) -> str:
    c = Counter(o["status"] for o in outcomes)
    return f"{c['crash']} crashes, {c['invariant']} invariant failures, {c['skipped']} skipped"


def _replay(outcome: dict[str, Any], seed_base: int, model: str) -> str:
    return (
        f".venv/bin/python -m benchmarks.soak --only {outcome['index']} --cpu {outcome['cpu']} "
        f"--seed-base {seed_base} --model {model}"
    )


def _failure_text(r: SoakRun, outcome: dict[str, Any]) -> str:
    detail = outcome.get("traceback") or "\n".join(outcome.get("problems", []))
    return f"FAILED run {r.index} ({outcome['status']}): {asdict(r)}\n{detail}"


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--model", choices=MODELS, default="smollm2-135m")
    parser.add_argument("--cpu", choices=("native", "avx2", "both"), default="native")
    parser.add_argument("--seed-base", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the summary and failures here (JSON)")
    parser.add_argument("--only", type=int, help="replay only this run (on a fresh engine)")
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=RUN_TIMEOUT_S,
        help="seconds after which a run counts as hung (0: no limit)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the avx2 child: its outcomes file
    parser.add_argument("--indices", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    only = None if args.only is None else [args.only]
    summary = soak(args.runs, args.seed_base, args.model, args.cpu, only, args.run_timeout)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: summary[k] for k in ("covered", "slowest")}))
    print(summary_line(summary))
    return 1 if summary["crashes"] or summary["invariant_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
