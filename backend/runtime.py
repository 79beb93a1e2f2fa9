"""The model pool: the one process-wide cache of loaded models, and the runtimes built on them.

The app, the API and the CLI ask for a runtime by names (policy, PRM, precision): a loaded policy
wrapped as a step generator, plus the chosen PRM. Models load once per process and are shared by
every run and every user; runs differ only in their `SearchConfig`. The pool holds at most one
policy (with its step engine, whose prefix cache every PRM choice shares) and at most one hub PRM,
so GPU memory never holds two of either, and at most one second causal LM: the model judge of a
"judge" PRM and the bigger model the explorer compares with (one model when both are the 1.5B).
Before it loads anything it checks that the new models fit beside what it keeps. Everything here
happens under one lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from backend.catalog import NO_PRM, catalog
from backend.loading.failures import (
    check_installed,
    free,
    loading,
)
from backend.loading.policy import (
    LoadedModel,
    choose_precision,
    load_policy,
    resolve_device,
)
from backend.prompts import PromptTemplate
from backend.verifiers.arithmetic import ArithmeticPRM
from backend.verifiers.judge import CheckedJudgePRM, JudgePRM
from strategies.protocols import StepGenerator, StepScorer

log = logging.getLogger(__name__)


PolicyKey = tuple[str, str, str]  # name, resolved precision, device
PrmKey = tuple[str, str, str]  # name, resolved precision, device


def make_engine(loaded: LoadedModel, prompt: str) -> StepGenerator:
    """The step engine over a loaded policy: llama.cpp's for a GGUF file, else transformers'."""
    template = PromptTemplate.load(prompt)
    if loaded.source == "gguf":
        from backend.llama.engine import LlamaStepEngine

        return LlamaStepEngine(loaded.model, template)
    from backend.engine import StepEngine

    return StepEngine(loaded.model, loaded.tokenizer, template)


@dataclass(eq=False)  # holds models and the engine's state: compared by identity
class Runtime:
    policy: LoadedModel
    generator: StepGenerator
    scorer: StepScorer | None
    prm_name: str
    prompt_name: str
    precision_reason: str = ""  # why the policy runs at its precision, for the precision asked

    def meta(self) -> dict[str, Any]:
        """What a run's JSON records about the models it ran on."""
        from backend.llama.native import cpu_name

        p = self.policy
        models = catalog()
        # what reading one token costs the verifier, for FLOPs (2 per parameter): a model
        # verifier reads one position's logits per prompt, so its embedding / LM head
        # (params_16bit) is left out per token
        prm_params = 0
        if self.prm_name != NO_PRM:
            verifier = models.get(p.name if self.prm_name == "self_judge" else self.prm_name)
            prm_params = verifier.params - verifier.params_16bit
        return {
            "model": p.name,
            "model_source": p.source,
            "params": models.get(p.name, "policy").params,
            "prm": self.prm_name,
            "prm_params": prm_params,
            "prompt": self.prompt_name,
            "engine": p.engine,
            "device": p.device,
            "precision": p.precision,
            "precision_reason": p.precision_reason or self.precision_reason,
            "cpu": cpu_name() if p.device == "cpu" else None,
            "threads": p.threads,
        }


class ModelPool:
    """The loaded policy (with its engine), the loaded hub PRM and the runtimes over them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._policy: tuple[PolicyKey, LoadedModel] | None = None
        self._engine: StepGenerator | None = None  # over the loaded policy, built on first use
        self._prm: tuple[PrmKey, StepScorer] | None = None
        # the second causal LM (a model judge, the bigger model) and its engine, built on first use
        self._second: tuple[PolicyKey, LoadedModel] | None = None
        self._second_engine: StepGenerator | None = None
        self._runtimes: dict[tuple[str, str, str], Runtime] = {}

    # ---- runtimes -----------------------------------------------------------------------------
    def runtime(
        self, policy: str | None = None, prm: str | None = None, precision: str = "auto"
    ) -> Runtime:
        """The runtime for these names (defaults: the catalog's), loading what is missing."""
        models = catalog()
        policy = policy or models.default_policy
        prm = prm or models.default_prm
        if prm not in models.prm_choices():
            raise ValueError(
                f"Unknown PRM {prm!r}; choose one of {', '.join(models.prm_choices())}."
            )
        prompt = models.get(policy, "policy").prompt  # a ValueError listing the policies
        key = (policy, prm, precision)
        with self._lock:
            if key in self._runtimes:
                return self._runtimes[key]
            device = resolve_device("auto")
            resolved, reason = choose_precision(precision, device, policy)
            policy_key = self._key(policy, precision, device)
            prm_key = None
            if prm in models.hub_prm_names():
                prm_key = (prm, choose_precision(precision, device, prm)[0], device)
            entry = models.get(prm, "prm") if prm != NO_PRM else None
            judge_name = entry.judge if entry else None
            judge_key = self._key(judge_name, precision, device) if judge_name else None
            self._check_fits(policy_key, prm_key, judge_key)  # before anything is freed or loaded
            for name in {policy, judge_name} - {None}:
                check_installed(name)
            if self._prm is not None and self._prm[0] != prm_key:
                self._drop_prm()  # the old PRM goes before the policy loads
            held = self._policy
            if judge_key and held and held[0] == judge_key and judge_key != policy_key:
                self._keep_as_second()  # the outgoing policy is the judge asked for: no reload
            loaded = self._load_policy(policy_key, precision)
            if self._engine is None:
                self._engine = make_engine(loaded, prompt)
            scorer: StepScorer | None = None
            if prm == "arithmetic":
                scorer = ArithmeticPRM()
            elif prm == "self_judge":
                scorer = JudgePRM(loaded.model, loaded.tokenizer)
            elif judge_key is not None:
                judge = self._load_second(judge_key, precision)
                scorer = JudgePRM(judge.model, judge.tokenizer, name=prm)
            elif entry and entry.family == "value_head":
                scorer = _value_head(prm, loaded, self._engine)
            elif prm_key is not None:
                scorer = self._load_prm(prm_key)
            if entry and entry.combine:  # the arithmetic checker in front of a model's judgement
                scorer = CheckedJudgePRM(scorer, ArithmeticPRM(), entry.combine, name=prm)
            runtime = Runtime(loaded, self._engine, scorer, prm, prompt, reason)
            self._runtimes[key] = runtime
            return runtime

    def policy(
        self, name: str | None = None, precision: str = "auto", device: str = "auto"
    ) -> LoadedModel:
        """The loaded policy `name` at `precision` on `device`, loading it (and dropping the one
        held, with what was built on it) when it is another."""
        name = name or catalog().default_policy
        with self._lock:
            return self._load_policy(self._key(name, precision, resolve_device(device)), precision)

    def bigger(self, name: str, precision: str = "auto") -> tuple[LoadedModel, StepGenerator]:
        """The policy `name` loaded as the second model (the one the explorer compares a small
        model's search with), and a step engine over it with its own prompt template."""
        models = catalog()
        prompt = models.get(name, "policy").prompt
        device = resolve_device("auto")
        with self._lock:
            key = self._key(name, precision, device)
            held_prm = self._prm[0] if self._prm is not None else None  # kept: not reclaimable
            self._check_fits(self._policy[0] if self._policy else key, held_prm, key)
            check_installed(name)
            loaded = self._load_second(key, precision)
            if self._policy is not None and loaded is self._policy[1]:
                if self._engine is None:  # the bigger model is the loaded policy itself
                    self._engine = make_engine(loaded, prompt)
                return loaded, self._engine
            if self._second_engine is None:
                self._second_engine = make_engine(loaded, prompt)
            return loaded, self._second_engine

    def free_run_memory(self) -> None:
        """Give back what a stopped or failed run left: the engines' partial solutions and
        steps written ahead (their KV caches), and the allocator's free memory."""
        with self._lock:
            for engine in (self._engine, self._second_engine):
                if engine is not None:
                    engine.drop_partials()
        free()

    def release(self) -> None:
        """Drop every model and runtime (they are freed unless a caller still holds one)."""
        with self._lock:
            self._drop_policy()
            self._drop_prm()
            self._drop_second()

    @staticmethod
    def _key(name: str, precision: str, device: str) -> PolicyKey:
        resolved = choose_precision(precision, device, name)[0]
        # a model run from its GGUF file runs on the CPU (llama.cpp), whatever the machine has
        return (name, resolved, "cpu" if resolved == "gguf" else device)

    # ---- loading and dropping, under the lock --------------------------------------------------
    def _load_policy(self, key: PolicyKey, precision: str) -> LoadedModel:
        if self._policy is not None and self._policy[0] == key:
            return self._policy[1]
        self._drop_policy()
        if self._second is not None and self._second[0] == key:  # the judge becomes the policy
            loaded = self._second[1]
            self._second, self._second_engine = None, None
            self._policy = (key, loaded)
            return loaded
        with loading(key[0]):
            loaded = load_policy(key[0], precision, key[2])
        self._policy = (key, loaded)
        return loaded

    def _load_prm(self, key: PrmKey) -> StepScorer:
        if self._prm is not None and self._prm[0] == key:
            return self._prm[1]
        self._drop_prm()
        from backend.loading.prm import load_hub_prm  # transformers: only for a hub PRM

        with loading(key[0]):
            scorer = load_hub_prm(*key)
        self._prm = (key, scorer)
        return scorer

    def _load_second(self, key: PolicyKey, precision: str) -> LoadedModel:
        if self._policy is not None and self._policy[0] == key:
            return self._policy[1]  # the judge or bigger model is the policy: one copy
        if self._second is not None and self._second[0] == key:
            return self._second[1]
        self._drop_second()
        with loading(key[0]):
            loaded = load_policy(key[0], precision, key[2])
        self._second = (key, loaded)
        return loaded

    def _keep_as_second(self) -> None:
        """The loaded policy becomes the second model (what was built on it as a policy goes)."""
        assert self._policy is not None
        self._drop_second()
        self._second, self._policy = self._policy, None
        self._engine, self._runtimes = None, {}

    def _drop_second(self) -> None:
        if self._second is None:
            return
        log.info("releasing %s", self._second[0])
        model = self._second[1].model
        self._runtimes = {
            k: r for k, r in self._runtimes.items() if _judge_model(r.scorer) is not model
        }
        self._second, self._second_engine = None, None
        free()

    def _drop_policy(self) -> None:
        if self._policy is None:
            return
        log.info("releasing %s", self._policy[0])
        self._policy, self._engine, self._runtimes = None, None, {}
        free()

    def _drop_prm(self) -> None:
        if self._prm is None:
            return
        log.info("releasing PRM %s", self._prm[0])
        self._runtimes = {k: r for k, r in self._runtimes.items() if r.scorer is not self._prm[1]}
        self._prm = None
        free()

    def _check_fits(
        self, policy: PolicyKey, prm: PrmKey | None, second: PolicyKey | None = None
    ) -> None:
        """Refuse a policy + PRM pair whose weights cannot fit beside each other on the GPU.

        Counts only what is not loaded yet; a loaded policy or hub PRM that the pair replaces (or,
        for a PRM, no longer needs) counts as memory the loads can reclaim.
        """
        if policy[2] != "cuda":
            return
        wanted: list[tuple[str, str]] = []
        reclaim = 0
        held = self._policy
        if held is None or held[0] != policy:
            wanted.append(policy[:2])
            reclaim += _gpu_bytes(held[1]) if held is not None else 0
        prm_pair = prm[:2] if prm is not None else None
        if self._prm is None or self._prm[0][:2] != prm_pair:  # a PRM to load, or to drop
            if prm_pair is not None:
                wanted.append(prm_pair)
            if self._prm is not None:
                reclaim += _gpu_bytes(self._prm[1])
        held2 = self._second
        if second is not None and second != policy and (held2 is None or held2[0] != second):
            wanted.append(second[:2])
            reclaim += _gpu_bytes(held2[1]) if held2 is not None else 0
        from backend.loading.quantization import check_fits  # on a GPU: torch is there

        check_fits(wanted, "cuda", reclaimable=reclaim)


def _value_head(prm: str, loaded: LoadedModel, engine: StepGenerator) -> StepScorer:
    """The learned verifier: the head trained for this policy's file, over its engine's hidden
    states (a HeadError, a message, for a policy in transformers or without a head)."""
    from backend.loading.policy import gguf_sha256
    from backend.verifiers.value_head import HeadError, ValueHeadPRM, load_head

    if loaded.source != "gguf":
        raise HeadError(
            f"{prm} reads the hidden states llama.cpp keeps while it writes; "
            f"{loaded.name} runs in transformers here: choose another verifier."
        )
    head = load_head(loaded.name, gguf_sha256(loaded.name, loaded.model.path))
    return ValueHeadPRM(engine, head, name=prm)


def _gpu_bytes(held: Any) -> int:
    """GPU memory a loaded model (or hub PRM) frees when dropped: none for one on the CPU."""
    model = held.model
    on_gpu = str(getattr(held, "device", "cuda")).startswith("cuda")
    if not on_gpu or not hasattr(model, "get_memory_footprint"):
        return 0
    return model.get_memory_footprint()


def _judge_model(scorer: StepScorer | None) -> Any:
    judge = getattr(scorer, "judge", scorer)
    return getattr(judge, "model", None)


POOL = ModelPool()


def get_runtime(
    policy: str | None = None, prm: str | None = None, precision: str = "auto"
) -> Runtime:
    """The shared runtime for these names (`POOL.runtime`)."""
    return POOL.runtime(policy, prm, precision)


def get_policy(
    name: str | None = None, precision: str = "auto", device: str = "auto"
) -> LoadedModel:
    """The shared loaded policy (`POOL.policy`), for benchmarks and scripts."""
    return POOL.policy(name, precision, device)
