"""One run, from a plain request to a stream of trees: shared by the web app, its API and the CLI."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from strategies.config import SearchConfig
from strategies.registry import search
from strategies.tree import SearchTree

MAX_PROMPT_CHARS = 2000
REQUEST_KEYS = ("prompt", "model", "prm", "precision", "expected")


@dataclass(frozen=True)
class RunRequest:
    prompt: str
    config: SearchConfig = field(default_factory=SearchConfig)
    model: str = "smollm2-135m"
    prm: str = "arithmetic"
    precision: str = "auto"
    expected: str | None = None  # the answer the user expects, shown beside the votes

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("Please type a question.")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"The question is too long ({len(self.prompt)} > {MAX_PROMPT_CHARS} characters)."
            )
        if self.prm == "none" and self.config.strategy != "majority_vote":
            raise ValueError(
                f"{self.config.strategy} needs a PRM; choose one or use majority_vote."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRequest:
        """A request from one JSON object: prompt, strategy, n and optional parameters.

        Keys of `SearchConfig` go to the config (`max_steps` is accepted for `max_iterations`);
        unknown keys are an error, so a typo never silently runs the defaults.
        """
        if not isinstance(d, dict):
            raise ValueError("The request must be a JSON object.")
        d = dict(d)
        if "max_steps" in d:
            d["max_iterations"] = d.pop("max_steps")
        own = {k: d.pop(k) for k in REQUEST_KEYS if k in d}
        if "prompt" not in own:
            raise ValueError("The request needs a 'prompt'.")
        return cls(config=SearchConfig.from_dict(d), **own)

    def with_strategy(self, strategy: str) -> RunRequest:
        return dataclasses.replace(self, config=dataclasses.replace(self.config, strategy=strategy))


def stream_run(request: RunRequest) -> Iterator[SearchTree]:
    """Load (or reuse) the models and stream the run's tree, its meta filled in."""
    from backend.runtime import get_runtime  # the only import that pulls in torch

    runtime = get_runtime(request.model, request.prm, request.precision)
    meta = runtime.meta()
    if request.expected:
        meta["expected"] = request.expected
    for tree in search(request.prompt, request.config, runtime.generator, runtime.scorer):
        tree.meta.update(meta)
        yield tree


def run_to_end(request: RunRequest) -> SearchTree:
    (tree,) = deque(stream_run(request), maxlen=1)
    return tree
