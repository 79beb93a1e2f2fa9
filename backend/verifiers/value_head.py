"""A value head: a verifier learned from the policy's own solutions, read off its hidden states.

It scores a partial solution by how likely it is to end at the right answer, from the final
hidden state the policy computed after the step's last token that is not blank
(`LlamaStepEngine.hidden_state`): at search time that state is already there, so a score costs
one small matrix product and no forward pass. A head is trained by `python -m app.cli
train-verifier` (app/lab/verifier_training.py) on solutions whose answers are known, every step
labelled by whether its solution ended right (outcome labels, as outcome-supervised value
models do; Yu et al. 2023), and kept as a small JSON file in assets/verifiers/, one per policy.

A head belongs to one model file: it names the GGUF's sha256, and a head trained for another
file is refused. `ValueHeadPRM` implements `StepScorer`, and `judge_keys` as a model judge does,
so the arithmetic checker can stand in front of it (backend/verifiers/judge.py: CheckedJudgePRM).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backend.catalog import ASSETS
from strategies.protocols import Scores

HEADS_DIR = ASSETS / "verifiers"
FORMAT = 1
FEATURE = "final hidden state after the step's last token that is not blank (llama.cpp)"


class HeadError(ValueError):
    """A head file that cannot serve this policy: missing, malformed, or another model's."""


@dataclass(eq=False)  # holds arrays: compared by identity
class ValueHead:
    """Standardise a hidden state, then a logistic layer (`kind` "linear") or one hidden ReLU
    layer and a logistic one ("mlp"); the probability that the solution ends right."""

    model: str  # the catalog policy it was trained for
    model_sha256: str  # the GGUF file it read the hidden states of
    kind: str
    mean: np.ndarray  # (d,)
    std: np.ndarray  # (d,)
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weights (out, in), bias (out,)), last: 1 out
    info: dict[str, Any] = field(default_factory=dict)  # what it saw and how it did

    def __post_init__(self) -> None:
        d = self.mean.shape[0]
        if self.kind not in ("linear", "mlp") or self.std.shape != (d,) or not self.layers:
            raise HeadError("a value head needs a kind, a mean and a std of one size, and layers")
        width = d
        for w, b in self.layers:
            if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
                raise HeadError(f"a value head's layers do not chain ({w.shape} after {width})")
            width = w.shape[0]
        if width != 1 or (self.kind == "linear") != (len(self.layers) == 1):
            raise HeadError("a value head ends in one output (linear: one layer, mlp: two)")
        arrays = [self.mean, self.std, *(a for layer in self.layers for a in layer)]
        if not all(np.isfinite(a).all() for a in arrays) or (self.std <= 0).any():
            raise HeadError("a value head's numbers must be finite, its std positive")

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def predict(self, hidden: np.ndarray) -> np.ndarray:
        """P(right) for hidden states of shape (n, d) (or one of shape (d,))."""
        z = (np.atleast_2d(hidden).astype(np.float64) - self.mean) / self.std
        p = forward(self.layers, z)
        return p if np.ndim(hidden) > 1 else p[:1]

    def to_json(self) -> dict[str, Any]:
        def vec(a: np.ndarray) -> list:  # 6 significant digits: float32 holds about 7
            return [float(f"{x:.6g}") for x in a.ravel()] if a.ndim == 1 else [vec(r) for r in a]

        return {
            "format": FORMAT,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "feature": FEATURE,
            "kind": self.kind,
            "mean": vec(self.mean),
            "std": vec(self.std),
            "layers": [{"weight": vec(w), "bias": vec(b)} for w, b in self.layers],
            **self.info,
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @classmethod
    def from_json(cls, data: Any, where: str = "the head") -> ValueHead:
        """A head from its JSON (`to_json`); HeadError naming `where` for anything malformed."""
        try:
            if data.get("format") != FORMAT:
                raise HeadError(f"format {data.get('format')!r}, this ThinkTree reads {FORMAT}")
            own = {"format", "model", "model_sha256", "feature", "kind", "mean", "std", "layers"}
            return cls(
                model=str(data["model"]),
                model_sha256=str(data["model_sha256"]),
                kind=str(data["kind"]),
                mean=np.asarray(data["mean"], dtype=np.float64),
                std=np.asarray(data["std"], dtype=np.float64),
                layers=[
                    (
                        np.asarray(layer["weight"], dtype=np.float64),
                        np.asarray(layer["bias"], dtype=np.float64),
                    )
                    for layer in data["layers"]
                ],
                info={k: v for k, v in data.items() if k not in own},
            )
        except HeadError as err:
            raise HeadError(f"{where} is not a value head ThinkTree can read: {err}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise HeadError(
                f"{where} is not a value head ThinkTree can read ({type(err).__name__}: {err})"
            ) from None


def forward(layers: Sequence[tuple[np.ndarray, np.ndarray]], z: np.ndarray) -> np.ndarray:
    """P(right) of standardised rows under `layers` (ReLU between them, a logistic at the end)."""
    x = z
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return 1.0 / (1.0 + np.exp(-x[:, 0]))


def head_path(policy: str) -> Path:
    return HEADS_DIR / f"{policy}.json"


def _shown(path: Path) -> str:
    """A path as a message names it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(ASSETS.parent))
    except ValueError:
        return str(path)


def load_head(policy: str, sha256: str, path: Path | None = None) -> ValueHead:
    """The head trained for catalog policy `policy`, whose GGUF file has `sha256`; HeadError
    (a message a user can act on) when there is none, it is malformed or another file's."""
    path = path or head_path(policy)
    if not path.is_file():
        raise HeadError(
            f"No value head is trained for {policy}: train one with `python -m app.cli "
            f"train-verifier --model {policy}` (it writes {_shown(path)}), or choose another "
            "verifier."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HeadError(f"{path.name} is not a value head ThinkTree can read ({err})") from None
    head = ValueHead.from_json(data, path.name)
    if head.model_sha256 != sha256:
        raise HeadError(
            f"{path.name} was trained for another model file ({head.model}, sha256 "
            f"{head.model_sha256[:12]}…), not this {policy} ({sha256[:12]}…): train it again "
            f"with `python -m app.cli train-verifier --model {policy}`."
        )
    return head


def trained_on(prm: str, policy: str) -> set[str]:
    """The ids of the problems the head behind PRM choice `prm` saw in training, for `policy`
    (none for any other verifier): an evaluation leaves them out."""
    from backend.catalog import catalog

    if prm not in catalog().names("prm") or catalog().get(prm).family != "value_head":
        return set()
    path = head_path(policy)
    if not path.is_file():
        return set()
    return set(json.loads(path.read_text()).get("trained_on", {}).get("problems", []))


@dataclass(eq=False)  # holds the engine: compared by identity
class ValueHeadPRM:
    """Implements `StepScorer`: every step's score is the head's P(right) after that step."""

    engine: Any  # a LlamaStepEngine over the policy the head was trained for
    head: ValueHead
    name: str = "value-head"
    cheap: ClassVar[bool] = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        width = self.engine.gguf.native.n_embd
        if width != self.head.dim:
            raise HeadError(
                f"the value head reads {self.head.dim} numbers per state, {self.head.model} "
                f"writes {width}"
            )

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        keys = [(question, tuple(sol[: j + 1])) for sol in solutions for j in range(len(sol))]
        known, _ = self.judge_keys(keys)
        steps, k = [], 0
        for sol in solutions:
            steps.append([known[keys[k + j]] for j in range(len(sol))])
            k += len(sol)
        return Scores(steps, 0)  # it reads no tokens: the policy already did

    def judge_keys(self, keys: Sequence[tuple[str, tuple[str, ...]]]) -> tuple[dict, int]:
        """P(right) for each (question, steps so far) key, and the tokens read (none)."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}, 0
        with self._lock:
            hidden = np.stack([self.engine.hidden_state(q, steps) for q, steps in unique])
        return dict(zip(unique, self.head.predict(hidden).tolist())), 0
