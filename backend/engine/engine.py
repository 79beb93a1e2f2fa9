"""StepEngine: the policy model as a `StepGenerator`, with the store of the prefixes it has read."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import torch
from transformers.cache_utils import Cache

from backend.engine.decode import StepDecoder
from backend.engine.slab import SlabLayer, empty_slab
from backend.engine.speculation import WrittenAhead
from backend.engine.state import EngineStats, Row, RowState
from backend.prompts import PromptTemplate
from backend.stopping import END_TOKENS, StopChecks, as_whole_solution
from strategies.protocols import (
    GeneratedStep,
    Partials,
    Sampling,
    Streamed,
    StreamingStepGenerator,
)

# speculation (backend/engine/decode.py): at most this many continuations of one partial
# solution are written ahead (the app's default beam width)
FORKS = 4


class StepEngine(StreamingStepGenerator):
    """Implements `StepGenerator` for a causal LM from transformers (see backend/engine/)."""

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
        # idle rows write the next step ahead (backend/engine/decode.py): writing ahead pays,
        # since those rows would otherwise wait for the batch's last rows. With the search's
        # hints, up to `forks` continuations of each likely survivor, one per continuation the
        # next call will ask of it
        self.speculate = speculate
        self.forks = max(1, forks)
        # with the search's hints, likely survivors write ahead for the next call and, once that
        # step has ended, for the one after it (2 levels)
        self.levels = 2
        self.device = next(model.parameters()).device
        self.stops = transformers_stops(model, tokenizer)
        # a model's embedding rows past the tokenizer's vocabulary (padding to a round size) are
        # no tokens: never sample them (a random-weight model would)
        self.vocab = len(tokenizer)
        self.store: dict[tuple[str, tuple[str, ...]], RowState] = {}
        self._head: RowState | None = None  # the template's prompt before the question
        self.written = WrittenAhead()  # next steps rows wrote ahead, for later calls
        self.calls = 0
        self.stats = EngineStats()
        self.lock = threading.Lock()

    def _forward(self, ids, pos, cache: Cache, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One forward pass over `ids` at positions `pos`, extending `cache`; last-position logits."""
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits

    # ---- the protocol ------------------------------------------------------------------------
    def stream_steps(
        self, question: str, partials: Partials, n: int, sampling: Sampling
    ) -> Streamed:
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
        rows: list[Row] = []
        for i, key in enumerate(keys):
            for j in range(n):
                pre = self.written.take(question, key, sampling, self.stats)
                if pre is not None and pre.step is not None:  # a whole step written ahead
                    # written to the end, it is only the start, unless it ends the solution
                    step = as_whole_solution(pre.step) if sampling.to_end else pre.step
                    if step.finished or not sampling.to_end:
                        ready.append((i * n + j, step, None if step.finished else pre.state))
                        continue
                if pre is not None:  # continue from what was written ahead
                    rows.append(Row(i * n + j, key, pre.state, pre.base_ids, list(pre.tokens)))
                else:
                    state = self._state(question, key)
                    rows.append(Row(i * n + j, key, state, state.ids, []))
        # continuations written ahead for a likely survivor (one the search ranks among the ones
        # it keeps): as many as this call asked for per partial (a beam search's next call asks
        # as many), else the default; without a ranking, one per row that ends its step
        fan = 1
        if sampling.rank is not None and sampling.keep > 0:
            fan = min(n, self.forks) if len(keys) > 1 else self.forks
        # steps written ahead whole: ranked with the rest, and a likely survivor among them goes
        # on writing ahead (its next step) while the batch decodes
        ahead = [(i, keys[i // n] + (step.text,), st) for i, step, st in ready if st is not None]
        decoded = StepDecoder(self, question, sampling, fan).run(rows, ahead) if rows else iter(())
        for index, step, state in itertools.chain(ready, decoded):
            self.stats.decode_tokens += step.tokens
            if state is not None:  # an unfinished step: keep its cache for the next call
                state.used = self.calls
                self.store[(question, keys[index // n] + (step.text,))] = state
            yield index, step
        self._evict()

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
        tokens.
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
            k, v = empty_slab(self.model, 1, past + len(todo), self.device)
            if k0 is not None:
                k[0, :, :past], v[0, :, :past] = k0, v0
            layers.append(SlabLayer(k, v, past))
        t0 = time.perf_counter()
        cache = Cache(layers=layers)
        input_ids = torch.tensor([todo], device=self.device)
        pos = torch.arange(past, past + len(todo), device=self.device)[None]
        self._forward(input_ids, pos, cache)
        self.stats.prefill_tokens += len(todo)
        self.stats.prefill_s += time.perf_counter() - t0
        kv = [(layer.keys[0], layer.values[0]) for layer in layers]
        return RowState(all_ids, kv, base.prompt_len if base else len(all_ids))

    def drop_partials(self) -> None:
        """Forget every partial solution's state and every step written ahead (the prompts
        stay): what a stopped or failed run leaves behind, which no later call would read."""
        with self.lock:
            self.store = {key: s for key, s in self.store.items() if not key[1]}
            self.written = WrittenAhead()

    def _evict(self) -> None:
        """Drop the states and the steps written ahead that no call has used for `keep_calls`
        calls (prompts stay), and the prompts of all but the 4 most recent questions."""
        stale = [
            key
            for key, s in self.store.items()
            if self.calls - s.used >= self.keep_calls and key[1]
        ]
        for key in stale:
            del self.store[key]
        self.written.evict(self.calls, self.keep_calls)
        questions = {}
        for key, s in self.store.items():  # keep the prompts of the 4 most recent questions
            if not key[1]:
                questions[key] = s.used
        for key in sorted(questions, key=questions.get)[:-4]:
            del self.store[key]


def transformers_stops(model, tokenizer) -> StopChecks:
    """The stop checks (backend/stopping.py) for a transformers model and its tokenizer."""
    # a config may declare several EOS ids (a list, as Qwen2.5's generation configs do)
    eos = [tokenizer.eos_token_id, model.config.eos_token_id]
    for name in END_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            eos.append(tid)
    ids = {int(e) for e in _flatten(eos) if e is not None}
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    newline = {i for i, piece in enumerate(pieces) if "\n" in piece}
    return StopChecks(
        ids, newline.__contains__, lambda new: tokenizer.decode(new, skip_special_tokens=True)
    )


def _flatten(items):
    # a model config may declare several EOS ids at once
    for x in items:
        if isinstance(x, (list, tuple, set)):
            yield from x
        else:
            yield x
