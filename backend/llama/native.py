"""The one adapter over llama.cpp's C API (llama-cpp-python's ctypes bindings): model, context,
batch and sampler as small Python objects that free what they hold.

Everything else in the project speaks the step-generator protocol; only this module touches
ctypes. `llama_cpp` is imported on first use, so the app starts (and says what is missing) on a
machine where the build failed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUILD_HINT = (
    "run `bash scripts/setup.sh`, which builds llama-cpp-python from source (it needs cmake and "
    "a C++ compiler: on Debian, `apt-get install cmake g++`)"
)
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml's WARN and ERROR: worth passing on
# warnings that say nothing here: the hidden states are asked for without pooling on purpose
_QUIET = (b"pooling_type",)
LOAD_INTO_MEMORY = 0  # llama_load_mode's LLAMA_LOAD_MODE_NONE


class LlamaUnavailable(RuntimeError):
    """llama-cpp-python is not installed or its library does not load here."""


class DecodeError(RuntimeError):
    """llama_decode refused a batch (`code` 1: no room left in the KV cache)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"llama_decode returned {code}")


_lock = threading.Lock()
_callback: Any = None  # the log callback, kept alive for as long as the library holds it


@cache
def lib() -> Any:
    """The low-level bindings, the backend initialised once, llama.cpp's log sent to `logging`."""
    global _callback
    try:
        import llama_cpp.llama_cpp as ll
    except (ImportError, OSError) as err:  # not built, or its library does not load
        raise LlamaUnavailable(
            f"llama.cpp is not available ({type(err).__name__}: {err}): {BUILD_HINT}."
        ) from err
    with _lock:
        ll.llama_backend_init()

        @ll.llama_log_callback
        def forward(level: int, text: bytes, _user: Any) -> None:
            if level in _LEVELS and text.strip() and not any(q in text for q in _QUIET):
                log.log(_LEVELS[level], "llama.cpp: %s", text.decode("utf-8", "replace").strip())

        _callback = forward
        ll.llama_log_set(_callback, ctypes.c_void_p(0))
    return ll


def system_info() -> str:
    """What the loaded library was built for: its CPU features ("AVX2 = 1 | AVX512 = 0 ...")."""
    return lib().llama_print_system_info().decode().strip()


def cpu_build() -> str:
    """The vector instructions the loaded llama.cpp library was built for: "llama.cpp for AVX2
    FMA AVX512 ..." (an AVX2-only build names no AVX512)."""
    features = []
    for part in system_info().split("|"):
        key, _, value = part.rpartition(":")[2].partition("=")
        key = key.strip()
        if value.strip() == "1" and key.startswith(("AVX2", "AVX512", "AVX_VNNI", "AMX", "FMA")):
            features.append(key)
    return "llama.cpp for " + " ".join(features)


def cpu_name() -> str:
    """This machine's CPU as /proc/cpuinfo names it (its architecture where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.machine() or "unknown CPU"


def default_threads() -> int:
    """Threads per decode: `$THINKTREE_THREADS`, else every core this process may use."""
    wanted = os.environ.get("THINKTREE_THREADS")
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise ValueError(f"THINKTREE_THREADS must be a positive integer, got {wanted!r}")
        return int(wanted)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Handle:
    """Something llama.cpp allocated: freed by `close`, or when Python forgets it."""

    def close(self) -> None:
        raise NotImplementedError

    def __del__(self) -> None:
        # at interpreter exit the library (and contextlib) may be unloaded already
        try:  # noqa: SIM105
            self.close()
        except Exception:
            pass


class Model(_Handle):
    """A GGUF file's weights and vocabulary."""

    def __init__(self, path: Path) -> None:
        ll = lib()
        params = ll.llama_model_default_params()
        # read into memory, not mapped: llama.cpp repacks most of a Q4_K model's weights for its
        # CPU kernels, and the mapped file would stay resident beside the repacked copy (0.6 GB
        # more for the 1.5B)
        params.load_mode = LOAD_INTO_MEMORY
        self.path = Path(path)
        self.ptr = ll.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise ValueError(
                f"llama.cpp could not read the GGUF file {path} (damaged or truncated?)"
            )
        self.vocab = ll.llama_model_get_vocab(self.ptr)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_embd = ll.llama_model_n_embd(self.ptr)
        self.n_layer = ll.llama_model_n_layer(self.ptr)
        self._pieces: dict[int, bytes] = {}

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = lib().llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def describe(self) -> str:
        buf = ctypes.create_string_buffer(256)
        lib().llama_model_desc(self.ptr, buf, len(buf))
        return buf.value.decode()

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens written in it (`<|im_start|>`) are read as such."""
        data = text.encode()
        cap = len(data) + 8
        out = (ctypes.c_int32 * cap)()
        n = lib().llama_tokenize(self.vocab, data, len(data), out, cap, False, True)
        if n < 0:  # more tokens than bytes cannot happen, but the API allows it
            cap = -n
            out = (ctypes.c_int32 * cap)()
            n = lib().llama_tokenize(self.vocab, data, len(data), out, cap, False, True)
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        """The bytes token `token` stands for; control tokens (EOS, chat markers) as none."""
        got = self._pieces.get(token)
        if got is None:
            buf = ctypes.create_string_buffer(64)
            n = lib().llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lib().llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            got = self._pieces[token] = buf.raw[:n]
        return got

    def special_text(self, token: int) -> str:
        """A token as written in text, special tokens included ("<|im_end|>")."""
        return lib().llama_vocab_get_text(self.vocab, token).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        """Whether the token ends generation (EOS, end of turn) by the file's own metadata."""
        return bool(lib().llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.ptr:
            lib().llama_model_free(self.ptr)
            self.ptr = None


class Context(_Handle):
    """One llama.cpp context over `model`: a unified KV cache of `n_ctx` cells shared by up to
    `n_seq` sequences, with the final hidden state of every output token beside its logits."""

    def __init__(
        self, model: Model, n_ctx: int, n_seq: int, n_batch: int, n_ubatch: int, threads: int
    ) -> None:
        ll = lib()
        params = ll.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch  # tokens per llama_decode call
        params.n_ubatch = n_ubatch  # tokens per forward pass (its buffers grow with it)
        # the output buffer holds logits for n_seq outputs at least: it grows with n_seq
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = threads
        # one buffer for all sequences: a fork shares its parent's cells instead of copying them
        params.kv_unified = True
        # the hidden state of each output token (llama_get_embeddings_ith), beside the logits
        params.embeddings = True
        params.pooling_type = ll.LLAMA_POOLING_TYPE_NONE
        params.no_perf = True
        self.model = model
        self.ptr = ll.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise MemoryError(f"llama.cpp could not create a context of {n_ctx} cells")
        self._embeddings = True
        self.memory = ll.llama_get_memory(self.ptr)
        self.n_ctx = ll.llama_n_ctx(self.ptr)
        self.n_seq = n_seq
        self.n_batch = n_batch

    def set_embeddings(self, on: bool) -> None:
        """Whether decodes give hidden states. While they do, llama.cpp makes every token of a
        batch an output (logits over the whole vocabulary for each): off while reading a prompt."""
        if on != self._embeddings:
            lib().llama_set_embeddings(self.ptr, on)
            self._embeddings = on

    def decode(self, batch: Batch) -> None:
        code = lib().llama_decode(self.ptr, batch.raw)
        if code != 0:
            raise DecodeError(code)

    def logits(self, i: int) -> np.ndarray:
        """The i-th output's logits over the vocabulary (a view, valid until the next decode)."""
        ptr = lib().llama_get_logits_ith(self.ptr, i)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def hidden(self, i: int) -> np.ndarray:
        """The i-th output's final (normed) hidden state, a copy."""
        ptr = lib().llama_get_embeddings_ith(self.ptr, i)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_embd,)).copy()

    def seq_cp(self, src: int, dst: int) -> None:
        lib().llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def seq_rm(self, seq: int) -> None:
        lib().llama_memory_seq_rm(self.memory, seq, -1, -1)

    def clear(self) -> None:
        lib().llama_memory_clear(self.memory, True)

    def seq_state(self, seq: int) -> bytes:
        """A sequence's cells (positions, keys, values) as bytes."""
        ll = lib()
        size = ll.llama_state_seq_get_size(self.ptr, seq)
        buf = (ctypes.c_uint8 * size)()
        return bytes(buf[: ll.llama_state_seq_get_data(self.ptr, buf, size, seq)])

    def set_seq_state(self, data: bytes, seq: int) -> None:
        """Write `seq_state`'s bytes back as sequence `seq`, in the first free cells."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if not lib().llama_state_seq_set_data(self.ptr, buf, len(data), seq):
            raise MemoryError("no room in the KV cache to restore a sequence")

    def close(self) -> None:
        if self.ptr:
            lib().llama_free(self.ptr)
            self.ptr = None


class Batch(_Handle):
    """A `llama_batch` of up to `capacity` tokens, each in one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = lib().llama_batch_init(capacity, 0, 1)
        self.n = 0

    def clear(self) -> None:
        self.n = 0
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, output: bool) -> int:
        """Append a token; returns its index (where its logits are read when `output`)."""
        i = self.n
        raw = self.raw
        raw.token[i] = token
        raw.pos[i] = pos
        raw.n_seq_id[i] = 1
        raw.seq_id[i][0] = seq
        raw.logits[i] = output
        self.n = raw.n_tokens = i + 1
        return i

    def close(self) -> None:
        if self.raw is not None:
            lib().llama_batch_free(self.raw)
            self.raw = None


class Sampler(_Handle):
    """llama.cpp's sampler chain for one row: greedy, or temperature + top-p + a seeded draw."""

    def __init__(self, temperature: float, top_p: float, seed: int) -> None:
        ll = lib()
        self.ptr = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if temperature <= 0:
            ll.llama_sampler_chain_add(self.ptr, ll.llama_sampler_init_greedy())
        else:
            # temperature before the nucleus, as transformers orders them: the nucleus is taken
            # from the tempered distribution
            ll.llama_sampler_chain_add(self.ptr, ll.llama_sampler_init_temp(temperature))
            if top_p < 1.0:
                ll.llama_sampler_chain_add(self.ptr, ll.llama_sampler_init_top_p(top_p, 1))
            ll.llama_sampler_chain_add(self.ptr, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Context, i: int) -> int:
        """The next token from the i-th output of the context's last decode."""
        return lib().llama_sampler_sample(self.ptr, ctx.ptr, i)

    def close(self) -> None:
        if self.ptr:
            lib().llama_sampler_free(self.ptr)
            self.ptr = None
