"""The explorer's handlers: widget values in, a RunRequest, a streamed search, figures and panels out.

`explore` is a generator of partial updates (a dict: output name -> new value; names not in a
dict stay as they are), so it can be tested without a browser and the layout (app/ui.py) decides
where each value goes. It renders the one run flow (app/service.py: `stream_request`) that the
scripting endpoint (app/api.py) and the CLI consume too.
Every error reaches the user as `gr.Error` with a readable message, never a traceback.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import gradio as gr

from app.admission import Gate
from app.control import RunControl
from app.panels import (
    comparison_markdown,
    compute_markdown,
    escape_markdown,
    status_line,
    steps_table,
)
from app.request import RunRequest, preset_values
from app.service import Frame, short_names, stream_request, write_exports
from app.versus import versus_markdown
from strategies.config import SearchConfig
from strategies.tree import SearchTree
from visualize import replay_figure, standalone_html, tree_figure, votes_figure

log = logging.getLogger(__name__)

# The widgets' values before a user touches them (and the keys `request_from_widgets` reads):
# the service's preset, so the explorer and a `/run` call with only a prompt run the same search.
DEFAULTS: dict[str, Any] = preset_values()
INPUT_NAMES: tuple[str, ...] = tuple(DEFAULTS)
# frames of steps arriving inside an iteration are drawn at most this often (the first at once):
# drawing pauses the search, and a figure a second is plenty to watch an iteration fill in
WRITING_FRAME_S = 0.5
# One run at a time on the models, at most this many waiting (docs/operations.md); the explorer
# and the API share the line
GATE = Gate(max_waiting=int(os.environ.get("THINKTREE_MAX_WAITING", "8")))
# the Gradio queue of every event that runs the models: the running run and the line of waiting
# ones enter, and the gate lets one run at a time and refuses the one after the line's end
MODEL_QUEUE = dict(concurrency_limit=GATE.max_waiting + 2, concurrency_id="model")
# the running explorer run of each page (its run token, app/ui.py), for its Stop button
_CONTROLS: dict[str, RunControl] = {}
_CONTROLS_LOCK = threading.Lock()
# number widgets send floats (4.0): these settings are whole numbers
INT_KEYS = tuple(f.name for f in fields(SearchConfig) if f.type == "int")


def gpu(duration: int = 120) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` on Hugging Face ZeroGPU; a no-op everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def whole(name: str, value: Any) -> Any:
    """Number widgets send floats (4.0); the config wants whole numbers and says so otherwise."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None:
        raise ValueError(f"{name} is missing.")
    return value


def request_from_widgets(values: dict[str, Any]) -> RunRequest:
    """The RunRequest for the explorer's widget values (ValueError with a readable message)."""
    d = {k: v for k, v in values.items() if k in DEFAULTS}
    for key in INT_KEYS:
        if key in d:
            d[key] = whole(key, d[key])
    expected = (d.pop("expected", None) or "").strip()
    return RunRequest.from_dict({**d, "expected": expected or None})


def as_user_error(err: Exception) -> gr.Error:
    """A ValueError is the user's to fix and keeps its text; anything else is logged as a bug.
    The text is escaped: Gradio renders a message as HTML, and it may quote what was sent."""
    if isinstance(err, ValueError):
        return gr.Error(as_text(str(err)), title="Check the settings", print_exception=False)
    log.exception("run failed")
    return gr.Error(as_text(f"The run failed: {type(err).__name__}: {err}"))


def as_text(message: str) -> str:
    """`message` for Gradio's error and warning pop-ups, which render HTML: shown as written."""
    return html.escape(message, quote=False)


def precision_hint() -> Any:
    """The precision menu's note on what "auto" means for the default policy on this machine
    (the page asks for it once it is up)."""
    from backend.loading.policy import choose_precision, resolve_device

    auto = choose_precision("auto", resolve_device("auto"), DEFAULTS["model"])[1]
    return gr.update(info=f"auto here: {auto}")


def stop(token: str | None) -> str:
    """Stop the page's run (`token`: its run token): it ends within about one step, keeping
    its tree so far, marked "stopped"."""
    with _CONTROLS_LOCK:
        control = _CONTROLS.get(token or "")
    if control is None:
        return "Nothing is running."
    control.stop()
    return "**Stopping…** (the tree so far is kept)"


def explore(values: dict[str, Any], token: str | None = None) -> Iterator[dict[str, Any]]:
    """Run one search from widget values, yielding UI updates: the tree after every iteration,
    then the answer, compute, steps, exports and (if `compare`) majority voting at the same N.
    The run first waits its turn on the models (`GATE`); `stop(token)` ends it early."""
    try:
        request = request_from_widgets(values)
        ticket = GATE.join(request.model)
    except ValueError as err:
        raise as_user_error(err) from None
    control = RunControl()
    if token:
        with _CONTROLS_LOCK:
            _CONTROLS[token] = control
    try:
        for ahead, eta in GATE.wait(ticket):
            if control.stopped:
                yield {"status": "**Stopped** before it started."}
                return
            yield {
                "status": f"Waiting for the models: {ahead} run{'s' * (ahead != 1)} ahead "
                f"of yours, about {eta:.0f} s…"
            }
        if control.stopped:
            yield {"status": "**Stopped** before it started."}
            return
        yield from _explore_run(request, control)
    finally:
        GATE.leave(ticket)
        if token:
            with _CONTROLS_LOCK:
                if _CONTROLS.get(token) is control:
                    del _CONTROLS[token]


def _explore_run(request: RunRequest, control: RunControl) -> Iterator[dict[str, Any]]:
    """Render the request's run (`service.stream_request`) as UI updates, part by part."""
    yield {  # clear the previous run's panels while this one starts
        "status": f"Loading **{request.model}** and the PRM (slow on the first run only)…",
        "answer": "",
        "compute": "",
        "votes": None,
        "comparison": "",
        "versus": "",
        "steps": None,
        "replay": gr.update(value=0, maximum=1, interactive=False),
        "run": None,
        "json_file": None,
        "graphml_file": None,
        "html_file": None,
    }
    view = _RunView(request)
    try:
        with contextlib.closing(stream_request(request, control)) as frames:
            for frame in frames:
                yield from view.show(frame)
    except gr.Error:
        raise
    except Exception as err:
        raise as_user_error(err) from None


class _RunView:
    """What the explorer shows of one run's frames: the tree growing (a figure per iteration,
    steps arriving inside one at most every WRITING_FRAME_S), the finished search's panels and
    exports, majority voting beside it, then the bigger model alone."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.loaded = ""
        self.drawn = -float("inf")
        self.search: SearchTree | None = None
        self.done = ""  # the status line once the comparison is in
        self.small, self.big = short_names(request)

    def show(self, frame: Frame) -> list[dict[str, Any]]:
        """The updates `frame` makes (none for a frame not worth drawing)."""
        if frame.part == "loaded":
            self.loaded = f"Models ready ({frame.load_s:.0f} s). " if frame.load_s > 1 else ""
            return []
        if frame.part == "search":
            update = self._search(frame.tree)
        elif frame.part == "majority":
            update = self._majority(frame.tree)
        else:
            update = self._bigger(frame)
        return [update] if update else []

    def _search(self, tree: SearchTree) -> dict[str, Any] | None:
        if tree.done:
            self.search = tree
            return self._finished(tree)
        if tree.writing and time.perf_counter() - self.drawn < WRITING_FRAME_S:
            return None
        self.drawn = time.perf_counter()
        return {"status": self.loaded + "Running · " + status_line(tree), "tree": tree_figure(tree)}

    def _finished(self, tree: SearchTree) -> dict[str, Any]:
        figure = tree_figure(tree)
        try:
            paths = write_exports(tree, standalone_html(figure))
        except Exception:  # a download that failed must not cost the user the finished run
            log.exception("writing the exports failed")
            paths = {}
        if tree.stopped and tree.stopped != "stopped":  # a limit or a fault, not the user's Stop
            gr.Warning(as_text(f"The run ended early: {tree.stopped}"), title="Stopped")
        expected = self.request.expected
        return {
            "status": f"{'Stopped' if tree.stopped else 'Done'} · {status_line(tree)}",
            "tree": figure,
            "answer": tree.answer if tree.answer is not None else "(no answer found)",
            "compute": compute_markdown(tree),
            "steps": steps_table(tree),
            "replay": gr.update(
                value=tree.iteration, maximum=max(1, tree.iteration), interactive=True
            ),
            "run": tree.to_dict(),
            "json_file": paths.get("json"),
            "graphml_file": paths.get("graphml"),
            "html_file": paths.get("html"),
            "votes": votes_figure(tree, None, expected),
            "comparison": comparison_markdown(tree, None, expected),
        }

    def _majority(self, majority: SearchTree | None) -> dict[str, Any] | None:
        if majority is None or (not majority.done and majority.writing):
            return None  # it starts, or steps arrive inside an iteration
        if not majority.done:
            n, at = self.request.config.n, majority.iteration
            return {"status": f"Majority voting at N={n} for comparison: iteration {at}…"}
        said = f"stopped ({majority.stopped})" if majority.stopped else majority.answer
        self.done = f"Done · {status_line(self.search)} · majority voting: {escape_markdown(said)}"
        expected = self.request.expected
        return {
            "status": self.done,
            "votes": votes_figure(self.search, majority, expected),
            "comparison": comparison_markdown(self.search, majority, expected),
        }

    def _bigger(self, frame: Frame) -> dict[str, Any] | None:
        """The bigger model alone on the same question: greedy, then majority voting at equal
        compute. Its failure is shown in its panel; the run stays."""
        small, big, tree, expected = self.small, self.big, self.search, self.request.expected
        if frame.side is None and frame.error is None:  # it starts: said before it loads
            return {
                "status": f"{self.done} · now {big} answers alone (loading it the first time)…",
                "versus": versus_markdown(tree, None, None, small, big),
            }
        if frame.error is not None:  # the service logged it
            why = escape_markdown(frame.error)
            return {"status": self.done, "versus": f"*{big} could not answer here: {why}*"}
        side = frame.side
        if side.done:
            if side.stopped:
                why = escape_markdown(side.stopped)
                return {"status": self.done, "versus": f"*{big}'s run ended early: {why}*"}
            return {
                "status": self.done,
                "versus": versus_markdown(tree, side.greedy, side.majority, small, big, expected),
            }
        running = side.majority or side.greedy
        if running.done or running.writing:
            return None
        what = f"majority@{side.voters}" if side.majority else "alone"
        update = {"status": f"{self.done} · {big} {what}: iteration {running.iteration}…"}
        if side.majority is not None:
            update["versus"] = versus_markdown(tree, side.greedy, None, small, big, expected)
        return update


def replay(run: dict[str, Any] | None, iteration: float) -> Any:
    """The finished run's tree as it stood after `iteration` (nothing to do before a run)."""
    if not run:
        return gr.skip()
    return replay_figure(SearchTree.from_dict(run), int(iteration))
