"""The step engine: the policy model as a `StepGenerator`, built so no prefix is encoded twice.

How it is fast on two CPU cores:
- every continuation of a call is decoded in one batch;
- a partial solution's KV cache is kept after the call that wrote it (keyed by its content), so a
  surviving beam continues from its cache; the question's prompt is prefilled once per question
  and shared by every candidate (rows are gathered, repeated and left-padded once per call);
- decoding writes into a preallocated KV slab instead of concatenating per token;
- a row leaves the batch when its step ends (at the step delimiter, EOS or a token limit); the
  batch is compacted once a quarter of it has finished rather than after every row, and steps
  are handed to the caller as they end (`stream_steps`);
- on the CPU, batches of at most 8 rows (the tails of a search) read 4-bit or int8 copies of
  the weights (backend/small_batch.py), and the thread count is tuned per batch size
  (backend/threads.py);
- one-token steps run through a lean decoder (backend/fast_decode.py) where the model allows:
  the question's prompt is one shared prefix whose KV every row's attention reads once, so the
  slab and the stored rows hold only each row's own tokens (the last few rows of a batch take
  the prompt back into their rows, where one attention is faster than two);
- next steps are written ahead while an iteration's last rows finish (see `_decode`): a row whose
  step has ended goes on with its next step, and when the search hints which continuations it
  will keep (`Sampling.keep` and `.rank`, which a beam search gives with a cheap PRM), the likely
  survivors are copied so that each continuation the next call asks for is already under way.
Each stored row keeps its KV for all tokens but the last ("pending") one; the next call feeds
the pending tokens first, so a stored row needs no logits and a new prompt needs no special case.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from transformers.cache_utils import Cache, DynamicLayer

from backend import fast_decode
from backend import threads as cpu_threads
from backend.precision import sync
from backend.prompts import PromptTemplate
from backend.small_batch import SmallBatchLinear
from strategies.answers import answer_end
from strategies.protocols import STEP_DELIMITER, GeneratedStep, Sampling

log = logging.getLogger(__name__)

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape (heads, T, dim)
# a batch down to this many rows reads the shared prompt from its own rows again (_unshare)
UNSHARE_ROWS = 3
# speculation (see StepEngine._decode): at most this many continuations of one partial solution
# are written ahead (the app's default beam width)
FORKS = 4


# Bookkeeping that holds tensors compares by identity (eq=False): a list's `remove`, `in` or
# `index` would otherwise compare two such objects field by field, and torch refuses to say
# whether two tensors are equal as a whole ("Boolean value of Tensor ... is ambiguous").
@dataclass(eq=False)
class RowState:
    """A partial solution the model has read: token ids (last one pending) and their KV."""

    ids: list[int]
    kv: KV  # covers ids[:-1] (after `prefix`'s positions, when there is one)
    prompt_len: int  # how many of the ids are the prompt (the rest is the solution so far)
    used: int = 0  # the call that last produced or used it (for eviction)
    # the question prompt's KV, shared (not copied) by the states decoded with a shared prefix
    prefix: KV | None = None

    def layer_kv(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Layer i's keys and values for all of ids[:-1] (joined with the prefix's), or None."""
        if self.prefix is None:
            return self.kv[i] if self.kv else None
        if not self.kv or self.kv[i][0].shape[1] == 0:
            return self.prefix[i]
        return (
            torch.cat([self.prefix[i][0], self.kv[i][0]], 1),
            torch.cat([self.prefix[i][1], self.kv[i][1]], 1),
        )


@dataclass
class EngineStats:
    """Where the engine's time went (cumulative); benchmarks read it."""

    calls: int = 0
    decode_s: float = 0.0  # batched decoding loops, forward passes and sampling included
    decode_forwards: int = 0  # batched one-token forward passes
    forward_s: float = 0.0  # of decode_s: inside the model's forward
    forward_rows: int = 0  # rows summed over the decode forwards (mean batch = rows / forwards)
    decode_tokens: int = 0  # tokens of the steps returned (prefetched ones included)
    speculative_tokens: int = 0  # tokens written ahead for the next call
    copied_rows: int = 0  # rows added to write more continuations of a likely survivor ahead
    two_ahead_tokens: int = 0  # of speculative_tokens: written for the call after the next one
    prefetch_hits: int = 0  # next steps that started from a prefetch
    prefill_s: float = 0.0  # prompts and foreign text read at batch 1
    prefill_tokens: int = 0
    assemble_s: float = 0.0  # gathering cached rows into a batch


@dataclass(eq=False)
class Prefetch:
    """A next step a row started (or finished) writing speculatively, for one partial solution."""

    state: RowState  # after the speculative tokens (finished step: after the step, or empty)
    base_ids: list[int]  # the partial solution's ids, before the speculative tokens
    tokens: list[int]  # the speculative tokens of the next step
    step: GeneratedStep | None  # the whole next step, when it ended while speculating
    sampling: tuple  # only a call that samples the same way may use it
    to_end: bool = False  # written to the end (for a call that writes to the end only)


@dataclass(eq=False)
class _Row:
    """One row of a decoding batch."""

    out: int | None  # which result this row answers; None while it writes speculatively
    key: tuple[str, ...]  # the partial solution the current step continues
    start: RowState  # the state loaded into the batch
    base_ids: list[int]  # ids before the current step
    new: list[int]  # the current step's tokens so far
    offset: int = 0  # where this row's KV starts in the slab (left padding)
    fork: bool = False  # a copy of a row that writes ahead (another continuation of its key)
    ahead: int = 0  # writing for the next call (1) or the one after it (2); 0: this call's row
    to_end: bool = False  # writing ahead to the end (for a call that will write to the end)


def _sampling_key(s: Sampling) -> tuple:
    return (s.greedy, 0.0 if s.greedy else s.temperature, s.top_p, s.max_step_tokens)


class SlabLayer(DynamicLayer):
    """A KV cache layer over a preallocated (batch, heads, capacity, dim) slab.

    `update` writes the new positions in place and returns views, instead of the default
    layer's `torch.cat` of the whole cache at every token.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.k_slab, self.v_slab, self.length = keys, values, length
        self.rows = keys.shape[0]  # the batch's rows: the first `rows` of the slab
        # (keys, values) of shape (heads, P, dim) that every row attends to before the slab's
        # positions (read once for all rows: backend/fast_decode.py); None: no shared prefix
        self.prefix: tuple[torch.Tensor, torch.Tensor] | None = None
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._views()

    def _views(self) -> None:
        self.keys = self.k_slab[: self.rows, :, : self.length]
        self.values = self.v_slab[: self.rows, :, : self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        q = key_states.shape[-2]
        if self.length + q > self.k_slab.shape[2]:  # out of room: grow by half
            self._grow(self.length + q + self.k_slab.shape[2] // 2)
        self.k_slab[: self.rows, :, self.length : self.length + q] = key_states
        self.v_slab[: self.rows, :, self.length : self.length + q] = value_states
        self.length += q
        self._views()
        return self.keys, self.values

    def _grow(self, capacity: int) -> None:
        b, h, _, d = self.k_slab.shape
        k = self.k_slab.new_empty(b, h, capacity, d)
        v = self.v_slab.new_empty(b, h, capacity, d)
        k[:, :, : self.length] = self.k_slab[:, :, : self.length]
        v[:, :, : self.length] = self.v_slab[:, :, : self.length]
        self.k_slab, self.v_slab = k, v

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.k_slab = self.k_slab[indices]
        self.v_slab = self.v_slab[indices]
        self.rows = len(indices)
        self._views()

    def add_rows(self, n: int, room: int) -> None:
        """n more rows at the end of the batch (their contents are the caller's to write); when
        the slab is out of rows it is reallocated with room for `room`."""
        if self.rows + n > self.k_slab.shape[0]:
            _, h, cap, d = self.k_slab.shape
            k = self.k_slab.new_zeros(max(room, self.rows + n), h, cap, d)
            v = torch.zeros_like(k)
            k[: self.rows, :, : self.length] = self.k_slab[: self.rows, :, : self.length]
            v[: self.rows, :, : self.length] = self.v_slab[: self.rows, :, : self.length]
            self.k_slab, self.v_slab = k, v
        self.rows += n
        self._views()


class StepEngine:
    """Implements `StepGenerator` for a causal LM from transformers (see the module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        template: PromptTemplate,
        *,
        keep_calls: int = 3,
        compact_fraction: float = 0.25,
        speculate: bool = True,
        forks: int = FORKS,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.keep_calls = keep_calls  # rows unused for this many calls are dropped
        self.compact_fraction = compact_fraction
        # idle rows write the next step ahead (see _decode): over 8 seeds of the benchmark's
        # search, 6.6 vs 7.05 ms per generated token with vs without (64.7 vs 75.4 s), one
        # continuation per row. With the search's hints, up to `forks` continuations of each
        # likely survivor (8 seeds: 49.7 vs 63.6 s, 4.83 vs 6.12 ms per token, against one)
        self.speculate = speculate
        self.forks = max(1, forks)
        # with the search's hints, likely survivors write ahead for the next call and, once that
        # step has ended, for the one after it (2 levels)
        self.levels = 2
        # batches of at most this many rows read low-bit weights (backend/small_batch.py)
        self.small_batch_rows = max(
            (m.rows for m in model.modules() if isinstance(m, SmallBatchLinear)), default=0
        )
        self.device = next(model.parameters()).device
        # a lean one-token forward over the slabs where the model allows (backend/fast_decode.py)
        self.fast = fast_decode.for_model(model)
        eos = {tokenizer.eos_token_id, model.config.eos_token_id}
        for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
            tid = tokenizer.convert_tokens_to_ids(name)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                eos.add(tid)
        self.eos_ids = {int(e) for e in _flatten(eos) if e is not None}
        vocab = len(tokenizer)
        # a model's embedding rows past the tokenizer's vocabulary (padding to a round size) are
        # no tokens: never sample them (a random-weight model would)
        self.vocab = vocab
        pieces = tokenizer.batch_decode([[i] for i in range(vocab)])
        self.newline_ids = {i for i, piece in enumerate(pieces) if "\n" in piece}
        self.store: dict[tuple[str, tuple[str, ...]], RowState] = {}
        self._head: RowState | None = None  # the template's prompt before the question
        self.prefetch: dict[tuple[str, tuple[str, ...]], list[Prefetch]] = {}
        self.calls = 0
        self.stats = EngineStats()
        self.lock = threading.Lock()

    def _forward(
        self, ids, pos, cache: Cache, mask: torch.Tensor | None = None, stock: bool = False
    ) -> torch.Tensor:
        """One forward pass over `ids` at positions `pos`, extending `cache`; last-position logits.

        One-token steps take the lean decoder when there is one, unless `stock` asks for the
        model's own forward.
        """
        if self.fast is not None and ids.shape[1] == 1 and not stock:
            return self.fast(ids, pos, cache.layers, mask)
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits

    # ---- the machine's limit -------------------------------------------------------------------
    def forward_ms(
        self,
        batch: int,
        context: int,
        steps: int = 8,
        warmup: int = 2,
        stock: bool = False,
        shared: int = 0,
    ) -> float:
        """Median ms of one raw batched one-token forward over `context` cached positions.

        The forward the decode loop runs (preallocated KV slab, no padding, no sampling or
        stopping logic; with the lean decoder, the first `shared` positions are one prefix that
        all rows share, as a question's prompt is), or with `stock` the model's own forward over
        a slab of the same size: the machine's limit for the model.
        """
        shared = 0 if stock or self.fast is None else shared
        with self.lock, torch.inference_mode():
            layers = []
            for _ in range(self.model.config.num_hidden_layers):
                k, v = self._empty_slab(batch, context - shared + warmup + steps + 1)
                layer = SlabLayer(k, v, context - shared)
                if shared:
                    kp, vp = self._empty_slab(1, shared)
                    layer.prefix = (kp[0], vp[0])
                layers.append(layer)
            cache = Cache(layers=layers)
            ids = torch.randint(100, self.vocab, (batch, 1), device=self.device)
            times = []
            for i in range(warmup + steps):
                pos = torch.full((batch, 1), context + i, device=self.device)
                sync(self.device)
                t0 = time.perf_counter()
                self._forward(ids, pos, cache, stock=stock)
                sync(self.device)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            return 1000 * sorted(times)[len(times) // 2]

    # ---- the protocol ------------------------------------------------------------------------
    def next_steps(
        self,
        question: str,
        partials: Sequence[Sequence[str]],
        n: int,
        sampling: Sampling,
    ) -> list[list[GeneratedStep]]:
        results: list[GeneratedStep | None] = [None] * (len(partials) * n)
        for index, step in self.stream_steps(question, partials, n, sampling):
            results[index] = step
        return [[results[i * n + j] for j in range(n)] for i in range(len(partials))]

    def stream_steps(
        self,
        question: str,
        partials: Sequence[Sequence[str]],
        n: int,
        sampling: Sampling,
    ) -> Iterator[tuple[int, GeneratedStep]]:
        """`next_steps`' results as `(i * n + j, step)`, each as soon as its row has ended it.

        The engine's lock and inference mode are held while the engine works, not while the
        caller handles a step, so a caller may draw a frame between steps.
        """
        work = self._steps(question, [tuple(p) for p in partials], n, sampling)
        try:
            while True:
                with self.lock, torch.inference_mode():
                    item = next(work, None)
                if item is None:
                    return
                yield item
        finally:
            with self.lock, torch.inference_mode():
                work.close()

    def _steps(
        self, question: str, keys: list[tuple[str, ...]], n: int, sampling: Sampling
    ) -> Iterator[tuple[int, GeneratedStep]]:
        self.calls += 1
        self.stats.calls += 1
        ready: list[tuple[int, GeneratedStep, RowState | None]] = []
        rows: list[_Row] = []
        for i, key in enumerate(keys):
            for j in range(n):
                pre = self._take_prefetch(question, key, sampling)
                if pre is not None and pre.step is not None:  # a whole step written ahead
                    # written to the end, it is only the start, unless it ends the solution
                    step = _as_whole_solution(pre.step) if sampling.to_end else pre.step
                    if step.finished or not sampling.to_end:
                        ready.append((i * n + j, step, None if step.finished else pre.state))
                        continue
                if pre is not None:  # continue from what was written ahead
                    rows.append(_Row(i * n + j, key, pre.state, pre.base_ids, list(pre.tokens)))
                else:
                    state = self._state(question, key)
                    rows.append(_Row(i * n + j, key, state, state.ids, []))
        # continuations written ahead for a likely survivor (one the search ranks among the ones
        # it keeps): as many as this call asked for per partial (a beam search's next call asks
        # as many), else the default; without a ranking, one per row that ends its step
        fan = 1
        if sampling.rank is not None and sampling.keep > 0:
            fan = min(n, self.forks) if len(keys) > 1 else self.forks
        # steps written ahead whole: ranked with the rest, and a likely survivor among them goes
        # on writing ahead (its next step) while the batch decodes
        ahead = [(i, keys[i // n] + (step.text,), st) for i, step, st in ready if st is not None]
        decoded = self._decode(question, rows, sampling, fan, ahead) if rows else iter(())
        for index, step, state in itertools.chain(ready, decoded):
            self.stats.decode_tokens += step.tokens
            if state is not None:  # an unfinished step: keep its cache for the next call
                state.used = self.calls
                self.store[(question, keys[index // n] + (step.text,))] = state
            yield index, step
        self._evict()

    def _take_prefetch(
        self, question: str, key: tuple[str, ...], sampling: Sampling
    ) -> Prefetch | None:
        waiting = self.prefetch.get((question, key))
        if not waiting:
            return None
        pre = waiting.pop(0)
        if pre.to_end and not sampling.to_end:  # written past its step: not for a step-wise call
            return None
        # what was written ahead step by step may start a continuation written to the end,
        # whatever its step limit; a step-by-step call needs the very same settings
        wanted = _sampling_key(sampling)
        if (
            pre.sampling[: 3 if sampling.to_end else None]
            != wanted[: 3 if sampling.to_end else None]
        ):
            return None
        self.stats.prefetch_hits += 1
        return pre

    def warm(self, question: str) -> None:
        """Read the template's fixed head and `question`'s prompt now, as a first request would
        (a later question then reads only its own tokens)."""
        with self.lock, torch.inference_mode():
            self._state(question, ())

    # ---- prefix states -----------------------------------------------------------------------
    def _state(self, question: str, steps: tuple[str, ...]) -> RowState:
        """The stored state of a partial solution, prefilling whatever is not cached yet."""
        state = self.store.get((question, steps))
        if state is None:
            # longest cached ancestor (at least the prompt), then read the remaining steps
            k = len(steps)
            while k > 0 and (question, steps[:k]) not in self.store:
                k -= 1
            base = self.store.get((question, steps[:k]))
            if base is None:
                base = self._prompt_state(question)
                self.store[(question, ())] = base
            state = base
            if k < len(steps):
                extra = self.tokenizer.encode("".join(steps[k:]), add_special_tokens=False)
                state = self._prefill(extra, base) if extra else base
                self.store[(question, steps)] = state
        state.used = self.calls
        return state

    def _prompt_state(self, question: str) -> RowState:
        """The question's prompt, read on top of the template's fixed head when it starts with it.

        The head (system line, worked examples: everything before the question) is the same for
        every question, so it is read once per engine; a new question then prefills only its own
        tokens (about 40 instead of ~290 with the few-shot template).
        """
        prompt = self.template.prompt_ids(self.tokenizer, question)
        if self._head is None:
            a = self.template.prompt_ids(self.tokenizer, "A")
            b = self.template.prompt_ids(self.tokenizer, "B")
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            self._head = self._prefill(a[:n], None) if n >= 2 else RowState([], [], 0)
        head = self._head
        if (
            len(head.ids) >= 2
            and prompt[: len(head.ids)] == head.ids
            and len(prompt) > len(head.ids)
        ):
            state = self._prefill(prompt[len(head.ids) :], head)
            state.prompt_len = len(prompt)
            return state
        return self._prefill(prompt, None)

    def _prefill(self, ids: list[int], base: RowState | None) -> RowState:
        """Encode `ids` (after `base`, if given) at batch 1; the last id stays pending."""
        all_ids = (base.ids if base else []) + list(ids)
        todo = all_ids[len(base.ids) - 1 if base else 0 : -1]  # base's pending + new, minus last
        if not todo:
            return RowState(
                all_ids, base.kv if base else [], base.prompt_len if base else len(all_ids)
            )
        past = len(base.ids) - 1 if base else 0
        layers = []
        for i in range(self.model.config.num_hidden_layers):
            k0, v0 = (base.layer_kv(i) if base else None) or (None, None)
            k, v = self._empty_slab(1, past + len(todo))
            if k0 is not None:
                k[0, :, :past], v[0, :, :past] = k0, v0
            layers.append(SlabLayer(k, v, past))
        if self.device.type == "cpu":  # prefill is compute-bound: as a full batch would
            torch.set_num_threads(cpu_threads.tuner().best(16))
        t0 = time.perf_counter()
        cache = Cache(layers=layers)
        input_ids = torch.tensor([todo], device=self.device)
        pos = torch.arange(past, past + len(todo), device=self.device)[None]
        self._forward(input_ids, pos, cache)
        self.stats.prefill_tokens += len(todo)
        self.stats.prefill_s += time.perf_counter() - t0
        kv = [(layer.keys[0], layer.values[0]) for layer in layers]
        return RowState(all_ids, kv, base.prompt_len if base else len(all_ids))

    def _empty_slab(self, batch: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.model.config
        heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        dtype = next(self.model.parameters()).dtype
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            dtype = torch.bfloat16  # quantised weights: the cache follows the compute dtype
        k = torch.zeros(batch, heads, capacity, dim, dtype=dtype, device=self.device)
        return k, torch.zeros_like(k)

    def _evict(self) -> None:
        stale = [
            key
            for key, s in self.store.items()
            if self.calls - s.used >= self.keep_calls and key[1]
        ]
        for key in stale:
            del self.store[key]
        for key, waiting in list(self.prefetch.items()):
            waiting[:] = [p for p in waiting if self.calls - p.state.used < self.keep_calls]
            if not waiting:
                del self.prefetch[key]
        questions = {}
        for key, s in self.store.items():  # keep the prompts of the 4 most recent questions
            if not key[1]:
                questions[key] = s.used
        for key in sorted(questions, key=questions.get)[:-4]:
            del self.store[key]

    # ---- batched decoding ----------------------------------------------------------------
    def _decode(
        self,
        question: str,
        rows: list[_Row],
        sampling: Sampling,
        fan: int = 1,
        ahead: Sequence[tuple[int, tuple[str, ...], RowState]] = (),
    ) -> Iterator[tuple[int, GeneratedStep, RowState | None]]:
        """Decode one step for every row as one batch; yields (index, step, new state) per row
        as soon as its step ends (the state is None when the solution ended).

        With `speculate` on, a row whose step ends on the delimiter while others are still
        writing goes on writing its next step speculatively (the batch would otherwise run below
        its width); what it writes is kept as a prefetch for that partial solution and used when
        the next call asks for it. Once few real rows are left, speculative rows stop (the tail
        then runs at the low-bit small-batch sizes), but those of likely survivors.

        With the search's hints (`sampling.keep` and `.rank`; `fan` > 1), every row that ends its
        step is ranked among those ended so far, as the search will rank it; while it is among
        the `keep` best, it gets `fan` - 1 copies (rows with its KV, copied at the step boundary)
        that each write a next step independently, so every continuation the next call asks of a
        survivor has a head start; a key that drops out of the best loses its copies. A copy whose
        step ends in turn is ranked the same way among the steps written for the call after the
        next one (its index guessed from its parent's place), and the likely survivors among them
        go on writing for that call (`levels`, 2). Steps taken whole from what was written ahead
        (`ahead`) are ranked too, and the likely survivors among them write their next step ahead
        in this batch (going on with what was written for them before, `_ahead_rows`). Rows
        that write for a call that will write to the end (`sampling.last_call_in`) write to the
        end too, stopping as that call would (and only such a call takes what they wrote).
        None of this changes what is sampled: a continuation written ahead is a sample of the
        same distribution, only started earlier.
        """
        t0 = time.perf_counter()
        speculate = self.speculate and not sampling.to_end
        fan = fan if speculate else 1
        keep = sampling.keep if fan > 1 else 0
        # per level (1: steps for the next call, 2: for the one after it), the steps ended so far
        # as (-rank, index, key), and the keys ranked among the `keep` best
        ranked: dict[int, list[tuple[float, int, tuple[str, ...]]]] = {1: [], 2: []}
        favored: dict[int, set[tuple[str, ...]]] = {1: set(), 2: set()}
        if keep and ahead:  # steps that were written ahead whole: the likely survivors go on
            for index, key, _ in ahead:
                _rerank(ranked[1], favored[1], keep, (sampling.rank(key), index, key), [])
            for _, key, state in ahead:
                if key in favored[1]:
                    rows = rows + self._ahead_rows(question, key, state, fan, sampling)
        b = len(rows)
        # rows the batch may grow to: copies for the likely survivors at each level
        room = b + self.levels * (fan - 1) * keep
        cached = [len(r.start.ids) - 1 for r in rows]  # cached positions per row
        # with the lean decoder, the question's prompt is one shared prefix that every row's
        # attention reads once (backend/fast_decode.py); the slab holds what follows it. A few
        # rows read it from their own rows (see _unshare)
        prefix = None
        if self.fast is not None and b > UNSHARE_ROWS:
            prefix = self._shared_prefix(question, rows)
        shared = rows[0].start.prompt_len - 1 if prefix is not None else 0
        lengths = [n - shared for n in cached]  # positions per row in the slab
        width = max(lengths)
        budget = sampling.max_solution_tokens if sampling.to_end else sampling.max_step_tokens
        # rows that write ahead for a call that will write to the end stop as that call would
        stop_to_end = replace(sampling, to_end=True), sampling.max_solution_tokens
        capacity = width + 1 + min(budget, 64)
        layers = []
        for i in range(self.model.config.num_hidden_layers):
            k, v = self._empty_slab(b, capacity)
            for j, r in enumerate(rows):
                if not lengths[j]:
                    continue
                if prefix is not None and r.start.prefix is not None:
                    kj, vj = r.start.kv[i]  # already split after the prompt
                else:
                    kj, vj = r.start.layer_kv(i)
                    kj, vj = kj[:, shared:], vj[:, shared:]
                k[j, :, width - lengths[j] : width] = kj
                v[j, :, width - lengths[j] : width] = vj
            layer = SlabLayer(k, v, width)
            layer.prefix = prefix[i] if prefix is not None else None
            layers.append(layer)
        cache = Cache(layers=layers)
        mask = torch.zeros(b, width + 1, dtype=torch.long, device=self.device)
        for j, n in enumerate(lengths):
            mask[j, width - n :] = 1
        pos = torch.tensor(cached, device=self.device)[:, None]
        inputs = torch.tensor([r.start.ids[-1] for r in rows], device=self.device)[:, None]
        for j, r in enumerate(rows):
            r.offset = width - lengths[j]
        t1 = time.perf_counter()
        self.stats.assemble_s += t1 - t0
        gen = torch.Generator(device=self.device)
        if sampling.seed is not None:
            gen.manual_seed(int(sampling.seed))
        slot: list[_Row | None] = list(rows)  # batch position -> row; None once it stopped
        ended: list[tuple[int, GeneratedStep, RowState | None]] = []
        tuner = cpu_threads.tuner() if self.device.type == "cpu" else None
        while any(r is not None and r.out is not None for r in slot):
            used = tuner.before(len(slot)) if tuner is not None else 0
            tf = time.perf_counter()
            logits = self._forward(inputs, pos, cache, mask)[:, -1, : self.vocab]
            spent = time.perf_counter() - tf
            if tuner is not None:
                tuner.after(len(slot), used, spent)
            self.stats.forward_s += spent
            self.stats.decode_forwards += 1
            self.stats.forward_rows += len(slot)
            tokens = _sample(logits, sampling, gen).tolist()
            forks: list[int] = []  # likely survivors that begin writing ahead: copy them
            for p, row in enumerate(slot):
                if row is None:
                    continue
                row.new.append(tokens[p])
                if row.out is None:
                    self.stats.speculative_tokens += 1
                    self.stats.two_ahead_tokens += row.ahead == 2
                step = self._check_stop(row, *(stop_to_end if row.to_end else (sampling, budget)))
                if step is None:
                    continue
                state = None if step.finished else self._row_state(row, layers, p)
                if row.out is not None:
                    ended.append((row.out, step, state))
                else:  # a speculative step that ended: the next call gets it without decoding
                    self._keep_prefetch(question, row, step, state, sampling)
                level = row.ahead + 1  # what its next step would be written for
                if state is None or not speculate or level > (self.levels if keep else 1):
                    slot[p] = None
                    continue
                key = row.key + (step.text,)
                if keep:
                    if level == 1:
                        index = row.out
                    elif row.key in favored[1]:  # where the next call will ask for key: by its
                        # parent's place among the likely survivors, then in order of ending
                        order = [k for _, _, k in ranked[1][:keep]]
                        siblings = sum(r[2][:-1] == row.key for r in ranked[2])
                        index = order.index(row.key) * fan + siblings
                    else:
                        slot[p] = None
                        continue
                    lost = _rerank(
                        ranked[level], favored[level], keep, (sampling.rank(key), index, key), slot
                    )
                    if level == 1 and lost:  # nothing is written for their children either
                        ranked[2][:] = [r for r in ranked[2] if r[2][:-1] not in lost]
                        favored[2] -= {k for k in favored[2] if k[:-1] in lost}
                    if key not in favored[level]:  # the search will not keep it
                        slot[p] = None
                        continue
                    forks.append(p)
                row.out, row.key, row.ahead = None, key, level
                row.base_ids, row.new = state.ids, []
                row.to_end = level == sampling.last_call_in
            if ended:
                self.stats.decode_s += time.perf_counter() - t1
                yield from ended
                ended.clear()
                t1 = time.perf_counter()
            live = [p for p, row in enumerate(slot) if row is not None]
            real = sum(slot[p].out is not None for p in live)
            if not real:
                break
            if real <= self.small_batch_rows < len(live):
                # the few rows left would decode faster alone (low-bit weights at small batches):
                # speculative rows stop here, keeping what they wrote (but those of likely
                # survivors, which the next call will most probably continue)
                for p in live:
                    row = slot[p]
                    if row.out is None and row.key not in favored.get(row.ahead, ()):
                        if row.new:
                            state = self._row_state(row, layers, p)
                            self._keep_prefetch(question, row, None, state, sampling)
                        slot[p] = None
                live = [p for p in live if slot[p] is not None]
            forks = [p for p in forks if slot[p] and slot[p].key in favored[slot[p].ahead]]
            if forks:
                tokens, mask, pos = self._fork(
                    layers, slot, forks, fan - 1, room, tokens, mask, pos
                )
                live = [p for p, row in enumerate(slot) if row is not None]
            dead = len(slot) - len(live)
            if dead and dead >= max(1, self.compact_fraction * len(slot)):
                idx = torch.tensor(live, device=self.device)
                cache.batch_select_indices(idx)
                mask, pos = mask[idx], pos[idx]
                tokens = [tokens[p] for p in live]
                slot = [slot[p] for p in live]
            if layers[0].prefix is not None and len(slot) <= UNSHARE_ROWS:
                mask = _unshare(layers, slot, mask)
            inputs = torch.tensor(tokens, device=self.device)[:, None]
            mask = torch.cat(
                [mask, torch.ones(len(slot), 1, dtype=mask.dtype, device=self.device)], 1
            )
            pos = pos + 1
        for p, row in enumerate(slot):  # speculative rows still writing: keep what they have
            if row is not None and row.out is None and row.new:
                self._keep_prefetch(question, row, None, self._row_state(row, layers, p), sampling)
        self.stats.decode_s += time.perf_counter() - t1

    def _ahead_rows(
        self, question: str, key: tuple[str, ...], state: RowState, fan: int, sampling: Sampling
    ) -> list[_Row]:
        """Rows that write `fan` next steps of `key` ahead (for the next call), from `state`.
        What was written ahead for it already counts: whole steps are not written again, steps
        cut off when the call that wrote them ended go on from where they stopped."""
        waiting = self.prefetch.get((question, key), [])
        to_end = sampling.last_call_in == 1  # the next call writes to the end
        usable = [
            p for p in waiting if p.sampling == _sampling_key(sampling) and p.to_end == to_end
        ]
        need = fan - sum(p.step is not None for p in usable)
        partial = [p for p in usable if p.step is None][: max(0, need)]
        for pre in partial:
            waiting.remove(pre)
        rows = [_Row(None, key, p.state, p.base_ids, list(p.tokens), ahead=1) for p in partial]
        rows += [_Row(None, key, state, state.ids, [], ahead=1) for _ in range(need - len(rows))]
        for r in rows:
            r.to_end = to_end
        for r in rows[1:]:
            r.fork = True
        self.stats.copied_rows += max(0, len(rows) - 1)
        return rows

    def _fork(
        self,
        layers: list[SlabLayer],
        slot: list[_Row | None],
        parents: list[int],
        copies: int,
        room: int,
        tokens: list[int],
        mask: torch.Tensor,
        pos: torch.Tensor,
    ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Give each parent row (one that has just begun writing ahead) up to `copies` more rows
        that write the same next step independently, in stopped rows' places or new rows at the
        end, as long as the batch stays within `room` rows; round-robin over the parents, in
        batch order. Updates `slot` in place; returns the batch's tokens, mask and positions."""
        free = [p for p, row in enumerate(slot) if row is None]
        wanted = [p for k in range(copies) for p in parents][: len(free) + room - len(slot)]
        if not wanted:
            return tokens, mask, pos
        new = len(wanted) - len(free)
        if new > 0:  # the batch grows: new rows at the end
            start = len(slot)
            for lay in layers:
                lay.add_rows(new, room)
            mask = torch.cat([mask, mask.new_zeros(new, mask.shape[1])])
            pos = torch.cat([pos, pos.new_zeros(new, 1)])
            tokens = tokens + [0] * new
            slot.extend([None] * new)
            free += range(start, start + new)
        targets = free[: len(wanted)]
        src = torch.tensor(wanted, device=self.device)
        dst = torch.tensor(targets, device=self.device)
        for lay in layers:  # the parents' rows as they are now (the step boundary)
            n = lay.length
            lay.k_slab[dst, :, :n] = lay.k_slab[src, :, :n]
            lay.v_slab[dst, :, :n] = lay.v_slab[src, :, :n]
        mask[dst], pos[dst] = mask[src], pos[src]
        self.stats.copied_rows += len(wanted)
        for p, q in zip(wanted, targets):
            parent = slot[p]
            tokens[q] = tokens[p]
            slot[q] = _Row(
                None,
                parent.key,
                parent.start,
                parent.base_ids,
                [],
                parent.offset,
                True,
                parent.ahead,
                parent.to_end,
            )
        return tokens, mask, pos

    def _shared_prefix(self, question: str, rows: list[_Row]) -> KV | None:
        """The prompt's KV (all positions but its pending last token) for rows of one question.

        None when some row does not start with the whole prompt cached (no shared part).
        """
        prompt_len = rows[0].start.prompt_len
        if prompt_len < 2 or any(
            r.start.prompt_len != prompt_len or len(r.start.ids) < prompt_len for r in rows
        ):
            return None
        for r in rows:  # a state split after the prompt holds the prompt's KV as its prefix
            if r.start.prefix is not None:
                return r.start.prefix
        prompt = self.store.get((question, ()))
        if prompt is None or prompt.prompt_len != prompt_len:
            prompt = rows[0].start
        n = prompt_len - 1
        return [
            (k[:, :n], v[:, :n]) for k, v in (prompt.layer_kv(i) for i in range(len(prompt.kv)))
        ]

    def _row_state(self, row: _Row, layers: list[SlabLayer], p: int) -> RowState:
        """The row's ids so far with a copy of its KV from the slab (all but the newest id).

        A copy, not a view: a view would keep the whole slab (every row of the batch) alive for
        as long as the state is stored, and each compaction makes a new slab, so views of the
        rows that ended before it pinned a chain of slabs (3.1 GB peak vs 1.5 GB measured).
        """
        end = layers[0].length
        kv = [
            (
                lay.keys[p, :, row.offset : end].clone(),
                lay.values[p, :, row.offset : end].clone(),
            )
            for lay in layers
        ]
        prefix = [lay.prefix for lay in layers] if layers[0].prefix is not None else None
        state = RowState(row.base_ids + row.new, kv, row.start.prompt_len, prefix=prefix)
        shared = prefix[0][0].shape[1] if prefix else 0
        assert end - row.offset + shared == len(state.ids) - 1
        return state

    def _keep_prefetch(
        self,
        question: str,
        row: _Row,
        step: GeneratedStep | None,
        state: RowState | None,
        sampling: Sampling,
    ) -> None:
        if state is None and step is None:
            return
        pre_state = state if state is not None else RowState(row.base_ids, [], row.start.prompt_len)
        pre = Prefetch(
            pre_state, row.base_ids, list(row.new), step, _sampling_key(sampling), row.to_end
        )
        pre.state.used = self.calls
        self.prefetch.setdefault((question, row.key), []).append(pre)

    def _check_stop(self, row: _Row, sampling: Sampling, budget: int) -> GeneratedStep | None:
        """The finished step if this row should stop after its newest token, else None."""
        new = row.new
        tok = new[-1]
        solution_len = len(row.base_ids) - row.start.prompt_len + len(new)
        if tok in self.eos_ids:
            text = self.tokenizer.decode(new[:-1], skip_special_tokens=True)
            return GeneratedStep(text, len(new), True, "eos")
        # the delimiter can only complete at a token holding a newline: decode only then
        if sampling.to_end and tok in self.newline_ids:
            # written to the end: the solution still ends after the step with its boxed answer
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            cut = answer_end(text, STEP_DELIMITER)
            if cut is not None:
                return GeneratedStep(text[:cut], len(new), True, "answer")
        elif tok in self.newline_ids:
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if STEP_DELIMITER in text:
                if not text.strip():
                    return GeneratedStep(text, len(new), True, "empty")
                return GeneratedStep(text, len(new), False, "delimiter")
        if solution_len >= sampling.max_solution_tokens or len(new) >= budget:
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            return GeneratedStep(text, len(new), True, "length")
        return None


def _rerank(
    ranked: list[tuple[float, int, tuple[str, ...]]],
    favored: set[tuple[str, ...]],
    keep: int,
    ended: tuple[float, int, tuple[str, ...]],
    slot: list[_Row | None],
) -> set[tuple[str, ...]]:
    """Add a row that just ended its step, as (rank, index, key), to the ranking of the ended
    ones, and make `favored` the keys of the `keep` best (higher rank first, ties to the lower
    index, as a beam search keeps them; never one ranked -inf, a solution that ended). A key
    that is not among them now never will be (rows that end later only push keys out), so a
    key that drops out of them stops writing ahead: its rows in `slot`, and those writing for
    its children, stop. Returns the keys that dropped out."""
    rank, index, key = ended
    ranked.append((-rank, index, key))
    ranked.sort(key=lambda r: r[:2])
    best = {k for r, _, k in ranked[:keep] if r != float("inf")}
    lost = favored - best
    for q, row in enumerate(slot):
        if row is not None and row.out is None and any(row.key[: len(k)] == k for k in lost):
            slot[q] = None
    favored.clear()
    favored.update(best)
    return lost


def _unshare(layers: list[SlabLayer], slot: list[_Row | None], mask: torch.Tensor) -> torch.Tensor:
    """Copy the shared prefix into each row's part of the slab; returns the widened mask.

    For the last few rows of a batch one attention over the whole context is faster than the
    two a shared prefix takes (batch 1: 21 vs 22.4 ms per step; batch 3: 26 vs 27.9 ms).
    Row j's positions [offset, length) become [offset, length + P) with the prefix first.
    """
    p = layers[0].prefix[0].shape[1]
    for lay in layers:
        _, h, cap, d = lay.k_slab.shape
        k = lay.k_slab.new_zeros(lay.rows, h, cap + p, d)
        v = torch.zeros_like(k)
        for j, row in enumerate(slot):
            if row is None:
                continue
            o, n = row.offset, lay.length
            k[j, :, o : o + p], v[j, :, o : o + p] = lay.prefix
            k[j, :, o + p : n + p] = lay.k_slab[j, :, o:n]
            v[j, :, o + p : n + p] = lay.v_slab[j, :, o:n]
        lay.k_slab, lay.v_slab, lay.length, lay.prefix = k, v, lay.length + p, None
        lay._views()
    # every row's positions from its offset on are valid: P more of them now
    return torch.cat([mask, mask.new_ones(mask.shape[0], p)], 1)


def _as_whole_solution(step: GeneratedStep) -> GeneratedStep:
    """A step written step by step, seen as the start of a continuation written to the end."""
    if step.finished:
        return step
    cut = answer_end(step.text, STEP_DELIMITER)
    if cut is not None:
        return GeneratedStep(step.text[:cut], step.tokens, True, "answer")
    return step


def _sample(logits: torch.Tensor, sampling: Sampling, gen: torch.Generator) -> torch.Tensor:
    """Next token per row: argmax when greedy, else temperature + nucleus (top_p) sampling.

    Sampling inverts the cumulative distribution at one uniform draw per row: exact, and some
    10x faster on a CPU than `torch.multinomial` over a 49k vocabulary. The weights are
    exp((logit - max) / T), unnormalized and computed in place (the uniform is scaled by their
    total instead): 1.0 vs 1.5 ms for softmax(logits / T) and its cumsum at 16 rows of the
    embedded model's logits (2-core machine, 49k vocabulary). The nucleus is looked for among
    the top tokens first (`_nucleus`), not by sorting the whole vocabulary.
    """
    if sampling.greedy:
        return logits.argmax(-1)
    w = logits.to(torch.float32, copy=True)
    w.sub_(w.amax(-1, keepdim=True)).mul_(1.0 / sampling.temperature).exp_()
    if sampling.top_p < 1.0:
        return _nucleus(w, sampling.top_p, gen)
    return _invert(w.cumsum_(-1), gen)


def _invert(cdf: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds u * total, u uniform in [0, 1):
    index i with probability w_i / total."""
    u = torch.rand(cdf.shape[0], 1, generator=gen, device=cdf.device, dtype=cdf.dtype)
    picked = torch.searchsorted(cdf, u.mul_(cdf[:, -1:]), right=True)
    return picked.clamp_(max=cdf.shape[-1] - 1).squeeze(-1)


NUCLEUS_TRIES = (64, 1024)  # top-k sizes tried for the nucleus before a full sort


def _nucleus(w: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """Sample from the smallest set of the most likely tokens whose weight reaches `top_p` of
    the total (the top token always survives), per row of unnormalized weights `w`.

    The set almost always lies within a few dozen tokens, so the top 64 (then 1024) are taken
    first; only a row whose set is larger sorts its whole vocabulary (49k: ~3 ms a row, which
    made a 16-row step take 49 ms of sampling). Rows are drawn in order, one uniform each.
    """
    rows = w.shape[0]
    need = w.sum(-1, keepdim=True).mul_(top_p)  # the weight the set must reach, per row
    picked = torch.empty(rows, dtype=torch.long, device=w.device)
    todo = torch.arange(rows, device=w.device)
    u = torch.rand(rows, 1, generator=gen, device=w.device, dtype=w.dtype)
    for k in (*NUCLEUS_TRIES, w.shape[-1]):
        k = min(k, w.shape[-1])
        sub = w[todo]
        top, order = sub.topk(k, -1) if k < w.shape[-1] else sub.sort(-1, descending=True)
        cdf = top.cumsum(-1)
        fits = cdf[:, -1:] >= need[todo]
        if k == w.shape[-1]:
            fits = torch.ones_like(fits)
        # keep a token while the weight before it is short of the need
        top[(cdf - top) >= need[todo]] = 0.0
        cdf = top.cumsum_(-1)
        at = torch.searchsorted(cdf, u[todo] * cdf[:, -1:], right=True).clamp_(max=k - 1)
        chosen = order.gather(-1, at).squeeze(-1)
        done = fits.squeeze(-1)
        picked[todo[done]] = chosen[done]
        todo = todo[~done]
        if not len(todo):
            break
    return picked


def _flatten(items):
    for x in items:
        if isinstance(x, (list, tuple, set)):
            yield from x
        else:
            yield x
