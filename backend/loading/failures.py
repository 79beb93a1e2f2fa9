"""What a model that fails to load says, and giving memory back: load failures become messages
a user can act on (the other models still serve), and what a failed load or a stopped run held is
returned to the system."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from collections.abc import Iterator

from backend.catalog import models_cache_dir
from backend.llama.native import LlamaUnavailable
from backend.loading import gguf_parts
from backend.loading.policy import loads_offline


class ModelLoadError(ValueError):
    """A model that could not be loaded: its files are missing or damaged, or it does not fit
    in memory. A ValueError: the app shows its message, and the other models still serve."""


def is_out_of_memory(err: BaseException | None) -> bool:
    """Whether `err` (or what caused it) is an allocation that failed, on the GPU or the CPU."""
    seen = 0
    while err is not None and seen < 8:
        text = str(err)
        # torch.OutOfMemoryError by name: a llama.cpp-only process never imports torch
        if (
            isinstance(err, MemoryError)
            or type(err).__name__ == "OutOfMemoryError"
            or ("out of memory" in text.lower() or "can't allocate memory" in text)
        ):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


@contextlib.contextmanager
def loading(name: str) -> Iterator[None]:
    """A failed load as a ModelLoadError that says what to do, with what it allocated freed."""
    try:
        yield
    except gguf_parts.ModelNotInstalled:  # says how to install it
        free()
        raise
    except LlamaUnavailable as err:  # the build failed or never ran: says what is missing
        free()
        raise ModelLoadError(f"{name} runs in llama.cpp, which is not built here: {err}") from err
    except Exception as err:  # a damaged file, a hash that does not match, no memory
        free()
        if is_out_of_memory(err):
            raise ModelLoadError(
                f"Out of memory while loading {name}: choose a smaller model or precision "
                "(int8, nf4), or close what else runs here."
            ) from err
        raise ModelLoadError(
            f"Could not load {name} ({type(err).__name__}: {str(err)[:300]}). Its files may be "
            f"damaged: {_repair(name)}"
        ) from err


def _repair(name: str) -> str:
    """How to get a damaged model's files back."""
    if gguf_parts.PartedGGUF.of(name) is not None:  # assembled into the cache from its parts
        path = gguf_parts.gguf_dir(models_cache_dir()) / f"{name}.gguf"
        return f"delete {path} and run `bash scripts/setup.sh` again."
    return "run `bash scripts/setup.sh` again (it reinstalls the model)."


def check_installed(name: str) -> None:
    """Refuse an offline model whose files are not here before anything held is dropped."""
    if not loads_offline(name):
        raise gguf_parts.ModelNotInstalled(
            f"The model {name!r} is not installed: {gguf_parts.INSTALL_HINT}."
        )


def free() -> None:
    gc.collect()
    torch = sys.modules.get("torch")  # only a process that loaded a model through torch
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim()


def _trim() -> None:
    """Hand the C allocator's free pages back to the system (glibc keeps freed small blocks for
    reuse: a stopped run's memory would otherwise stay in the process's resident size)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)
