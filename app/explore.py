"""The explorer's handlers: widget values in, a RunRequest, a streamed search, figures and panels out.

`explore` is a generator of partial updates (a dict: output name -> new value; names not in a
dict stay as they are), so it can be tested without a browser and the layout (app/ui.py) decides
where each value goes. `run_api` is the scripting endpoint: one JSON config in, the run JSON out.
Every error reaches the user as `gr.Error` with a readable message, never a traceback.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import plotly.graph_objects as go

from app.panels import comparison_markdown, compute_markdown, status_line, steps_table
from app.service import RunRequest, run_to_end, stream_run
from strategies.tree import SearchTree
from visualize import replay_figure, standalone_html, tree_figure, votes_figure

log = logging.getLogger(__name__)

# Widget defaults (and the keys `request_from_widgets` reads); `compare` is the app's own switch.
DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "strategy": "beam_search",
    "n": 4,
    "beam_width": 2,
    "max_steps": 10,
    "temperature": 0.8,
    "top_p": 1.0,
    "aggregation": "last",
    "lookahead": 2,
    "filter_duplicates": False,
    # the embedded model's steps: median ~10 tokens, 99th percentile ~53 (36 problems, 529 steps);
    # a step past 64 tokens is rambling, and the longest step of an iteration sets its wait
    "max_step_tokens": 64,
    # a whole solution; the last iteration writes to the end, and a small model that never boxes
    # an answer would otherwise ramble on for the library default of 2048 tokens at batch 1
    "max_solution_tokens": 512,
    "model": "smollm2-135m",
    "prm": "arithmetic",
    "precision": "auto",
    "seed": 0,
    "expected": "",
    "compare": True,
}
INPUT_NAMES: tuple[str, ...] = tuple(DEFAULTS)
APP_LIMITS = ("max_step_tokens", "max_solution_tokens")  # the API uses the explorer's too
EXPORT_ROOT = Path(tempfile.gettempdir()) / "thinktree-exports"
# frames of steps arriving inside an iteration are drawn at most this often (the first at once):
# drawing pauses the search, and a figure a second is plenty to watch an iteration fill in
WRITING_FRAME_S = 0.5
EXPORT_TTL_S = 3600  # downloads are offered right after a run; older export folders are removed
_INT_KEYS = (
    "n", "beam_width", "max_steps", "lookahead", "max_step_tokens", "max_solution_tokens", "seed",
)  # fmt: skip


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
    d = {k: v for k, v in values.items() if k in DEFAULTS and k != "compare"}
    for key in _INT_KEYS:
        if key in d:
            d[key] = _whole(key, d[key])
    expected = (d.pop("expected", None) or "").strip()
    return RunRequest.from_dict({**d, "expected": expected or None})


def as_user_error(err: Exception) -> gr.Error:
    """A ValueError is the user's to fix and keeps its text; anything else is logged as a bug."""
    if isinstance(err, ValueError):
        return gr.Error(str(err), title="Check the settings", print_exception=False)
    log.exception("run failed")
    return gr.Error(f"The run failed: {type(err).__name__}: {err}")


def load_models(request: RunRequest) -> float:
    """Load (or reuse) the request's models now, so the UI can say so; returns the seconds taken."""
    from backend.runtime import get_runtime  # lazy: the only path that pulls in torch

    t0 = time.perf_counter()
    get_runtime(request.model, request.prm, request.precision)
    return time.perf_counter() - t0


def write_exports(tree: SearchTree, figure: go.Figure) -> tuple[str, str]:
    """The run JSON and the tree as a standalone HTML page (~5 MB: plotly.js inline, opens
    offline), in a fresh folder per run under EXPORT_ROOT; folders older than EXPORT_TTL_S go."""
    EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in EXPORT_ROOT.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > EXPORT_TTL_S:
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=EXPORT_ROOT))
    name = f"thinktree-{tree.strategy or 'run'}"
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps(tree.to_dict(), indent=1))
    html_path = folder / f"{name}.html"
    html_path.write_text(standalone_html(figure))
    return str(json_path), str(html_path)


def _stream(request: RunRequest) -> Iterator[SearchTree]:
    """`stream_run`, with any failure turned into a user-facing gr.Error."""
    try:
        yield from stream_run(request)
    except gr.Error:
        raise
    except Exception as err:
        raise as_user_error(err) from None


def explore(values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Run one search from widget values, yielding UI updates: the tree after every iteration,
    then the answer, compute, steps, exports and (if `compare`) majority voting at the same N."""
    try:
        request = request_from_widgets(values)
    except ValueError as err:
        raise as_user_error(err) from None
    n = request.config.n
    yield {  # clear the previous run's panels while this one starts
        "status": f"Loading **{request.model}** and the PRM (slow on the first run only)…",
        "answer": "",
        "compute": "",
        "votes": None,
        "comparison": "",
        "steps": None,
        "replay": gr.update(value=0, maximum=1, interactive=False),
        "run": None,
        "json_file": None,
        "html_file": None,
    }
    try:
        load_s = load_models(request)
    except Exception as err:
        raise as_user_error(err) from None
    loaded = f"Models ready ({load_s:.0f} s). " if load_s > 1 else ""
    tree = None
    drawn = -float("inf")
    for tree in _stream(request):
        # every iteration is drawn; steps arriving inside one at most every WRITING_FRAME_S
        if tree.done or (tree.writing and time.perf_counter() - drawn < WRITING_FRAME_S):
            continue
        yield {"status": loaded + "Running · " + status_line(tree), "tree": tree_figure(tree)}
        drawn = time.perf_counter()
    assert tree is not None and tree.done
    figure = tree_figure(tree)
    json_path, html_path = write_exports(tree, figure)
    run = tree.to_dict()
    yield {
        "status": f"Done · {status_line(tree)}",
        "tree": figure,
        "answer": tree.answer if tree.answer is not None else "(no answer found)",
        "compute": compute_markdown(tree),
        "steps": steps_table(tree),
        "replay": gr.update(value=tree.iteration, maximum=max(1, tree.iteration), interactive=True),
        "run": run,
        "json_file": json_path,
        "html_file": html_path,
        "votes": votes_figure(tree, None, request.expected),
        "comparison": comparison_markdown(tree, None, request.expected),
    }
    if not values.get("compare", True) or request.config.strategy == "majority_vote":
        return
    majority = None
    for majority in _stream(request.with_strategy("majority_vote")):
        if not majority.done and not majority.writing:
            yield {
                "status": f"Majority voting at N={n} for comparison: iteration {majority.iteration}…"
            }
    assert majority is not None
    yield {
        "status": f"Done · {status_line(tree)} · majority voting: {majority.answer}",
        "votes": votes_figure(tree, majority, request.expected),
        "comparison": comparison_markdown(tree, majority, request.expected),
    }


def replay(run: dict[str, Any] | None, iteration: float) -> Any:
    """The finished run's tree as it stood after `iteration` (nothing to do before a run)."""
    if not run:
        return gr.skip()
    return replay_figure(SearchTree.from_dict(run), int(iteration))


def run_api(config: dict | str) -> dict:
    """Run one search to the end from a JSON config (an object, or its text); the run JSON.

    Keys: prompt, strategy, n, and optionally beam_width, max_steps, temperature, top_p,
    aggregation, lookahead, filter_duplicates, max_step_tokens, max_solution_tokens, seed, model,
    prm, precision, expected. Unknown keys are an error. The token limits default to the
    explorer's (64 per step, 512 per solution), not the library's.
    """
    try:
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError as err:
                raise ValueError(f"The config is not valid JSON: {err.msg}.") from err
        if isinstance(config, dict):  # the explorer's token limits, unless the config sets them
            config = {k: DEFAULTS[k] for k in APP_LIMITS} | config
        request = RunRequest.from_dict(config)
        return run_to_end(request).to_dict()
    except Exception as err:
        raise as_user_error(err) from None
