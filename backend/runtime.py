"""The runtime: a loaded policy wrapped as a step generator, plus the chosen PRM, shared per process.

The app and the CLI ask for a runtime by names (policy, PRM, precision); models load once per
process and are reused by every run and every user. Runs differ only in their `SearchConfig`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from backend import machine
from backend.arithmetic_prm import ArithmeticPRM
from backend.catalog import catalog
from backend.engine import StepEngine
from backend.models import (
    LoadedModel,
    choose_precision,
    get_policy,
    resolve_device,
    resolve_precision,
)
from backend.prm_models import get_prm, release_prm
from backend.prompts import PromptTemplate
from backend.quantization import check_runtime_fits
from backend.self_judge import SelfJudgePRM
from strategies.protocols import StepScorer

log = logging.getLogger(__name__)

# From assets/models.json: the offline PRMs, "none" (no verifier: majority voting only), then
# the hub PRMs (downloaded on first use).
HUB_PRM_NAMES = catalog().hub_prm_names()
PRM_NAMES = (*(n for n in catalog().names("prm") if n not in HUB_PRM_NAMES), "none", *HUB_PRM_NAMES)
PRM_LABELS = {n: catalog().get(n).label for n in catalog().names("prm")} | {"none": "No verifier"}
POLICY_PROMPTS = {n: catalog().get(n).prompt for n in catalog().names("policy")}
DEFAULT_POLICY = "smollm2-135m"
DEFAULT_PRM = "arithmetic"


@dataclass(eq=False)  # holds models and the engine's tensors: compared by identity
class Runtime:
    policy: LoadedModel
    generator: StepEngine
    scorer: StepScorer | None
    prm_name: str
    prompt_name: str
    precision_reason: str = ""  # why the policy runs at its precision, for the precision asked

    def meta(self) -> dict[str, Any]:
        """What a run's JSON records about the models it ran on."""
        p = self.policy
        return {
            "model": p.name,
            "model_source": p.source,
            "prm": self.prm_name,
            "prompt": self.prompt_name,
            "device": p.device,
            "precision": p.precision,
            "precision_reason": self.precision_reason or p.precision_reason,
            "cpu": machine.cpu_info().summary() if p.device == "cpu" else None,
            "small_batch_int8": p.small_batch_int8,
            "small_batch_int4": p.small_batch_int4,
            # decode steps through backend/fast_decode.py (prompt shared by all rows)
            "lean_decoder": getattr(self.generator, "fast", None) is not None,
            # its bf16 layers read weights packed once in oneDNN's layout
            "packed_weights": bool(getattr(getattr(self.generator, "fast", None), "packed", False)),
            "threads": p.threads,
        }


_lock = threading.Lock()
_runtimes: dict[tuple[str, str, str], Runtime] = {}


def get_runtime(
    policy: str = DEFAULT_POLICY, prm: str = DEFAULT_PRM, precision: str = "auto"
) -> Runtime:
    """The shared runtime for these names, loading what is missing (thread-safe)."""
    if prm not in PRM_NAMES:
        raise ValueError(f"Unknown PRM {prm!r}; choose one of {', '.join(PRM_NAMES)}.")
    key = (policy, prm, precision)
    with _lock:
        if key in _runtimes:
            return _runtimes[key]
        device = resolve_device("auto")
        check_runtime_fits(policy, prm, precision, device)  # before anything is freed or loaded
        # another policy (or precision) or hub PRM is about to replace the loaded one: let it be freed
        for k in [k for k in _runtimes if k[0] != policy or k[2] != precision
                  or (k[1] != prm and k[1] in HUB_PRM_NAMES)]:  # fmt: skip
            del _runtimes[k]
        prm_key = None
        if prm in HUB_PRM_NAMES:
            prm_key = (prm, resolve_precision(precision, device, prm), device)
        release_prm(keep=prm_key)  # free the old PRM before the policy loads
        loaded = get_policy(policy, precision)
        # one engine per loaded policy: every PRM choice shares its prefix cache
        engine = next(
            (r.generator for r in _runtimes.values() if r.policy is loaded),
            None,
        )
        prompt_name = POLICY_PROMPTS.get(policy, "reference")
        if engine is None:
            engine = StepEngine(loaded.model, loaded.tokenizer, PromptTemplate.load(prompt_name))
        scorer: StepScorer | None
        if prm == "arithmetic":
            scorer = ArithmeticPRM()
        elif prm == "self_judge":
            scorer = SelfJudgePRM(loaded.model, loaded.tokenizer)
        elif prm_key is not None:
            scorer = get_prm(*prm_key)
        else:
            scorer = None
        reason = choose_precision(precision, device, policy)[2]
        runtime = Runtime(loaded, engine, scorer, prm, prompt_name, reason)
        _runtimes[key] = runtime
        return runtime
