"""The KV slab: a cache layer over preallocated tensors that decoding writes into in place."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from backend.engine.state import Row


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
        # positions (read once for all rows: backend/kernels/fast_decode.py); None: no shared prefix
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


def empty_slab(
    model, batch: int, capacity: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed keys and values of shape (batch, kv heads, capacity, head dim) for `model`."""
    c = model.config
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        dtype = torch.bfloat16  # quantised weights: the cache follows the compute dtype
    k = torch.zeros(batch, heads, capacity, dim, dtype=dtype, device=device)
    return k, torch.zeros_like(k)


def unshare(layers: list[SlabLayer], slot: list[Row | None], mask: torch.Tensor) -> torch.Tensor:
    """Copy the shared prefix into each row's part of the slab; returns the widened mask.

    For the last few rows of a batch one attention over the whole context is faster than the
    two a shared prefix takes. Row j's positions [offset, length) become [offset, length + P)
    with the prefix first.
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
