"""Weights on the device: from_pretrained arguments per precision, and the memory check before loading.

Precisions: fp32, bf16, int8 (bitsandbytes LLM.int8) and nf4 (bitsandbytes 4-bit NormalFloat with
bf16 compute and double quantization, the usual GPU setting; bitsandbytes >= 0.46.1 runs it on
the CPU too, so tests exercise the same path). Quantization replaces the decoder's Linear layers;
embeddings, the LM head and any module named in `keep_full` (a PRM's score or value head) stay
bf16, because a reward head read through 4-bit weights would distort every score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import BitsAndBytesConfig

from backend.catalog import WEIGHT_PRECISIONS, catalog

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Beyond the weights: CUDA context, activations, the KV cache of a search (a few hundred MB for
# small models at our batch sizes); a load that leaves less than this free is refused.
HEADROOM_BYTES = 1 << 30


class InsufficientMemoryError(ValueError):
    """The models asked for do not fit in the free GPU memory (a ValueError: the app shows it)."""


def weights_kwargs(precision: str, device: str, keep_full: Sequence[str] = ()) -> dict[str, Any]:
    """from_pretrained keyword arguments for a resolved precision (transformers 5: `dtype=`).

    `keep_full` lists module names that bitsandbytes must leave unquantized, besides "lm_head"
    (naming any replaces bitsandbytes' default skip list, so lm_head is always added back).
    """
    if precision in _DTYPES:
        return {"dtype": _DTYPES[precision], "device_map": device}
    skip = ["lm_head", *keep_full] if keep_full else None
    if precision == "nf4":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
            llm_int8_skip_modules=skip,
        )
    elif precision == "int8":
        quant = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        raise ValueError(
            f"precision must be one of {', '.join(WEIGHT_PRECISIONS)}; got {precision!r}"
        )
    # unquantized modules (embeddings, heads) load in bf16, as the memory estimate assumes
    return {"quantization_config": quant, "dtype": torch.bfloat16, "device_map": device}


def check_fits(
    wanted: Sequence[tuple[str, str]],
    device: str,
    *,
    reclaimable: int = 0,
    headroom: int = HEADROOM_BYTES,
) -> None:
    """Refuse to load catalog models `wanted` ((name, resolved precision) pairs) that cannot fit.

    Compares the catalog's weight estimates plus `headroom` with the free CUDA memory plus
    `reclaimable` (bytes held by loaded models that the load will release). Does nothing on the
    CPU, where the operating system, not this check, has the last word.
    """
    if device != "cuda" or not wanted:
        return
    free, total = torch.cuda.mem_get_info()
    parts = [(name, prec, catalog().get(name).memory_bytes(prec)) for name, prec in wanted]
    need = sum(b for _, _, b in parts) + headroom
    have = free + reclaimable
    if need <= have:
        return
    listed = " + ".join(f"{n} at {p} (~{b / 1e9:.1f} GB)" for n, p, b in parts)
    raise InsufficientMemoryError(
        f"Not enough GPU memory: {listed} plus ~{headroom / 1e9:.1f} GB working room need "
        f"~{need / 1e9:.1f} GB, but only {have / 1e9:.1f} GB of {total / 1e9:.1f} GB can be "
        "freed for them. Choose a smaller policy or PRM, or a lower precision (nf4 < int8 < bf16)."
    )
