"""What every strategy shares: one run's tree and compute, the expand-and-score helper, and the finish.

Strategies differ only in how they select; sampling next steps, scoring them, attaching them to
the tree, accounting for their cost and choosing the final answer all happen here, once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import replace

from strategies.answers import answer_written, extract_answer, group_answers, normalize
from strategies.config import SearchConfig
from strategies.info import STRATEGY_INFO, Pick, check_scorer
from strategies.protocols import (
    GeneratedStep,
    Sampling,
    Scores,
    StepGenerator,
    StepScorer,
    StreamingStepGenerator,
    is_cheap,
)
from strategies.tree import Node, SearchTree


class StepFailed(RuntimeError):
    """The policy or the scorer raised on one step: which step, and the tree as it stood.

    `tree` is the run's tree with every node written before the failure, so the caller can
    show it (`SearchTree.stop(str(err))`); `error` is what the model raised.
    """

    def __init__(
        self, what: str, step: int, nodes: Sequence[int], tree: SearchTree, error: BaseException
    ) -> None:
        self.what, self.step, self.nodes = what, step, list(nodes)
        self.tree, self.error = tree, error
        ids = ", ".join(str(i) for i in self.nodes[:6]) + (", …" if len(self.nodes) > 6 else "")
        where = f" (node{'s' if len(self.nodes) > 1 else ''} {ids})" if self.nodes else ""
        super().__init__(f"{what} step {step}{where}: {type(error).__name__}: {error}")


def aggregate(scores: Sequence[float], how: str) -> float:
    """One score for a (partial) solution from its step scores: last (default), min or prod."""
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    raise ValueError(f"unknown aggregation {how!r}")


class SearchRun:
    """One run: the tree being built, the models it talks to, and the compute it has used."""

    def __init__(
        self,
        question: str,
        config: SearchConfig,
        generator: StepGenerator,
        scorer: StepScorer | None,
    ) -> None:
        check_scorer(config.strategy, scorer is not None)
        self.config = config
        self.generator = generator
        self.scorer = scorer
        self.tree = SearchTree(question=question, strategy=config.strategy, config=config.to_dict())
        self._calls = 0
        self._t0 = time.perf_counter()

    @property
    def question(self) -> str:
        return self.tree.question

    def follow(self, earlier: SearchRun) -> None:
        """Number this run's generator calls and iterations after `earlier`'s, so a run that
        goes on from another one's samples draws new ones (its seeds continue) and its steps
        come after them (compute-optimal sampling on from its probe)."""
        self._calls = earlier._calls
        self.tree.iteration = earlier.tree.iteration

    def sampling(self, *, greedy: bool = False, to_end: bool = False, keep: int = 0) -> Sampling:
        """Sampling settings for the next generator call; each call gets its own derived seed.

        `keep`: how many of the call's continuations the search will keep, best by PRM score
        (beam search); with a cheap scorer the generator then also gets the ranking (`rank`), so
        it can write ahead for the likely survivors.
        """
        c = self.config
        self._calls += 1
        return Sampling(
            temperature=0.0 if greedy else c.temperature,
            top_p=c.top_p,
            max_step_tokens=c.max_step_tokens,
            max_solution_tokens=c.max_solution_tokens,
            seed=(c.seed * 1_000_003 + self._calls) % 2**63,
            to_end=to_end,
            rank=self._rank if keep and is_cheap(self.scorer) else None,
            keep=keep,
            # the search's last iteration writes to the end (one call per iteration)
            last_call_in=c.max_iterations - self.tree.iteration if keep and not to_end else 0,
        )

    def _rank(self, steps: Sequence[str]) -> float:
        """A partial solution's score as the search will rank it; -inf once it ends the solution
        (the search keeps only open ones)."""
        if not steps or answer_written(steps[-1]):
            return float("-inf")
        scores = self.scorer.score(self.question, [list(steps)]).steps[0]
        return aggregate(scores, self.config.aggregation)

    def next_iteration(self) -> int:
        self.tree.iteration += 1
        return self.tree.iteration

    @property
    def last_iteration(self) -> bool:
        return self.tree.iteration >= self.config.max_iterations

    def tick(self) -> SearchTree:
        """Bring the wall clock up to date; strategies yield the returned tree."""
        self.tree.compute.wall_s = time.perf_counter() - self._t0
        return self.tree

    # ---- the shared expansion ----------------------------------------------------------------
    def expand_stream(
        self,
        parents: Sequence[int],
        n: int = 1,
        *,
        greedy: bool = False,
        subtrees: Sequence[int] | None = None,
        keep: int = 0,
    ) -> Generator[SearchTree, None, list[Node]]:
        """Sample `n` next steps for each parent in one generator call; attach them as children.

        A generator function: when the step generator can stream (`stream_steps`), each child is
        attached as soon as its step ends and the tree is yielded (marked `writing`), so a viewer
        sees the iteration fill in; otherwise nothing is yielded. Either way it returns the
        children (use `children = yield from run.expand_stream(...)`), grouped by parent, in
        order. A child that ends the solution (EOS, token limit, empty step, or a boxed answer)
        is marked completed with its answer. `subtrees` (one per parent) tags the children with
        their DVTS subtree as they arrive; by default a child is in its parent's. `keep`: how many
        children the search will keep by score (a hint for the generator, see `sampling`).
        """
        if not parents:
            return []
        partials = [self.tree.steps(p) for p in parents]
        to_end = self.last_iteration
        sampling = self.sampling(greedy=greedy, to_end=to_end, keep=0 if to_end else keep)
        try:
            return (yield from self._expand(parents, n, partials, sampling, subtrees))
        except StepFailed:
            raise
        except Exception as err:
            step = self.tree.nodes[parents[0]].depth + 1
            raise StepFailed("the policy failed writing", step, parents, self.tree, err) from err

    def _expand(
        self,
        parents: Sequence[int],
        n: int,
        partials: list[list[str]],
        sampling: Sampling,
        subtrees: Sequence[int] | None,
    ) -> Generator[SearchTree, None, list[Node]]:
        total = len(parents) * n
        by_index: dict[int, Node] = {}
        if not isinstance(self.generator, StreamingStepGenerator):
            results = self.generator.next_steps(self.question, partials, n, sampling)
            if len(results) != len(parents) or any(len(r) != n for r in results):
                raise RuntimeError("step generator returned the wrong number of continuations")
            for i, steps in enumerate(results):
                for j, step in enumerate(steps):
                    by_index[i * n + j] = self._attach(parents, subtrees, i, step)
        else:
            steps = self.generator.stream_steps(self.question, partials, n, sampling)
            try:
                for index, step in steps:
                    if not 0 <= index < total or index in by_index:
                        raise RuntimeError(f"step generator streamed a bad index {index}")
                    by_index[index] = self._attach(parents, subtrees, index // n, step)
                    self.tree.writing = True
                    yield self.tick()
            finally:  # also when the viewer stops listening: the generator call ends too
                self.tree.writing = False
                close = getattr(steps, "close", None)
                if close is not None:
                    close()
            if len(by_index) != total:
                raise RuntimeError("step generator returned the wrong number of continuations")
            # number the new nodes in call order, not arrival order: the finished tree (and every
            # tie broken by node id) is then the same as without streaming
            base = len(self.tree.nodes) - total
            for k in range(total):
                node = by_index[k]
                node.id = base + k
                self.tree.nodes[node.id] = node
        self.tree.compute.generator_calls += 1
        return [by_index[k] for k in range(total)]

    def _attach(
        self, parents: Sequence[int], subtrees: Sequence[int] | None, i: int, step: GeneratedStep
    ) -> Node:
        tree = self.tree
        extra = {"subtree": subtrees[i]} if subtrees is not None else {}
        child = tree.add_node(
            parents[i], step.text, tokens=step.tokens, finish_reason=step.finish_reason, **extra
        )
        tree.compute.generated_tokens += step.tokens
        if step.finished or answer_written(step.text) or self.last_iteration:
            if not step.finished and answer_written(step.text):
                child.finish_reason = "answer"
            self.complete(child)
        return child

    def complete(self, node: Node) -> None:
        node.answer = extract_answer(self.tree.solution(node.id))
        self.tree.set_status(node.id, "completed")

    def score(self, nodes: Sequence[Node]) -> None:
        """Score the partial solutions ending at `nodes` in one PRM call (no-op without a PRM).

        Sets each node's step score and aggregated score, and fills in step scores of ancestors
        that were never scored (Best-of-N scores whole solutions once, at the end).
        """
        if self.scorer is None or not nodes:
            return
        scores = self.read_scores(nodes, [self.tree.steps(n.id) for n in nodes])
        for node, step_scores in zip(nodes, scores.steps):
            self.apply_scores(node, step_scores)

    def read_scores(self, nodes: Sequence[Node], solutions: Sequence[Sequence[str]]) -> Scores:
        """One scorer call on `solutions` (those of `nodes`, a lookahead's rollouts included),
        counted in the compute; a scorer that raises is a StepFailed naming the step."""
        try:
            scores = self.scorer.score(self.question, solutions)
        except Exception as err:
            name = getattr(self.scorer, "name", "")
            what = f"the PRM {name} failed scoring" if name else "the PRM failed scoring"
            step = min(n.depth for n in nodes)
            raise StepFailed(what, step, [n.id for n in nodes], self.tree, err) from err
        self.tree.compute.scorer_calls += 1
        self.tree.compute.scored_tokens += scores.tokens
        return scores

    def apply_scores(self, node: Node, step_scores: Sequence[float]) -> None:
        path = self.tree.path(node.id)
        if len(step_scores) != len(path):
            raise RuntimeError(
                f"step scorer returned {len(step_scores)} scores for {len(path)} steps"
            )
        how = self.config.aggregation
        for i, (n, s) in enumerate(zip(path, step_scores)):
            if n.score is None or n is node:
                n.score = float(s)
            if n.agg_score is None or n is node:
                n.agg_score = aggregate(step_scores[: i + 1], how)

    def prune(self, nodes: Sequence[Node]) -> None:
        for node in nodes:
            self.tree.set_status(node.id, "pruned")

    # ---- the finish -------------------------------------------------------------------------
    def finish(self, leaves: Sequence[Node]) -> SearchTree:
        """Group the leaves' answers, fill the votes, choose the answer by the strategy's pick
        rule (strategies/info.py) and mark the chosen path (the rule: `choose`)."""
        tree = self.tree
        pick = STRATEGY_INFO[self.config.strategy].pick
        assert pick is not None, f"{self.config.strategy} finishes through the strategy it chose"
        tree.answer, chosen, tree.votes = choose(leaves, pick)
        for leaf in chosen:
            tree.select_path(leaf.id)
        tree.done = True
        return self.tick()


def choose(
    leaves: Sequence[Node], pick: Pick
) -> tuple[str | None, list[Node], dict[str, dict[str, float]]]:
    """The answer, the chosen leaves and the votes per answer for finished solutions `leaves`.

    majority: the biggest answer group wins (all its solutions are chosen);
    weighted: the group with the largest sum of aggregated scores wins (its best solution is
    chosen); vanilla: the single best-scoring solution wins, whatever its answer.
    Ties go to the group (or solution) seen first. Also how the scaling harness reads a budget's
    answer off the first samples of a bigger run (app/lab/harness.py).
    """
    leaves = list(leaves)
    groups = group_answers([leaf.answer for leaf in leaves])
    votes: dict[str, dict[str, float]] = {}
    keys: list[str] = []
    for group in groups:
        members = [leaves[i] for i in group]
        key = normalize(members[0].answer or "")
        scores = [m.agg_score or 0.0 for m in members]
        votes[key] = {
            "count": len(members),
            "score_sum": float(sum(scores)),
            "best_score": float(max(scores)),
        }
        keys.append(key)
    answer: str | None = None
    chosen: list[Node] = []
    if pick == "vanilla" and leaves:
        best = max(leaves, key=lambda n: (n.agg_score or 0.0, -n.id))
        chosen = [best]
        answer = normalize(best.answer) if best.answer is not None else None
    elif groups:
        metric = "count" if pick == "majority" else "score_sum"
        # max() returns the first maximum: ties go to the group seen first
        winner = max(range(len(groups)), key=lambda g: (votes[keys[g]][metric], -g))
        members = [leaves[i] for i in groups[winner]]
        answer = keys[winner]
        if pick == "majority":
            chosen = members
        else:
            chosen = [max(members, key=lambda n: (n.agg_score or 0.0, -n.id))]
    return answer, chosen, votes


def rescored(tree: SearchTree, leaves: Sequence[Node], aggregation: str) -> list[Node]:
    """Copies of scored `leaves` whose score aggregates their path's step scores by
    `aggregation` (unscored leaves stay as they are)."""
    out = []
    for leaf in leaves:
        steps = [n.score for n in tree.path(leaf.id)]
        if leaf.agg_score is not None and steps and None not in steps:
            leaf = replace(leaf, agg_score=aggregate(steps, aggregation))  # type: ignore[arg-type]
        out.append(leaf)
    return out
