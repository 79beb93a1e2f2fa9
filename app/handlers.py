"""The explorer's handlers: widget values in, a RunRequest, a streamed search, figures and panels out.

`explore` is a generator of partial updates (a dict: output name -> new value; names not in a
dict stay as they are), so it can be tested without a browser and the layout (app/ui.py) decides
where each value goes. `run_search` is the scripting endpoint (and MCP tool): a prompt and any
settings in, the run JSON with the majority-vote comparison out.
Every error reaches the user as `gr.Error` with a readable message, never a traceback.
"""

from __future__ import annotations

import html
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any, Literal

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
from app.service import (
    REQUEST_HELP,
    RunRequest,
    preset_values,
    run_json,
    setting_choices,
    short_names,
    stream_bigger_side,
    stream_majority,
    stream_run,
    write_exports,
)
from app.versus import versus_markdown
from strategies.config import SearchConfig, field_help
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
# One run at a time on the models, at most this many waiting (README, "Limits"); the explorer
# and the API share the line
GATE = Gate(max_waiting=int(os.environ.get("THINKTREE_MAX_WAITING", "8")))
# the Gradio queue of every event that runs the models: the running run and the line of waiting
# ones enter, and the gate lets one run at a time and refuses the one after the line's end
MODEL_QUEUE = dict(concurrency_limit=GATE.max_waiting + 2, concurrency_id="model")
# the running explorer run of each page (its run token, app/ui.py), for its Stop button
_CONTROLS: dict[str, RunControl] = {}
_CONTROLS_LOCK = threading.Lock()
# number widgets send floats (4.0): these settings are whole numbers
_INT_KEYS = tuple(f.name for f in fields(SearchConfig) if f.type == "int")


def gpu(duration: int = 120) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` on Hugging Face ZeroGPU; a no-op everywhere else."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def _whole(name: str, value: Any) -> Any:
    """Number widgets send floats (4.0); the config wants whole numbers and says so otherwise."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None:
        raise ValueError(f"{name} is missing.")
    return value


def request_from_widgets(values: dict[str, Any]) -> RunRequest:
    """The RunRequest for the explorer's widget values (ValueError with a readable message)."""
    d = {k: v for k, v in values.items() if k in DEFAULTS}
    for key in _INT_KEYS:
        if key in d:
            d[key] = _whole(key, d[key])
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


def load_models(request: RunRequest) -> float:
    """Load (or reuse) the request's models now, so the UI can say so; returns the seconds taken."""
    from backend.runtime import get_runtime  # models load with the first run, not with the page

    t0 = time.perf_counter()
    get_runtime(request.model, request.prm, request.precision)
    return time.perf_counter() - t0


def precision_hint() -> Any:
    """The precision menu's note on what "auto" means for the default policy on this machine
    (the page asks for it once it is up)."""
    from backend.loading.policy import choose_precision, resolve_device

    auto = choose_precision("auto", resolve_device("auto"), DEFAULTS["model"])[1]
    return gr.update(info=f"auto here: {auto}")


def _stream(
    request: RunRequest, runs=stream_run, control: RunControl | None = None
) -> Iterator[SearchTree]:
    """`stream_run` (or another of the service's streams), any failure a user-facing gr.Error."""
    try:
        yield from runs(request, control)
    except gr.Error:
        raise
    except Exception as err:
        raise as_user_error(err) from None


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
    n = request.config.n
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
    try:
        load_s = load_models(request)
    except Exception as err:
        raise as_user_error(err) from None
    loaded = f"Models ready ({load_s:.0f} s). " if load_s > 1 else ""
    tree = None
    drawn = -float("inf")
    for tree in _stream(request, control=control):
        # every iteration is drawn; steps arriving inside one at most every WRITING_FRAME_S
        if tree.done or (tree.writing and time.perf_counter() - drawn < WRITING_FRAME_S):
            continue
        yield {"status": loaded + "Running · " + status_line(tree), "tree": tree_figure(tree)}
        drawn = time.perf_counter()
    assert tree is not None and tree.done
    figure = tree_figure(tree)
    try:
        paths = write_exports(tree, standalone_html(figure))
    except Exception:  # a download that failed must not cost the user the finished run
        log.exception("writing the exports failed")
        paths = {}
    run = tree.to_dict()
    if tree.stopped and tree.stopped != "stopped":  # a limit or a fault, not the user's Stop
        gr.Warning(as_text(f"The run ended early: {tree.stopped}"), title="Stopped")
    yield {
        "status": f"{'Stopped' if tree.stopped else 'Done'} · {status_line(tree)}",
        "tree": figure,
        "answer": tree.answer if tree.answer is not None else "(no answer found)",
        "compute": compute_markdown(tree),
        "steps": steps_table(tree),
        "replay": gr.update(value=tree.iteration, maximum=max(1, tree.iteration), interactive=True),
        "run": run,
        "json_file": paths.get("json"),
        "graphml_file": paths.get("graphml"),
        "html_file": paths.get("html"),
        "votes": votes_figure(tree, None, request.expected),
        "comparison": comparison_markdown(tree, None, request.expected),
    }
    if not request.compares or tree.stopped:
        return
    majority = None
    for majority in _stream(request, stream_majority, control):
        if not majority.done and not majority.writing:
            yield {
                "status": f"Majority voting at N={n} for comparison: iteration {majority.iteration}…"
            }
    assert majority is not None
    said = f"stopped ({majority.stopped})" if majority.stopped else majority.answer
    said = escape_markdown(said)
    done = f"Done · {status_line(tree)} · majority voting: {said}"
    yield {
        "status": done,
        "votes": votes_figure(tree, majority, request.expected),
        "comparison": comparison_markdown(tree, majority, request.expected),
    }
    if request.bigger_model and not control.stopped:
        yield from _versus(request, tree, done, control)


def _versus(
    request: RunRequest, tree: SearchTree, done: str, control: RunControl
) -> Iterator[dict[str, Any]]:
    """The bigger model alone on the same question (`service.stream_bigger_side`): greedy, then
    majority voting at equal compute. Its failure is shown in its panel; the run stays."""
    small, big = short_names(request)
    yield {
        "status": f"{done} · now {big} answers alone (loading it the first time)…",
        "versus": versus_markdown(tree, None, None, small, big),
    }
    side = None
    try:
        for side in stream_bigger_side(request, tree, control):
            if side.done:
                break
            running = side.majority or side.greedy
            if running.done or running.writing:
                continue
            what = f"majority@{side.voters}" if side.majority else "alone"
            update = {"status": f"{done} · {big} {what}: iteration {running.iteration}…"}
            if side.majority is not None:
                update["versus"] = versus_markdown(
                    tree, side.greedy, None, small, big, request.expected
                )
            yield update
    except Exception as err:
        if not isinstance(err, ValueError):
            log.exception("the bigger model failed")
        yield {"status": done, "versus": f"*{big} could not answer here: {escape_markdown(err)}*"}
        return
    assert side is not None and side.done
    if side.stopped:
        yield {
            "status": done,
            "versus": f"*{big}'s run ended early: {escape_markdown(side.stopped)}*",
        }
        return
    yield {
        "status": done,
        "versus": versus_markdown(tree, side.greedy, side.majority, small, big, request.expected),
    }


def replay(run: dict[str, Any] | None, iteration: float) -> Any:
    """The finished run's tree as it stood after `iteration` (nothing to do before a run)."""
    if not run:
        return gr.skip()
    return replay_figure(SearchTree.from_dict(run), int(iteration))


def _bind(args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's settings by name, the preset's where left out (ValueError in words a user
    understands for a call the signature does not take)."""
    if args and isinstance(args[0], dict):
        raise ValueError(
            "/run takes the prompt and its settings as arguments, not one JSON object: "
            'predict("…", strategy="beam_search", n=4, api_name="/run").'
        )
    if "max_steps" in kwargs:
        raise ValueError("Unknown setting max_steps: the iteration limit is max_iterations.")
    try:
        bound = run_search.__signature__.bind(*args, **kwargs)
    except TypeError as err:  # a missing or unknown argument
        raise ValueError(str(err)) from None
    bound.apply_defaults()
    values = dict(bound.arguments)
    for key in _INT_KEYS:  # a JSON or MCP client may send 4.0 for 4
        values[key] = _whole(key, values[key])
    expected = values.get("expected")
    values["expected"] = (str(expected).strip() or None) if expected is not None else None
    return values


def _run(*args: Any, **kwargs: Any) -> dict:
    try:
        request = RunRequest.from_dict(_bind(args, kwargs))
        with GATE.turn(request.model):
            return run_json(request)
    except Exception as err:
        raise as_user_error(err) from None


def _api_types() -> dict[str, Any]:
    """Each argument's type: a choice among names (typed as Literal, so the API's schema lists
    them), or the preset value's type."""
    choices = setting_choices()
    return {
        name: Literal[choices[name]] if name in choices else type(value)
        for name, value in DEFAULTS.items()
    }


def _api_doc() -> str:
    helps = REQUEST_HELP | field_help()
    args = "\n".join(f"        {name}: {helps[name]}" for name in DEFAULTS)
    return (
        "Run one ThinkTree search to the end and return the run as JSON.\n\n"
        "    A small model solves the question step by step; a process reward model (PRM) scores\n"
        "    every step and the strategy keeps, prunes and picks by those scores. The result holds\n"
        "    the search tree (nodes with their text, scores and status), the answer, the votes per\n"
        "    answer, the compute used, and, unless compare is false, the majority vote at the same\n"
        "    budget N under 'comparison'. What is left out is the explorer's preset.\n\n"
        f"    Args:\n{args}\n"
    )


def _api_signature() -> inspect.Signature:
    types = _api_types()
    params = [inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
    params += [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=types[name]
        )
        for name, value in DEFAULTS.items()
        if name != "prompt"
    ]
    return inspect.Signature(params, return_annotation=dict)


def run_search(*args: Any, **kwargs: Any) -> dict:
    return _run(*args, **kwargs)


# The scripting endpoint (/run, and the MCP tool of the same name): a typed signature built from
# the request's fields and the preset, so the API, its schema and its docs list every setting with
# the value the explorer starts from, and a new setting appears in all of them at once.
run_search.__signature__ = _api_signature()
run_search.__annotations__ = {
    p.name: p.annotation for p in run_search.__signature__.parameters.values()
}
run_search.__annotations__["return"] = dict
run_search.__doc__ = _api_doc()
