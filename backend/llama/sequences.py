"""One llama.cpp context and the book of its sequences: ids, forks, and the cells they hold.

The KV cache is unified: a fork (`llama_memory_seq_cp`) adds the new sequence to its parent's
cells instead of copying them, so a prompt read once serves every partial solution that
continues it, and a partial solution serves each of its continuations. A cell is freed when the
last sequence holding it is dropped. The book counts cells the same way (an upper bound: a
sequence that goes on decoding after it was forked counts its later cells until its forks are
dropped too), so a call can make room before it decodes: `fits`, then `grow` when it does not.

Growing replaces the context with a larger one (the KV cache is allocated whole, so it starts
small and grows with the runs that need it): every sequence of the old one is gone, which
`valid` tells (each sequence carries the generation of the context it was made in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.llama.native import Batch, Context, DecodeError, Model

MAX_SEQ = 256  # llama.cpp's most sequences per context (LLAMA_MAX_SEQ)
MIN_SEQ = 64  # what a context starts with: its output buffer holds logits for this many rows
N_BATCH = 256  # tokens per llama_decode call (a longer prefill goes in chunks)
N_UBATCH = 128  # tokens per forward pass: as fast here as larger ones, with smaller buffers
MIN_CELLS = 4096
MAX_CELLS = 1 << 17


@dataclass(eq=False)
class Seq:
    """One sequence id of one context generation."""

    id: int
    generation: int
    parent: Seq | None = None
    own: int = 0  # cells it added (tokens decoded into it)
    live: bool = True
    holders: int = 0  # forks of it that still hold its cells


class Sequences:
    """The context of one loaded model, shared by its engine and its judge (under its lock)."""

    def __init__(self, model: Model, threads: int, cells: int = MIN_CELLS) -> None:
        self.model = model
        self.threads = threads
        self.generation = 0
        self.ctx: Context | None = None
        self.batch = Batch(N_BATCH)
        self._make(cells, MIN_SEQ)

    def _make(self, cells: int, n_seq: int) -> None:
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None
        self.ctx = Context(self.model, cells, n_seq, N_BATCH, N_UBATCH, self.threads)
        self._restart()

    def _restart(self) -> None:
        self.generation += 1
        self._free = list(range(self.ctx.n_seq - 1, -1, -1))
        self.used = 0

    def reset(self) -> None:
        """Drop every sequence and start filling the cache from its first cell again.

        Where a sequence's cells lie changes the order in which attention adds up their terms,
        and so the last bits of the logits: a run that starts from an empty cache (and puts back
        its prompt with `load`) lays its cells out the same way every time, so its seed
        reproduces its tree.
        """
        self.ctx.clear()
        self._restart()

    def save(self, seq: Seq) -> bytes:
        """A sequence's cells as bytes, for `load`."""
        return self.ctx.seq_state(seq.id)

    def load(self, data: bytes, cells: int) -> Seq:
        """A new sequence holding what `save` saved (`cells` tokens), in the first free cells."""
        seq = self.new()
        try:
            self.ctx.set_seq_state(data, seq.id)
        except MemoryError:
            self._free.append(seq.id)
            raise
        seq.own = cells
        self.used += cells
        return seq

    @property
    def cells(self) -> int:
        return self.ctx.n_ctx

    @property
    def free_ids(self) -> int:
        return len(self._free)

    def valid(self, seq: Seq) -> bool:
        return seq.live and seq.generation == self.generation

    def fits(self, cells: int) -> bool:
        return self.used + cells <= self.ctx.n_ctx

    def grow(self, cells: int, seqs: int = 0) -> None:
        """A new, larger context with room for `cells` and `seqs` sequences more than the book
        holds now; every sequence is dropped (the caller reads again what it still needs)."""
        size = _power_of_two(int((self.used + cells) * 1.25), self.ctx.n_ctx, MAX_CELLS)
        in_use = self.ctx.n_seq - len(self._free)
        n_seq = _power_of_two(in_use + seqs, MIN_SEQ, MAX_SEQ)
        self._make(size, max(n_seq, self.ctx.n_seq))

    def shrink(self) -> bool:
        """Back to the smallest context, if it grew (everything is dropped then: True)."""
        if self.ctx.n_ctx > MIN_CELLS or self.ctx.n_seq > MIN_SEQ:
            self._make(MIN_CELLS, MIN_SEQ)
            return True
        return False

    def new(self, parent: Seq | None = None) -> Seq:
        """An empty sequence, or a fork of `parent` (sharing its cells)."""
        if not self._free:
            raise RuntimeError(f"all {self.ctx.n_seq} llama.cpp sequences are in use")
        seq = Seq(self._free.pop(), self.generation, parent)
        if parent is not None:
            assert self.valid(parent), "a fork of a dropped sequence"
            self.ctx.seq_cp(parent.id, seq.id)
            parent.holders += 1
        return seq

    def drop(self, seq: Seq) -> None:
        """Forget a sequence; its cells go once no fork of it holds them."""
        if not self.valid(seq):
            return
        self.ctx.seq_rm(seq.id)
        seq.live = False
        self._free.append(seq.id)
        node: Seq | None = seq
        while node is not None and not node.live and node.holders == 0:
            self.used -= node.own
            node.own = 0
            parent = node.parent
            if parent is not None:
                parent.holders -= 1
            node = parent

    def decode(
        self, entries: Sequence[tuple[int, int, Seq, bool]], hidden: bool = True
    ) -> list[int]:
        """Decode (token, position, sequence, output) entries in one llama_decode call; returns
        where to read each entry's output (its index in the batch; -1 where it asked for none).
        With `hidden`, every entry is an output (llama.cpp's rule), with its hidden state beside
        its logits."""
        self.ctx.set_embeddings(hidden)
        batch = self.batch
        batch.clear()
        out = []
        for token, pos, seq, output in entries:
            output = output or hidden
            i = batch.add(token, pos, seq.id, output)
            out.append(i if output else -1)
        try:
            self.ctx.decode(batch)
        except DecodeError as err:
            if err.code == 1:
                raise MemoryError(
                    f"the KV cache ({self.ctx.n_ctx} cells) has no room left for this batch"
                ) from err
            raise
        for _, _, seq, _ in entries:
            seq.own += 1
        self.used += len(entries)
        return out

    def prefill(self, seq: Seq, ids: Sequence[int], start: int, hidden: bool = True) -> int:
        """Read `ids` into `seq` at positions from `start`, in chunks, and leave the last token's
        output (logits, and its hidden state with `hidden`) in the context; returns its index.
        All but the last token are read without outputs."""
        head = ids[:-1]
        for i in range(0, len(head), N_BATCH):
            chunk = head[i : i + N_BATCH]
            self.decode([(t, start + i + j, seq, False) for j, t in enumerate(chunk)], False)
        return self.decode([(ids[-1], start + len(ids) - 1, seq, True)], hidden)[0]

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()
        self.batch.close()


def _power_of_two(x: int, low: int, high: int) -> int:
    """The smallest power of two from `low` up that is at least `x`, but at most `high`."""
    size = low
    while size < x and size < high:
        size *= 2
    return size
