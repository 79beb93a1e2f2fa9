"""The partial solutions a llama.cpp step engine has read, and room for more in its context.

Each partial solution the engine has read is one sequence of the context (backend/llama/
sequences.py), keyed by its text: the question's prompt, read on top of the template's fixed head
(read once per engine) and kept as a snapshot of its cells; and every partial solution a call
wrote or read, continuing its parent's cells. Here too: the hidden state kept for each (a value
head reads it), and the rules for what goes when the context runs short (stale partial solutions
first, then the context grows, everything in it read again as needed).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.llama.sequences import Seq, Sequences
from backend.llama.tokenizer import GGUFTokenizer
from backend.prompts import PromptTemplate

Key = tuple[str, tuple[str, ...]]  # (question, steps so far)
HEAD = "\x00head"  # the snapshot of the template's fixed head (no question is this string)


@dataclass(eq=False)
class State:
    """A partial solution the model has read: its token ids, all but the last one in `seq`."""

    seq: Seq
    ids: list[int]
    prompt_len: int  # how many of the ids are the prompt
    used: int = 0  # the call that last produced or used it (for eviction)


class Partials:
    """The read partial solutions of one engine (its lock held by the caller)."""

    def __init__(
        self,
        kv: Sequences,
        tokenizer: GGUFTokenizer,
        template: PromptTemplate,
        stats,
        *,
        keep_calls: int = 3,
        prompts_kept: int = 4,
        hidden_kept: int = 8192,
    ) -> None:
        self.kv = kv
        self.tokenizer = tokenizer
        self.template = template
        self.stats = stats  # the engine's: prefill_tokens, prefill_s
        self.keep_calls = keep_calls  # partial solutions unused for this many calls are dropped
        self.prompts_kept = prompts_kept
        self.calls = 0  # the engine's calls so far: a state's `used` is one of them
        self.store: dict[Key, State] = {}
        self.head: State | None = None  # the template's prompt before the question
        # the prompts read so far (and the head, under HEAD), as their cells' bytes
        self._snapshots: OrderedDict[str, tuple[bytes, list[int], int]] = OrderedDict()
        self._hidden: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._hidden_kept = hidden_kept

    def restart(self) -> None:
        """Empty the cache (see `Sequences.reset`): nothing stored is valid any more."""
        self.kv.reset()
        self.forget()

    def blank(self, token: int) -> bool:
        """Whether a token writes nothing but whitespace (or nothing: a special token)."""
        return not self.tokenizer.model.piece(token).strip()

    def _ended_at_eos(self, token: int) -> bool:
        """Whether a step whose last token is `token` ended at EOS: a step ends at the delimiter
        on a token holding a newline, and a blank last token is never where its state is read."""
        return not self.blank(token) and b"\n" not in self.tokenizer.model.piece(token)

    def resolve(self, question: str, steps: tuple[str, ...]) -> State:
        """`state`, making room when reading overflows the context."""
        for _ in range(4):
            try:
                return self.state(question, steps)
            except NoRoom as err:
                self.room(err.cells, seqs=err.seqs)
        raise MemoryError("no room in llama.cpp's KV cache for this partial solution")

    def room(self, cells: int, keep: set[int] = frozenset(), seqs: int = 0) -> bool:
        """True when `cells` more cells and `seqs` more sequences fit. Else it makes room: the
        partial solutions but `keep` go first, then the context grows; it is then replaced and
        everything stored is lost (False: read again what is needed)."""
        kv = self.kv
        if kv.fits(cells) and kv.free_ids >= seqs:
            return True
        self.evict(keep, everything=True)
        if kv.fits(cells) and kv.free_ids >= seqs:
            return True
        kv.grow(cells, seqs)
        self.forget()
        return False

    def state(self, question: str, steps: tuple[str, ...]) -> State:
        """The stored state of a partial solution, reading whatever is not stored yet."""
        state = self.stored((question, steps))
        if state is None:
            # longest stored ancestor (at least the prompt), then read the remaining steps
            k = len(steps)
            while k > 0 and self.stored((question, steps[:k])) is None:
                k -= 1
            base = self.stored((question, steps[:k])) or self._prompt_state(question)
            state = base
            if k < len(steps):
                extra = self.tokenizer.encode("".join(steps[k:]))
                if extra:
                    state = self._read(base, extra, (question, steps))
                    self.store[(question, steps)] = state
        state.used = self.calls
        return state

    def stored(self, key: Key) -> State | None:
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
            head = self.head_state()
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

    def head_state(self) -> State | None:
        """The template's prompt before the question (None when it has no such part)."""
        if self.head is not None and self.kv.valid(self.head.seq):
            return self.head
        if HEAD in self._snapshots:
            self.head = self._load(HEAD)
            return self.head
        tok = self.tokenizer
        a = self.template.prompt_ids(tok, "A")
        b = self.template.prompt_ids(tok, "B")
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        if n < 2:
            return None
        self.head = self._read(None, a[:n], None)
        self._snapshot(HEAD, self.head)
        return self.head

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
            raise NoRoom(len(ids))
        return State(self.kv.load(data, len(ids) - 1), ids, prompt_len, self.calls)

    def _read(self, base: State | None, ids: list[int], key: Key | None) -> State:
        """A new state: `base` (if any) followed by `ids`, read in a fork of base's sequence (its
        pending token, then all new ids but the last). With `key`, keeps the hidden state after
        the last token read that is not blank under it."""
        all_ids = (base.ids if base else []) + list(ids)
        todo = all_ids[len(base.ids) - 1 if base else 0 : -1]
        if self.kv.free_ids < 2:  # its sequence, and a fork for a step that ended at EOS
            raise NoRoom(len(todo) + 1, 2)
        seq = self.kv.new(base.seq if base else None)
        if not self.kv.fits(len(todo) + 1):  # one more for a step that ended at EOS
            self.kv.drop(seq)
            raise NoRoom(len(todo) + 1)
        t0 = time.perf_counter()
        start = len(all_ids) - 1 - len(todo)
        if key is None:
            if todo:
                self.kv.prefill(seq, todo, start, hidden=False)
        elif self._ended_at_eos(all_ids[-1]):
            # the writer read this step's last token (EOS came after it): read it too, in a fork
            # dropped after, so the hidden state is the one the writer kept (a step cut by the
            # token limit also ends this way: its state is then one token later than the writer's)
            if todo:
                self.kv.prefill(seq, todo, start, hidden=False)
            fork = self.kv.new(seq)
            try:
                self.keep_hidden(
                    key, self.kv.ctx.hidden(self.kv.prefill(fork, all_ids[-1:], start + len(todo)))
                )
            finally:
                self.kv.drop(fork)
        elif todo:
            # the hidden state after the last token that is not blank (the first may be base's
            # pending one), then the blank ones after it
            j = max((k for k, t in enumerate(todo) if not self.blank(t)), default=len(todo) - 1)
            at = self.kv.prefill(seq, todo[: j + 1], start)
            self.keep_hidden(key, self.kv.ctx.hidden(at))
            if j + 1 < len(todo):
                self.kv.prefill(seq, todo[j + 1 :], start + j + 1, hidden=False)
        self.stats.prefill_tokens += len(todo)
        self.stats.prefill_s += time.perf_counter() - t0
        return State(seq, all_ids, base.prompt_len if base else len(all_ids), self.calls)

    def hidden_state(self, question: str, steps: Sequence[str]) -> np.ndarray:
        """The final hidden state after the last token of `steps` (non-empty) that is not blank,
        after `question`'s prompt: kept from when the engine wrote it, else read now."""
        key = (question, tuple(steps))
        got = self._hidden.get(key)
        if got is None:
            self.resolve(question, key[1])  # reading it keeps its hidden state
            got = self._hidden.get(key)
        if got is None:  # stored, but its hidden state no longer kept: read it once more
            prompt = self.resolve(question, ())
            self.kv.drop(self._read(prompt, self.tokenizer.encode("".join(steps)), key).seq)
            got = self._hidden[key]
        self._hidden.move_to_end(key)
        return got

    def keep_hidden(self, key: Key, hidden: np.ndarray | None) -> None:
        if hidden is None:
            return
        self._hidden[key] = hidden
        self._hidden.move_to_end(key)
        while len(self._hidden) > self._hidden_kept:
            self._hidden.popitem(last=False)

    def drop_partials(self) -> None:
        """Forget every partial solution (the prompts stay, as snapshots at least): what a
        stopped or failed run leaves behind, which no later call would read. A context the run
        grew goes back to its first size, giving its memory back."""
        for key in [k for k in self.store if k[1]]:
            self.kv.drop(self.store.pop(key).seq)
        if self.kv.shrink():
            self.forget()

    def forget(self) -> None:
        """The context was replaced: nothing stored is valid any more."""
        self.store.clear()
        self.head = None

    def evict(self, keep: set[int] = frozenset(), everything: bool = False) -> None:
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


class NoRoom(MemoryError):
    """Reading `cells` more tokens into `seqs` new sequences would overflow the context (the
    caller makes room)."""

    def __init__(self, cells: int, seqs: int = 0) -> None:
        super().__init__(f"no room for {cells} more cells in {seqs} more sequences")
        self.cells = cells
        self.seqs = seqs
