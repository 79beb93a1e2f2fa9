"""Compute-optimal's difficulty estimate and its fitted choice of strategy per difficulty bin.

Snell et al. (2024) bin prompts by "model-predicted" difficulty: the verifier's view of a few
samples, with no gold answer needed. Here the probe is `PROBE_SAMPLES` full solutions scored by
the verifier; its signal is the mean of two numbers in [0, 1], the verifier's mean final score
and the agreement of the samples (the share in the biggest answer group), so a prompt the model
answers confidently and consistently reads as easy. The signal maps to one of `BINS` quantile
bins whose edges, and the strategy chosen per bin and budget, are fitted on one half of a tier's
problems and checked on the other (app/lab/compute_optimal_fit.py), and stored as data
(assets/compute_optimal.json). Pure Python: the policy is plain data.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from strategies.info import RENAMED, STRATEGY_INFO, label

PROBE_SAMPLES = 4
BINS = 5
# how the probe's samples' step scores make their final score: fixed, so the fitted bin edges
# and a live run's probe read the same number whatever aggregation the run itself uses
PROBE_AGGREGATION = "last"


def probe_signal(final_scores: Sequence[float], answers: Sequence[str | None]) -> dict[str, float]:
    """The probe's numbers: the verifier's mean final score, the samples' agreement, and the
    signal (their mean; higher = easier)."""
    from strategies.answers import group_answers

    mean = sum(final_scores) / len(final_scores) if final_scores else 0.0
    groups = group_answers(list(answers))
    answered = [g for g in groups if answers[g[0]] is not None]
    agreement = max((len(g) for g in answered), default=0) / max(1, len(answers))
    return {"mean_score": mean, "agreement": agreement, "signal": (mean + agreement) / 2}


def quantile_edges(signals: Sequence[float], bins: int = BINS) -> list[float]:
    """The `bins - 1` inner edges that split `signals` into bins of (nearly) equal count."""
    values = sorted(signals)
    if not values:
        raise ValueError("no probe signals to fit bin edges on")
    return [values[min(len(values) - 1, (len(values) * k) // bins)] for k in range(1, bins)]


def bin_of(signal: float, edges: Sequence[float]) -> int:
    """The bin (0 = hardest) of `signal`; monotone: a higher signal never gets a lower bin."""
    return bisect.bisect_right(list(edges), signal)


@dataclass(frozen=True)
class Choice:
    """What compute-optimal runs in one bin at one budget, and the evidence for it."""

    strategy: str
    beam_width: int
    aggregation: str
    fit_accuracy: float  # on the fitting half's problems in this bin
    runner_up: str  # the next best candidate there, and its accuracy
    runner_up_accuracy: float

    def why(self, probe: dict[str, float], bin_: int, bins: int) -> str:
        info = STRATEGY_INFO[self.strategy]
        m = f", M={self.beam_width}" if info.uses_beam_width else ""
        if info.needs_scorer and self.aggregation != PROBE_AGGREGATION:
            m += f", {self.aggregation} of the step scores"
        return (
            f"probe mean {probe['mean_score']:.2f}, agreement {probe['agreement']:.2f} → "
            f"bin {bin_ + 1} of {bins} → {label(self.strategy)}{m}, best on the fitting "
            f"half: {self.fit_accuracy:.0%} vs {self.runner_up_accuracy:.0%} "
            f"({label(self.runner_up)})"
        )


def _choice(d: dict[str, Any]) -> Choice:
    renamed = {k: RENAMED.get(d[k], d[k]) for k in ("strategy", "runner_up")}
    return Choice(**(d | renamed))


@dataclass(frozen=True)
class Policy:
    """The fitted compute-optimal policy: bin edges and a choice per budget and bin."""

    edges: tuple[float, ...]
    choices: dict[int, tuple[Choice, ...]]  # budget -> one choice per bin
    fitted_on: str = ""

    def choose(self, signal: float, budget: int) -> tuple[int, Choice]:
        """The bin of `signal` and the choice for it at the largest fitted budget <= `budget`
        (the smallest fitted one when `budget` is below them all)."""
        fitted = sorted(self.choices)
        at = max((b for b in fitted if b <= budget), default=fitted[0])
        b = bin_of(signal, self.edges)
        return b, self.choices[at][b]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        return cls(
            edges=tuple(float(e) for e in d["edges"]),
            choices={int(b): tuple(_choice(c) for c in bins) for b, bins in d["choices"].items()},
            fitted_on=str(d.get("fitted_on", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "edges": list(self.edges),
            "fitted_on": self.fitted_on,
            "choices": {str(b): [asdict(c) for c in cs] for b, cs in self.choices.items()},
        }
