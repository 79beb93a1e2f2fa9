"""One call's decoding loop: sample every row's next token until each row's step has ended.

With `speculate` on, a row whose step ends on the delimiter while others are still writing goes
on writing its next step (the batch would otherwise run below its width); what it writes is kept
for that partial solution (backend/engine/speculation.py). With the search's hints, only the
likely survivors do, each in as many copies as the next call will ask of it. None of this changes
what is sampled: a continuation written ahead is a sample of the same distribution, only started
earlier.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch

from backend.engine.batch import DecodeBatch
from backend.engine.sampler import sample
from backend.engine.speculation import Key, Ranking, WrittenAhead
from backend.engine.state import EngineStats, Row, RowState
from backend.stopping import StopChecks
from strategies.protocols import GeneratedStep, Sampling


class Engine(Protocol):
    """What the loop reads of the engine that runs it (backend/engine/engine.py: StepEngine)."""

    model: Any
    device: torch.device
    speculate: bool
    levels: int
    compact_fraction: float
    vocab: int
    calls: int
    stats: EngineStats
    store: dict[tuple[str, tuple[str, ...]], RowState]
    written: WrittenAhead
    stops: StopChecks

    def _forward(self, ids, pos, cache, mask=None, stock: bool = False) -> torch.Tensor: ...


Ended = tuple[int, GeneratedStep, RowState | None]  # (result index, step, state after it)


class StepDecoder:
    """Decodes one call's rows as one batch (see the module docstring)."""

    def __init__(self, engine: Engine, question: str, sampling: Sampling, fan: int) -> None:
        self.engine, self.question, self.sampling = engine, question, sampling
        self.speculate = engine.speculate and not sampling.to_end
        # continuations written ahead per likely survivor (1: one per row that ends its step)
        self.fan = fan if self.speculate else 1
        self.ranking = Ranking(sampling.keep if self.fan > 1 else 0, sampling.rank)
        # the deepest call a row writes ahead for: with the search's hints, the call after the
        # next one too (`engine.levels`)
        self.levels = engine.levels if self.ranking.keep else 1
        self.budget = sampling.max_solution_tokens if sampling.to_end else sampling.max_step_tokens
        # rows that write ahead for a call that will write to the end stop as that call would
        self.stop_to_end = replace(sampling, to_end=True), sampling.max_solution_tokens

    def run(self, rows: list[Row], ahead: Sequence[tuple[int, Key, RowState]]) -> Iterator[Ended]:
        """Yields (index, step, new state) per row as soon as its step ends (the state is None
        when the solution ended).

        Steps taken whole from what was written ahead (`ahead`: index, key, state) are ranked
        too, and the likely survivors among them write their next step ahead in this batch
        (going on with what was written for them before).
        """
        e, ranking = self.engine, self.ranking
        t0 = time.perf_counter()
        if ranking.keep and ahead:
            for index, key, _ in ahead:
                ranking.add(1, key, index, [])
            for _, key, state in ahead:
                if key in ranking.favored[1]:
                    more = e.written.rows_for(
                        self.question, key, state, self.fan, self.sampling, e.stats
                    )
                    rows = rows + more
        batch = DecodeBatch.load(
            e.model,
            e.device,
            rows,
            # copies for the likely survivors at each level
            room=len(rows) + self.levels * (self.fan - 1) * ranking.keep,
            budget=self.budget,
        )
        t1 = time.perf_counter()
        e.stats.assemble_s += t1 - t0
        gen = torch.Generator(device=e.device)
        if self.sampling.seed is not None:
            gen.manual_seed(int(self.sampling.seed))
        ended: list[Ended] = []
        while batch.has_real_rows():
            logits = self._forward(batch)
            batch.tokens = sample(logits, self.sampling, gen).tolist()
            parents: list[int] = []  # likely survivors that begin writing ahead: copy them
            for p, row in enumerate(batch.slot):
                if row is not None and self._take_token(batch, p, row, ended):
                    parents.append(p)
            if ended:
                e.stats.decode_s += time.perf_counter() - t1
                yield from ended
                ended.clear()
                t1 = time.perf_counter()
            live = batch.live()
            real = sum(batch.slot[p].out is not None for p in live)
            if not real:
                break
            parents = [p for p in parents if batch.slot[p] and ranking.likely(batch.slot[p])]
            if parents:
                e.stats.copied_rows += batch.fork(parents, self.fan - 1)
            batch.compact(e.compact_fraction)
            batch.advance()
        for p, row in enumerate(batch.slot):  # speculative rows still writing: keep what they have
            if row is not None and row.out is None and row.new:
                e.written.keep(self.question, row, None, batch.row_state(p), self.sampling, e.calls)
        e.stats.decode_s += time.perf_counter() - t1

    def _forward(self, batch: DecodeBatch) -> torch.Tensor:
        """The batch's next-token logits."""
        e, rows = self.engine, len(batch.slot)
        tf = time.perf_counter()
        logits = batch.forward(e._forward)[:, -1, : e.vocab]
        e.stats.forward_s += time.perf_counter() - tf
        e.stats.decode_forwards += 1
        e.stats.forward_rows += rows
        return logits

    def _take_token(self, batch: DecodeBatch, p: int, row: Row, ended: list[Ended]) -> bool:
        """Add the token sampled for position p to its row; when that ends the row's step, hand
        the step over (`ended`) or keep it as written ahead, and either stop the row or let it
        write its next step ahead. True when it does so as a likely survivor (to be copied).

        With the search's hints, a step that ends is ranked among those ended so far, as the
        search will rank it; a copy's step that ends in turn is ranked the same way among the
        steps written for the call after the next one (its index guessed from its parent's
        place). Rows that write for a call that will write to the end (`last_call_in`) write to
        the end too, stopping as that call would (and only such a call takes what they wrote).
        """
        e, s, ranking = self.engine, self.sampling, self.ranking
        row.new.append(batch.tokens[p])
        if row.out is None:
            e.stats.speculative_tokens += 1
            e.stats.two_ahead_tokens += row.ahead == 2
        sampling, budget = self.stop_to_end if row.to_end else (s, self.budget)
        solution_len = len(row.base_ids) - row.start.prompt_len + len(row.new)
        step = e.stops.check(row.new, solution_len, sampling, budget)
        if step is None:
            return False
        state = None if step.finished else batch.row_state(p)
        if row.out is not None:
            ended.append((row.out, step, state))
        else:  # a speculative step that ended: the next call gets it without decoding
            e.written.keep(self.question, row, step, state, s, e.calls)
        level = row.ahead + 1  # what its next step would be written for
        if state is None or not self.speculate or level > self.levels:
            batch.slot[p] = None
            return False
        key = row.key + (step.text,)
        if ranking.keep:
            if level == 1:
                index = row.out
            elif row.key in ranking.favored[1]:
                index = ranking.guess_index(row.key, self.fan)
            else:
                batch.slot[p] = None
                return False
            ranking.add(level, key, index, batch.slot)
            if key not in ranking.favored[level]:  # the search will not keep it
                batch.slot[p] = None
                return False
        row.out, row.key, row.ahead = None, key, level
        row.base_ids, row.new = state.ids, []
        row.to_end = level == s.last_call_in
        return bool(ranking.keep)
