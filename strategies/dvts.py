"""Diverse Verifier Tree Search (DVTS): N/M independent subtrees, each greedy under the PRM.

Each iteration every live subtree samples M candidate next steps and keeps only its PRM-best one;
the others are pruned. Subtrees never compete with each other, which keeps the answers diverse.
A subtree ends when its kept step ends the solution. The answer is weighted Best-of-N over the
subtrees' final solutions.
"""

from __future__ import annotations

from collections.abc import Iterator

from strategies.beam_search import top_k
from strategies.search_run import SearchRun
from strategies.tree import Node, SearchTree


def dvts(question, config, generator, scorer) -> Iterator[SearchTree]:
    run = SearchRun(question, config, generator, scorer)
    tree = run.tree
    m = config.beam_width
    subtrees = config.n // m
    heads: dict[int, Node] = {k: tree.root for k in range(subtrees)}  # live subtree -> its leaf
    finals: list[Node] = []
    while heads and not run.last_iteration:
        run.next_iteration()
        order = list(heads)
        candidates = yield from run.expand_stream([heads[k].id for k in order], m, subtrees=order)
        run.score(candidates)
        for i, k in enumerate(order):
            group = candidates[i * m : (i + 1) * m]
            (best,) = top_k(group, 1)
            run.prune([c for c in group if c is not best])
            if best.status == "completed":
                finals.append(best)
                del heads[k]
            else:
                heads[k] = best
        yield run.tick()
    finals += [h for h in heads.values() if h is not tree.root]
    yield run.finish(finals)
