"""The rules every search tree keeps, as a checker: `tree_problems(tree)` lists what a tree breaks.

The soak (benchmarks/soak.py) passes every tree the real engine builds through it, and the tests
pass hand-broken trees to show that each rule can fail. A rule says what every strategy here does
(a node is written active, completes when its step ends the solution, is pruned by the search or
selected by the finish), so a correct strategy that breaks one shows a wrong rule, not a bug.
The checker reads a frame too (a tree still growing, or one ended early by `SearchTree.stop`):
the rules about the answer and the compute's call counts wait for a finished run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from strategies.answers import answer_written, extract_answer
from strategies.info import STRATEGY_INFO
from strategies.search_run import choose
from strategies.tree import STATUSES, Node, SearchTree

# the status changes strategies make: a completed candidate that loses in DVTS is pruned; a
# node on the chosen solution's path is selected, whether it completed (the leaf) or not
NEXT_STATUSES: dict[str, set[str]] = {
    "active": {"completed", "pruned", "selected"},
    "completed": {"pruned", "selected"},
    "pruned": set(),
    "selected": set(),
}
FINISH_REASONS = ("delimiter", "eos", "length", "empty", "answer")


def tree_problems(tree: SearchTree) -> list[str]:
    """Every broken rule of `tree`, in words ("node 7: ..."); an empty list when it keeps them all.

    When node ids or parents are broken, only those are reported: the other rules walk paths.
    """
    problems = _links(tree)
    if problems:
        return problems
    strategy, config = _effective(tree)
    children: dict[int, list[Node]] = {n.id: [] for n in tree.nodes}
    for node in tree.nodes[1:]:
        children[node.parent].append(node)
    for node in tree.nodes:
        problems += [f"node {node.id}: {p}" for p in _node_problems(tree, node, children, config)]
    problems += _budget(tree, config)
    if strategy not in STRATEGY_INFO:  # its compute and finish follow rules nobody wrote down
        return [*problems, f"unknown strategy {strategy!r}"]
    problems += _compute(tree, strategy)
    problems += _outcome(tree, strategy, children)
    return problems


def _effective(tree: SearchTree) -> tuple[str, dict]:
    """The strategy that built the nodes and its config: compute-optimal's are the chosen one's."""
    chosen = tree.config.get("chosen") if tree.strategy == "compute_optimal" else None
    if isinstance(chosen, dict):
        return str(chosen.get("strategy", "")), chosen
    return tree.strategy, tree.config


def _statuses(node: Node) -> list[str]:
    return [status for _, status in node.history]


def _links(tree: SearchTree) -> list[str]:
    """Ids, parents and depths: the root is node 0; a parent comes before its children."""
    if not tree.nodes:
        return ["the tree has no root"]
    problems = []
    for index, node in enumerate(tree.nodes):
        if node.id != index:
            problems.append(f"node at index {index} has id {node.id}")
        if index == 0:
            if node.parent is not None or node.depth != 0:
                problems.append(f"the root has parent {node.parent} and depth {node.depth}")
        elif not isinstance(node.parent, int) or not 0 <= node.parent < index:
            problems.append(f"node {index}: parent {node.parent} is not an earlier node")
        elif node.depth != tree.nodes[node.parent].depth + 1:
            problems.append(
                f"node {index}: depth {node.depth} under a parent of depth "
                f"{tree.nodes[node.parent].depth}"
            )
    return problems


def _node_problems(
    tree: SearchTree, node: Node, children: dict[int, list[Node]], config: dict
) -> list[str]:
    problems = _history_problems(tree, node, children)
    last = config.get("max_iterations")
    if node.parent is None:
        if node.text or node.tokens or node.answer is not None or node.score is not None:
            problems.append("the root holds a step (text, tokens, answer or score)")
        return problems
    parent = tree.nodes[node.parent]
    if node.iteration < max(1, parent.iteration):
        problems.append(f"created at iteration {node.iteration}, its parent at {parent.iteration}")
    if node.depth >= 2 and node.subtree != parent.subtree:
        problems.append(f"in subtree {node.subtree}, its parent in {parent.subtree}")
    if node.tokens < 1:
        problems.append(f"a step of {node.tokens} tokens")
    if node.finish_reason not in FINISH_REASONS:
        problems.append(f"unknown finish reason {node.finish_reason!r}")
    for name in ("score", "agg_score"):
        value = getattr(node, name)
        if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            problems.append(f"{name} {value} is not in [0, 1]")
    completed = "completed" in _statuses(node)
    ends = node.finish_reason != "delimiter" or answer_written(node.text)
    at_last = node.iteration == last
    if (ends or at_last) and not completed:
        why = "was written at the last iteration" if at_last else "ends the solution"
        problems.append(f"{why} ({node.finish_reason}) but never completed")
    if completed and not (ends or at_last):
        problems.append("completed though its step neither ends the solution nor is the last")
    if at_last and node.finish_reason == "delimiter":
        problems.append(
            "the last iteration writes to the end, but this step ended at the delimiter"
        )
    if isinstance(last, int) and node.depth > last:
        problems.append(f"depth {node.depth} beyond max_iterations {last}")
    if completed:
        expected = extract_answer(tree.solution(node.id))
        if node.answer != expected:
            problems.append(f"answer {node.answer!r}, but its solution's answer is {expected!r}")
    elif node.answer is not None:
        problems.append(f"answer {node.answer!r} on a node that never completed")
    return problems


def _history_problems(tree: SearchTree, node: Node, children: dict[int, list[Node]]) -> list[str]:
    """Status, history and what a node's status allows below it."""
    if node.status not in STATUSES:
        return [f"unknown status {node.status!r}"]
    if not node.history:
        return ["no history"]
    problems = []
    if node.history[0] != (node.iteration, "active"):
        problems.append(f"history starts {node.history[0]}, not ({node.iteration}, 'active')")
    if node.status != node.history[-1][1]:
        problems.append(f"status {node.status!r}, but its history ends {node.history[-1]}")
    for (t0, s0), (t1, s1) in zip(node.history, node.history[1:]):
        if t1 < t0:
            problems.append(f"history goes back from iteration {t0} to {t1}")
        if s1 not in NEXT_STATUSES.get(s0, set()):
            problems.append(f"status went from {s0!r} to {s1!r} (iteration {t1})")
    if node.history[-1][0] > tree.iteration:
        problems.append(f"history reaches iteration {node.history[-1][0]} > {tree.iteration}")
    if node.parent is None and node.history != [(0, "active")]:
        problems.append(f"the root's history is {node.history}, not [(0, 'active')]")
    kids = children[node.id]
    if kids and "completed" in _statuses(node):
        problems.append(f"completed but has children {[k.id for k in kids]}")
    pruned_at = [t for t, s in node.history if s == "pruned"]
    later = [k.id for k in kids if pruned_at and k.iteration >= pruned_at[0]]
    if later:
        problems.append(f"pruned at iteration {pruned_at[0]}, yet children {later} came after")
    return problems


def _budget(tree: SearchTree, config: dict) -> list[str]:
    """No iteration writes more than N steps; a finished run's root has exactly N children."""
    n = config.get("n")
    if not isinstance(n, int):
        return []
    problems = []
    written: dict[int, int] = {}
    for node in tree.nodes[1:]:
        written[node.iteration] = written.get(node.iteration, 0) + 1
    problems += [
        f"iteration {t} wrote {k} steps, more than N={n}" for t, k in written.items() if k > n
    ]
    if tree.iteration > config.get("max_iterations", tree.iteration):
        problems.append(f"iteration {tree.iteration} beyond max_iterations")
    first = sum(1 for node in tree.nodes[1:] if node.parent == 0)
    if tree.done and not tree.stopped and first != n:
        problems.append(f"the root has {first} children, not N={n}")
    return problems


def _compute(tree: SearchTree, strategy: str) -> list[str]:
    c = tree.compute
    problems = []
    counters = (c.generated_tokens, c.scored_tokens, c.generator_calls, c.scorer_calls)
    if min(counters) < 0 or not (math.isfinite(c.wall_s) and c.wall_s >= 0):
        problems.append(f"negative or non-finite compute {c}")
    # work that left no node: lookahead's rollouts, compute-optimal's probe
    unseen = any(_unseen_work(s) for s in (strategy, tree.strategy))
    steps = sum(node.tokens for node in tree.nodes)
    if c.generated_tokens < steps or (not unseen and c.generated_tokens != steps):
        problems.append(f"compute counts {c.generated_tokens} generated tokens, the steps {steps}")
    if strategy == "majority_vote":
        # compute-optimal's probe calls the PRM once before it chooses majority voting
        probe = tree.strategy == "compute_optimal"
        if c.scorer_calls > probe or (c.scored_tokens and not probe):
            problems.append("majority voting called the PRM")
        if any(n.score is not None or n.agg_score is not None for n in tree.nodes):
            problems.append("majority voting has scored steps")
    if not tree.done or tree.stopped:
        return problems  # the calls of an unfinished iteration are counted when it ends
    if c.generator_calls < tree.iteration or (not unseen and c.generator_calls != tree.iteration):
        problems.append(f"{c.generator_calls} generator calls over {tree.iteration} iterations")
    # PRM calls of a finished run: a sampling strategy scores its solutions once (majority
    # voting never), a tree search once per iteration; compute-optimal adds its probe's one
    info = STRATEGY_INFO[strategy]
    expected = int(info.needs_scorer) if info.samples else tree.iteration
    if tree.strategy == "compute_optimal":
        expected += 1  # the probe's scoring
        reused = tree.meta.get("compute_optimal", {}).get("reused_probe_samples", 0)
        if info.samples and reused >= tree.config.get("n", 0):
            expected = 1  # sampling that kept only the probe's samples: nothing new to score
    if c.scorer_calls != expected:
        problems.append(f"{c.scorer_calls} PRM calls, expected {expected}")
    return problems


def _outcome(tree: SearchTree, strategy: str, children: dict[int, list[Node]]) -> list[str]:
    """Answer, votes and selection: none before the finish or after a stop, the finish's after."""
    problems = []
    marked = [n.id for n in tree.nodes if n.status == "selected"]
    if tree.done and tree.writing:
        problems.append("done while still writing")
    if tree.stopped and not tree.done:
        problems.append(f"stopped ({tree.stopped!r}) but not done")
    if not tree.done or tree.stopped:
        state = f"stopped ({tree.stopped!r})" if tree.stopped else "not done"
        if tree.answer is not None or tree.selected or marked or tree.votes:
            problems.append(f"{state}, yet it has an answer, votes or a selection")
        return problems
    open_leaves = [n.id for n in tree.nodes[1:] if not children[n.id] and n.status == "active"]
    if open_leaves:
        problems.append(f"finished with open solutions {open_leaves}")
    on_paths: set[int] = set()
    if len(set(tree.selected)) != len(tree.selected):
        problems.append(f"selected twice: {tree.selected}")
    for leaf_id in tree.selected:
        if not isinstance(leaf_id, int) or not 0 < leaf_id < len(tree.nodes):
            problems.append(f"selected {leaf_id!r} is no step")
            continue
        leaf = tree.nodes[leaf_id]
        if children[leaf_id] or "completed" not in _statuses(leaf):
            problems.append(f"selected {leaf_id} is not a completed leaf")
        on_paths |= {n.id for n in tree.path(leaf_id)}
    if set(marked) != on_paths:
        problems.append(
            f"nodes marked selected {sorted(set(marked))}, the chosen paths {sorted(on_paths)}"
        )
    votes, answer, chosen = expected_finish(tree.nodes, strategy)
    if tree.votes != votes:
        problems.append(f"votes {tree.votes}, but the judged solutions give {votes}")
    if tree.answer != answer or sorted(tree.selected) != chosen:
        problems.append(
            f"answer {tree.answer!r} from {sorted(tree.selected)}; the finish's rule picks "
            f"{answer!r} from {chosen}"
        )
    if STRATEGY_INFO[strategy].pick != "majority":  # a PRM ranked them
        unscored = [n.id for n in _judged(tree.nodes) if n.agg_score is None]
        if unscored:
            problems.append(f"judged solutions {unscored} have no score")
    return problems


def _unseen_work(strategy: str) -> bool:
    info = STRATEGY_INFO.get(strategy)
    return info is not None and (info.uses_lookahead or info.pick is None)


def _judged(nodes: Sequence[Node]) -> list[Node]:
    """The solutions a finished run judged, in id order (the order strategies hand them to the
    finish): every node left completed, and the selected ones that completed."""
    return [
        n
        for n in nodes
        if n.status == "completed" or (n.status == "selected" and "completed" in _statuses(n))
    ]


def expected_finish(
    nodes: Sequence[Node], strategy: str
) -> tuple[dict[str, dict[str, float]], str | None, list[int]]:
    """(votes, answer, selected ids, ascending) that the strategy's pick rule gives the solutions
    the tree shows judged: the finish must have read exactly those."""
    answer, chosen, votes = choose(_judged(nodes), STRATEGY_INFO[strategy].pick or "weighted")
    return votes, answer, sorted(n.id for n in chosen)
