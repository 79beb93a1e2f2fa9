"""Sampling the next token of every row of a batch: greedy, temperature and nucleus (top_p)."""

from __future__ import annotations

import torch

from strategies.protocols import Sampling

NUCLEUS_TRIES = (64, 1024)  # top-k sizes tried for the nucleus before a full sort


def sample(logits: torch.Tensor, sampling: Sampling, gen: torch.Generator) -> torch.Tensor:
    """Next token per row: argmax when greedy, else temperature + nucleus (top_p) sampling.

    Sampling inverts the cumulative distribution at one uniform draw per row: exact, and much
    faster on a CPU than `torch.multinomial` over a 49k vocabulary. The weights are
    exp((logit - max) / T), unnormalized and computed in place (the uniform is scaled by their
    total instead), which is cheaper than softmax(logits / T) and its cumsum. The nucleus is
    looked for among the top tokens first (`nucleus`), not by sorting the whole vocabulary.
    """
    if sampling.greedy:
        return logits.argmax(-1)
    w = logits.to(torch.float32, copy=True)
    w.sub_(w.amax(-1, keepdim=True)).mul_(1.0 / sampling.temperature).exp_()
    if sampling.top_p < 1.0:
        return nucleus(w, sampling.top_p, gen)
    return invert(w.cumsum_(-1), gen)


def invert(cdf: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds u * total, u uniform in [0, 1):
    index i with probability w_i / total."""
    u = torch.rand(cdf.shape[0], 1, generator=gen, device=cdf.device, dtype=cdf.dtype)
    picked = torch.searchsorted(cdf, u.mul_(cdf[:, -1:]), right=True)
    return picked.clamp_(max=cdf.shape[-1] - 1).squeeze(-1)


def nucleus(w: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """Sample from the smallest set of the most likely tokens whose weight reaches `top_p` of
    the total (the top token always survives), per row of unnormalized weights `w`.

    The set almost always lies within a few dozen tokens, so the top 64 (then 1024) are taken
    first; only a row whose set is larger sorts its whole vocabulary (slow at a 49k vocabulary:
    sorting every row made sampling a large share of a step). Rows are drawn in order, one
    uniform each.
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
