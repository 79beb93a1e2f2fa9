"""A lean one-token forward pass for Llama- and Qwen2-style models over the engine's KV slabs.

transformers' forward pass is general: per call it builds masks and position embeddings, dispatches
each layer's attention through an interface, wraps every module call in hooks and returns output
dataclasses. In a decode step of a small model on a CPU that bookkeeping is a large share of the
time. This module runs the same arithmetic directly on the model's own weights:
- q/k/v and gate/up are read as one fused matrix each (the model's parameters become views of it,
  so no weight is stored twice);
- attention for a single query token is two batched matmuls per layer with grouped-query heads
  folded into the batch, softmax in fp32 as transformers' eager attention does;
- the rotary embedding is computed once per forward by the model's own rotary module (so its
  scaling variants apply), and applied to q and k;
- linear layers with a low-bit small-batch copy (backend/kernels/small_batch.py) read it at small batches.
- the other bf16 linear layers read a copy of their weights packed once in oneDNN's blocked
  layout (`torch.ops.mkldnn._linear_pointwise`): a plain bf16 `F.linear` reorders the weights at
  every call. Same bits and a faster step at the larger batches, at the cost of a second copy of
  the bf16 weights. `THINKTREE_PACKED_WEIGHTS=0` turns it off;
- a prefix every row shares (the question's prompt, `SlabLayer.prefix`) is attended once for all
  rows: the rows' queries are the query positions of one attention over it, and that attention
  and each row's own part are merged by their log-sum-exps (cascade attention);
- the residual stream stays in fp32 and RMSNorm is torch's fused op.

`FastDecoder.build(model)` returns None for anything it does not support (other architectures,
quantized bitsandbytes weights, a GPU, norms or activations of other kinds); the engine then uses
the model's own forward. `THINKTREE_FAST_DECODE=0` turns it off. tests/test_fast_decode.py checks
it against the model's own forward; the benchmark (benchmarks/bench_search.py) times both.
"""

from __future__ import annotations

import functools
import os
import weakref

import torch
from torch import nn
from torch.nn import functional as F

from backend.kernels.small_batch import SmallBatchLinear, small_matmul

SUPPORTED = ("llama", "qwen2")
# returns the attention and its log-sum-exp per query (what merging two partial attentions needs)
_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its FastDecoder
# oneDNN's linear over weights reordered once into its own blocked layout (the layout its AMX /
# AVX512 kernels read). A plain bf16 F.linear reorders the weights at every call, which costs a
# third of a decode step at 16 rows; results are the same bits
_PACK = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
_PACKED_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
PACK_ROWS = 16  # the batch the layout is chosen for (any batch may use it)


def enabled() -> bool:
    return os.environ.get("THINKTREE_FAST_DECODE", "1") != "0"


def for_model(model, pack: bool = True) -> FastDecoder | None:
    """The model's FastDecoder (built once per model), or None when unsupported or turned off.

    `pack=False`: its bf16 layers keep no oneDNN-packed copy (a second copy of every weight),
    for a model that decodes only the few rows its small-batch copies serve. The first call for
    a model decides."""
    if not enabled():
        return None
    if model not in _BUILT:
        _BUILT[model] = FastDecoder.build(model, pack)
    return _BUILT[model]


def packing_enabled() -> bool:
    return (
        _PACK is not None
        and _PACKED_LINEAR is not None
        and torch.backends.mkldnn.is_available()
        and os.environ.get("THINKTREE_PACKED_WEIGHTS", "1") != "0"
    )


def can_pack() -> bool:
    """Whether bf16 weights get packed on this CPU: packing is on and oneDNN packs bf16 here (a
    CPU without bf16 instructions, or one held to AVX2 by ONEDNN_MAX_CPU_ISA, cannot)."""
    return packing_enabled() and _onednn_packs_bf16()


@functools.cache
def _onednn_packs_bf16() -> bool:
    try:
        return _PACK(torch.zeros(PACK_ROWS, 32, dtype=torch.bfloat16), PACK_ROWS) is not None
    except RuntimeError:
        return False


def _packed(weight: torch.Tensor) -> torch.Tensor | None:
    """The bf16 weights in oneDNN's layout for its linear kernel, or None (not bf16 on the CPU,
    or this build cannot)."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or not packing_enabled():
        return None
    try:
        return _PACK(weight.detach(), PACK_ROWS)
    except RuntimeError:  # a CPU without bf16 support in oneDNN
        return None


def _join(parts: list[nn.Module], name: str) -> torch.Tensor:
    """The parts' `name` tensors joined along their first dimension; each part then holds a view
    of its rows of the joined tensor instead of its own (a parameter stays a parameter)."""
    joined = torch.cat([getattr(p, name).detach() for p in parts]).contiguous()
    start = 0
    for p in parts:
        old = getattr(p, name)
        view = joined[start : start + old.shape[0]]
        setattr(p, name, nn.Parameter(view, False) if isinstance(old, nn.Parameter) else view)
        start += old.shape[0]
    return joined


class _Linear:
    """A (possibly fused) linear map: bf16/fp32 weights, optional bias, optional low-bit copy
    (int8 or exact 4-bit, backend/kernels/small_batch.py) for small batches."""

    def __init__(self, parts: list[nn.Module], pack: bool = True) -> None:
        plain = [p.linear if isinstance(p, SmallBatchLinear) else p for p in parts]
        weights = [p.weight for p in plain]
        # one matrix; the model's layers keep views of it (no copy stays behind)
        self.weight = weights[0].detach() if len(parts) == 1 else _join(plain, "weight")
        biases = [p.bias for p in plain]
        self.bias = None
        if any(b is not None for b in biases):
            self.bias = torch.cat(
                [
                    b.detach() if b is not None else w.new_zeros(w.shape[0])
                    for b, w in zip(biases, weights)
                ]
            )
        self.packed = _packed(self.weight) if pack else None
        self.rows, self.kind = 0, None
        low = [p for p in parts if isinstance(p, SmallBatchLinear)]
        # torch packs 4-bit weights in blocks of 64 output rows: packed parts join into the packing
        # of the joined weights only when every part but the last fills whole blocks
        joinable = all(p.qweight.shape[0] % 64 == 0 for p in low[:-1] if p.kind == "int4")
        if len(low) == len(parts) and len({p.kind for p in low}) == 1 and joinable:
            self.rows, self.kind = min(p.rows for p in low), low[0].kind
            if len(parts) == 1:
                self.qweight, self.scales = low[0].qweight, low[0].scales
            else:  # fused too; the layers keep views of the weights
                self.qweight = _join(low, "qweight")
                if self.kind == "int4":  # scales are (groups, out, 2): a slice would be strided,
                    self.scales = torch.cat([p.scales for p in low], 1)  # so this one is a copy
                else:
                    self.scales = _join(low, "scales")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # x: (rows, in)
        if x.shape[0] <= self.rows:
            out = small_matmul(x, self.kind, self.qweight, self.scales)
            return out if self.bias is None else out + self.bias
        if self.packed is not None:
            return _PACKED_LINEAR(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


class FastDecoder:
    """`decoder(ids, pos, layers, mask)`: last-position logits of a one-token decode step."""

    def __init__(self, model, pack: bool = True) -> None:
        cfg = model.config
        inner = model.model
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.hidden = (cfg.hidden_size,)
        self.embed = inner.embed_tokens.weight
        self.dtype = self.embed.dtype
        self.rotary = inner.rotary_emb
        self.norm = inner.norm.weight.detach().float()  # norms run on the fp32 residual stream
        self.layers = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm.weight.detach().float(),
                    _Linear([att.q_proj, att.k_proj, att.v_proj], pack),
                    _Linear([att.o_proj], pack),
                    layer.post_attention_layernorm.weight.detach().float(),
                    _Linear([mlp.gate_proj, mlp.up_proj], pack),
                    _Linear([mlp.down_proj], pack),
                )
            )
        self.head = _Linear([model.lm_head], pack)
        self.scale = self.head_dim**-0.5
        # rotate_half as a matrix: x @ R == cat(-x[half:], x[:half])
        d, half = self.head_dim, self.head_dim // 2
        rot = torch.zeros(d, d)
        rot[torch.arange(half) + half, torch.arange(half)] = -1.0
        rot[torch.arange(half), torch.arange(half) + half] = 1.0
        self.rotate_half = rot

    def linears(self) -> list[_Linear]:
        """Every (fused) linear map: each layer's q/k/v, o, gate/up and down, then the head."""
        maps = [lin for layer in self.layers for lin in layer if isinstance(lin, _Linear)]
        return maps + [self.head]

    @property
    def packed(self) -> bool:
        """Whether bf16 layers read weights packed in oneDNN's layout (`_packed`)."""
        return any(lin.packed is not None for lin in self.linears())

    @classmethod
    def build(cls, model, pack: bool = True) -> FastDecoder | None:
        """A decoder for `model`, or None when it is not a plain Llama/Qwen2 model on the CPU."""
        cfg = model.config
        try:
            inner = model.model
            linears = [model.lm_head]
            for layer in inner.layers:
                att, mlp = layer.self_attn, layer.mlp
                linears += [att.q_proj, att.k_proj, att.v_proj, att.o_proj]
                linears += [mlp.gate_proj, mlp.up_proj, mlp.down_proj]
                if type(layer.input_layernorm).__name__ not in ("LlamaRMSNorm", "Qwen2RMSNorm"):
                    return None
        except AttributeError:
            return None
        if cfg.model_type not in SUPPORTED or getattr(cfg, "hidden_act", "") != "silu":
            return None
        if getattr(cfg, "use_sliding_window", False):
            return None
        for lin in linears:
            plain = lin.linear if isinstance(lin, SmallBatchLinear) else lin
            if type(plain) is not nn.Linear:  # bitsandbytes layers and the like
                return None
            if plain.weight.device.type != "cpu" or plain.weight.dtype not in (
                torch.float32,
                torch.bfloat16,
            ):
                return None
        return cls(model, pack)

    def _rotation(self, pos: torch.Tensor) -> torch.Tensor:
        """Per row, the rotary embedding at its position as one (d, d) matrix:
        x @ M == x * cos + rotate_half(x) * sin (the model's rotary module gives cos and sin)."""
        b, d = pos.shape[0], self.head_dim
        cos, sin = self.rotary(self.norm, pos)  # (b, 1, d) in fp32
        return torch.diag_embed(cos.view(b, d)) + self.rotate_half * sin.view(b, 1, d)

    def _cascade(self, q, keys, values, bias, prefix) -> torch.Tensor:
        """Attention over a prefix shared by every row (read once) and each row's own suffix.

        The rows' queries are the query positions of one attention over the shared prefix; the
        two partial attentions are merged by their log-sum-exps (softmax over the union).
        """
        b, kv, g, d = q.shape
        kp, vp = prefix  # (kv, P, d)
        qp = q.transpose(0, 1).reshape(1, kv, b * g, d)
        out_p, lse_p = _FLASH(qp, kp[None], vp[None], 0.0, False, attn_mask=None, scale=self.scale)
        out_s, lse_s = _FLASH(q, keys, values, 0.0, False, attn_mask=bias, scale=self.scale)
        # weight of the prefix part: e^lse_p / (e^lse_p + e^lse_s), in place on lse_s
        w = lse_s.neg_().add_(lse_p.view(kv, b, g).transpose(0, 1)).sigmoid_()
        out_p = out_p.view(kv, b, g, d).transpose(0, 1)
        return torch.lerp(out_s, out_p, w.unsqueeze(-1).to(out_s.dtype))

    def __call__(self, ids, pos, layers, mask: torch.Tensor | None) -> torch.Tensor:
        # (locals and in-place ops: fewer allocations and lookups per layer, the same bits)
        b = ids.shape[0]
        h_, kv, d = self.heads, self.kv_heads, self.head_dim
        g, hk = h_ // kv, h_ + kv
        dtype, hidden, eps, rms_norm = self.dtype, self.hidden, self.eps, F.rms_norm
        h = F.embedding(ids[:, 0], self.embed).float()  # the residual stream, (b, hidden), fp32
        rotation = self._rotation(pos)  # (b, d, d)
        bias = None
        if mask is not None and not bool(mask.all()):  # left padding (0) -> -inf before softmax
            bias = torch.zeros(mask.shape, dtype=dtype)
            bias.masked_fill_(mask == 0, float("-inf"))
            bias = bias.view(b, 1, 1, -1)
        for (n1, qkv, o, n2, gu, down), cache in zip(self.layers, layers):
            x = qkv(rms_norm(h, hidden, n1, eps).to(dtype)).view(b, hk + kv, d)
            # the rotary embedding of q and k, in fp32 (faster than bf16 at small batches)
            qk = torch.bmm(x[:, :hk].float(), rotation).to(dtype)
            # grouped-query heads: each kv head's g query heads act as g query positions
            q = qk[:, :h_].view(b, kv, g, d)
            keys, values = cache.update(qk[:, h_:].view(b, kv, 1, d), x[:, hk:].view(b, kv, 1, d))
            prefix = getattr(cache, "prefix", None)  # views of the slab: (b, kv, T, d)
            if prefix is None:
                a = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=bias, scale=self.scale
                )
            else:
                a = self._cascade(q, keys, values, bias, prefix)
            h.add_(o(a.view(b, h_ * d)))
            gate, up = gu(rms_norm(h, hidden, n2, eps).to(dtype)).chunk(2, -1)
            h.add_(down(F.silu(gate, inplace=True) * up))
        return self.head(rms_norm(h, hidden, self.norm, eps).to(dtype))[:, None]
