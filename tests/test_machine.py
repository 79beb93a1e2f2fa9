"""backend/machine.py: "auto" on a CPU follows what the CPU can do, and measures where in doubt."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend import machine
from backend.machine import CpuInfo, decide

AVX2_ONLY = dict(model="AMD EPYC 7B13", arch="x86_64", capability="AVX2", flags=("avx2", "fma"))
AMX = dict(
    model="Intel(R) Xeon(R) Platinum 8481C", arch="x86_64", capability="AVX512",
    flags=("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"),
)  # fmt: skip


def cpu(onednn_bf16: bool, limits=(), **kw) -> CpuInfo:
    return CpuInfo(onednn_bf16=onednn_bf16, limits=tuple(limits), **kw)


def no_probe():
    raise AssertionError("the flags decide: nothing to measure")


def test_a_cpu_without_bf16_instructions_runs_fp32_with_low_bit_small_batches():
    choice = decide(cpu(False, **AVX2_ONLY), no_probe)
    assert (choice.precision, choice.small_batch) == ("fp32", True)
    assert choice.reason == "fp32: this CPU has no bf16 instructions"


def test_amx_runs_bf16_and_the_avx2_variables_turn_it_back_to_fp32():
    assert decide(cpu(True, **AMX), no_probe).reason == "bf16: this CPU has AMX-BF16"
    held = cpu(
        False, [("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")],
        **(AMX | {"capability": "AVX2"}),
    )  # fmt: skip
    choice = decide(held, no_probe)
    assert choice.precision == "fp32" and "ONEDNN_MAX_CPU_ISA=AVX2" in choice.reason


def test_unknown_flags_a_held_back_amx_and_other_cpus_are_measured():
    """No /proc/cpuinfo (not Linux), AMX that ONEDNN_MAX_CPU_ISA keeps oneDNN from, an ARM CPU:
    the flags do not settle it, so the probe does (ARM reads no low-bit copies: unmeasured)."""
    calls = []

    def probe():
        calls.append(1)
        return {"fp32": 1.0, "bf16": 2.0}

    unknown = cpu(True, **(AMX | {"flags": ()}), flags_known=False)
    assert decide(unknown, probe).reason.startswith("fp32: measured faster on this CPU (its flags")
    held = cpu(True, [("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")], **AMX)
    assert "AMX held back by ONEDNN_MAX_CPU_ISA" in decide(held, probe).reason
    arm = decide(
        cpu(True, model="Neoverse-V1", arch="aarch64", capability="DEFAULT", flags=()), probe
    )
    assert arm.precision == "fp32" and not arm.small_batch and "(aarch64)" in arm.reason
    assert calls == [1, 1, 1]


@pytest.mark.parametrize("bf16_ms, want", [(0.5, "bf16"), (9.0, "fp32")])
def test_in_doubt_a_probe_decides(bf16_ms, want):
    """bf16 instructions without AMX (a Zen 4, a Cooper Lake): the faster of the two, measured."""
    zen4 = cpu(True, **(AMX | {"flags": ("avx2", "avx512f", "avx512_bf16")}))
    calls = []
    choice = decide(zen4, lambda: calls.append(1) or {"fp32": 1.0, "bf16": bf16_ms})
    assert calls == [1] and choice.precision == want and choice.probed
    assert choice.reason.startswith(f"{want}: measured faster on this CPU (no AMX)")


def test_the_probe_runs_once_and_is_kept_beside_the_converted_models(tmp_path, monkeypatch):
    zen4 = cpu(True, **(AMX | {"flags": ("avx2", "avx512f", "avx512_bf16")}))
    monkeypatch.setattr(machine, "cpu_info", lambda: zen4)
    runs = []
    monkeypatch.setattr(
        machine, "probe_matmuls", lambda: runs.append(1) or {"fp32": 2.0, "bf16": 1.0}
    )
    monkeypatch.setattr(machine, "_chosen", {})
    first = machine.cpu_choice(tmp_path)
    assert first.precision == "bf16" and runs == [1]
    stored = json.loads((tmp_path / machine.PROBE_FILE).read_text())
    assert list(stored.values()) == [{"fp32": 2.0, "bf16": 1.0}]
    assert machine.cpu_choice(tmp_path) is first  # one answer per process
    machine._chosen.clear()  # a later start: reads the file, pays nothing
    assert machine.cpu_choice(tmp_path) == first and runs == [1]
    # another CPU (or the same one held to AVX2) is another key: measured again
    held = dataclasses.replace(zen4, limits=(("ATEN_CPU_CAPABILITY", "avx2"),))
    monkeypatch.setattr(machine, "cpu_info", lambda: held)
    machine.cpu_choice(tmp_path)
    assert runs == [1, 1] and len(json.loads((tmp_path / machine.PROBE_FILE).read_text())) == 2
    (tmp_path / machine.PROBE_FILE).write_text("{not json")  # damaged: measured again
    machine._chosen.clear()
    machine.cpu_choice(tmp_path)
    assert runs == [1, 1, 1]


def test_the_real_probe_measures_both_precisions():
    ms = machine.probe_matmuls(repeats=2)
    assert set(ms) == {"fp32", "bf16"} and all(v > 0 for v in ms.values())


def test_this_cpu_is_read_and_the_avx2_variables_are_seen():
    """The variables that make any x86 machine play a smaller one reach the choice: torch's
    kernels drop to AVX2, oneDNN runs no bf16, and "auto" is fp32."""
    info = machine.cpu_info()
    assert info.capability and info.model and info.arch
    if info.arch != "x86_64" or "avx2" not in info.flags:
        pytest.skip("needs an x86 CPU with AVX2")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = (
        "import json; from backend import machine; i = machine.cpu_info(); "
        "c = machine.decide(i); "
        "print(json.dumps([i.capability, i.onednn_bf16, c.precision, c.reason]))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=root
    )
    capability, onednn_bf16, precision, reason = json.loads(out.stdout.strip().splitlines()[-1])
    assert capability == "AVX2" and onednn_bf16 is False
    assert precision == "fp32" and reason.startswith("fp32:")
