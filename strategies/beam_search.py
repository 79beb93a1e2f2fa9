"""Beam search over reasoning steps, guided by a PRM; with k > 0 it is lookahead search.

Each iteration every beam writes one more step; the PRM scores every candidate; the N/M best
unfinished candidates survive and each is copied into M beams for the next iteration, so there
are N again. A candidate that finishes (EOS, token limit, empty step, boxed answer) leaves the
active set as a completed solution. The answer is weighted Best-of-N over the completed beams.

Lookahead search (Snell et al. 2024) scores each candidate by rolling it out greedily for k
more steps and reading the PRM at the end of the rollout; the rollouts are not kept in the tree,
but their tokens and PRM calls are counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from strategies.answers import answer_written
from strategies.config import SearchConfig
from strategies.protocols import StepGenerator, StepScorer
from strategies.search_run import SearchRun, StepFailed, aggregate
from strategies.tree import Node, SearchTree


def top_k(nodes: Sequence[Node], k: int) -> list[Node]:
    """The k best by aggregated score; ties go to the earlier node."""
    return sorted(nodes, key=lambda n: (-(n.agg_score or 0.0), n.id))[:k]


def copies_per_beam(n: int, survivors: int) -> list[int]:
    """Spread a budget of n beams over the survivors: n // s each, the first ones one more."""
    base, extra = divmod(n, survivors)
    return [base + (1 if i < extra else 0) for i in range(survivors)]


def beam_search(question, config, generator, scorer) -> Iterator[SearchTree]:
    return _beam_search(question, config, generator, scorer, lookahead=0)


def lookahead_search(question, config, generator, scorer) -> Iterator[SearchTree]:
    return _beam_search(question, config, generator, scorer, lookahead=config.lookahead)


def _beam_search(
    question: str,
    config: SearchConfig,
    generator: StepGenerator,
    scorer: StepScorer | None,
    lookahead: int,
) -> Iterator[SearchTree]:
    run = SearchRun(question, config, generator, scorer)
    tree = run.tree
    keep = config.n // config.beam_width
    beams: list[Node] = [tree.root]
    completed: list[Node] = []
    while beams and len(completed) < config.n and not run.last_iteration:
        run.next_iteration()
        counts = copies_per_beam(config.n, len(beams))
        # the generator may write ahead for the `keep` best (lookahead ranks by its rollouts)
        hint = 0 if lookahead else keep
        if len(set(counts)) == 1:  # the usual case: M copies of each of N/M beams
            candidates = yield from run.expand_stream([b.id for b in beams], counts[0], keep=hint)
        else:
            candidates = yield from run.expand_stream(
                [b.id for b, c in zip(beams, counts) for _ in range(c)], keep=hint
            )
        if lookahead and not run.last_iteration:
            _score_with_lookahead(run, candidates, lookahead)
        else:
            run.score(candidates)
        completed += [c for c in candidates if c.status == "completed"]
        live = [c for c in candidates if c.status == "active"]
        if config.filter_duplicates:
            live = _drop_duplicates(run, live)
        beams = top_k(live, keep)
        run.prune([c for c in live if c not in beams])
        yield run.tick()
    if not completed:  # nothing finished within the limits: judge what is there
        completed = beams
    else:  # the budget of finished solutions was reached: beams still open are abandoned
        run.prune([b for b in beams if b.status == "active"])
    yield run.finish(completed)


def _drop_duplicates(run: SearchRun, live: list[Node]) -> list[Node]:
    seen: set[str] = set()
    unique: list[Node] = []
    for node in live:
        text = run.tree.solution(node.id)
        if text in seen:
            run.prune([node])
        else:
            seen.add(text)
            unique.append(node)
    return unique


def _score_with_lookahead(run: SearchRun, candidates: list[Node], k: int) -> None:
    """Score each candidate by the PRM's verdict after a greedy rollout of up to k steps."""
    tree = run.tree
    rollouts: dict[int, list[str]] = {c.id: [] for c in candidates}
    open_ids = [c.id for c in candidates if c.status == "active"]
    sampling = run.sampling(greedy=True)
    for _ in range(k):
        if not open_ids:
            break
        partials = [tree.steps(i) + rollouts[i] for i in open_ids]
        try:
            results = run.generator.next_steps(run.question, partials, 1, sampling)
        except Exception as err:
            step = min(tree.nodes[i].depth for i in open_ids) + 1
            raise StepFailed("the policy failed rolling out", step, open_ids, tree, err) from err
        tree.compute.generator_calls += 1
        still_open = []
        for node_id, (step,) in zip(open_ids, results):
            tree.compute.generated_tokens += step.tokens
            rollouts[node_id].append(step.text)
            if not (step.finished or answer_written(step.text)):
                still_open.append(node_id)
        open_ids = still_open
    solutions = [tree.steps(c.id) + rollouts[c.id] for c in candidates]
    scores = run.read_scores(candidates, solutions)
    for cand, step_scores in zip(candidates, scores.steps):
        own = len(tree.path(cand.id))
        run.apply_scores(cand, step_scores[:own])
        # the candidate is judged by where its rollout ends up
        cand.agg_score = aggregate(step_scores, run.config.aggregation)
