"""LlamaStepEngine: a GGUF policy in llama.cpp as a `StepGenerator` (and a streaming one).

How a call runs (llama.cpp's `examples/batched` and `examples/parallel`, in the protocol's terms):
- each question's prompt is read once, on top of the template's fixed head (system line and worked
  examples), which is read once per engine; a partial solution is a sequence of the one context
  (backend/llama/sequences.py), kept after the call that wrote it, keyed by its text;
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
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.llama.model import GGUFModel
from backend.llama.native import Sampler
from backend.llama.sequences import Seq
from backend.prompts import PromptTemplate
from backend.stopping import StopChecks
from strategies.protocols import GeneratedStep, Sampling

Key = tuple[str, tuple[str, ...]]  # (question, steps so far)
HEAD = "\x00head"  # the snapshot of the template's fixed head (no question is this string)


@dataclass(eq=False)
class State:
    """A partial solution the model has read: its token ids, all but the last one in `seq`."""

    seq: Seq
    ids: list[int]
    prompt_len: int  # how many of the ids are the prompt
    used: int = 0  # the call that last produced or used it (for eviction)


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


class LlamaStepEngine:
    """Implements `StepGenerator` and `StreamingStepGenerator` over a `GGUFModel`."""

    def __init__(
        self, gguf: GGUFModel, template: PromptTemplate, *, keep_calls: int = 3,
        hidden_kept: int = 8192,
    ) -> None:  # fmt: skip
        self.gguf = gguf
        self.kv = gguf.kv
        self.tokenizer = gguf.tokenizer
        self.template = template
        self.keep_calls = keep_calls  # partial solutions unused for this many calls are dropped
        tok = gguf.tokenizer
        self.stops = StopChecks(tok.end_ids, tok.has_newline, tok.decode)
        self.store: dict[Key, State] = {}
        self._head: State | None = None  # the template's prompt before the question
        # the prompts read so far (and the head, under HEAD), as their cells' bytes
        self._snapshots: OrderedDict[str, tuple[bytes, list[int], int]] = OrderedDict()
        self.prompts_kept = 4
        self._hidden: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._hidden_kept = hidden_kept
        self.calls = 0
        self.stats = EngineStats()
        self.lock: threading.RLock = gguf.lock

    # ---- the protocol ------------------------------------------------------------------------
    def next_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ) -> list[list[GeneratedStep]]:
        results: list[GeneratedStep | None] = [None] * (len(partials) * n)
        for index, step in self.stream_steps(question, partials, n, sampling):
            results[index] = step
        return [[results[i * n + j] for j in range(n)] for i in range(len(partials))]

    def stream_steps(
        self, question: str, partials: Sequence[Sequence[str]], n: int, sampling: Sampling
    ) -> Iterator[tuple[int, GeneratedStep]]:
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
        self.calls += 1
        self.stats.calls += 1
        rows: list[Row] = []
        if not any(k and self._stored((question, k)) for k in keys):
            # a call that continues nothing stored (a run's first one): from an empty cache, so
            # that its seed reproduces it (see Sequences.reset)
            self.kv.reset()
            self._forget()
        try:
            states = self._make_room(question, keys, n, sampling)
            yield from self._first_tokens(question, keys, states, n, sampling, rows)
            yield from self._decode(question, rows, sampling)
        finally:  # also when the caller stops listening: what was under way goes
            for row in rows:
                if not row.done:
                    self.kv.drop(row.seq)
                    row.sampler.close()
            self._evict()

    def _make_room(
        self, question: str, keys: list[tuple[str, ...]], n: int, sampling: Sampling
    ) -> list[State]:
        """The partials' states, read where needed, with cells and sequences enough for the
        call's rows (each may write its whole budget)."""
        budget = sampling.max_solution_tokens if sampling.to_end else sampling.max_step_tokens
        for _ in range(4):
            try:
                states = [self._state(question, key) for key in keys]
            except _NoRoom as err:
                self._room(err.cells)
                continue
            need = sum(
                1 + n * max(1, min(budget, sampling.max_solution_tokens - self._solution_len(s)))
                for s in states
            )
            if self._room(need, {id(s) for s in states}, len(states) * n):
                return states
        raise MemoryError(f"no room in llama.cpp's KV cache for {len(keys) * n} rows")

    def _room(self, cells: int, keep: set[int] = frozenset(), seqs: int = 0) -> bool:
        """True when `cells` more cells and `seqs` more sequences fit. Else it makes room: the
        partial solutions but `keep` go first, then the context grows; it is then replaced and
        everything stored is lost (False: read again what is needed)."""
        kv = self.kv
        if kv.fits(cells) and kv.free_ids >= seqs:
            return True
        self._evict(keep, everything=True)
        if kv.fits(cells) and kv.free_ids >= seqs:
            return True
        kv.grow(cells, seqs)
        self._forget()
        return False

    def _resolve(self, question: str, steps: tuple[str, ...]) -> State:
        """`_state`, making room when reading overflows the context."""
        for _ in range(4):
            try:
                return self._state(question, steps)
            except _NoRoom as err:
                self._room(err.cells)
        raise MemoryError("no room in llama.cpp's KV cache for this partial solution")

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
            state.used = self.calls
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
                if not self._blank(row.new[-1]):  # the token just read
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
            self._keep_hidden(key, row.hidden)
            if step.finished or key in self.store:
                self.kv.drop(row.seq)
            else:
                self.store[key] = State(
                    row.seq, row.base.ids + row.new, row.base.prompt_len, self.calls
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

    def _blank(self, token: int) -> bool:
        """Whether a token writes nothing but whitespace (or nothing: a special token)."""
        return not self.gguf.native.piece(token).strip()

    @staticmethod
    def _solution_len(state: State) -> int:
        return len(state.ids) - state.prompt_len

    def warm(self, question: str) -> None:
        """Read the template's fixed head and `question`'s prompt now, as a first request would
        (a later question then reads only its own tokens)."""
        with self.lock:
            self._resolve(question, ())

    # ---- partial solutions ---------------------------------------------------------------------
    def _state(self, question: str, steps: tuple[str, ...]) -> State:
        """The stored state of a partial solution, reading whatever is not stored yet."""
        state = self._stored((question, steps))
        if state is None:
            # longest stored ancestor (at least the prompt), then read the remaining steps
            k = len(steps)
            while k > 0 and self._stored((question, steps[:k])) is None:
                k -= 1
            base = self._stored((question, steps[:k])) or self._prompt_state(question)
            state = base
            if k < len(steps):
                extra = self.tokenizer.encode("".join(steps[k:]))
                if extra:
                    state = self._read(base, extra, (question, steps))
                    self.store[(question, steps)] = state
        state.used = self.calls
        return state

    def _stored(self, key: Key) -> State | None:
        state = self.store.get(key)
        if state is not None and not self.kv.valid(state.seq):  # the context was replaced
            del self.store[key]
            return None
        return state

    def _prompt_state(self, question: str) -> State:
        """The question's prompt: put back from its snapshot, or read on top of the template's
        fixed head (the head is the same for every question, so it is read once per engine) and
        snapshotted. A prompt read once is never read again; put back into an empty cache it
        lies in the same cells as when it was read (see `Sequences.reset`)."""
        if question in self._snapshots:
            state = self._load(question)
        else:
            tok = self.tokenizer
            prompt = self.template.prompt_ids(tok, question)
            head = self._head_state()
            if (
                head is not None
                and prompt[: len(head.ids)] == head.ids
                and len(prompt) > len(head.ids)
            ):
                state = self._read(head, prompt[len(head.ids) :], None)
            else:
                state = self._read(None, prompt, None)
            state.prompt_len = len(prompt)
            self._snapshot(question, state)
        self.store[(question, ())] = state
        return state

    def _head_state(self) -> State | None:
        """The template's prompt before the question (None when it has no such part)."""
        if self._head is not None and self.kv.valid(self._head.seq):
            return self._head
        if HEAD in self._snapshots:
            self._head = self._load(HEAD)
            return self._head
        tok = self.tokenizer
        a = self.template.prompt_ids(tok, "A")
        b = self.template.prompt_ids(tok, "B")
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if n < 2:
            return None
        self._head = self._read(None, a[:n], None)
        self._snapshot(HEAD, self._head)
        return self._head

    def _snapshot(self, name: str, state: State) -> None:
        self._snapshots[name] = (self.kv.save(state.seq), state.ids, state.prompt_len)
        self._snapshots.move_to_end(name)
        questions = [k for k in self._snapshots if k != HEAD]
        for k in questions[: -self.prompts_kept]:
            del self._snapshots[k]

    def _load(self, name: str) -> State:
        data, ids, prompt_len = self._snapshots[name]
        self._snapshots.move_to_end(name)
        if not self.kv.fits(len(ids)):
            raise _NoRoom(len(ids))
        return State(self.kv.load(data, len(ids) - 1), ids, prompt_len, self.calls)

    def _read(self, base: State | None, ids: list[int], key: Key | None) -> State:
        """A new state: `base` (if any) followed by `ids`, read in a fork of base's sequence (its
        pending token, then all new ids but the last). Keeps the hidden state that predicted the
        last id under `key`."""
        all_ids = (base.ids if base else []) + list(ids)
        todo = all_ids[len(base.ids) - 1 if base else 0 : -1]
        seq = self.kv.new(base.seq if base else None)
        if not self.kv.fits(len(todo)):
            self.kv.drop(seq)
            raise _NoRoom(len(todo))
        t0 = time.perf_counter()
        start = len(all_ids) - 1 - len(todo)
        if key is None:
            self.kv.prefill(seq, todo, start, hidden=False)
        elif todo:
            # the hidden state after the last token that is not blank (the first may be base's
            # pending one), then the blank ones after it
            j = max((k for k, t in enumerate(todo) if not self._blank(t)), default=len(todo) - 1)
            at = self.kv.prefill(seq, todo[: j + 1], start)
            self._keep_hidden(key, self.kv.ctx.hidden(at))
            if j + 1 < len(todo):
                self.kv.prefill(seq, todo[j + 1 :], start + j + 1, hidden=False)
        self.stats.prefill_tokens += len(todo)
        self.stats.prefill_s += time.perf_counter() - t0
        return State(seq, all_ids, base.prompt_len if base else len(all_ids), self.calls)

    def hidden_state(self, question: str, steps: Sequence[str]) -> np.ndarray:
        """The final hidden state that predicted the last token of `steps` (non-empty) after
        `question`'s prompt: kept from when the engine wrote it, else read now."""
        key = (question, tuple(steps))
        with self.lock:
            got = self._hidden.get(key)
            if got is None:
                self._resolve(question, key[1])  # reading it keeps its hidden state
                got = self._hidden.get(key)
            if got is None:  # stored, but its hidden state no longer kept: read it once more
                prompt = self._resolve(question, ())
                self.kv.drop(self._read(prompt, self.tokenizer.encode("".join(steps)), key).seq)
                got = self._hidden[key]
            self._hidden.move_to_end(key)
            return got

    def _keep_hidden(self, key: Key, hidden: np.ndarray | None) -> None:
        if hidden is None:
            return
        self._hidden[key] = hidden
        self._hidden.move_to_end(key)
        while len(self._hidden) > self._hidden_kept:
            self._hidden.popitem(last=False)

    def drop_partials(self) -> None:
        """Forget every partial solution (the prompts stay): what a stopped or failed run leaves
        behind, which no later call would read."""
        with self.lock:
            for key in [k for k in self.store if k[1]]:
                self.kv.drop(self.store.pop(key).seq)

    def _forget(self) -> None:
        """The context was replaced: nothing stored is valid any more."""
        self.store.clear()
        self._head = None

    def _evict(self, keep: set[int] = frozenset(), everything: bool = False) -> None:
        """Drop the partial solutions no call has used for `keep_calls` calls (all of them but
        `keep` with `everything`), and the prompts of all but the 4 most recent questions."""
        for key, s in list(self.store.items()):
            stale = everything or self.calls - s.used >= self.keep_calls
            if key[1] and stale and id(s) not in keep:
                self.kv.drop(self.store.pop(key).seq)
        prompts = sorted((s.used, key) for key, s in self.store.items() if not key[1])
        for _, key in prompts[: -self.prompts_kept]:
            if id(self.store[key]) not in keep:
                self.kv.drop(self.store.pop(key).seq)


class _NoRoom(MemoryError):
    """Reading `cells` more tokens would overflow the context (the caller makes room)."""

    def __init__(self, cells: int) -> None:
        super().__init__(f"no room for {cells} more cells")
        self.cells = cells
