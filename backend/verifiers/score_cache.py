"""A bounded cache of step scores, keyed by (question, steps so far), shared by the model PRMs.

A PRM's score for a step depends only on the question and the steps up to it, so a beam's old
steps never need reading twice. The least recently used entries go first.
"""

from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, tuple[str, ...]]


class StepScoreCache:
    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._scores: OrderedDict[Key, float] = OrderedDict()

    def __contains__(self, key: Key) -> bool:
        return key in self._scores

    def __len__(self) -> int:
        return len(self._scores)

    def get(self, key: Key, default: float | None = None) -> float | None:
        return self._scores.get(key, default)

    def put(self, key: Key, value: float) -> None:
        self._scores[key] = value
        self._scores.move_to_end(key)
        while len(self._scores) > self.size:
            self._scores.popitem(last=False)
