"""The configuration of one search run, validated with messages a user understands."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

StrategyName = Literal[
    "majority_vote",
    "best_of_n",
    "weighted_best_of_n",
    "beam_search",
    "dvts",
    "lookahead",
    "compute_optimal",
]
Aggregation = Literal["last", "min", "prod"]
STRATEGY_NAMES: tuple[str, ...] = get_args(StrategyName)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
# Strategies that split the budget N into groups of beam width M.
USES_BEAM_WIDTH = ("beam_search", "dvts", "lookahead")


@dataclass(frozen=True)
class SearchConfig:
    strategy: StrategyName = "beam_search"
    n: int = 8  # budget: samples (majority / Best-of-N) or beams (beam search, DVTS)
    beam_width: int = 4  # M: beam search keeps N/M beams; DVTS runs N/M subtrees of M candidates
    max_iterations: int = 40  # one step per iteration; the last one writes to the end
    aggregation: Aggregation = "last"  # how a solution's step scores become one score
    filter_duplicates: bool = False  # beam search: prune candidates identical to a kept one
    lookahead: int = 2  # lookahead search: greedy rollout steps before scoring a candidate
    temperature: float = 0.8
    top_p: float = 1.0
    max_step_tokens: int = 256
    max_solution_tokens: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(
                f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGY_NAMES)}."
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"Unknown aggregation {self.aggregation!r}; choose one of {', '.join(AGGREGATIONS)}."
            )
        _check_int("n", self.n, 1, 4096)
        _check_int("beam_width", self.beam_width, 1, 4096)
        _check_int("max_iterations", self.max_iterations, 1, 1000)
        _check_int("lookahead", self.lookahead, 0, 100)
        _check_int("max_step_tokens", self.max_step_tokens, 1, 32768)
        _check_int("max_solution_tokens", self.max_solution_tokens, 1, 131072)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        if self.strategy in USES_BEAM_WIDTH:
            if self.beam_width > self.n:
                raise ValueError(
                    f"Beam width M={self.beam_width} is larger than the budget N={self.n}."
                )
            if self.n % self.beam_width:
                raise ValueError(
                    f"N={self.n} must be divisible by the beam width M={self.beam_width} "
                    f"(try N={self.n - self.n % self.beam_width or self.beam_width})."
                )
        if self.strategy == "lookahead" and self.lookahead < 1:
            raise ValueError("Lookahead search needs at least 1 lookahead step (k >= 1).")
        if not (0.0 <= float(self.temperature) <= 5.0):
            raise ValueError(f"Temperature must be between 0 and 5, got {self.temperature}.")
        if not (0.0 < float(self.top_p) <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        """Build from a plain dict (a JSON config); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown config field(s): {', '.join(unknown)}.")
        return cls(**d)


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}.")
