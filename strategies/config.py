"""The configuration of one search run, validated with messages a user understands."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from strategies.info import STRATEGY_INFO, STRATEGY_NAMES

Aggregation = Literal["last", "min", "prod"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def _setting(
    default: Any, help: str, bounds: tuple[float, float] | None = None, slider_max: float = 0
) -> Any:
    """A config field with its one-line meaning, which the CLI's --help and the API's docs show,
    and for a number the range a config accepts (`bounds`, checked in `__post_init__`; the
    explorer's slider spans it, up to this machine's cap (backend/limits.py) or `slider_max`
    where the range is wider than a slider can show)."""
    metadata = {"help": help, "bounds": bounds, "slider_max": slider_max}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SearchConfig:
    """One search's settings. These defaults are the library's (the reference work's scale);
    the app starts from its own preset of them (app/request.py: PRESET)."""

    strategy: str = _setting("beam_search", "the search strategy (strategies/info.py)")
    n: int = _setting(
        8, "budget N: samples (voting, Best-of-N) or beams (beam search, DVTS)", (1, 4096)
    )
    beam_width: int = _setting(
        4, "M: beam search keeps N/M beams, DVTS runs N/M subtrees", (1, 4096)
    )
    max_iterations: int = _setting(
        40, "iterations (one step each); the last writes to the end", (1, 1000)
    )
    aggregation: Aggregation = _setting("last", "a solution's score from its steps' scores")
    filter_duplicates: bool = _setting(
        False, "beam search: prune candidates identical to a kept one"
    )
    lookahead: int = _setting(
        2,
        "lookahead search: greedy rollout steps k before scoring (k=0: plain beam search)",
        (0, 100),
        slider_max=8,
    )
    temperature: float = _setting(0.8, "sampling temperature (0: greedy)", (0.0, 5.0))
    # (0, 1]: 0 itself keeps no token
    top_p: float = _setting(
        1.0, "nucleus sampling: keep the tokens of this probability mass", (0.0, 1.0)
    )
    max_step_tokens: int = _setting(256, "a step is cut after this many tokens", (1, 32768))
    max_solution_tokens: int = _setting(
        2048, "a whole solution is cut after this many tokens", (1, 131072)
    )
    seed: int = _setting(0, "random seed of the sampling", (0, 2**63 - 1))

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(
                f"Unknown strategy {_shown(self.strategy)}; choose one of "
                f"{', '.join(STRATEGY_NAMES)}."
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"Unknown aggregation {_shown(self.aggregation)}; choose one of "
                f"{', '.join(AGGREGATIONS)}."
            )
        for f in fields(self):
            if f.type == "int":
                _check_int(f.name, getattr(self, f.name), *f.metadata["bounds"])
        if STRATEGY_INFO[self.strategy].uses_beam_width:
            if self.beam_width > self.n:
                raise ValueError(
                    f"Beam width M={self.beam_width} is larger than the budget N={self.n}."
                )
            if self.n % self.beam_width:
                raise ValueError(
                    f"N={self.n} must be divisible by the beam width M={self.beam_width} "
                    f"(try N={self.n - self.n % self.beam_width or self.beam_width})."
                )
        if not isinstance(self.filter_duplicates, bool):
            raise ValueError(
                f"filter_duplicates must be true or false, got {_shown(self.filter_duplicates)}."
            )
        # No float(): it raises TypeError on None or a list, OverflowError on a huge int, and
        # would let the string "0.5" through into the sampler. NaN fails the range checks.
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {_shown(value)}.")
        lo, hi = bounds("temperature")
        if not (lo <= self.temperature <= hi):
            raise ValueError(
                f"Temperature must be between {lo:g} and {hi:g}, got {_shown(self.temperature)}."
            )
        lo, hi = bounds("top_p")
        if not (lo < self.top_p <= hi):
            raise ValueError(f"top_p must be in ({lo:g}, {hi:g}], got {_shown(self.top_p)}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        """Build from a plain dict (a JSON config); unknown keys are an error, not ignored."""
        if not isinstance(d, dict):
            raise ValueError(f"A config must be a JSON object, got {_shown(d)}.")
        known = {f.name for f in fields(cls)}
        # keys shown as text: a dict from Python may have keys that are no strings (sorted and
        # join would raise TypeError on them)
        unknown = sorted(k if isinstance(k, str) else _shown(k) for k in set(d) - known)
        if unknown:
            hint = " (the iteration limit is max_iterations)" if "max_steps" in unknown else ""
            raise ValueError(f"Unknown config field(s): {', '.join(unknown)}{hint}.")
        return cls(**d)


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {_shown(value)}.")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {_shown(value)}.")


def _shown(value: Any, limit: int = 60) -> str:
    """`value` as a message shows it: its repr, cut to `limit` characters (a pasted novel or a
    number of 5000 digits, which Python refuses to print at all, must not become the message)."""
    try:
        text = repr(value)
    except ValueError:  # int -> str past sys.get_int_max_str_digits()
        return "a number too long to print"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounds(name: str) -> tuple[float, float]:
    """The range setting `name` accepts (for top_p, its low end is left out)."""
    return next(f.metadata["bounds"] for f in fields(SearchConfig) if f.name == name)


def slider_max(name: str) -> float:
    """How far the explorer's slider for `name` goes when no machine cap applies."""
    f = next(f for f in fields(SearchConfig) if f.name == name)
    return f.metadata["slider_max"] or f.metadata["bounds"][1]


def field_help() -> dict[str, str]:
    """Each setting's one-line meaning, by field name, in field order."""
    return {f.name: f.metadata["help"] for f in fields(SearchConfig)}
