"""Who runs next on the models: one run at a time, a bounded line, and loads that do not thrash.

The models are one process-wide pool (backend/runtime.py), so runs take turns. Thirty people
clicking Run at once wait in one line of at most `max_waiting`; the next one is told the app is
busy and about how long to wait, instead of waiting minutes with no word. While they wait, each
sees their place in the line.

Two users asking for two different models would, taken strictly in turn, load a model for every
run (seconds to minutes each). The gate instead takes the oldest run that asks for the model
already loaded, as long as no run has been passed over `max_skips` times; then the oldest run
goes, whatever it asks for. So runs for the loaded model go first, and a run for another model
waits at most `max_skips` runs longer than it would in strict order (docs/operations.md).
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

DEFAULT_RUN_S = 30.0  # what a run is assumed to take before any has finished here


class Busy(ValueError):
    """The line is full (a ValueError: the user sees its message)."""


@dataclass(eq=False)
class Ticket:
    """One run's place: what it asks to load (`key`), when it came, how often it was passed over."""

    key: str
    number: int
    since: float = field(default_factory=time.monotonic)
    skips: int = 0


class Gate:
    """One run at a time; at most `max_waiting` waiting; runs for the loaded model go first."""

    def __init__(self, max_waiting: int = 8, max_skips: int = 2) -> None:
        self.max_waiting = max_waiting
        self.max_skips = max_skips
        self._cond = threading.Condition()
        self._waiting: list[Ticket] = []
        self._running: Ticket | None = None
        self._loaded: str | None = None  # the key of the last run that went
        self._durations: deque[float] = deque(maxlen=20)
        self._started = 0.0
        self._numbers = itertools.count(1)
        # the last runs' ticket numbers, in the order they went (what the tests read)
        self.order: deque[int] = deque(maxlen=1000)

    # ---- a run's side ------------------------------------------------------------------------
    def join(self, key: str) -> Ticket:
        """A place in line for a run that loads `key`; Busy when the line is full."""
        with self._cond:
            if len(self._waiting) >= self.max_waiting:
                waiting = len(self._waiting)
                raise Busy(
                    f"ThinkTree is busy: {waiting} run{'s are' if waiting != 1 else ' is'} waiting "
                    "for the models. "
                    f"Try again in about {self._eta(waiting + 1):.0f} s."
                )
            ticket = Ticket(key, next(self._numbers))
            self._waiting.append(ticket)
            self._cond.notify_all()
            return ticket

    def wait(self, ticket: Ticket, poll_s: float = 1.0) -> Iterator[tuple[int, float]]:
        """Wait for `ticket`'s turn, yielding (runs ahead of it, estimated seconds) about every
        `poll_s` while it waits; returns once it holds the models. Give them back with `leave`.
        A waiter that stops listening (the iterator closed) leaves the line."""
        try:
            while True:
                with self._cond:
                    if self._take(ticket):
                        return
                    self._cond.wait(poll_s)
                    if self._take(ticket):
                        return
                    ahead = self._ahead(ticket)
                yield ahead, self._eta(ahead)
        except GeneratorExit:
            self.leave(ticket)
            raise

    def leave(self, ticket: Ticket) -> None:
        """Give the models back (or leave the line): the next run may go."""
        with self._cond:
            if self._running is ticket:
                self._durations.append(time.monotonic() - self._started)
                self._running = None
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    # ---- state -------------------------------------------------------------------------------
    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def _take(self, ticket: Ticket) -> bool:
        """Whether `ticket` goes now (under the lock): the models are free and it is next."""
        if self._running is not None or self._next() is not ticket:
            return False
        index = self._waiting.index(ticket)
        for passed in self._waiting[:index]:
            passed.skips += 1
        self._waiting.remove(ticket)
        self._running, self._loaded, self._started = ticket, ticket.key, time.monotonic()
        self.order.append(ticket.number)
        return True

    def _next(self) -> Ticket | None:
        if not self._waiting:
            return None
        oldest = self._waiting[0]
        if oldest.skips >= self.max_skips or oldest.key == self._loaded:
            return oldest
        same = next((t for t in self._waiting if t.key == self._loaded), None)
        return same or oldest

    def _ahead(self, ticket: Ticket) -> int:
        """Runs that go before `ticket` at most: the one running and those ahead in line."""
        index = self._waiting.index(ticket) if ticket in self._waiting else 0
        return index + (self._running is not None)

    def _eta(self, runs: int) -> float:
        typical = statistics.median(self._durations) if self._durations else DEFAULT_RUN_S
        return max(1.0, runs * typical)
