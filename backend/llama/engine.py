"""LlamaStepEngine: a GGUF policy in llama.cpp as a `StepGenerator` (and a streaming one).

How a call runs (llama.cpp's `examples/batched` and `examples/parallel`, in the protocol's terms):
- each question's prompt is read once, on top of the template's fixed head (system line and worked
  examples), which is read once per engine; a partial solution is a sequence of the one context
  (backend/llama/sequences.py), kept after the call that wrote it, keyed by its text
  (backend/llama/partials.py);
- every continuation of a call is a fork of its partial solution's sequence, sharing its cells
  (nothing is read twice): the partial's pending last token is read once in a "trunk" fork, and
  the call's rows for that partial fork the trunk and sample their first tokens from its logits;
- all rows decode together, one token each per `llama_decode`, each sampled by its own sampler
  chain (temperature, top-p, a draw seeded by the call's seed and the row's index, so a seed
  reproduces its tree); a row leaves the batch when its step ends (backend/stopping.py) and is
  handed to the caller at once (`stream_steps`);
- a partial solution that no call has continued for `keep_calls` calls is dropped, and its
  cells with it (a pruned beam); a call that continues nothing stored (a run's first) starts
  from an empty cache, with its prompt put back from a snapshot (see `Sequences.reset` for why).
Each stored sequence holds the KV of all its tokens but the last ("pending") one, which the next
call reads first; so a stored partial needs no logits and a new prompt needs no special case.

The final hidden state after each step's last token that is not blank (the model's reading of
the step, its trailing delimiter left out, so that "\n" "\n" written and "\n\n" read give the
same one) is kept per partial solution for a scorer (`hidden_state`): a value head reads it at no
extra forward pass.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.llama.model import GGUFModel
from backend.llama.native import Sampler
from backend.llama.partials import Key, NoRoom, Partials, State
from backend.llama.sequences import Seq
from backend.prompts import PromptTemplate
from backend.stopping import StopChecks
from strategies.protocols import (
    GeneratedStep,
    Sampling,
    Streamed,
    StreamingStepGenerator,
)


@dataclass(eq=False)
class Row:
    """One continuation being decoded."""

    index: int  # which result of the call it answers (i * n + j)
    key: tuple[str, ...]  # the partial solution it continues
    base: State
    seq: Seq
    sampler: Sampler
    new: list[int] = field(default_factory=list)  # the step's tokens so far
    hidden: np.ndarray | None = None  # the hidden state after its last token that is not blank
    done: bool = False  # its step was handed over (its sequence dropped, or kept as a state)


@dataclass
class EngineStats:
    """Where the engine's time went (cumulative); the benchmark and the Compute panel read it."""

    calls: int = 0
    decode_s: float = 0.0  # decoding loops: llama_decode, sampling and bookkeeping
    forward_s: float = 0.0  # of decode_s: inside llama_decode
    decode_forwards: int = 0  # llama_decode calls while decoding
    forward_rows: int = 0  # rows summed over them (mean batch = rows / forwards)
    decode_tokens: int = 0  # tokens of the steps returned
    prefill_s: float = 0.0  # prompts and text the engine did not write, read in chunks
    prefill_tokens: int = 0


class LlamaStepEngine(StreamingStepGenerator):
    """Implements `StepGenerator` and `StreamingStepGenerator` over a `GGUFModel`."""

    def __init__(
        self,
        gguf: GGUFModel,
        template: PromptTemplate,
        *,
        keep_calls: int = 3,
        hidden_kept: int = 8192,
    ) -> None:
        self.gguf = gguf
        self.kv = gguf.kv
        self.tokenizer = gguf.tokenizer
        self.template = template
        tok = gguf.tokenizer
        self.stops = StopChecks(tok.end_ids, tok.has_newline, tok.decode)
        self.stats = EngineStats()
        self.partials = Partials(
            gguf.kv, tok, template, self.stats, keep_calls=keep_calls, hidden_kept=hidden_kept
        )
        self.lock: threading.RLock = gguf.lock

    @property
    def store(self) -> dict[Key, State]:
        """The partial solutions read, by (question, steps)."""
        return self.partials.store

    @property
    def keep_calls(self) -> int:
        return self.partials.keep_calls

    # ---- the protocol ------------------------------------------------------------------------
    def stream_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ) -> Streamed:
        """`next_steps`' results as `(i * n + j, step)`, each as soon as its row has ended it.

        The model's lock is held while the engine works, not while the caller handles a step,
        so a caller may draw a frame (or stop) between steps.
        """
        work = self._steps(question, [tuple(p) for p in partials], n, sampling)
        try:
            while True:
                with self.lock:
                    item = next(work, None)
                if item is None:
                    return
                yield item
        finally:
            with self.lock:
                work.close()

    def _steps(
        self, question: str, keys: list[tuple[str, ...]], n: int, sampling: Sampling
    ) -> Iterator[tuple[int, GeneratedStep]]:
        self.partials.calls += 1
        self.stats.calls += 1
        rows: list[Row] = []
        if not any(k and self.partials.stored((question, k)) for k in keys):
            # a call that continues nothing stored (a run's first one): from an empty cache, so
            # that its seed reproduces it (see Sequences.reset)
            self.partials.restart()
        try:
            states = self._make_room(question, keys, n, sampling)
            yield from self._first_tokens(question, keys, states, n, sampling, rows)
            yield from self._decode(question, rows, sampling)
        finally:  # also when the caller stops listening: what was under way goes
            for row in rows:
                if not row.done:
                    self.kv.drop(row.seq)
                    row.sampler.close()
            self.partials.evict()

    def _make_room(
        self, question: str, keys: list[tuple[str, ...]], n: int, sampling: Sampling
    ) -> list[State]:
        """The partials' states, read where needed, with cells and sequences enough for the
        call's rows (each may write its whole budget)."""
        budget = sampling.max_solution_tokens if sampling.to_end else sampling.max_step_tokens
        for _ in range(4):
            try:
                states = [self.partials.state(question, key) for key in keys]
            except NoRoom as err:
                self.partials.room(err.cells, seqs=err.seqs)
                continue
            need = sum(
                1 + n * max(1, min(budget, sampling.max_solution_tokens - self._solution_len(s)))
                for s in states
            )
            if self.partials.room(need, {id(s) for s in states}, len(states) * n):
                return states
        raise MemoryError(f"no room in llama.cpp's KV cache for {len(keys) * n} rows")

    def _first_tokens(
        self,
        question: str,
        keys: list[tuple[str, ...]],
        states: list[State],
        n: int,
        sampling: Sampling,
        rows: list[Row],
    ) -> Iterator[tuple[int, GeneratedStep]]:
        """Read each partial's pending token once (its trunk), fork the trunk into its rows
        (added to `rows`) and sample every row's first token; yields the steps that end at once.
        A row's hidden state starts as its trunk's (a step that is all blank keeps it)."""
        kv = self.kv
        t0 = time.perf_counter()
        trunks = [kv.new(state.seq) for state in states]
        outs = self._forward(
            [(s.ids[-1], len(s.ids) - 1, trunk, True) for s, trunk in zip(states, trunks)]
        )
        for i, (key, state, trunk) in enumerate(zip(keys, states, trunks)):
            state.used = self.partials.calls
            hidden = kv.ctx.hidden(outs[i])
            for j in range(n):
                seq = trunk if j == 0 else kv.new(trunk)
                row = Row(i * n + j, key, state, seq, self._sampler(sampling, i * n + j))
                rows.append(row)
                row.new.append(row.sampler.sample(kv.ctx, outs[i]))
                row.hidden = hidden
        self.stats.decode_s += time.perf_counter() - t0
        yield from self._ended(question, rows, sampling)

    def _decode(
        self, question: str, rows: list[Row], sampling: Sampling
    ) -> Iterator[tuple[int, GeneratedStep]]:
        """Decode the rows still writing, one token each per llama_decode, until none is."""
        kv = self.kv
        going = [r for r in rows if not r.done]
        while going:
            t0 = time.perf_counter()
            outs = self._forward(
                [(r.new[-1], len(r.base.ids) + len(r.new) - 1, r.seq, True) for r in going]
            )
            for row, at in zip(going, outs):
                if not self.partials.blank(row.new[-1]):  # the token just read
                    row.hidden = kv.ctx.hidden(at)
                row.new.append(row.sampler.sample(kv.ctx, at))
            self.stats.decode_s += time.perf_counter() - t0
            yield from self._ended(question, going, sampling)
            going = [r for r in going if not r.done]

    def _forward(self, entries: list[tuple[int, int, Seq, bool]]) -> list[int]:
        t0 = time.perf_counter()
        outs = self.kv.decode(entries)
        self.stats.forward_s += time.perf_counter() - t0
        self.stats.decode_forwards += 1
        self.stats.forward_rows += len(entries)
        return outs

    def _ended(
        self, question: str, rows: list[Row], sampling: Sampling
    ) -> Iterator[tuple[int, GeneratedStep]]:
        """Hand over the steps that ended with their newest token (marking their rows done). An
        unfinished step's sequence is kept as the state of its partial solution."""
        budget = sampling.max_solution_tokens if sampling.to_end else sampling.max_step_tokens
        for row in rows:
            solution_len = self._solution_len(row.base) + len(row.new)
            step = self.stops.check(row.new, solution_len, sampling, budget)
            if step is None:
                continue
            key = (question, row.key + (step.text,))
            self.partials.keep_hidden(key, row.hidden)
            if step.finished or key in self.store:
                self.kv.drop(row.seq)
            else:
                self.store[key] = State(
                    row.seq, row.base.ids + row.new, row.base.prompt_len, self.partials.calls
                )
            row.sampler.close()
            row.done = True
            self.stats.decode_tokens += step.tokens
            yield row.index, step

    @staticmethod
    def _sampler(sampling: Sampling, index: int) -> Sampler:
        seed = sampling.seed
        if seed is None:  # not reproducible, as asked
            seed = int.from_bytes(os.urandom(4), "little")
        return Sampler(sampling.temperature, sampling.top_p, (seed * 1_000_003 + index) % 2**32)

    @staticmethod
    def _solution_len(state: State) -> int:
        return len(state.ids) - state.prompt_len

    def warm(self, question: str) -> None:
        """Read the template's fixed head and `question`'s prompt now, as a first request would
        (a later question then reads only its own tokens)."""
        with self.lock:
            self.partials.resolve(question, ())

    def hidden_state(self, question: str, steps: Sequence[str]) -> np.ndarray:
        """The final hidden state after the last token of `steps` (non-empty) that is not blank,
        after `question`'s prompt: kept from when the engine wrote it, else read now."""
        with self.lock:
            return self.partials.hidden_state(question, steps)

    def token_logprobs(self, question: str, steps: Sequence[str]) -> list[np.ndarray]:
        """Per step, the log-probability of each of its tokens after `question`'s prompt and the
        steps before it, read once (teacher-forced, in a sequence dropped after): the policy's
        own confidence in what it wrote, a verifier that needs no training."""
        ids = [self.tokenizer.encode(step) for step in steps]
        flat = [t for step in ids for t in step]
        with self.lock:
            prompt = self.partials.resolve(question, ())
            if not self.partials.room(len(flat) + 1, {id(prompt)}, 1):
                prompt = self.partials.resolve(question, ())  # the context was replaced
            seq = self.kv.new(prompt.seq)
            try:
                fed = [prompt.ids[-1], *flat[:-1]]
                start = len(prompt.ids) - 1
                out = np.empty(len(flat))
                for i in range(0, len(fed), self.kv.batch.capacity):
                    chunk = fed[i : i + self.kv.batch.capacity]
                    entries = [(t, start + i + j, seq, True) for j, t in enumerate(chunk)]
                    for j, at in enumerate(self.kv.decode(entries, hidden=False)):
                        logits = self.kv.ctx.logits(at).astype(np.float64)
                        top = logits.max()
                        norm = top + np.log(np.exp(logits - top).sum())
                        out[i + j] = logits[flat[i + j]] - norm
            finally:
                self.kv.drop(seq)
        bounds = np.cumsum([0, *(len(step) for step in ids)])
        return [out[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def drop_partials(self) -> None:
        """Forget every partial solution, and shrink a context the run grew (partials.py)."""
        with self.lock:
            self.partials.drop_partials()
