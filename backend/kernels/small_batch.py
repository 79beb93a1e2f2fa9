"""Low-bit weights for small batches on the CPU: the tails of a search decode 1-8 rows at a time.

A decode step of a small model on a CPU streams every weight from memory whatever the batch, so a
step at batch 1 costs about as much as one at batch 16. The tails of a search (the last rows of an
iteration, a solution written to its end) run at small batches and set its wall time. For those
forward passes a linear layer reads a low-bit copy of its weights instead of the bf16 ones:
- exact 4-bit, when its weights take only 16 levels per group of 32 inputs. The embedded model's
  layers come from a Q4_1 GGUF, which stores exactly that (min + q * d per block of 32), and so
  do the Q4_K blocks of the Qwen2.5-Coder GGUFs (most of the 1.5B's layers), so the 4-bit copy
  is the GGUF's own weights again (up to bf16 rounding), at a quarter of the bytes.
  torch's 4-bit kernel is faster than bf16 up to 8 rows;
- int8 per output channel otherwise (the LM head, from the GGUF's Q8_0 embeddings; other
  models), up to 4 rows: half the bytes; that kernel is slower than bf16 at 8 rows.
Larger batches keep the model's own path, bf16 or fp32 (backend/machine.py chooses per CPU). The
copies are computed from the bf16-rounded weights whatever the model's dtype, and their kernels
read bf16 activations: fp32 ones are rounded on the way in (torch's fp32 path of these kernels is
far slower, even on AVX2 where its bf16 path is fast).

`THINKTREE_SMALL_BATCH_INT8=0` turns both off. Computing the copies is a noticeable part of a load
on a small CPU, so for a converted model they are kept in a file beside it (`attach(cache=...)`).
`scripts/measure_precision.py` measures their speed and agreement with fp32 (as "auto" loads them).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)
CACHE_VERSION = "4"  # of the cache file's layout and of how the copies are computed


def cache_file() -> str:
    """The cache file's name for this process's CPU kernels. torch packs 4-bit weights in a
    layout of its kernel level (AVX512 and AVX2 differ): a copy packed under one level is read
    as garbage under another, so each level keeps a file of its own (ATEN_CPU_CAPABILITY=avx2
    on an AVX-512 machine included)."""
    return f"small_batch-{torch.backends.cpu.get_cpu_capability().lower()}.safetensors"


DEFAULT_ROWS = 4  # at most this many rows take the int8 path (batch 8 is already slower)
INT4_ROWS = 8  # the 4-bit kernel still beats bf16 at 8 rows
GROUP = 32  # the 4-bit groups: Q4_1's blocks of 32 input weights
DTYPES = (torch.bfloat16, torch.float32)  # models whose layers may read the copies
_KERNEL = getattr(torch, "_weight_int8pack_mm", None)
_INT4_KERNEL = getattr(torch, "_weight_int4pack_mm_for_cpu", None)
_INT4_PACK = getattr(torch, "_convert_weight_to_int4pack_for_cpu", None)


def exact_int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(packed 4-bit weights, scales and zeros) when `w` (out, in) holds, in every group of 32
    inputs, only levels min + j * d for whole j in 0..15 (up to bf16 rounding); None otherwise
    (re-quantizing would then change the model).

    A Q4_1 GGUF's blocks use the whole range (d = (max - min) / 15). A Q4_K block's sub-blocks of
    32 are d * scale * q - dmin * min with q in 0..15 too, but a sub-block need not use q = 0 or
    15: its spacing is then (max - min) / k for the k = q_max - q_min it happens to span, which is
    found by trying k = 15, 14, ... 1 for the groups that do not fit yet (a finer k that still
    fits is as exact). Weights of more levels (Q5_0, Q6_K, Q8_0, random) fail in every group, and
    a tensor is given up as soon as a group fits no k.
    torch's kernel computes (q - 8) * scale + zero per group, so scale = d and zero = min + 8d.
    """
    if _INT4_KERNEL is None or _INT4_PACK is None or w.shape[1] % GROUP or w.shape[0] % 16:
        return None  # torch packs 4-bit weights in blocks of 16 output rows
    out, inp = w.shape
    g = w.reshape(-1, GROUP).to(torch.float32)  # (groups, 32)
    lo, hi = torch.aminmax(g, dim=-1, keepdim=True)
    # bf16 rounds each value, and the min and max the levels are rebuilt from, by up to 2^-8 of
    # their magnitude: allow 2^-6 of the group's largest one, in units of the level spacing, as
    # long as that is under a quarter of a level (further from zero bf16 cannot tell levels apart,
    # and any values would pass: such a group is no grid that can be checked)
    top = torch.maximum(lo.abs(), hi.abs()).mul_(2.0**-6).add_(1e-12)
    d = torch.empty_like(lo)
    todo = torch.arange(g.shape[0])
    for k in range(15, 0, -1):
        dk = (hi[todo] - lo[todo]) / k
        r = (g[todo] - lo[todo]) / dk.clamp(min=1e-30)
        fits = _on_grid(r, top[todo] / dk.clamp(min=1e-30), dk)
        d[todo[fits]] = dk[fits]
        todo = todo[~fits]
        if not len(todo):
            break
        if k == 15 and len(todo) > 64:  # a sample of the misfits must fit some k, or none will
            sample = todo[:: len(todo) // 64][:64]
            if not _fits_some_k(g[sample], lo[sample], hi[sample], top[sample]):
                return None
    if len(todo):
        return None
    q = ((g - lo) / d.clamp(min=1e-30)).round_().clamp_(0, 15)
    packed = _INT4_PACK(q.view(out, inp).to(torch.int32), 1)
    groups = inp // GROUP
    scale_zero = torch.stack([d.view(out, groups), (lo + 8 * d).view(out, groups)], -1)
    return packed, scale_zero.transpose(0, 1).contiguous().to(torch.bfloat16)


def _on_grid(r: torch.Tensor, tol: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per group: every value `r` (in level units) is a whole level up to `tol`, and `tol` is
    under a quarter of a level (a group of equal values, d = 0, is one level)."""
    flat = d[..., 0] == 0
    return flat | (((r - r.round()).abs() <= tol).all(-1) & (tol[..., 0] < 0.25))


def _fits_some_k(g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, top: torch.Tensor) -> bool:
    """Whether every group (row of `g`) lies on the levels of some spacing (max - min) / k."""
    left = torch.ones(g.shape[0], dtype=torch.bool)
    for k in range(14, 0, -1):
        dk = (hi - lo) / k
        r = (g - lo) / dk.clamp(min=1e-30)
        left &= ~_on_grid(r, top / dk.clamp(min=1e-30), dk)
    return not bool(left.any())


class SmallBatchLinear(nn.Module):
    """A bias-free Linear that reads low-bit weights for inputs of at most `rows` rows.

    4-bit (`kind` "int4") when the weights are exactly 4-bit in groups of 32 (`exact_int4`: the
    embedded model's layers come from a Q4_1 GGUF), for up to `INT4_ROWS` rows; else int8 per
    output channel, for up to `rows` rows.
    """

    def __init__(
        self,
        linear: nn.Linear,
        rows: int = DEFAULT_ROWS,
        stored: tuple[str, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """`stored`: (kind, qweight, scales) computed for these weights before (`attach`'s cache)."""
        super().__init__()
        if linear.bias is not None:
            raise ValueError("only bias-free linear layers are supported")
        self.linear = linear  # its weights (bf16 or fp32) stay the model's (tied ones too)
        if stored is None:  # from the bf16 weights, so both dtypes get the very same copies
            w = linear.weight.detach().to(torch.bfloat16)
            four = exact_int4(w)
            stored = ("int4", *four) if four is not None else ("int8", *_int8(w))
        kind, qweight, scales = stored
        self.kind, self.rows = kind, max(rows, INT4_ROWS) if kind == "int4" else rows
        self.register_buffer("qweight", qweight, False)
        self.register_buffer("scales", scales, False)

    @property
    def weight(self) -> torch.Tensor:  # code that inspects `.weight` sees the real weights
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > self.rows or x.dtype not in DTYPES:
            return self.linear(x)
        out = small_matmul(x.reshape(rows, x.shape[-1]), self.kind, self.qweight, self.scales)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: (weights, scales in the weights' dtype)."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.to(weight.dtype)


def small_matmul(x: torch.Tensor, kind: str, qweight: torch.Tensor, scales: torch.Tensor):
    """x (rows, in) @ W.T for low-bit weights stored by `SmallBatchLinear`, in x's dtype (the
    kernels read bf16)."""
    x16 = x if x.dtype == torch.bfloat16 else x.to(torch.bfloat16)
    if kind == "int4":
        out = _INT4_KERNEL(x16, qweight, GROUP, scales)
    else:
        out = _KERNEL(x16, qweight, scales)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def enabled() -> bool:
    return _KERNEL is not None and os.environ.get("THINKTREE_SMALL_BATCH_INT8", "1") != "0"


def attach(model: nn.Module, rows: int = DEFAULT_ROWS, cache: Path | None = None) -> int:
    """Give every bias-free Linear of the decoder layers and the LM head a small-batch path:
    exact 4-bit where the weights are 4-bit in groups of 32, int8 otherwise.

    Returns how many layers were wrapped (0 when the kernel is missing or it is turned off). Only
    for bf16 and fp32 models on the CPU. `cache`: a file that keeps the low-bit copies for weights
    that do not change (a converted model's folder): read when it matches the model's weights
    file, written otherwise (computing them is a noticeable part of a load).
    """
    if not enabled():
        return 0
    stored = _read_cache(cache) if cache is not None else {}
    kept: dict[str, tuple[str, torch.Tensor, torch.Tensor]] = {}
    for prefix, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.bias is None:
                if child.weight.dtype not in DTYPES or child.weight.device.type != "cpu":
                    continue
                key = f"{prefix}.{name}" if prefix else name
                pre = stored.get(key)
                if pre is not None and pre[1].shape[0] != child.weight.shape[0]:
                    pre = None  # not these weights
                layer = SmallBatchLinear(child, rows, stored=pre)
                kept[key] = (layer.kind, layer.qweight, layer.scales)
                setattr(parent, name, layer)
    if cache is not None and kept and set(kept) != set(stored):
        _write_cache(cache, kept)
    return len(kept)


def _stamp(cache: Path) -> str:
    """The weights file the cache was computed from, as its size and modification time."""
    weights = cache.parent / "model.safetensors"
    st = weights.stat() if weights.exists() else None
    level = torch.backends.cpu.get_cpu_capability()
    return f"{CACHE_VERSION}:{level}:{st.st_size}:{st.st_mtime_ns}" if st else ""


def _read_cache(cache: Path) -> dict[str, tuple[str, torch.Tensor, torch.Tensor]]:
    from safetensors import safe_open

    if not cache.exists():
        return {}
    try:
        with safe_open(str(cache), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("stamp") != _stamp(cache) or not meta["stamp"]:
                return {}
            kinds = json.loads(meta["kinds"])
            # copies, not the file's own buffers: those sit wherever the file's header leaves
            # them, and torch's 4-bit kernel crashes on weights that are not 64-byte aligned
            return {
                key: (
                    kind,
                    f.get_tensor(f"{key}.qweight").clone(),
                    f.get_tensor(f"{key}.scales").clone(),
                )
                for key, kind in kinds.items()
            }
    except Exception:  # a damaged or foreign file: compute again (and rewrite it)
        log.warning("ignoring the small-batch weights cache %s", cache, exc_info=True)
        return {}


def _write_cache(cache: Path, kept: dict[str, tuple[str, torch.Tensor, torch.Tensor]]) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for key, (_, q, s) in kept.items():
        tensors[f"{key}.qweight"], tensors[f"{key}.scales"] = q.contiguous(), s.contiguous()
    meta = {"stamp": _stamp(cache), "kinds": json.dumps({k: v[0] for k, v in kept.items()})}
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, cache)  # atomic: a reader sees the old file or the new one
        # the file of cache version 1, one for every CPU level (its 4-bit copies were read as
        # garbage under another level): never read now, so it goes
        (cache.parent / "small_batch.safetensors").unlink(missing_ok=True)
    except Exception:  # a read-only or full disk: the next load computes them again
        log.warning("could not write the small-batch weights cache %s", cache, exc_info=True)
    finally:
        tmp.unlink(missing_ok=True)
