"""The search tree: the one data type every strategy builds, the app streams and visualize/ draws.

A tree holds the question, one node per reasoning step, the compute a run used and its outcome.
Node ids are indices into this tree's own node list (never a global counter), so two users'
runs can never collide. Every status change is recorded with the iteration it happened at, which
is what makes replay (`snapshot(t)`) exact. `to_dict()` / `from_dict()` define the run format
(JSON) used by the CLI, the exports and the tests; `to_networkx()` and `write_graphml()` hand the
same tree to graph tools (networkx, Gephi, yEd).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# characters XML 1.0 cannot hold (a model may write them); the GraphML export replaces them
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
Status = Literal["active", "pruned", "completed", "selected"]
STATUSES: tuple[str, ...] = ("active", "pruned", "completed", "selected")
FORMAT_VERSION = 1


@dataclass
class Node:
    """One reasoning step. The root (id 0) stands for the question and has no text."""

    id: int
    parent: int | None
    depth: int  # 0 for the root, 1 for a first step, ...
    text: str = ""  # the step as generated, delimiter included
    score: float | None = None  # PRM score of this step (None: not scored)
    agg_score: float | None = None  # aggregated score of the path root..this node
    status: Status = "active"
    iteration: int = 0  # iteration that created the node (root: 0)
    subtree: int = 0  # DVTS subtree (0 elsewhere)
    answer: str | None = None  # final answer extracted at a completed node
    tokens: int = 0  # tokens generated for this step
    finish_reason: str | None = (
        None  # why the step ended: delimiter / eos / length / empty / answer
    )
    history: list[tuple[int, Status]] = field(default_factory=list)  # (iteration, status) changes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [list(h) for h in self.history]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        d = dict(d)
        d["history"] = [(int(it), st) for it, st in d.get("history", [])]
        return cls(**d)


@dataclass
class Compute:
    """What a run cost, so strategies can be compared at equal budget."""

    generated_tokens: int = 0  # new tokens sampled by the policy
    scored_tokens: int = 0  # tokens the PRM read (as reported by the scorer)
    generator_calls: int = 0
    scorer_calls: int = 0
    wall_s: float = 0.0

    def add(self, other: Compute) -> Compute:
        return Compute(
            self.generated_tokens + other.generated_tokens,
            self.scored_tokens + other.scored_tokens,
            self.generator_calls + other.generator_calls,
            self.scorer_calls + other.scorer_calls,
            self.wall_s + other.wall_s,
        )


@dataclass
class SearchTree:
    """A whole run: question, configuration, nodes, compute, and (when done) the answer."""

    question: str
    strategy: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    iteration: int = 0  # last iteration that has started
    done: bool = False
    answer: str | None = None  # the run's final answer (None: no answer found)
    selected: list[int] = field(default_factory=list)  # leaf ids of the chosen solution(s)
    # answer -> {"count", "score_sum", "best_score"}, filled when the run ends
    votes: dict[str, dict[str, float]] = field(default_factory=dict)
    compute: Compute = field(default_factory=Compute)
    meta: dict[str, Any] = field(default_factory=dict)  # model, prm, device, precision, threads
    # why the run ended before its strategy finished ("" when it finished): "stopped" (Stop),
    # "time limit", or the fault that ended it ("the PRM failed scoring step 3: ..."); such a
    # tree is done, with the nodes written so far, and no answer or selected path
    stopped: str = ""
    # True in frames streamed while an iteration's steps are still arriving (not in the run JSON)
    writing: bool = False

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, depth=0, history=[(0, "active")]))

    # ---- building -------------------------------------------------------------------------
    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add_node(self, parent: int, text: str, **fields: Any) -> Node:
        """Append a child of `parent`, created at the current iteration."""
        p = self.nodes[parent]
        fields.setdefault("subtree", p.subtree)
        node = Node(
            id=len(self.nodes),
            parent=parent,
            depth=p.depth + 1,
            text=text,
            iteration=self.iteration,
            history=[(self.iteration, "active")],
            **fields,
        )
        self.nodes.append(node)
        return node

    def set_status(self, node_id: int, status: Status) -> None:
        """Change a node's status at the current iteration (a no-op if unchanged)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        node = self.nodes[node_id]
        if node.status != status:
            node.status = status
            node.history.append((self.iteration, status))

    # ---- reading --------------------------------------------------------------------------
    def children(self, node_id: int) -> list[Node]:
        return [n for n in self.nodes if n.parent == node_id]

    def path(self, node_id: int) -> list[Node]:
        """The steps from the first one down to `node_id` (the root excluded)."""
        out: list[Node] = []
        node: Node | None = self.nodes[node_id]
        while node is not None and node.parent is not None:
            out.append(node)
            node = self.nodes[node.parent]
        return out[::-1]

    def steps(self, node_id: int) -> list[str]:
        return [n.text for n in self.path(node_id)]

    def solution(self, node_id: int) -> str:
        return "".join(self.steps(node_id))

    def leaves(self) -> list[Node]:
        parents = {n.parent for n in self.nodes}
        return [n for n in self.nodes if n.id not in parents and n.parent is not None]

    def stop(self, reason: str) -> SearchTree:
        """End the run here, before its strategy finished: the nodes so far are kept (those
        still active stay active), nothing is chosen, and `stopped` says why."""
        self.stopped = reason or "stopped"
        self.writing = False
        self.done = True
        self.answer = None
        self.selected = []
        self.votes = {}
        return self

    def select_path(self, leaf_id: int) -> None:
        """Mark the solution ending at `leaf_id` as (one of) the chosen one(s)."""
        self.selected.append(leaf_id)
        for node in self.path(leaf_id):
            self.set_status(node.id, "selected")

    def snapshot(self, iteration: int) -> SearchTree:
        """The tree as it stood at the end of `iteration`: later nodes dropped, statuses rewound."""
        tree = SearchTree.from_dict(self.to_dict())
        kept: list[Node] = []
        for node in tree.nodes:
            if node.iteration > iteration:
                continue
            node.history = [h for h in node.history if h[0] <= iteration]
            node.status = node.history[-1][1] if node.history else "active"
            kept.append(node)
        tree.nodes = kept
        tree.iteration = min(iteration, self.iteration)
        if iteration < self.iteration or not self.done:
            tree.done = False
            tree.answer = None
            tree.selected = []
            tree.votes = {}
            tree.stopped = ""
        return tree

    # ---- run format -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "question": self.question,
            "strategy": self.strategy,
            "config": dict(self.config),
            "iteration": self.iteration,
            "done": self.done,
            "answer": self.answer,
            "selected": list(self.selected),
            "votes": {k: dict(v) for k, v in self.votes.items()},
            "compute": asdict(self.compute),
            "meta": dict(self.meta),
            "stopped": self.stopped,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchTree:
        if d.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise ValueError(f"unsupported run format {d.get('format')!r}")
        return cls(
            question=d["question"],
            strategy=d.get("strategy", ""),
            config=dict(d.get("config", {})),
            nodes=[Node.from_dict(n) for n in d["nodes"]],
            iteration=int(d.get("iteration", 0)),
            done=bool(d.get("done", False)),
            answer=d.get("answer"),
            selected=list(d.get("selected", [])),
            votes={k: dict(v) for k, v in d.get("votes", {}).items()},
            compute=Compute(**d.get("compute", {})),
            meta=dict(d.get("meta", {})),
            stopped=str(d.get("stopped", "")),
        )

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> SearchTree:
        return cls.from_dict(json.loads(text))

    # ---- as a graph ---------------------------------------------------------------------------
    def to_networkx(self):
        """The tree as a `networkx.DiGraph`: one node per step keyed by its id, with every field
        of `Node` but `id` as attributes (values as in `to_dict`); an edge from each parent to its
        child; the run's question, strategy, answer, done and config (JSON text) on the graph."""
        import networkx as nx  # only the graph exports need it

        graph = nx.DiGraph(
            question=self.question,
            strategy=self.strategy,
            answer=self.answer,
            done=self.done,
            config=json.dumps(self.config),
        )
        for node in self.nodes:
            attrs = node.to_dict()
            del attrs["id"]
            graph.add_node(node.id, **attrs)
            if node.parent is not None:
                graph.add_edge(node.parent, node.id)
        return graph

    def write_graphml(self, path: str | Path) -> None:
        """Write `to_networkx()` as GraphML. GraphML holds scalars only: a missing value (None)
        is left out, and a list (a node's status history) is written as its JSON text; a
        control character XML cannot hold becomes U+FFFD."""
        import networkx as nx

        graph = self.to_networkx()
        for attrs in [graph.graph, *(data for _, data in graph.nodes(data=True))]:
            for key, value in list(attrs.items()):
                if value is None:
                    del attrs[key]
                elif isinstance(value, (list, dict)):
                    attrs[key] = json.dumps(value)
                if isinstance(attrs.get(key), str):  # XML holds no control characters
                    attrs[key] = _XML_INVALID.sub("\ufffd", attrs[key])
        nx.write_graphml(graph, path)
