"""Writing ahead: the steps rows wrote for later calls, and which partial solutions to write for.

A row whose step has ended while others are still writing goes on with its next step instead of
idling; what it writes is kept here, per partial solution, until a call asks for that partial
solution's next step (or it is evicted). With the search's hints (`Sampling.keep` and `.rank`),
a `Ranking` tells which partial solutions the search will likely keep, so that only those write
ahead, in as many continuations as the next call will ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backend.engine.state import EngineStats, Prefetch, Row, RowState, sampling_key
from strategies.protocols import GeneratedStep, Sampling

Key = tuple[str, ...]  # a partial solution: its steps
Ranked = tuple[float, int, Key]  # a step that ended, as (-rank, index, key): best first


class WrittenAhead:
    """What rows wrote ahead, per (question, partial solution), oldest first."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, Key], list[Prefetch]] = {}

    def take(
        self, question: str, key: Key, sampling: Sampling, stats: EngineStats
    ) -> Prefetch | None:
        """The oldest step written ahead for `key`, if it serves a call sampling with `sampling`.

        Taken either way: one that does not serve this call is dropped.
        """
        waiting = self.waiting.get((question, key))
        if not waiting:
            return None
        pre = waiting.pop(0)
        if pre.to_end and not sampling.to_end:  # written past its step: not for a step-wise call
            return None
        # what was written ahead step by step may start a continuation written to the end,
        # whatever its step limit; a step-by-step call needs the very same settings
        wanted = sampling_key(sampling)
        if (
            pre.sampling[: 3 if sampling.to_end else None]
            != wanted[: 3 if sampling.to_end else None]
        ):
            return None
        stats.prefetch_hits += 1
        return pre

    def keep(
        self,
        question: str,
        row: Row,
        step: GeneratedStep | None,
        state: RowState | None,
        sampling: Sampling,
        call: int,
    ) -> None:
        """Keep what a speculative row wrote: its whole next `step` or, cut off, its `state`."""
        if state is None and step is None:
            return
        pre_state = state if state is not None else RowState(row.base_ids, [], row.start.prompt_len)
        pre = Prefetch(
            pre_state, row.base_ids, list(row.new), step, sampling_key(sampling), row.to_end
        )
        pre.state.used = call
        self.waiting.setdefault((question, row.key), []).append(pre)

    def rows_for(
        self,
        question: str,
        key: Key,
        state: RowState,
        fan: int,
        sampling: Sampling,
        stats: EngineStats,
    ) -> list[Row]:
        """Rows that write `fan` next steps of `key` ahead (for the next call), from `state`.
        What was written ahead for it already counts: whole steps are not written again, steps
        cut off when the call that wrote them ended go on from where they stopped."""
        waiting = self.waiting.get((question, key), [])
        to_end = sampling.last_call_in == 1  # the next call writes to the end
        usable = [p for p in waiting if p.sampling == sampling_key(sampling) and p.to_end == to_end]
        need = fan - sum(p.step is not None for p in usable)
        partial = [p for p in usable if p.step is None][: max(0, need)]
        for pre in partial:
            waiting.remove(pre)
        rows = [Row(None, key, p.state, p.base_ids, list(p.tokens), ahead=1) for p in partial]
        rows += [Row(None, key, state, state.ids, [], ahead=1) for _ in range(need - len(rows))]
        for r in rows:
            r.to_end = to_end
        stats.copied_rows += max(0, len(rows) - 1)
        return rows

    def evict(self, calls: int, keep_calls: int) -> None:
        """Drop what was written for partial solutions no call has used for `keep_calls` calls."""
        for key, waiting in list(self.waiting.items()):
            waiting[:] = [p for p in waiting if calls - p.state.used < keep_calls]
            if not waiting:
                del self.waiting[key]


class Ranking:
    """The steps ended so far in one batch, ranked as the search will rank them, per level.

    Level 1 holds the steps this call returns (and those taken whole from what was written
    ahead), whose likely survivors write their next steps ahead for the next call; level 2 the
    steps written for the next call, whose likely survivors write for the one after it.
    """

    def __init__(self, keep: int, rank: Callable[[Sequence[str]], float] | None) -> None:
        self.keep = keep  # how many the search keeps (0: no hints, nothing is ranked)
        self.rank = rank
        self.ranked: dict[int, list[Ranked]] = {1: [], 2: []}
        self.favored: dict[int, set[Key]] = {1: set(), 2: set()}  # the `keep` best keys

    def add(self, level: int, key: Key, index: int, slot: list[Row | None]) -> None:
        """Rank a step that just ended (see `rerank`); a level-1 key that drops out of the best
        takes the steps written for its children along."""
        lost = rerank(
            self.ranked[level], self.favored[level], self.keep, (self.rank(key), index, key), slot
        )
        if level == 1 and lost:  # nothing is written for their children either
            self.ranked[2][:] = [r for r in self.ranked[2] if r[2][:-1] not in lost]
            self.favored[2] -= {k for k in self.favored[2] if k[:-1] in lost}

    def likely(self, row: Row) -> bool:
        """Whether the partial solution a speculative row writes for is among the best."""
        return row.key in self.favored.get(row.ahead, ())

    def guess_index(self, parent: Key, fan: int) -> int:
        """Where the next call will ask for a child of `parent` (a likely survivor): by its
        parent's place among the likely survivors, then in order of ending."""
        order = [k for _, _, k in self.ranked[1][: self.keep]]
        siblings = sum(r[2][:-1] == parent for r in self.ranked[2])
        return order.index(parent) * fan + siblings


def rerank(
    ranked: list[Ranked],
    favored: set[Key],
    keep: int,
    ended: tuple[float, int, Key],
    slot: list[Row | None],
) -> set[Key]:
    """Add a row that just ended its step, as (rank, index, key), to the ranking of the ended
    ones, and make `favored` the keys of the `keep` best (higher rank first, ties to the lower
    index, as a beam search keeps them; never one ranked -inf, a solution that ended). A key
    that is not among them now never will be (rows that end later only push keys out), so a
    key that drops out of them stops writing ahead: its rows in `slot`, and those writing for
    its children, stop. Returns the keys that dropped out."""
    rank, index, key = ended
    ranked.append((-rank, index, key))
    ranked.sort(key=lambda r: r[:2])
    best = {k for r, _, k in ranked[:keep] if r != float("inf")}
    lost = favored - best
    for q, row in enumerate(slot):
        if row is not None and row.out is None and any(row.key[: len(k)] == k for k in lost):
            slot[q] = None
    favored.clear()
    favored.update(best)
    return lost
