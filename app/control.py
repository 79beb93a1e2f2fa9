"""What ends a run before its strategy finishes, and what a run may ask of this machine.

`RunControl` carries the page's Stop and the run's limits (backend/limits.py); `controlled`
wraps a search's frames so that Stop, a limit or a model failing on a step ends the run cleanly:
the last frame is the tree so far, marked `stopped`, and what the run held is freed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from backend.limits import Limits, limits_for
from strategies.config import SearchConfig
from strategies.search_run import StepFailed
from strategies.tree import SearchTree

log = logging.getLogger(__name__)


class RunControl:
    """What ends a run before its strategy finishes: Stop (`stop()`, from any thread: the Stop
    button), the time limit and the token limit (backend/limits.py). One control serves a
    request's runs in turn (the search, its majority vote, the bigger model): Stop ends them
    all; the limits count afresh for each run."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.time_limit_s: float | None = None
        self.max_tokens: int | None = None
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self, time_limit_s: float | None, max_tokens: int | None) -> None:
        """A run starts now (its models loaded) under these limits."""
        self.time_limit_s, self.max_tokens, self._t0 = time_limit_s, max_tokens, time.monotonic()

    def reason(self, tree: SearchTree) -> str:
        """Why the run must end now ("" while it may go on)."""
        if self._stop.is_set():
            return "stopped"
        if self.time_limit_s is not None and time.monotonic() - self._t0 > self.time_limit_s:
            return f"time limit ({self.time_limit_s:.0f} s)"
        if self.max_tokens is not None and tree.compute.generated_tokens > self.max_tokens:
            return f"token limit ({self.max_tokens} tokens)"
        return ""


def run_limits(model: str, c: SearchConfig) -> Limits:
    """The limits a run of policy `model` gets here; ValueError when `c` asks for more than
    they allow."""
    from backend.loading.policy import resolve_device  # imports torch: at the first run

    limits = limits_for(model, resolve_device("auto"))
    limits.check(c.n, c.max_iterations, c.max_step_tokens, c.max_solution_tokens)
    return limits


def controlled(
    frames: Iterator[SearchTree], control: RunControl, meta: dict[str, Any], n: int
) -> Iterator[SearchTree]:
    """A search's frames, ended early when `control` says so or a model fails on a step: then
    the last frame is the tree so far, `stopped` saying why, and the run's memory is freed."""
    from backend.loading.failures import is_out_of_memory
    from backend.runtime import POOL

    def ended(tree: SearchTree) -> str:
        return "" if tree.done else control.reason(tree)

    try:
        for tree in frames:
            tree.meta.update(meta)
            why = ended(tree)
            if not why:
                yield tree
                why = ended(tree)  # Stop while the viewer drew this frame: no step more
            if why:
                close = getattr(frames, "close", None)
                if close is not None:
                    close()  # the engine's call ends too, and with it its batch
                POOL.free_run_memory()
                yield tree.stop(why)
                return
    except StepFailed as err:
        POOL.free_run_memory()
        why = str(err)
        if is_out_of_memory(err.error):
            why = f"out of memory at step {err.step}: try a smaller N (this run: {n}) or beam width"
        log.warning("run ended: %s", why)
        err.tree.meta.update(meta)
        yield err.tree.stop(why)
