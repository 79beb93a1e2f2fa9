"""What this machine's CPU can do, and the precision "auto" runs a policy in on it.

Machines of one kind differ: one has a Xeon with AMX-BF16, where oneDNN's bf16 matmuls beat fp32,
the next an EPYC with AVX2 only, where bf16 matmuls are emulated and much slower than fp32. So the
CPU's "auto" is decided here, per machine, from what the CPU can do:
- its instruction flags (`/proc/cpuinfo`), torch's kernel capability
  (`torch.backends.cpu.get_cpu_capability()`) and whether oneDNN runs bf16
  (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`), both of which follow the variables that make
  any x86 machine play a smaller one (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`);
- where those leave a doubt (bf16 instructions without AMX, a capability held below the flags, a
  CPU that is not x86), a short timed probe of fp32 against bf16 matmuls at the sizes the engine
  runs, kept in a file beside the converted models so that later starts pay nothing.
Whichever wins above the small batches, small batches on x86 read the low-bit copies of the
weights (backend/kernels/small_batch.py: 4-bit up to 8 rows, int8 up to 4), whose kernels take bf16
activations fast on AVX2 too.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch
from torch.nn import functional as F

log = logging.getLogger(__name__)

# the flags that decide the CPU's precision, in the words of /proc/cpuinfo
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx_ne_convert")
LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")  # variables that hold the kernels back
PROBE_FILE = "cpu_precision.json"
PROBE_VERSION = 1
# the probe's matmuls: a decode step of 16 rows and a prefill chunk, through weights the size of
# a small model's MLP (the embedded model's are 576 x 1536, a 1.5B model's 1536 x 8960)
PROBE_ROWS = (16, 64)
PROBE_SHAPE = (1024, 4096)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as the precision choice sees it."""

    model: str  # its model name
    arch: str  # platform.machine()
    capability: str  # torch's kernel level: DEFAULT, AVX2, AVX512, ...
    flags: tuple[str, ...]  # those of FLAGS it has
    onednn_bf16: bool  # oneDNN runs bf16 here (within ONEDNN_MAX_CPU_ISA)
    limits: tuple[tuple[str, str], ...]  # the variables of LIMITS that are set
    flags_known: bool = True  # False: no /proc/cpuinfo to read them from (not Linux)

    def summary(self) -> str:
        flags = ", ".join(self.flags) or "none of " + ", ".join(FLAGS)
        held = "".join(f"; {k}={v}" for k, v in self.limits)
        return f"{self.model} ({self.arch}; torch kernels {self.capability}; {flags}{held})"

    def as_json(self) -> dict:
        return asdict(self) | {"limits": dict(self.limits)}


def _cpuinfo() -> tuple[str, set[str] | None]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            name = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name, flags


@cache
def cpu_info() -> CpuInfo:
    """This process's CPU (read once: the variables of LIMITS count at torch's start anyway)."""
    name, flags = _cpuinfo()
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        onednn_bf16 = bool(probe()) if probe is not None else False
    except RuntimeError:
        onednn_bf16 = False
    return CpuInfo(
        model=name,
        arch=platform.machine(),
        capability=torch.backends.cpu.get_cpu_capability(),
        flags=tuple(f for f in FLAGS if f in (flags or ())),
        onednn_bf16=onednn_bf16 and torch.backends.mkldnn.is_available(),
        limits=tuple((k, os.environ[k]) for k in LIMITS if os.environ.get(k)),
        flags_known=flags is not None,
    )


@dataclass(frozen=True)
class CpuChoice:
    """What "auto" runs a policy in on this CPU, and why."""

    # "fp32" or "bf16": the weights, and the precision of batches above the small ones
    precision: str
    small_batch: (
        bool  # batches of at most 8 rows read low-bit copies (backend/kernels/small_batch.py)
    )
    reason: str  # for people: "fp32: this CPU has no bf16 instructions"
    probed: dict | None = None  # the probe's ms per precision, when one decided


def _x86(info: CpuInfo) -> bool:
    return info.arch.lower() in ("x86_64", "amd64", "i686", "i386")


def _amx_allowed(info: CpuInfo) -> bool:
    """Whether ONEDNN_MAX_CPU_ISA (if set) still lets oneDNN use AMX."""
    isa = dict(info.limits).get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return isa in ("ALL", "DEFAULT") or "AMX" in isa


def decide(info: CpuInfo, probe=None) -> CpuChoice:
    """The choice for `info`; `probe()` -> {"fp32": ms, "bf16": ms} is called only in doubt.

    Batches of at most 8 rows read the low-bit copies on x86, where their kernels were measured
    (AVX-512 and AVX2); elsewhere they are not used."""
    x86 = _x86(info)
    bf16_flags = {"avx512_bf16", "amx_bf16", "avx_ne_convert"} & set(info.flags)
    held = ", ".join(f"{k}={v}" for k, v in info.limits)
    if x86 and info.flags_known and not bf16_flags:
        return CpuChoice("fp32", True, "fp32: this CPU has no bf16 instructions")
    if x86 and not info.onednn_bf16:
        return CpuChoice("fp32", True, f"fp32: oneDNN runs no bf16 here ({held or 'no support'})")
    native = info.capability not in ("DEFAULT", "AVX2")  # torch's own bf16 kernels
    if x86 and "amx_bf16" in bf16_flags and native and _amx_allowed(info):
        return CpuChoice("bf16", True, "bf16: this CPU has AMX-BF16")
    if probe is None:  # in doubt and nothing to measure with: the safe side
        return CpuChoice("fp32", x86, "fp32: bf16 was not measured on this CPU")
    ms = probe()
    pick = "bf16" if ms["bf16"] < ms["fp32"] else "fp32"
    if not x86:
        why = info.arch
    elif not info.flags_known:
        why = "its flags unknown"
    elif not native:
        why = f"torch kernels {info.capability}"
    else:
        why = "no AMX" if "amx_bf16" not in bf16_flags else f"AMX held back by {held}"
    return CpuChoice(
        pick,
        x86,
        f"{pick}: measured faster on this CPU ({why}): {ms['bf16']:.2f} ms in bf16 against "
        f"{ms['fp32']:.2f} ms in fp32",
        ms,
    )


def probe_matmuls(repeats: int = 7) -> dict[str, float]:
    """Milliseconds of fp32 against bf16 linear layers (oneDNN-packed where it can) over
    PROBE_ROWS rows, best of `repeats` rounds, interleaved, at torch's thread count now (a
    fraction of a second). Best of several rounds, so a neighbour that is busy for a while
    skews no side."""
    from backend.kernels import fast_decode  # the engine's own bf16 path: packed once where it can

    gen = torch.Generator().manual_seed(0)
    out, inp = PROBE_SHAPE[1], PROBE_SHAPE[0]
    w32 = torch.randn(out, inp, generator=gen) * 0.02
    w16 = w32.to(torch.bfloat16)
    packed = fast_decode._packed(w16)
    xs = {rows: torch.randn(rows, inp, generator=gen) for rows in PROBE_ROWS}

    def bf16(x):
        if packed is not None:
            return fast_decode._PACKED_LINEAR(x, packed, None, "none", [], "")
        return F.linear(x, w16)

    halves = [x.to(torch.bfloat16) for x in xs.values()]
    runs = {
        "fp32": [lambda x=x: F.linear(x, w32) for x in xs.values()],
        "bf16": [lambda x=x: bf16(x) for x in halves],
    }
    best: dict[str, list[float]] = {k: [float("inf")] * len(PROBE_ROWS) for k in runs}
    with torch.inference_mode():
        for fns in runs.values():  # warm up kernels and packing
            for fn in fns:
                fn()
        for _ in range(repeats):
            for key, fns in runs.items():
                for i, fn in enumerate(fns):
                    start = time.perf_counter()
                    fn()
                    best[key][i] = min(best[key][i], time.perf_counter() - start)
    return {k: round(1000 * statistics.fsum(v), 3) for k, v in best.items()}


def _signature(info: CpuInfo) -> str:
    return json.dumps([PROBE_VERSION, info.as_json(), torch.__version__], sort_keys=True)


_lock = threading.Lock()
_chosen: dict[tuple[str, Path | None], CpuChoice] = {}  # one answer per process, however asked


def cpu_choice(cache_dir: Path | None = None) -> CpuChoice:
    """The CPU's "auto" for this machine; a probe's result is kept in `cache_dir`/PROBE_FILE (the
    converted models' folder), keyed by the CPU, the variables of LIMITS and torch's version, and
    every call of a process gets the same answer (a model's cache key and its load agree)."""
    info = cpu_info()
    path = cache_dir / PROBE_FILE if cache_dir is not None else None
    with _lock:
        key = (_signature(info), path)
        if key not in _chosen:
            _chosen[key] = _choose(info, path)
        return _chosen[key]


def _choose(info: CpuInfo, path: Path | None) -> CpuChoice:
    """`decide` with a probe that reads and writes the file at `path` (under cpu_choice's lock)."""
    stored = _read(path)
    key = _signature(info)

    def probe() -> dict[str, float]:
        if key in stored:
            return stored[key]
        ms = probe_matmuls()
        log.info("precision probe on %s: %s", info.summary(), ms)
        if path is not None:
            _write(path, stored | {key: ms})
        return ms

    return decide(info, probe)


def _read(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # damaged: measure again (and rewrite it)
        return {}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:  # a read-only cache: the next start measures again
        log.warning("could not keep the precision probe in %s", path, exc_info=True)
    finally:
        tmp.unlink(missing_ok=True)
