"""The KV slab: a cache layer over preallocated tensors that decoding writes into in place."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class SlabLayer(DynamicLayer):
    """A KV cache layer over a preallocated (batch, heads, capacity, dim) slab.

    `update` writes the new positions in place and returns views, instead of the default
    layer's `torch.cat` of the whole cache at every token.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.k_slab, self.v_slab, self.length = keys, values, length
        self.rows = keys.shape[0]  # the batch's rows: the first `rows` of the slab
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
