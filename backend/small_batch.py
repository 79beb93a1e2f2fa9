"""Int8 weights for small batches on the CPU: the tails of a search decode 1-4 rows at a time.

A decode step of a small model on a CPU streams every weight from memory whatever the batch, so a
step at batch 1 costs about as much as one at batch 16. The tails of a search (the last rows of an
iteration, a solution written to its end) run at batch 1-4 and set its wall time. For those forward
passes a linear layer reads an int8 copy of its weights (per output channel, symmetric) through
torch's weight-only int8 kernel instead of the bf16 weights: half the bytes. Larger batches keep
the bf16 path, where that kernel is slower.

Measured on the 2-core machine (SmolLM2-135M, 350-token context, 2 threads): ms per decode step
bf16 -> int8 weights: batch 1 60 -> 30, batch 2 64 -> 46, batch 4 61 -> 48, batch 8 71 -> 84,
batch 16 95 -> 107. Teacher-forced top-1 agreement with fp32: 0.976, the same as bf16's.
`THINKTREE_SMALL_BATCH_INT8=0` turns it off.
"""

from __future__ import annotations

import os

import torch
from torch import nn

DEFAULT_ROWS = 4  # at most this many rows take the int8 path (batch 8 is already slower)
_KERNEL = getattr(torch, "_weight_int8pack_mm", None)


class SmallBatchInt8Linear(nn.Module):
    """A bias-free Linear that reads int8 weights for inputs of at most `rows` rows."""

    def __init__(self, linear: nn.Linear, rows: int = DEFAULT_ROWS) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("only bias-free linear layers are supported")
        self.linear = linear  # the bf16 weights stay the model's parameters (tied ones too)
        self.rows = rows
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer(
            "qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), False
        )
        self.register_buffer("scales", scale.to(linear.weight.dtype), False)

    @property
    def weight(self) -> torch.Tensor:  # code that inspects `.weight` sees the real weights
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > self.rows or x.dtype != self.scales.dtype:
            return self.linear(x)
        out = _KERNEL(x.reshape(rows, x.shape[-1]), self.qweight, self.scales)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def enabled() -> bool:
    return _KERNEL is not None and os.environ.get("THINKTREE_SMALL_BATCH_INT8", "1") != "0"


def attach(model: nn.Module, rows: int = DEFAULT_ROWS) -> int:
    """Give every bias-free Linear of the decoder layers and the LM head an int8 small-batch path.

    Returns how many layers were wrapped (0 when the kernel is missing or it is turned off). Only
    for bf16 models on the CPU.
    """
    if not enabled():
        return 0
    wrapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.bias is None:
                if child.weight.dtype != torch.bfloat16 or child.weight.device.type != "cpu":
                    continue
                setattr(parent, name, SmallBatchInt8Linear(child, rows))
                wrapped += 1
    return wrapped
