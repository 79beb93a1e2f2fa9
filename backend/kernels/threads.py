"""CPU threads for the decode loop, chosen by measuring while decoding.

On the 2-core machines this project targets, the best intra-op thread count depends on what else
the machine is doing, not on the model: alone, 2 threads decode a full batch faster than 1; with
another process busy on one core, OpenMP's spinning threads make 2 threads many times slower than
1. No fixed setting is right for both, so the engine asks a `ThreadTuner` before each forward pass
and reports how long it took: the tuner tries each thread count a few times per batch-size bucket,
then keeps the faster one, and now and then tries the other again (less often each time it
confirms the choice) so it follows the machine when its load changes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def usable_cores() -> int:
    # The affinity mask, not os.cpu_count(), is what a container actually grants.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


# a best thread count this many times faster than the other backs off up to 4x longer
WIDE_MARGIN = 1.3


class ThreadTuner:
    """Picks torch's intra-op thread count per forward pass from measured times.

    Times are kept per batch-size bucket (1, 2-3, 4-7, 8-15, 16+ rows) as exponential moving
    averages. The first forward after a switch is not recorded (the thread pool wakes up then).
    """

    def __init__(
        self,
        choices: Sequence[int],
        *,
        samples: int = 3,
        explore_every: int = 40,
        block: int = 3,
        alpha: float = 0.3,
    ) -> None:
        self.choices = sorted(set(int(c) for c in choices if int(c) >= 1)) or [1]
        self.samples, self.explore_every, self.block, self.alpha = (
            samples,
            explore_every,
            block,
            alpha,
        )
        self.ema: dict[tuple[int, int], float] = {}  # (bucket, threads) -> seconds per forward
        self.count: dict[tuple[int, int], int] = {}
        self.forwards = 0
        self.interval = explore_every  # forwards between looks at the other counts (backs off)
        self._since_look = 0
        self._looking_from: int | None = None  # the best count before the current look
        self._block_left = 0
        self._block_choice = self.choices[-1]
        self._switched = False

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1

    @staticmethod
    def bucket(rows: int) -> int:
        return min(max(1, rows), 16).bit_length()

    def best(self, rows: int) -> int:
        """The faster thread count for this many rows as measured so far (the most if unknown)."""
        b = self.bucket(rows)
        known = [c for c in self.choices if (b, c) in self.ema]
        if len(known) < len(self.choices):
            return self.choices[-1]
        return min(known, key=lambda c: self.ema[(b, c)])

    def _margin(self, bucket: int) -> float:
        """How many times slower the next-best thread count measured than the best, per bucket."""
        times = sorted(self.ema[(bucket, c)] for c in self.choices if (bucket, c) in self.ema)
        return times[1] / times[0] if len(times) > 1 and times[0] > 0 else 1.0

    def before(self, rows: int) -> int:
        """Set and return the thread count for the next forward pass of `rows` rows."""
        self.forwards += 1
        if self.fixed:
            choice = self.choices[0]
        elif self._block_left > 0:
            choice = self._block_choice
            self._block_left -= 1
        else:
            b = self.bucket(rows)
            self._since_look += 1
            if self._looking_from is not None:  # a look just ended: a confirmed best backs off,
                # further when it won by far (a look at a much slower count costs most; and
                # should the best slow down, its own times show it, without a look)
                same = self.best(rows) == self._looking_from
                cap = self.explore_every * (32 if self._margin(b) > WIDE_MARGIN else 8)
                self.interval = min(cap, 2 * self.interval) if same else self.explore_every
                self._looking_from = None
            unsure = [c for c in self.choices if self.count.get((b, c), 0) < self.samples]
            if unsure:
                choice = unsure[0]
            elif self._since_look >= self.interval:  # look again at the others
                best = self.best(rows)
                others = [c for c in self.choices if c != best]
                choice = others[(self.forwards // self.explore_every) % len(others)]
                self._looking_from, self._since_look = best, 0
            else:
                choice = self.best(rows)
            if choice != torch.get_num_threads():
                self._block_choice, self._block_left = choice, self.block - 1
        self._switched = choice != torch.get_num_threads()
        if self._switched:
            torch.set_num_threads(choice)
        return choice

    def after(self, rows: int, threads: int, seconds: float) -> None:
        """Record how long the forward pass that `before` prepared took."""
        if self.fixed or self._switched:
            return
        key = (self.bucket(rows), threads)
        old = self.ema.get(key)
        self.ema[key] = seconds if old is None else old + self.alpha * (seconds - old)
        self.count[key] = self.count.get(key, 0) + 1

    def table(self) -> dict[str, dict[int, float]]:
        """Measured ms per forward, by rows bucket and thread count (for benchmarks and logs)."""
        names = {1: "1", 2: "2-3", 3: "4-7", 4: "8-15", 5: "16+"}
        out: dict[str, dict[int, float]] = {}
        for (b, c), s in sorted(self.ema.items()):
            out.setdefault(names.get(b, str(b)), {})[c] = round(1000 * s, 1)
        return out


_TUNER: ThreadTuner | None = None


def configure(threads: int | None) -> ThreadTuner:
    """Install the process's tuner: a fixed count when given, else 1..usable cores, tuned."""
    global _TUNER
    if threads is not None:
        _TUNER = ThreadTuner([threads])
    else:
        cores = usable_cores()
        _TUNER = ThreadTuner([1, cores] if cores > 1 else [1])
    torch.set_num_threads(_TUNER.choices[-1] if threads is None else threads)
    return _TUNER


def tuner() -> ThreadTuner:
    return _TUNER if _TUNER is not None else configure(None)
