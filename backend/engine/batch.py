"""The rows one call decodes together: their KV in the slab, what each feeds next, where each sits.

Rows are left-padded to one width, so every row's next position is the same slab column; a row
that stops leaves its place empty (None) until enough places are empty to compact the batch, and
rows added to write ahead take empty places first, then new places at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.cache_utils import Cache

from backend.engine.slab import SlabLayer, empty_slab
from backend.engine.state import Row, RowState

# a new slab leaves room for at most this many new tokens per row (it grows if a step is longer)
FIRST_ROOM = 64


class DecodeBatch:
    """A decoding batch: the slab layers and, per batch position, its row and its inputs."""

    def __init__(
        self,
        layers: list[SlabLayer],
        rows: list[Row],
        mask: torch.Tensor,
        pos: torch.Tensor,
        room: int,
        device: torch.device,
    ) -> None:
        self.layers = layers  # one per model layer: every row's KV
        self.cache = Cache(layers=layers)
        self.slot: list[Row | None] = list(rows)  # batch position -> its row; None once stopped
        # per batch position, the token it feeds next: a row's pending one, then its newest
        self.tokens = [r.start.ids[-1] for r in rows]
        self.mask = mask  # (rows, slab positions + 1): 1 where a row has a token, the fed one too
        self.pos = pos  # (rows, 1): the position of the token each row feeds
        self.room = room  # the rows the batch may grow to (copies that write ahead)
        self.device = device

    @classmethod
    def load(
        cls, model, device: torch.device, rows: list[Row], *, room: int, budget: int
    ) -> DecodeBatch:
        """Gather the rows' cached KV into a new slab, left-padded to the longest row.
        `budget`: the most tokens a row may write."""
        b = len(rows)
        lengths = [len(r.start.ids) - 1 for r in rows]  # cached positions per row
        width = max(lengths)
        capacity = width + 1 + min(budget, FIRST_ROOM)
        layers = []
        for i in range(model.config.num_hidden_layers):
            k, v = empty_slab(model, b, capacity, device)
            for j, r in enumerate(rows):
                if lengths[j]:
                    kj, vj = r.start.kv[i]
                    k[j, :, width - lengths[j] : width] = kj
                    v[j, :, width - lengths[j] : width] = vj
            layers.append(SlabLayer(k, v, width))
        mask = torch.zeros(b, width + 1, dtype=torch.long, device=device)
        for j, n in enumerate(lengths):
            mask[j, width - n :] = 1
        pos = torch.tensor(lengths, device=device)[:, None]
        for j, r in enumerate(rows):
            r.offset = width - lengths[j]
        return cls(layers, rows, mask, pos, room, device)

    # ---- one step ------------------------------------------------------------------------------
    def has_real_rows(self) -> bool:
        """Whether a row still writes a step this call returns (not only steps written ahead)."""
        return any(r is not None and r.out is not None for r in self.slot)

    def live(self) -> list[int]:
        """The batch positions that hold a row."""
        return [p for p, row in enumerate(self.slot) if row is not None]

    def forward(self, forward: Callable[..., torch.Tensor]) -> torch.Tensor:
        """`forward(ids, pos, cache, mask)` over every position's next token (stopped ones too)."""
        inputs = torch.tensor(self.tokens, device=self.device)[:, None]
        return forward(inputs, self.pos, self.cache, self.mask)

    def advance(self) -> None:
        """After the tokens just fed (now in the slab): the next tokens go one position further."""
        ones = torch.ones(len(self.slot), 1, dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], 1)
        self.pos = self.pos + 1

    def row_state(self, p: int) -> RowState:
        """Position p's row: its ids so far with a copy of its KV from the slab (all but the
        newest id).

        A copy, not a view: a view would keep the whole slab (every row of the batch) alive for
        as long as the state is stored, and each compaction makes a new slab, so views of the
        rows that ended before it would pin a chain of slabs.
        """
        row, layers = self.slot[p], self.layers
        end = layers[0].length
        kv = [
            (
                lay.keys[p, :, row.offset : end].clone(),
                lay.values[p, :, row.offset : end].clone(),
            )
            for lay in layers
        ]
        state = RowState(row.base_ids + row.new, kv, row.start.prompt_len)
        assert end - row.offset == len(state.ids) - 1
        return state

    # ---- the batch's shape ---------------------------------------------------------------------
    def fork(self, parents: list[int], copies: int) -> int:
        """Give each parent row (one that has just begun writing ahead) up to `copies` more rows
        that write the same next step independently, in stopped rows' places or new rows at the
        end, as long as the batch stays within `room` rows; round-robin over the parents, in
        batch order. Returns how many rows were copied."""
        slot = self.slot
        free = [p for p, row in enumerate(slot) if row is None]
        wanted = [p for k in range(copies) for p in parents][: len(free) + self.room - len(slot)]
        if not wanted:
            return 0
        new = len(wanted) - len(free)
        if new > 0:  # the batch grows: new rows at the end
            start = len(slot)
            for lay in self.layers:
                lay.add_rows(new, self.room)
            self.mask = torch.cat([self.mask, self.mask.new_zeros(new, self.mask.shape[1])])
            self.pos = torch.cat([self.pos, self.pos.new_zeros(new, 1)])
            self.tokens = self.tokens + [0] * new
            slot.extend([None] * new)
            free += range(start, start + new)
        targets = free[: len(wanted)]
        src = torch.tensor(wanted, device=self.device)
        dst = torch.tensor(targets, device=self.device)
        for lay in self.layers:  # the parents' rows as they are now (the step boundary)
            n = lay.length
            lay.k_slab[dst, :, :n] = lay.k_slab[src, :, :n]
            lay.v_slab[dst, :, :n] = lay.v_slab[src, :, :n]
        self.mask[dst], self.pos[dst] = self.mask[src], self.pos[src]
        for p, q in zip(wanted, targets):
            parent = slot[p]
            self.tokens[q] = self.tokens[p]
            slot[q] = Row(
                None,
                parent.key,
                parent.start,
                parent.base_ids,
                [],
                offset=parent.offset,
                ahead=parent.ahead,
                to_end=parent.to_end,
            )
        return len(wanted)

    def compact(self, fraction: float) -> None:
        """Drop the stopped rows' places once they are at least `fraction` of the batch."""
        live = self.live()
        dead = len(self.slot) - len(live)
        if dead and dead >= max(1, fraction * len(self.slot)):
            idx = torch.tensor(live, device=self.device)
            self.cache.batch_select_indices(idx)
            self.mask, self.pos = self.mask[idx], self.pos[idx]
            self.tokens = [self.tokens[p] for p in live]
            self.slot = [self.slot[p] for p in live]
