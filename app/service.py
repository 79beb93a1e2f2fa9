"""One run, from a request to a stream of frames: shared by the explorer, its API and the CLI.

`stream_request` is the one flow: the models loaded, the search growing, then, unless it ended
early, majority voting at the same budget N (`compare`) and the bigger model's own answer
(`bigger`): greedy, and majority voting with as many samples as the search's compute buys it
(app/versus.py counts the FLOPs). The explorer renders its frames (app/handlers.py), `/run`
sends them as the run JSON grows (app/api.py), the CLI prints them (app/cli.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.control import RunControl, controlled, run_limits
from app.request import RunRequest
from app.versus import MIN_VOTERS, equal_compute_voters, verdict_line, versus
from backend.catalog import NO_PRM, catalog
from backend.limits import Limits
from strategies.answers import answers_equal
from strategies.registry import search
from strategies.tree import SearchTree

log = logging.getLogger(__name__)

EXPORT_ROOT = Path(tempfile.gettempdir()) / "thinktree-exports"
EXPORT_TTL_S = 3600  # downloads are offered right after a run; older export folders are removed
# and at most this many are kept (a run writes ~5 MB, mostly plotly.js in the HTML): Gradio
# copies a run's files as its last frame is sent, so only the newest are ever still needed
# (more than the runs that can be in flight at once, app/ui.py MODEL_QUEUE)
EXPORT_MAX_RUNS = 50


def stream_run(request: RunRequest, control: RunControl | None = None) -> Iterator[SearchTree]:
    """Load (or reuse) the models and stream the run's tree, its meta filled in. The run ends
    early, its tree kept and marked `stopped`, on Stop, at the time or token limit, or when a
    model fails on a step (`controlled`). The search alone: `stream_request` runs the whole
    request."""
    limits, runtime = _loaded(request)
    yield from _searched(request, runtime, limits, control or RunControl())


def _loaded(request: RunRequest) -> tuple[Limits, Any]:
    """The run's limits (checked before anything loads, ValueError past them), then its models,
    loaded or reused."""
    from backend.runtime import get_runtime  # torch loads with the first run, not with the page

    limits = run_limits(request.model, request.config)
    return limits, get_runtime(request.model, request.prm, request.precision)


def _searched(
    request: RunRequest, runtime: Any, limits: Limits, control: RunControl
) -> Iterator[SearchTree]:
    meta = runtime.meta()
    if request.expected:
        meta["expected"] = request.expected
    control.start(limits.time_limit_s, limits.max_run_tokens)
    policy = None
    if request.config.strategy == "compute_optimal":  # fitted per model and verifier
        from backend.fitted_policies import stored_policy

        policy = stored_policy(request.model, request.prm)
    frames = search(
        request.prompt, request.config, runtime.generator, runtime.scorer, policy=policy
    )
    yield from controlled(frames, control, meta, request.config.n)


def run_to_end(request: RunRequest, control: RunControl | None = None) -> SearchTree:
    (tree,) = deque(stream_run(request, control), maxlen=1)
    return tree


def stream_majority(request: RunRequest, control: RunControl | None = None) -> Iterator[SearchTree]:
    """Majority voting at the request's budget N, on the same models: the comparison."""
    return stream_run(request.with_strategy("majority_vote"), control)


def stream_bigger(
    request: RunRequest, voters: int = 0, control: RunControl | None = None
) -> Iterator[SearchTree]:
    """The bigger model alone on the request's question: its greedy answer (`voters` 0), or
    majority voting over `voters` samples; same token limits and seed as the search."""
    from backend.runtime import POOL

    name = request.bigger_model
    if name is None:
        raise ValueError("This request compares with no bigger model.")
    config = request.as_majority(max(1, voters)).config
    limits = run_limits(name, config)
    loaded, engine = POOL.bigger(name, request.precision)
    if not voters:
        config = dataclasses.replace(config, temperature=0.0)
    meta = {
        "model": name,
        "params": catalog().get(name, "policy").params,
        "prm": NO_PRM,
        "prm_params": 0,
        "device": loaded.device,
        "precision": loaded.precision,
    }
    control = control or RunControl()
    control.start(limits.time_limit_s, limits.max_run_tokens)
    yield from controlled(search(request.prompt, config, engine, None), control, meta, config.n)


def short_names(request: RunRequest) -> tuple[str, str]:
    """The policy's and the bigger model's names in a verdict line."""
    models = catalog()
    big = request.bigger_model
    return models.get(request.model).short_name, models.get(big).short_name if big else ""


def comparison(search_tree: SearchTree, majority: SearchTree) -> dict[str, Any]:
    """What the explorer shows of the majority-vote run beside the search, as plain data."""
    agree = None
    if search_tree.answer is not None and majority.answer is not None:
        agree = answers_equal(search_tree.answer, majority.answer)
    return {
        "strategy": majority.strategy,
        "answer": majority.answer,
        "votes": {k: dict(v) for k, v in majority.votes.items()},
        "compute": dataclasses.asdict(majority.compute),
        "agrees_with_search": agree,
        "stopped": majority.stopped,
    }


@dataclass(frozen=True)
class BiggerSide:
    """The bigger model's side as it stands: its greedy run (growing, then done), then, when
    the search's compute buys it at least MIN_VOTERS samples, its majority vote over `voters`."""

    greedy: SearchTree
    majority: SearchTree | None = None
    voters: int = 0  # samples the majority vote runs over (0: it does not run)
    done: bool = False

    @property
    def stopped(self) -> str:
        """Why one of its runs ended early ("" when none did)."""
        return self.greedy.stopped or (self.majority.stopped if self.majority else "")


def stream_bigger_side(
    request: RunRequest, search_tree: SearchTree, control: RunControl | None = None
) -> Iterator[BiggerSide]:
    """The bigger model's runs, one frame per tree it streams, the last one `done`. Its
    majority vote takes at most as many voters as the limits allow the bigger model."""
    greedy = None
    for greedy in stream_bigger(request, control=control):
        yield BiggerSide(greedy)
    assert greedy is not None
    cap = min(
        request.config.n, run_limits(request.bigger_model, request.as_majority(1).config).max_n
    )
    voters = equal_compute_voters(search_tree, greedy, cap=cap)
    if voters < MIN_VOTERS or greedy.stopped:
        yield BiggerSide(greedy, done=True)
        return
    majority = None
    for majority in stream_bigger(request, voters, control):
        yield BiggerSide(greedy, majority, voters)
    yield BiggerSide(greedy, majority, voters, done=True)


def bigger_json(
    request: RunRequest, search_tree: SearchTree, side: BiggerSide | None, error: Exception | None
) -> dict[str, Any]:
    """The bigger model's side of the comparison (the JSON's comparison.bigger, with the verdict
    line). When the bigger model could not run (not installed, out of memory, ended early),
    {"model", "error"}: the finished search and its majority vote are kept."""
    if error is not None:
        return {"model": request.bigger_model, "error": f"{type(error).__name__}: {error}"}
    assert side is not None and side.done
    if side.stopped:
        return {"model": request.bigger_model, "error": f"its run ended early: {side.stopped}"}
    bigger = versus(search_tree, side.greedy, side.majority, request.expected)
    bigger["verdict"] = verdict_line(
        search_tree, side.greedy, side.majority, *short_names(request), request.expected
    )
    return bigger


Part = Literal["loaded", "search", "majority", "bigger"]


@dataclass(frozen=True)
class Frame:
    """One frame of a request's whole run, tagged with the part it shows. A comparison part's
    first frame carries nothing: it starts now (before its runs, and any model, load)."""

    part: Part
    tree: SearchTree | None = None  # search, majority: that run's tree as it stands
    side: BiggerSide | None = None  # bigger: its side as it stands
    error: Exception | None = None  # bigger: why it could not answer (the run goes on without)
    load_s: float = 0.0  # loaded: the seconds the models took (about 0 when already loaded)


def stream_request(request: RunRequest, control: RunControl | None = None) -> Iterator[Frame]:
    """The whole run a request asks for, the one flow the explorer, `/run` and the CLI render:
    the models loaded, the search growing, then, when the request compares and the search
    ended on its own, majority voting at the same N and the bigger model alone. Stop (`control`)
    or closing the stream ends whichever part runs within a step; a stopped search is compared
    with nothing. The bigger model failing is a frame (`error`), not the run's end."""
    control = control or RunControl()
    t0 = time.perf_counter()
    limits, runtime = _loaded(request)
    yield Frame("loaded", load_s=time.perf_counter() - t0)
    search = None
    for search in _searched(request, runtime, limits, control):
        yield Frame("search", search)
    assert search is not None and search.done
    if search.stopped or not request.compares:
        return
    yield Frame("majority")
    for majority in stream_majority(request, control):
        yield Frame("majority", majority)
    if request.bigger_model is None or control.stopped:
        return
    yield Frame("bigger")  # before the bigger model loads, which may take a while
    try:
        for side in stream_bigger_side(request, search, control):
            yield Frame("bigger", side=side)
    except Exception as err:  # the search the user waited for must not be lost with it
        if isinstance(err, ValueError):  # the user's to read (not installed, does not fit)
            log.warning("the bigger model %s cannot answer: %s", request.bigger_model, err)
        else:
            log.exception("the bigger model %s failed", request.bigger_model)
        yield Frame("bigger", error=err)


@dataclass
class Outcome:
    """A request's run as its frames left it: the latest of each part."""

    request: RunRequest
    search: SearchTree | None = None
    majority: SearchTree | None = None
    side: BiggerSide | None = None
    error: Exception | None = None

    def add(self, frame: Frame) -> Frame:
        if frame.part == "search":
            self.search = frame.tree
        elif frame.part == "majority" and frame.tree is not None:
            self.majority = frame.tree
        elif frame.part == "bigger":
            self.side, self.error = frame.side, frame.error
        return frame

    def to_json(self) -> dict[str, Any]:
        """The run as JSON: the search's tree and, when majority voting ran beside it, the
        comparison (with the bigger model's side under "bigger" once it is done or failed)."""
        if self.search is None:
            return {}
        run = self.search.to_dict()
        if self.majority is not None:
            run["comparison"] = comparison(self.search, self.majority)
            if self.error is not None or (self.side is not None and self.side.done):
                run["comparison"]["bigger"] = bigger_json(
                    self.request, self.search, self.side, self.error
                )
        return run


def run_json(request: RunRequest, control: RunControl | None = None) -> dict[str, Any]:
    """The whole run (`stream_request`) to its end, as JSON (`Outcome.to_json`)."""
    outcome = Outcome(request)
    for frame in stream_request(request, control):
        outcome.add(frame)
    return outcome.to_json()


def write_exports(tree: SearchTree, html: str) -> dict[str, str]:
    """The run as JSON, as GraphML (for networkx, Gephi, yEd) and as a standalone HTML page
    (`html`), in a fresh folder per run under EXPORT_ROOT; folders older than EXPORT_TTL_S go.
    Returns the paths by format."""
    EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    folders = sorted(
        (p for p in EXPORT_ROOT.iterdir() if p.is_dir()),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    for rank, old in enumerate(folders):
        if rank >= EXPORT_MAX_RUNS - 1 or now - old.stat().st_mtime > EXPORT_TTL_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=EXPORT_ROOT))
    name = f"thinktree-{tree.strategy or 'run'}"
    paths = {fmt: folder / f"{name}.{fmt}" for fmt in ("json", "graphml", "html")}
    paths["json"].write_text(json.dumps(tree.to_dict(), indent=1))
    tree.write_graphml(paths["graphml"])
    paths["html"].write_text(html)
    return {fmt: str(path) for fmt, path in paths.items()}
