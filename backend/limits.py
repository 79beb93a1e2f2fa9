"""What one run may ask of this machine: caps on N, steps and tokens, and a time limit.

A public Space or a classroom machine is shared: one request for N=256 with 2048-token steps on
two CPU cores would hold everyone's queue for an hour. The caps scale with the device (a GPU
writes tens of times faster than two CPU cores) and with the policy's size (the 1.5B writes a
third as fast as the 0.5B), so every model gets about the same worst-case run time. The operator
of a machine sets other values with environment variables (docs/operations.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from backend.catalog import catalog

# the caps of a model of REFERENCE_PARAMS on each device; a bigger model gets a share of N and
# of the run's tokens in proportion to its size (never less than 1/8)
REFERENCE_PARAMS = {"cpu": 0.5e9, "cuda": 8e9}
BASE = {
    "cpu": dict(
        max_n=64,
        max_iterations=40,
        max_step_tokens=256,
        max_solution_tokens=2048,
        max_run_tokens=40_000,
        time_limit_s=300.0,
    ),
    "cuda": dict(
        max_n=256,
        max_iterations=100,
        max_step_tokens=512,
        max_solution_tokens=4096,
        max_run_tokens=400_000,
        time_limit_s=300.0,
    ),
}
ENV = {
    "time_limit_s": "THINKTREE_TIME_LIMIT_S",
    "max_n": "THINKTREE_MAX_N",
    "max_run_tokens": "THINKTREE_MAX_RUN_TOKENS",
}


@dataclass(frozen=True)
class Limits:
    """The caps one run of one policy gets on one device."""

    max_n: int
    max_iterations: int  # steps per solution
    max_step_tokens: int
    max_solution_tokens: int
    max_run_tokens: int  # tokens the policy writes in one run, all solutions together
    time_limit_s: float  # a run still going then ends, its tree kept, marked "time limit"
    device: str = "cpu"
    model: str = ""

    def check(
        self, n: int, max_iterations: int, max_step_tokens: int, max_solution_tokens: int
    ) -> None:
        """ValueError naming the first setting over its cap, and the cap."""
        where = f"for {self.model} on {'a GPU' if self.device == 'cuda' else 'a CPU'}"
        asked = {
            "N": (n, self.max_n),
            "max_iterations": (max_iterations, self.max_iterations),
            "max_step_tokens": (max_step_tokens, self.max_step_tokens),
            "max_solution_tokens": (max_solution_tokens, self.max_solution_tokens),
        }
        for name, (value, cap) in asked.items():
            if value > cap:
                raise ValueError(
                    f"{name}={value} is more than this machine runs {where} (at most {cap}): "
                    f"choose a smaller {name}."
                )


def limits_for(model: str, device: str) -> Limits:
    """The caps for policy `model` on `device` ("cpu" or "cuda"), with the operator's overrides."""
    kind = "cuda" if device == "cuda" else "cpu"
    base = dict(BASE[kind])
    share = min(1.0, max(1 / 8, REFERENCE_PARAMS[kind] / catalog().get(model, "policy").params))
    base["max_n"] = _power_of_two_at_most(base["max_n"] * share)
    base["max_run_tokens"] = int(base["max_run_tokens"] * share)
    for key, var in ENV.items():
        raw = os.environ.get(var)
        if raw:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{var} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ValueError(f"{var} must be positive, got {raw!r}")
            base[key] = value if key == "time_limit_s" else int(value)
    return Limits(**base, device=kind, model=model)


def _power_of_two_at_most(x: float) -> int:
    p = 1
    while p * 2 <= x:
        p *= 2
    return p
