"""The engine's bookkeeping: rows the model has read, steps written ahead, a batch's rows, stats."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from strategies.protocols import GeneratedStep, Sampling

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape (heads, T, dim)


# Bookkeeping that holds tensors compares by identity (eq=False): a list's `remove`, `in` or
# `index` would otherwise compare two such objects field by field, and torch refuses to say
# whether two tensors are equal as a whole ("Boolean value of Tensor ... is ambiguous").
@dataclass(eq=False)
class RowState:
    """A partial solution the model has read: token ids (last one pending) and their KV."""

    ids: list[int]
    kv: KV  # covers ids[:-1]
    prompt_len: int  # how many of the ids are the prompt (the rest is the solution so far)
    used: int = 0  # the call that last produced or used it (for eviction)

    def layer_kv(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Layer i's keys and values for all of ids[:-1], or None."""
        return self.kv[i] if self.kv else None


@dataclass
class EngineStats:
    """Where the engine's time went (cumulative); benchmarks read it."""

    calls: int = 0
    decode_s: float = 0.0  # batched decoding loops, forward passes and sampling included
    decode_forwards: int = 0  # batched one-token forward passes
    forward_s: float = 0.0  # of decode_s: inside the model's forward
    forward_rows: int = 0  # rows summed over the decode forwards (mean batch = rows / forwards)
    decode_tokens: int = 0  # tokens of the steps returned (prefetched ones included)
    speculative_tokens: int = 0  # tokens written ahead for the next call
    copied_rows: int = 0  # rows added to write more continuations of a likely survivor ahead
    two_ahead_tokens: int = 0  # of speculative_tokens: written for the call after the next one
    prefetch_hits: int = 0  # next steps that started from a prefetch
    prefill_s: float = 0.0  # prompts and foreign text read at batch 1
    prefill_tokens: int = 0
    assemble_s: float = 0.0  # gathering cached rows into a batch


@dataclass(eq=False)
class Prefetch:
    """A next step a row started (or finished) writing speculatively, for one partial solution."""

    state: RowState  # after the speculative tokens (finished step: after the step, or empty)
    base_ids: list[int]  # the partial solution's ids, before the speculative tokens
    tokens: list[int]  # the speculative tokens of the next step
    step: GeneratedStep | None  # the whole next step, when it ended while speculating
    sampling: tuple  # only a call that samples the same way may use it
    to_end: bool = False  # written to the end (for a call that writes to the end only)


@dataclass(eq=False)
class Row:
    """One row of a decoding batch."""

    out: int | None  # which result this row answers; None while it writes speculatively
    key: tuple[str, ...]  # the partial solution the current step continues
    start: RowState  # the state loaded into the batch
    base_ids: list[int]  # ids before the current step
    new: list[int]  # the current step's tokens so far
    offset: int = 0  # where this row's KV starts in the slab (left padding)
    ahead: int = 0  # writing for the next call (1) or the one after it (2); 0: this call's row
    to_end: bool = False  # writing ahead to the end (for a call that will write to the end)


def sampling_key(s: Sampling) -> tuple:
    """What a step written ahead must have been sampled with to serve a call sampling with `s`."""
    return (s.greedy, 0.0 if s.greedy else s.temperature, s.top_p, s.max_step_tokens)
