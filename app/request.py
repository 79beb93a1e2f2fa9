"""What a run asks for: the prompt, its search settings, the models, and what to show beside it.

`PRESET` is the app's one preset of settings: the explorer's widgets start from it, and a `/run`
call or a CLI run that leaves a setting out gets the same value, so all three run the same search
for the same prompt. The request is checked as it is made, in words a user understands; the run
itself is app/service.py's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from backend.catalog import NO_PRM, PRECISIONS, catalog, models_cache_dir
from backend.loading import gguf_parts
from strategies.config import AGGREGATIONS, SearchConfig
from strategies.info import STRATEGY_NAMES, check_scorer

# The library's defaults are the reference work's scale; on two CPU cores a teaching demo wants
# answers in seconds: a small budget, few iterations, and token caps a small model's steps fit in
# (a longer step is rambling, and the longest step of an iteration sets everyone's wait; the last
# iteration writes each solution to its end, which without a cap runs to 2048 tokens at batch 1).
# A step cut at the cap ends its solution unanswered: 96 tokens cut 1 in 20 of the 0.5B's
# solutions (64 cut 1 in 5; SmolLM2's steps rarely pass 53; docs/models.md).
PRESET = SearchConfig(
    n=4, beam_width=2, max_iterations=10, max_step_tokens=96, max_solution_tokens=512
)
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class RunRequest:
    """What to run: the prompt, its search settings, the models, and what to show beside it."""

    prompt: str
    config: SearchConfig = PRESET
    model: str = field(default_factory=lambda: starting_model())
    prm: str = field(default_factory=lambda: catalog().default_prm)
    precision: str = "auto"
    expected: str | None = None  # the answer the user expects, shown beside the votes
    compare: bool = True  # also run majority voting at the same N, for comparison
    # with compare: the bigger model that answers alone ("auto": the catalog's for the policy)
    bigger: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("Please type a question.")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"The question is too long ({len(self.prompt)} > {MAX_PROMPT_CHARS} characters)."
            )
        models = catalog()
        if not isinstance(self.model, str) or not isinstance(self.prm, str):
            raise ValueError("model and prm are names from the catalog.")
        models.get(self.model, "policy")  # a ValueError listing the policies
        if self.prm not in models.prm_choices():
            raise ValueError(
                f"Unknown PRM {self.prm!r}; choose one of {', '.join(models.prm_choices())}."
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown precision {str(self.precision)[:40]!r}; choose one of "
                f"{', '.join(PRECISIONS)}."
            )
        if not isinstance(self.compare, bool):
            raise ValueError(f"compare must be true or false, got {str(self.compare)[:40]!r}.")
        if isinstance(self.expected, (int, float)) and not isinstance(self.expected, bool):
            object.__setattr__(self, "expected", str(self.expected))  # a JSON number: its text
        if self.expected is not None and not isinstance(self.expected, str):
            raise ValueError(f'expected must be text, e.g. "12", got {str(self.expected)[:40]!r}.')
        check_scorer(self.config.strategy, self.prm != NO_PRM)
        choices = bigger_choices()
        if self.bigger not in choices:
            raise ValueError(
                f"Unknown bigger model {self.bigger!r}; choose one of {', '.join(choices)}."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRequest:
        """A request from one JSON object: a prompt, and any of the request's and the
        `SearchConfig`'s fields; what it leaves out comes from `PRESET` and the catalog. Unknown
        keys are an error, so a typo never silently runs the defaults."""
        if not isinstance(d, dict):
            raise ValueError("The request must be a JSON object.")
        d = dict(d)
        own = {k: d.pop(k) for k in REQUEST_FIELDS if k in d}
        if "prompt" not in own:
            raise ValueError("The request needs a 'prompt'.")
        return cls(config=SearchConfig.from_dict({**PRESET.to_dict(), **d}), **own)

    def with_strategy(self, strategy: str) -> RunRequest:
        return dataclasses.replace(self, config=dataclasses.replace(self.config, strategy=strategy))

    def as_majority(self, n: int) -> RunRequest:
        """Majority voting over `n` samples with this request's other settings."""
        config = dataclasses.replace(self.config, strategy="majority_vote", n=n)
        return dataclasses.replace(self, config=config)

    @property
    def compares(self) -> bool:
        """Whether majority voting runs beside the search (not beside itself)."""
        return self.compare and self.config.strategy != "majority_vote"

    @property
    def bigger_model(self) -> str | None:
        """The policy that answers alone beside the search, or None (no comparison asked, none
        in the catalog for this policy, or it is the policy itself)."""
        if not self.compares or self.bigger == NO_BIGGER:
            return None
        name = catalog().get(self.model, "policy").bigger if self.bigger == "auto" else self.bigger
        return name if name != self.model else None


NO_BIGGER = "none"


def starting_model() -> str:
    """The policy a request that names none runs on: `$THINKTREE_MODEL`, else the catalog's
    showcase policy (Qwen2.5-Coder 0.5B: the one that shows the thesis, docs/models.md) where it is
    installed, else the embedded default policy (a `setup.sh --small`, a Space without the parts)."""
    models = catalog()
    wanted = os.environ.get("THINKTREE_MODEL")
    if wanted:
        return models.get(wanted, "policy").name  # a ValueError listing the policies
    show = models.showcase_policy
    if show and gguf_parts.installed(show, models_cache_dir()):
        return show
    return models.default_policy


def bigger_choices() -> tuple[str, ...]:
    return ("auto", NO_BIGGER, *catalog().names("policy"))


REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(RunRequest) if f.name != "config")
REQUEST_HELP = {
    "prompt": "the (math) question to solve",
    "model": "the policy model, a name from assets/models.json",
    "prm": f"the PRM (step judge), a name from assets/models.json, or {NO_PRM!r}",
    "precision": "for a hub model: auto (nf4 on a GPU, fp32 on a CPU), fp32, bf16, int8 or nf4; "
    "an offline model runs at its GGUF file's own (auto)",
    "expected": "the answer you expect, marked right or wrong beside the votes",
    "compare": "also run majority voting at the same N, for comparison",
    "bigger": "with compare: the bigger model that answers alone, greedy and by majority at equal "
    "FLOPs ('auto': the catalog's for the model, 'none': skip it)",
}


def setting_choices() -> dict[str, tuple[str, ...]]:
    """The settings that take one of a list of names, with the names (for the CLI's choices and
    the API's typed schema)."""
    models = catalog()
    return {
        "strategy": STRATEGY_NAMES,
        "aggregation": AGGREGATIONS,
        "model": models.names("policy"),
        "prm": models.prm_choices(),
        "precision": PRECISIONS,
        "bigger": bigger_choices(),
    }


def preset_values() -> dict[str, Any]:
    """Every setting of a request that gives only a prompt, flat: the explorer's widget values
    before a user touches them (the prompt and the expected answer empty)."""
    request = RunRequest(prompt="?")
    own = {f: getattr(request, f) for f in REQUEST_FIELDS} | {"prompt": "", "expected": ""}
    return {"prompt": ""} | request.config.to_dict() | own
