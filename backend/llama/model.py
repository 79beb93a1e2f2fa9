"""A GGUF model loaded in llama.cpp: its weights, tokenizer and the one context its users share.

The step engine (backend/llama/engine.py) and a model judge (backend/verifiers/judge.py) may use
the same loaded model, one after the other under its lock: they share its context, so its KV cache
is allocated once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backend.llama import native
from backend.llama.sequences import Sequences
from backend.llama.tokenizer import GGUFTokenizer

JUDGE_CELLS = 1024  # a judge reads a few prompts of a few hundred tokens at a time


class GGUFModel:
    """A GGUF file in llama.cpp (see the module docstring)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.native = native.Model(self.path)
        self.tokenizer = GGUFTokenizer(self.native)
        self.threads = threads or native.default_threads()
        self.kv = Sequences(self.native, self.threads)
        self._reader: Sequences | None = None  # a judge's context, made on first use
        self.lock = threading.RLock()

    @property
    def quantization(self) -> str:
        """The file's quantization as llama.cpp names it ("Q4_K - Medium")."""
        desc = self.native.describe()  # "qwen2 1B Q4_K - Medium"
        return desc.split(" ", 2)[-1] if desc.count(" ") >= 2 else desc

    def last_logits(self, prompts: Sequence[list[int]], tokens: Sequence[int]) -> np.ndarray:
        """For each prompt (token ids), the logits of `tokens` at its last position: an array of
        shape (len(prompts), len(tokens)).

        Prompts are read in a small context of their own (a judge's), several per llama_decode
        call, each group from an empty cache: the cells a prompt lies in, and so its logits,
        then never depend on what was read before (see `Sequences.reset`)."""
        out = np.zeros((len(prompts), len(tokens)), dtype=np.float32)
        with self.lock:
            if self._reader is None:
                self._reader = Sequences(self.native, self.threads, cells=JUDGE_CELLS)
            kv = self._reader
            pending = list(enumerate(prompts))
            while pending:
                group = [pending.pop(0)]
                size = len(group[0][1])
                while pending and size + len(pending[0][1]) <= kv.batch.capacity:
                    group.append(pending.pop(0))
                    size += len(group[-1][1])
                kv.reset()
                if not kv.fits(size):
                    kv.grow(size)
                self._read_group(kv, group, tokens, out)
        return out

    @staticmethod
    def _read_group(kv: Sequences, group, tokens: Sequence[int], out: np.ndarray) -> None:
        seqs = [kv.new() for _ in group]
        if len(group) == 1:  # alone (perhaps longer than a batch): read in chunks
            at = kv.prefill(seqs[0], group[0][1], 0, hidden=False)
            out[group[0][0]] = kv.ctx.logits(at)[list(tokens)]
            return
        entries = [
            (t, pos, seq, pos == len(ids) - 1)
            for (_, ids), seq in zip(group, seqs)
            for pos, t in enumerate(ids)
        ]
        places = [i for i, e in zip(kv.decode(entries, hidden=False), entries) if e[3]]
        for (row, _), at in zip(group, places):
            out[row] = kv.ctx.logits(at)[list(tokens)]

    def close(self) -> None:
        self.kv.close()
        if self._reader is not None:
            self._reader.close()
        self.native.close()
