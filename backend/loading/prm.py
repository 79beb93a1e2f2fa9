"""Loads the hub PRMs with transformers' own model classes: no `trust_remote_code` anywhere.

Two PRMs ship remote code that no longer runs on transformers 5 (Qwen2.5-Math-PRM's calls
`get_usable_length`). Their architectures are a Qwen2 decoder plus a small head, so they are
rebuilt here from `Qwen2Model` and read the hub checkpoint by its own weight names:
- Qwen2.5-Math-PRM: `model.*` + `score.0` Linear(h, h), ReLU, `score.2` Linear(h, 2).
- Skywork-o1-Open-PRM: `model.*` + `v_head.summary` Linear(h, 1) (trl's ValueHead layout); its
  `lm_head.weight` is not needed for scoring and is skipped, saving ~1 GB on the 7B.
RLHFlow's and Math-Shepherd's PRMs are plain Llama / Mistral causal LMs scored through their LM
head. A load whose head weights are missing from the checkpoint fails loudly instead of scoring
with a randomly initialised head. Which loaded PRM is kept is backend/runtime.py's. Every
`from_pretrained` says `trust_remote_code=False`, so a checkpoint that ships code fails to load.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Model, Qwen2PreTrainedModel

from backend import catalog as model_catalog
from backend.loading.quantization import weights_kwargs
from backend.verifiers.hub_prms import FAMILIES, HubPRM

log = logging.getLogger(__name__)


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2.5-Math-PRM: a Qwen2 decoder and a 2-class MLP head read at every `<extra_0>`."""

    head_name = "score"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        h = config.hidden_size
        self.score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        self.post_init()


class ValueHead(nn.Module):
    """trl's ValueHead as Skywork saved it: one Linear(hidden, 1) called `summary` (dropout is
    training-only and left out)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden)


class Qwen2ForValueHeadPRM(Qwen2PreTrainedModel):
    """Skywork-o1-Open-PRM: a Qwen2 decoder and a scalar value head; reward = sigmoid(value)."""

    head_name = "v_head"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.v_head = ValueHead(config.hidden_size)
        self.post_init()


# family -> the class that loads its checkpoint (a causal LM where the PRM reads its LM head)
MODEL_CLASSES: dict[str, Any] = {
    "qwen_prm": Qwen2ForProcessRewardModel,
    "skywork": Qwen2ForValueHeadPRM,
    "rlhflow": AutoModelForCausalLM,
    "math_shepherd": AutoModelForCausalLM,
}


def load_prm_model(family: str, location: str, precision: str, device: str) -> tuple[Any, Any]:
    """Model (eval mode) and tokenizer of a PRM of `family` from a hub id or local folder.

    `precision` is resolved (fp32/bf16/int8/nf4). The PRM head is kept out of quantization.
    Raises RuntimeError when the checkpoint lacks the head's or the decoder's weights.
    """
    if family not in MODEL_CLASSES:
        raise ValueError(f"unknown PRM family {family!r}; known: {', '.join(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[family]
    head = getattr(cls, "head_name", None)
    kwargs = weights_kwargs(precision, device, keep_full=[head] if head else ())
    model, info = cls.from_pretrained(
        location, output_loading_info=True, **kwargs, trust_remote_code=False
    )
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith("lm_head")]
    if missing:
        shown = ", ".join(sorted(missing)[:6])
        raise RuntimeError(
            f"{location} does not look like a {family} PRM checkpoint: {len(missing)} weights "
            f"are missing ({shown}{', ...' if len(missing) > 6 else ''})"
        )
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    return model.eval(), tokenizer


def make_scorer(family: str, model: Any, tokenizer: Any, name: str | None = None) -> HubPRM:
    """Wrap a loaded PRM model as the `StepScorer` of its family."""
    return FAMILIES[family](model, tokenizer, name=name or family)


def load_hub_prm(name: str, precision: str, device: str, location: str | None = None) -> HubPRM:
    """Load catalog PRM `name` at a resolved `precision` on `device` (`location` overrides the
    hub id, e.g. a local copy)."""
    entry = model_catalog.get(name, "prm")
    if not entry.is_hub_prm:
        raise ValueError(f"{name!r} is not a hub PRM (it needs no loading)")
    start = time.perf_counter()
    try:
        model, tokenizer = load_prm_model(entry.family, location or entry.hub_id, precision, device)
    except OSError as err:  # not downloadable: offline, gated, or a wrong path
        raise RuntimeError(
            f"Could not load the PRM {name!r} from {location or entry.hub_id}: it downloads from "
            f"the Hugging Face hub on first use (~{entry.memory_gb()['bf16']:.0f} GB in bf16). "
            f"Cause: {str(err).splitlines()[0]}"
        ) from err
    log.info(
        "loaded PRM %s (%s on %s) in %.1f s", name, precision, device, time.perf_counter() - start
    )
    scorer = make_scorer(entry.family, model, tokenizer, name)
    scorer.precision = precision
    return scorer
