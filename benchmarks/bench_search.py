"""Benchmark: beam search through the step engine vs a naive port, and vs the machine's limit.

    .venv/bin/python -m benchmarks.bench_search            # full run (~3-5 min on 2 cores)
    .venv/bin/python -m benchmarks.bench_search --no-speculation   # + the engine without it
    .venv/bin/python -m benchmarks.bench_search --quick    # smoke run (tiny settings)
    .venv/bin/python -m benchmarks.bench_search --model qwen2.5-coder-0.5b --n 8 --beam-width 4
        # Qwen2.5-Coder 0.5B (--model: any catalog policy; its cold start alone takes ~85 s,
        # --skip-cold leaves it out)

Prints one JSON object. Everything is measured side by side in one run, on one policy (`model`:
--model, by default the catalog's default policy, today the embedded SmolLM2-135M) with its own
prompt template (`prompt`: its catalog entry's), with the same question, seeds, N, M and number
of iterations (times are summed over --seeds searches, 3 by default: each seed samples different
paths, so one search alone is noisy; the paths run interleaved seed by seed, so a change in the
machine's load hits both):
- engine_s: beam search through StepEngine + the arithmetic PRM (the project's own path), each
  search on a fresh engine that has read the template's fixed head, in a process that has served
  another question whole (as the app is after its first question: the thread tuner has measured,
  oneDNN has its kernels; the naive port runs after that too);
- naive_s: the same search the way a straightforward port does it: every iteration, each
  candidate's prompt + partial solution is re-encoded and continued with `model.generate`, and
  the PRM (the same arithmetic checker) re-reads every whole partial solution (no caches). It
  samples the very tokens the engine's search of the same seed sampled (a logits processor
  replays them), so both build the same tree, token for token (naive_same_trees counts the
  seeds where they did), and speedup compares the two implementations of one search, not two
  searches' luck: sampled apart, the same seed draws other paths on each side (their random
  draws differ), and over 3 seeds that alone moved the ratio by +-15%. --independent-paths lets
  the naive port sample its own;
- cpu (model name, torch's kernel capability, the flags that matter, the variables that hold the
  kernels back), the precision "auto" chose and why, and precision_by_rows (what a forward of so
  many rows reads: low-bit copies at small batches, fp32 or bf16 above);
- decode_tok_s (tokens that became steps / time in the engine's decode loops) vs
  forward_limit_tok_s: the model's own (transformers) batched one-token forward with a
  preallocated KV cache at batch N, same context, at the faster thread count, in whichever of
  fp32 and bf16 is faster on this machine (forward_limit_precision; so a wrong choice of
  precision shows up as a low fraction; the other precision is loaded after peak_rss_mb is
  taken, and measured after each seed's searches);
  fraction_of_limit is their ratio (both forwards are measured before the searches and after
  each seed's, the fastest kept). engine_forward_tok_s is the same forward through the engine's
  lean decoder with the prompt as a shared prefix (backend/kernels/fast_decode.py), and occupancy =
  decode_tok_s / engine_forward_tok_s: what the step-synchronous search leaves of its own forward
  (rows idle while the iteration's longest step ends);
- first_frame_s: request to the first streamed tree with steps in it (model loaded, a new
  question for an app that has served one before; first_frame_cold_s: its very first question);
- cold_start_s (GGUF -> converted copy, in a fresh process, into an empty temporary cache that is
  removed after: the user's cache is never read or written; a policy shipped as GGUF parts also
  assembles them there) and warm_start_s (a second process loads that copy; with --skip-cold or
  --quick, this process loads the user's copy again);
- peak_rss_mb of this process after the first engine search (before the naive port ran;
  peak_rss_mb_with_naive after everything); the precision and threads used;
- with a CUDA device, the GPU section (`benchmarks/bench_gpu.py`): a random-weight model of
  Qwen2.5-1.5B's shape in NF4 vs bf16, tokens/s and GPU memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from backend.catalog import catalog
from backend.engine import EngineStats, StepEngine
from backend.kernels import threads as cpu_threads
from backend.loading.policy import choose_precision, load_policy
from backend.machine import cpu_info
from backend.prompts import PromptTemplate
from backend.runtime import get_policy
from backend.verifiers.arithmetic import ArithmeticPRM
from benchmarks.probes import forward_ms
from strategies.answers import answer_end
from strategies.config import SearchConfig
from strategies.protocols import STEP_DELIMITER, GeneratedStep, Sampling
from strategies.registry import run, search
from strategies.tree import SearchTree

QUESTION = (
    "A baker makes 12 trays of 8 muffins. She sells 57 muffins and gives away 15. "
    "How many muffins are left?"
)
FIRST_FRAME_QUESTION = "Tom buys 4 packs of 6 pens and loses 5 pens. How many pens does he have?"


class Recorder:
    """What the step engine returned, call by call, as token ids: `calls[c][i * n + j]` are the
    tokens of call c's continuation j of partial i (for the naive port to replay)."""

    def __init__(self, engine: StepEngine) -> None:
        self.calls: list[dict[int, list[int]]] = []
        self._stream, self._stop = engine.stream_steps, engine.stops.check
        self.ids: dict[tuple[int, str], list[int]] = {}  # (tokens, text) -> the step's tokens
        engine.stream_steps = self.stream_steps  # next_steps goes through it too
        engine.stops.check = self._check_stop  # where every step the engine writes ends

    def _check_stop(self, row, sampling, budget):
        step = self._stop(row, sampling, budget)
        if step is not None:
            self.ids[step.tokens, step.text] = list(row.new)
        return step

    def _ids(self, step: GeneratedStep) -> list[int]:
        if (step.tokens, step.text) in self.ids:
            return self.ids[step.tokens, step.text]
        for (tokens, text), ids in self.ids.items():  # a step cut after its boxed answer
            if tokens == step.tokens and text.startswith(step.text):
                return ids
        raise KeyError(f"no tokens recorded for the step {step.text!r}")

    def stream_steps(self, question, partials, n, sampling):
        call: dict[int, list[int]] = {}
        self.calls.append(call)
        for index, step in self._stream(question, partials, n, sampling):
            call[index] = self._ids(step)
            yield index, step


class NaiveGenerator:
    """A straightforward port: re-encode prompt + partial and call `generate` every iteration.

    With `replay` (a `Recorder`'s calls) it samples the recorded steps again: a logits processor
    leaves each row one token, the recorded one, so `generate` does the same work a port that
    happened to sample those tokens does (it runs after the sampling warpers, and costs under
    0.1 ms a step against ~100 ms for the step): both paths run the same search, token for
    token."""

    def __init__(
        self,
        model,
        tokenizer,
        template: PromptTemplate,
        replay: list[dict[int, list[int]]] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.generated = 0
        self.replay, self.calls = replay, 0

    @torch.inference_mode()
    def next_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ) -> list[list[GeneratedStep]]:
        tok = self.tokenizer
        prompt = self.template.prompt_text(tok, question)
        texts = [prompt + "".join(p) for p in partials for _ in range(n)]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        kwargs = dict(do_sample=False)
        if not sampling.greedy:
            kwargs = dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        width = batch["input_ids"].shape[1]
        if sampling.to_end:  # the rest of the solution, ending after its boxed answer
            written = max(len(tok.encode("".join(p), add_special_tokens=False)) for p in partials)
            budget = max(1, sampling.max_solution_tokens - written)
            stop = dict(stopping_criteria=StoppingCriteriaList([_AnswerWritten(tok, width)]))
        else:
            budget = sampling.max_step_tokens
            stop = dict(stop_strings=[STEP_DELIMITER])
        if self.replay is not None:
            recorded = self.replay[self.calls]
            self.calls += 1
            if len(recorded) != len(texts):
                raise RuntimeError("the replayed call had another number of continuations")
            targets = [recorded[i] for i in range(len(texts))]
            # the warpers `generate` would add, then the replay: a port that samples pays them
            # on the model's own logits (a top-p sort of forced ones would be 4x cheaper)
            chain: list[LogitsProcessor] = []
            if kwargs["do_sample"]:
                if sampling.temperature != 1.0:
                    chain.append(TemperatureLogitsWarper(sampling.temperature))
                if sampling.top_p < 1.0:
                    chain.append(TopPLogitsWarper(sampling.top_p))
                kwargs.update(temperature=1.0, top_p=1.0)  # so generate adds none of its own
            chain.append(_Replay(targets, width, tok))
            kwargs["logits_processor"] = LogitsProcessorList(chain)
        out = self.model.generate(
            **batch,
            max_new_tokens=budget,
            tokenizer=tok,
            pad_token_id=tok.pad_token_id,
            **stop,
            **kwargs,
        )
        steps = []
        for row in out[:, width:].tolist():
            ids = []
            finished, reason = False, "length"
            for t in row:
                if t == tok.eos_token_id:
                    finished, reason = True, "eos"
                    ids.append(t)
                    break
                ids.append(t)
                text = tok.decode(ids)
                if not sampling.to_end and STEP_DELIMITER in text:
                    reason = "delimiter"
                    break
                if sampling.to_end and answer_end(text) is not None:
                    finished, reason = True, "answer"
                    break
            text = tok.decode(ids, skip_special_tokens=True)
            if reason == "answer":
                text = text[: answer_end(text)]
            if reason == "length":
                finished = True
            if reason == "delimiter" and not text.strip():
                finished, reason = True, "empty"
            self.generated += len(ids)
            steps.append(GeneratedStep(text, len(ids), finished, reason))
        return [steps[i * n : (i + 1) * n] for i in range(len(partials))]


class _Replay(LogitsProcessor):
    """Leaves row r only the token `targets[r][t]` at its t-th new token (EOS past the end)."""

    def __init__(self, targets: list[list[int]], width: int, tok) -> None:
        longest = max(len(t) for t in targets)
        self.table = torch.full((len(targets), longest + 1), tok.eos_token_id)
        for r, t in enumerate(targets):
            self.table[r, : len(t)] = torch.tensor(t, dtype=torch.long)
        self.width = width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        t = min(input_ids.shape[1] - self.width, self.table.shape[1] - 1)
        column = self.table[:, t : t + 1].to(scores.device)
        return scores.fill_(float("-inf")).scatter_(1, column, 0.0)


class _AnswerWritten(StoppingCriteria):
    """Stops a row once its continuation has written a boxed answer and ended that step."""

    def __init__(self, tokenizer, width: int) -> None:
        self.tokenizer, self.width = tokenizer, width

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.width :], skip_special_tokens=True)
        done = [answer_end(t) is not None for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _same_tree(a: SearchTree, b: SearchTree) -> bool:
    """Whether two searches made the same nodes (text, parent, status), in the same order."""

    def shape(tree: SearchTree) -> list[tuple]:
        return [(n.parent, n.text, n.status) for n in tree.nodes]

    return shape(a) == shape(b)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def by_rows(policy) -> dict[str, str]:
    """What a forward of so many rows reads (backend/kernels/small_batch.py, backend/machine.py)."""
    int4, int8, top = policy.small_batch_int4, policy.small_batch_int8, policy.precision
    if not (int4 or int8):
        return {"1+": top}
    small = max(int4, int8)
    parts = [f"4-bit copies (<= {int4} rows)"] if int4 else []
    parts += [f"int8 copies (<= {int8} rows)"] if int8 else []
    return {f"1-{small}": ", ".join(parts) + ", bf16 activations", f"{small + 1}+": top}


def cold_and_warm_start(model: str, precision: str) -> dict[str, float]:
    """Cold: a fresh process converts policy `model`'s GGUF into an empty cache; warm: a second
    process loads it. The cache is a temporary folder (removed after), never the user's: each
    process names the cache it used, and one outside that folder is an error."""
    code = (
        "import time, json; t=time.perf_counter();"
        "from backend.catalog import models_cache_dir;"
        "from backend.loading.policy import load_policy;"
        f"p=load_policy({model!r}, {precision!r});"
        "print(json.dumps({'load_s': p.load_s, 'process_s': time.perf_counter()-t,"
        " 'source': p.source, 'cache': str(models_cache_dir())}))"
    )
    out = {}
    with tempfile.TemporaryDirectory(prefix="thinktree-cold-") as cache:
        env = {**os.environ, "THINKTREE_CACHE": cache}
        for label in ("cold", "warm"):
            proc = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            if not Path(res["cache"]).resolve().is_relative_to(Path(cache).resolve()):
                raise RuntimeError(f"the {label} start used the cache {res['cache']}, not {cache}")
            out[f"{label}_start_s"] = round(res["load_s"], 2)
            out[f"{label}_process_s"] = round(res["process_s"], 2)
    return out


def timed_searches(
    config: SearchConfig, seeds: list[int], make: Callable[[], tuple[Any, Any]]
) -> tuple[list[float], list[SearchTree]]:
    """Run the benchmark question once per seed, each with a fresh (generator, PRM) from `make`;
    the seconds of each search and its tree."""
    seconds, trees = [], []
    for seed in seeds:
        generator, prm = make()
        t0 = time.perf_counter()
        trees.append(run(QUESTION, replace(config, seed=seed), generator, prm))
        seconds.append(round(time.perf_counter() - t0, 2))
    return seconds, trees


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (an unknown --model exits, as argparse does, listing the policies)."""
    models = catalog()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    ap.add_argument(
        "--model",
        default=models.default_policy,
        choices=models.names("policy"),
        help="the catalog policy to benchmark (default: %(default)s)",
    )
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="searches per path (times are summed)")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-gpu", action="store_true", help="skip the CUDA section")
    ap.add_argument(
        "--independent-paths",
        action="store_true",
        help="let the naive port sample its own paths instead of replaying the engine's",
    )
    ap.add_argument(
        "--no-speculation",
        action="store_true",
        help="also time the engine without speculative next steps (adds about a minute)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    model = args.model
    if args.quick:
        args.n, args.beam_width, args.iterations, args.seeds = 4, 2, 1, 1
    config = SearchConfig(
        strategy="beam_search",
        n=args.n,
        beam_width=args.beam_width,
        max_iterations=args.iterations,
        # the app's defaults (app/service.py's PRESET)
        max_step_tokens=16 if args.quick else 64,
        max_solution_tokens=64 if args.quick else 512,
        seed=args.seed,
    )
    prompt = catalog().get(model, "policy").prompt
    result: dict = {
        "model": model,
        "prompt": prompt,
        "n": config.n,
        "beam_width": config.beam_width,
        "iterations": config.max_iterations,
    }

    policy = get_policy(model, args.precision)
    template = PromptTemplate.load(prompt)
    tuner = cpu_threads.tuner()
    result.update(precision=policy.precision, threads=tuner.choices, device=policy.device)
    reason = choose_precision(args.precision, policy.device, model)[2]
    result.update(precision_reason=reason, precision_by_rows=by_rows(policy))
    if policy.device == "cpu":
        result.update(cpu=cpu_info().as_json(), cpu_summary=cpu_info().summary())

    # first frame: a new question for a running app (its engine has served a question before,
    # so the template's fixed head is read; the very first question also reads that: +cold)
    engine = StepEngine(policy.model, policy.tokenizer, template)
    for label, question in (
        ("first_frame_cold_s", QUESTION),
        ("first_frame_s", FIRST_FRAME_QUESTION),
    ):
        t0 = time.perf_counter()
        for _ in search(question, config, engine, ArithmeticPRM()):
            result[label] = round(time.perf_counter() - t0, 2)
            break

    # the app has served a question: one whole search, untimed (the thread tuner has measured
    # the batch sizes a search meets, and oneDNN has made its kernels for them)
    run(FIRST_FRAME_QUESTION, config, engine, ArithmeticPRM())

    # ms per batch-N forward, per (precision, thread count) for the model's own forward (the
    # limit: fp32 and bf16 both, the faster counts) and per thread count for the engine's
    limits, own = {}, {}
    probe = StepEngine(policy.model, policy.tokenizer, template)
    stock = {policy.precision: probe}

    def load_other_precision():  # beside (not replacing) the policy; after peak_rss_mb is taken
        for other in ("fp32", "bf16") if policy.device == "cpu" else ():
            if other not in stock:
                loaded = load_policy(model, other)
                stock[other] = StepEngine(loaded.model, loaded.tokenizer, template)
        # a load installs a fresh thread tuner: the searches keep the one that has measured
        cpu_threads._TUNER = tuner
        torch.set_num_threads(tuner.choices[-1])

    prompt_len = len(template.prompt_ids(policy.tokenizer, QUESTION))
    probe_context = prompt_len + 40

    def measure_forwards():
        for t in tuner.choices:
            torch.set_num_threads(t)
            for precision, eng in stock.items():
                ms = forward_ms(eng, config.n, probe_context, steps=16, stock=True)
                limits[precision, t] = min(limits.get((precision, t), ms), ms)
            ms = forward_ms(probe, config.n, probe_context, steps=16, shared=prompt_len - 1)
            own[t] = min(own.get(t, ms), ms)

    measure_forwards()

    # one search per seed (sampled paths differ, so one seed is noisy) per path, interleaved
    # seed by seed (the machine's load drifts; both paths see about the same)
    seeds = [args.seed + k for k in range(args.seeds)]
    engines: list[StepEngine] = []

    recordings: list[Recorder] = []

    def engine_and_prm():  # a fresh engine (no cache of this question), as the app's is after
        # another question: it has read the template's fixed head
        engines.append(StepEngine(policy.model, policy.tokenizer, template))
        engines[-1].warm(FIRST_FRAME_QUESTION)
        engines[-1].stats = EngineStats()  # what the timed search does
        recordings.append(Recorder(engines[-1]))
        return engines[-1], ArithmeticPRM()

    def naive_and_prm():  # at the thread count the engine found fastest for full batches
        torch.set_num_threads(tuner.best(config.n))
        result["naive_threads"] = torch.get_num_threads()
        # the same paths as the engine's search of this seed (it ran just before), unless asked
        replay = None if args.independent_paths else recordings[-1].calls
        # the same arithmetic checker, re-reading every whole partial solution with no cache
        prm = ArithmeticPRM(cache=False)
        return NaiveGenerator(policy.model, policy.tokenizer, template, replay), prm

    def plain_and_prm():
        return (
            StepEngine(policy.model, policy.tokenizer, template, speculate=False),
            ArithmeticPRM(),
        )

    paths = {"engine": engine_and_prm}
    if args.no_speculation:  # the same searches without speculative next steps, for comparison
        paths["no_speculation"] = plain_and_prm
    if not args.skip_naive:
        paths["naive"] = naive_and_prm
    runs = {name: ([], []) for name in paths}
    for k, seed in enumerate(seeds):
        for name, make in paths.items():
            seconds, trees = timed_searches(config, [seed], make)
            runs[name][0].extend(seconds)
            runs[name][1].extend(trees)
            if k == 0 and name == "engine":  # before the naive port has run
                result["peak_rss_mb"] = round(_rss_mb())
                load_other_precision()
        measure_forwards()
    per_seed, trees = runs["engine"]
    engine_s = sum(per_seed)
    tokens = sum(t.compute.generated_tokens for t in trees)
    answers = [t.answer for t in trees]
    stats = EngineStats()
    for engine in engines:
        for f in fields(EngineStats):
            setattr(stats, f.name, getattr(stats, f.name) + getattr(engine.stats, f.name))
    st = stats
    result.update(
        seeds=seeds,
        engine_s=round(engine_s, 2),
        engine_s_per_seed=per_seed,
        engine_tokens=tokens,
        engine_answers=answers,
        decode_tok_s=round(st.decode_tokens / st.decode_s, 1),
        engine_time_split={
            "decode_s": round(st.decode_s, 2),
            "of_which_forward_s": round(st.forward_s, 2),
            "mean_batch": round(st.forward_rows / max(1, st.decode_forwards), 1),
            "prefill_s": round(st.prefill_s, 2),
            "assemble_s": round(st.assemble_s, 2),
            "speculative_tokens": st.speculative_tokens,
            "prefetch_hits": st.prefetch_hits,
            "copied_rows": st.copied_rows,
            "two_ahead_tokens": st.two_ahead_tokens,
            "other_s": round(engine_s - st.decode_s - st.prefill_s - st.assemble_s, 2),
        },
        peak_rss_mb_with_naive=round(_rss_mb()),
    )
    # the machine's limit: the model's own one-token forward at batch N over the prompt and 40
    # tokens (about the searches' mean context) with a preallocated KV cache, at the faster
    # thread count; and the engine's lean forward over the same context. Both are measured
    # before the searches and after each seed's (this machine is shared and noisy, and the
    # searches' own speed is their sum over all seeds), the fastest kept
    best = min(limits, key=limits.get)
    result["forward_limit_tok_s"] = round(config.n / (limits[best] / 1000), 1)
    result["forward_limit_precision"], result["forward_limit_threads"] = best
    result["forward_limit_tok_s_by_precision"] = {
        p: round(config.n / (min(ms for (q, _), ms in limits.items() if q == p) / 1000), 1)
        for p in stock
    }
    result["fraction_of_limit"] = round(result["decode_tok_s"] / result["forward_limit_tok_s"], 3)
    result["engine_forward_tok_s"] = round(config.n / (min(own.values()) / 1000), 1)
    result["occupancy"] = round(result["decode_tok_s"] / result["engine_forward_tok_s"], 3)
    result["thread_tuner_ms"] = tuner.table()
    if "no_speculation" in runs:
        result["engine_no_speculation_s"] = round(sum(runs["no_speculation"][0]), 2)
    if "naive" in runs:
        naive_per_seed, naive_trees = runs["naive"]
        naive_s = sum(naive_per_seed)
        naive_tokens = sum(t.compute.generated_tokens for t in naive_trees)
        result.update(
            naive_paths="independent" if args.independent_paths else "replayed",
            naive_same_trees=sum(map(_same_tree, trees, naive_trees)),
            naive_s=round(naive_s, 2),
            naive_s_per_seed=naive_per_seed,
            naive_tokens=naive_tokens,
            speedup=round(naive_s / engine_s, 2),
            speedup_per_token=round(
                (naive_s / max(1, naive_tokens)) / (engine_s / max(1, tokens)), 2
            ),
        )
    if not args.skip_cold and not args.quick:  # as asked ("auto"): its choice and copies
        result.update(cold_and_warm_start(model, args.precision))
    else:
        t0 = time.perf_counter()
        load_policy(model, args.precision)
        result["warm_start_s"] = round(time.perf_counter() - t0, 2)
    if torch.cuda.is_available() and not args.skip_gpu:  # the GPU section (benchmarks/bench_gpu)
        from benchmarks.bench_gpu import gpu_benchmark

        result["gpu"] = gpu_benchmark(["bf16", "nf4"], policy.tokenizer, quick=args.quick)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
