"""The Gradio app: layout and wiring only. Handlers live in app/handlers.py, panels in
app/panels.py, the "How it works" lessons in app/lessons.py, the words in app/texts.py.

Every event that runs the model shares one queue (`concurrency_id="model"`), since one process
holds one copy of the models: its runs enter, wait their turn in `handlers.GATE` (one at a time,
a bounded line that says "busy" past its end) and run. Per-user data (the finished run, the run
token the Stop button finds the page's run by) lives in `gr.State`.
Building the app imports no torch: model and PRM names come from the catalog, and torch loads
with the first run, so the first page appears before any model code is read.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from app.api import run_search
from app.handlers import (
    DEFAULTS,
    INPUT_NAMES,
    MODEL_QUEUE,
    as_user_error,
    explore,
    gpu,
    precision_hint,
    replay,
    stop,
)
from app.lessons import LEGEND_MD, lesson_figure
from app.panels import STEP_COLUMNS
from app.request import NO_BIGGER, REQUEST_HELP, bigger_choices
from app.scaling_tab import scaling_tab
from app.texts import INTRO, api_markdown, verifiers_markdown
from backend.catalog import PRECISIONS, catalog, models_cache_dir
from backend.limits import Limits, limits_for
from backend.loading import gguf_parts
from strategies.config import AGGREGATIONS, bounds, field_help, slider_max
from strategies.info import STRATEGY_INFO, STRATEGY_NAMES

EXAMPLES_PATH = Path(__file__).resolve().parent.parent / "assets" / "examples.json"
OUTPUT_NAMES = (
    "status",
    "tree",
    "answer",
    "compute",
    "votes",
    "comparison",
    "versus",
    "steps",
    "replay",
    "run",
    "json_file",
    "graphml_file",
    "html_file",
    "run_btn",
)
BUDGETS = [2, 4, 8, 16, 32, 64, 128, 256]  # the menu's N, up to the machine's cap (`budgets`)
BEAM_WIDTHS = [2, 4, 8]
# the widgets whose range is this machine's cap for the starting model (backend/limits.py)
CAPPED = ("n", "max_iterations", "max_step_tokens", "max_solution_tokens")


def budgets(caps: Limits) -> list[int]:
    return [n for n in BUDGETS if n <= caps.max_n]


def widget_caps() -> list[Any]:
    """The capped widgets' ranges on this machine's device (a GPU allows more than a CPU)."""
    from backend.loading.policy import resolve_device

    caps = limits_for(DEFAULTS["model"], resolve_device("auto"))
    return [
        gr.update(choices=budgets(caps)),
        gr.update(maximum=caps.max_iterations),
        gr.update(maximum=caps.max_step_tokens),
        gr.update(maximum=caps.max_solution_tokens),
    ]


THEME = gr.themes.Soft(primary_hue="blue")
CSS = """
#tree-plot { min-height: 420px; }
.lesson-text { font-size: 0.95rem; }
"""
# how the app launches (app.py, and the tests that serve it): the `/run` endpoint is an MCP tool
# too. The app takes no uploads, but Gradio's upload route is open to anyone and keeps what it
# gets for an hour (delete_cache): max_file_size=0 refuses every byte, so no one fills the disk.
LAUNCH = dict(theme=THEME, css=CSS, mcp_server=True, max_file_size=0)


def load_examples() -> dict[str, list[dict[str, str]]]:
    """Example questions by group ("embedded", "hub") from assets/examples.json."""
    data = json.loads(EXAMPLES_PATH.read_text())
    return {group: data[group] for group in ("embedded", "hub")}


def _as_outputs(update: dict[str, Any]) -> tuple:
    """One value per output, in OUTPUT_NAMES order; names not in `update` stay unchanged."""
    return tuple(update.get(name, gr.skip()) for name in OUTPUT_NAMES)


@gpu(duration=120)
def _explore(*values: Any):
    """Positional widget values (then the page's run token) in, one tuple of output values per
    update. The Run button, disabled when clicked, is enabled again at the end, also after an
    error. A run Gradio cancels (the page closed) is closed at once: its turn is given back."""
    enable = {"run_btn": gr.update(interactive=True)}
    *widgets, token = values
    try:
        with contextlib.closing(explore(dict(zip(INPUT_NAMES, widgets)), token)) as updates:
            for update in updates:
                yield _as_outputs(update)
    except Exception as err:
        yield _as_outputs(enable)
        raise (err if isinstance(err, gr.Error) else as_user_error(err)) from None
    yield _as_outputs(enable)


def _strategy_hint(strategy: str) -> tuple[str, Any, Any]:
    """One line about the strategy; M only matters where N is split into groups of M."""
    info = STRATEGY_INFO[strategy]
    return (
        f"<small>{info.lesson}</small>",
        gr.update(interactive=info.reads_beam_width),
        gr.update(visible=info.uses_lookahead),
    )


def _policy_choices() -> list[tuple[str, str]]:
    """(label, name) per catalog policy; an offline model whose files are not here says so."""
    cache = models_cache_dir()
    choices = []
    for name in catalog().names("policy"):
        label = catalog().get(name).label
        if not gguf_parts.installed(name, cache):
            label += " (not installed: run scripts/setup.sh)"
        choices.append((label, name))
    return choices


def _bigger_choices() -> list[tuple[str, str]]:
    names = {"auto": "auto (the catalog's for the policy)", NO_BIGGER: "none"}
    return [(names.get(n) or catalog().get(n).label, n) for n in bigger_choices()]


def _examples(rows: list[dict[str, str]], title: str, targets: list) -> None:
    gr.Examples(
        examples=[[r["prompt"], r["expected"]] for r in rows],
        inputs=targets,
        example_labels=[r["label"] for r in rows],
        label=title,
    )


def _controls() -> tuple[dict[str, gr.components.Component], gr.Button, gr.Button]:
    """The input widgets (keyed as in `handlers.DEFAULTS`) and the Run and Stop buttons."""
    d = DEFAULTS
    w: dict[str, gr.components.Component] = {}
    w["prompt"] = gr.Textbox(
        label="Question", lines=3, placeholder="A math word problem…", elem_id="prompt"
    )
    w["expected"] = gr.Textbox(label="Expected answer (optional)", max_lines=1)
    with gr.Row():
        run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
    examples = load_examples()
    _examples(examples["embedded"], "Try these", [w["prompt"], w["expected"]])
    w["strategy"] = gr.Dropdown(
        [(STRATEGY_INFO[s].label, s) for s in STRATEGY_NAMES], value=d["strategy"], label="Strategy"
    )
    hint = gr.Markdown(_strategy_hint(d["strategy"])[0])
    caps = limits_for(d["model"], "cpu")  # this machine's, once the page is up (`widget_caps`)
    with gr.Row():
        w["n"] = gr.Dropdown(budgets(caps), value=d["n"], label="Budget N")
        w["beam_width"] = gr.Dropdown(BEAM_WIDTHS, value=d["beam_width"], label="Beam width M")
    w["max_iterations"] = gr.Slider(
        bounds("max_iterations")[0],
        caps.max_iterations,
        value=d["max_iterations"],
        step=1,
        label="Max iterations",
        info="one step per iteration; the last one writes each solution to its end",
    )
    models = catalog()
    w["prm"] = gr.Dropdown(
        [(models.prm_label(p), p) for p in models.prm_choices()],
        value=d["prm"],
        label="PRM (the step judge)",
    )
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            w["temperature"] = gr.Slider(
                *bounds("temperature"), value=d["temperature"], step=0.05, label="Temperature"
            )
            # top_p = 0 keeps no token: the slider starts one step above it
            w["top_p"] = gr.Slider(
                0.05, bounds("top_p")[1], value=d["top_p"], step=0.05, label="top_p"
            )
        w["aggregation"] = gr.Radio(
            list(AGGREGATIONS),
            value=d["aggregation"],
            label="Step score aggregation",
            info="a solution's score: its last step's, the min, or the product",
        )
        w["lookahead"] = gr.Slider(
            bounds("lookahead")[0],
            slider_max("lookahead"),
            value=d["lookahead"],
            step=1,
            label="Lookahead k (0: plain beam search)",
            visible=False,
        )
        w["filter_duplicates"] = gr.Checkbox(
            value=d["filter_duplicates"], label="Beam search: prune duplicate partial solutions"
        )
        with gr.Row():
            w["max_step_tokens"] = gr.Slider(
                16,
                caps.max_step_tokens,
                value=d["max_step_tokens"],
                step=16,
                label="Max tokens per step",
            )
            w["max_solution_tokens"] = gr.Slider(
                64,
                caps.max_solution_tokens,
                value=d["max_solution_tokens"],
                step=64,
                label="Max tokens per solution",
                info="the last iteration writes each solution to its end, at most this long",
            )
        with gr.Row():
            w["model"] = gr.Dropdown(_policy_choices(), value=d["model"], label="Policy model")
            w["precision"] = gr.Dropdown(
                list(PRECISIONS),
                value=d["precision"],
                label="Precision",
                info="auto: what runs fastest on this machine",
            )
            w["seed"] = gr.Number(value=d["seed"], precision=0, minimum=0, label="Seed")
        with gr.Row():
            w["compare"] = gr.Checkbox(
                value=d["compare"], label="Compare with majority voting at the same N"
            )
            w["bigger"] = gr.Dropdown(
                _bigger_choices(),
                value=d["bigger"],
                label="…and with a bigger model alone",
                info="greedy, then majority voting at the search's compute",
            )
    with gr.Accordion("Harder examples (for hub models)", open=False):
        _examples(examples["hub"], "MATH-style", [w["prompt"], w["expected"]])
    w["strategy"].change(
        _strategy_hint,
        w["strategy"],
        [hint, w["beam_width"], w["lookahead"]],
        queue=False,
        api_visibility="private",
    )
    return w, run_btn, stop_btn


def _explorer_tab() -> dict[str, gr.components.Component]:
    """The explorer; returns its input widgets."""
    with gr.Row():
        with gr.Column(scale=1, min_width=340):
            widgets, run_btn, stop_btn = _controls()
        with gr.Column(scale=3):
            status = gr.Markdown("Pick a question and press **Run**.", elem_id="status")
            tree = gr.Plot(label="Search tree", elem_id="tree-plot")
            replay_slider = gr.Slider(
                0,
                1,
                value=0,
                step=1,
                label="Replay: the tree after iteration…",
                interactive=False,
                elem_id="replay",
            )
            with gr.Row():
                answer = gr.Textbox(
                    label="Final answer", interactive=False, elem_id="final-answer", scale=1
                )
                compute = gr.Markdown(elem_id="compute")
    with gr.Row():
        votes = gr.Plot(label="Answers: search vs. majority voting", elem_id="votes-plot", scale=3)
        with gr.Column(scale=2):
            comparison = gr.Markdown(elem_id="comparison")
            versus = gr.Markdown(elem_id="versus")
    steps = gr.Dataframe(
        headers=STEP_COLUMNS,
        datatype=["number", "number", "number", "number", "str", "str"],
        label="Steps (click a column header to sort)",
        interactive=False,
        wrap=True,
        max_height=420,
        column_widths=["6%", "7%", "8%", "9%", "10%", "60%"],
    )
    with gr.Row():
        json_file = gr.File(label="Run JSON", interactive=False)
        graphml_file = gr.File(label="Tree as GraphML (networkx, Gephi, yEd)", interactive=False)
        html_file = gr.File(label="Tree as HTML (opens offline)", interactive=False)
    run_state = gr.State(None)
    run_token = gr.State(None)  # one per page, set by its first Run: what Stop finds its run by

    outputs = dict(
        status=status,
        tree=tree,
        answer=answer,
        compute=compute,
        votes=votes,
        comparison=comparison,
        versus=versus,
        steps=steps,
        replay=replay_slider,
        run=run_state,
        json_file=json_file,
        graphml_file=graphml_file,
        html_file=html_file,
        run_btn=run_btn,
    )
    # Run is disabled while a run streams (no double runs); _explore enables it again when the
    # run ends or fails. Stop asks the page's run to end (within about one step: it then shows
    # its tree so far, marked stopped) and enables Run at once. "multiple": a Run right after
    # Stop is not dropped while the stopped run still winds down (it waits its turn behind it).
    run_btn.click(
        lambda token: (gr.update(interactive=False), token or uuid.uuid4().hex),
        run_token,
        [run_btn, run_token],
        queue=False,
        api_visibility="private",
    ).then(
        _explore,
        [widgets[name] for name in INPUT_NAMES] + [run_token],
        [outputs[name] for name in OUTPUT_NAMES],
        api_name="explore",
        api_visibility="undocumented",  # for scripts /run is the API (and the MCP tool)
        show_progress="minimal",
        trigger_mode="multiple",
        **MODEL_QUEUE,
    )
    stop_btn.click(
        lambda token: (stop(token), gr.update(interactive=True)),
        run_token,
        [status, run_btn],
        queue=False,
        api_visibility="private",
    )
    replay_slider.input(
        replay,
        [run_state, replay_slider],
        tree,
        trigger_mode="always_last",
        show_progress="hidden",
        api_visibility="private",
    )
    return widgets


def _lessons_tab() -> None:
    gr.Markdown(LEGEND_MD)
    for strategy in STRATEGY_NAMES:
        info = STRATEGY_INFO[strategy]
        with gr.Row(equal_height=True):
            gr.Markdown(f"### {info.label}\n{info.lesson}", elem_classes="lesson-text")
            gr.Plot(lesson_figure(strategy), show_label=False, scale=2)
    gr.Markdown(verifiers_markdown())


def build_demo() -> gr.Blocks:
    """The whole app. Building it loads no model (models load on the first run)."""
    # delete_cache: Gradio's copies of the exports (~5 MB per run) go after an hour, swept every
    # 5 minutes (an hourly sweep would keep a copy up to 2 hours)
    with gr.Blocks(title="ThinkTree", delete_cache=(300, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Explore"):
                widgets = _explorer_tab()
            with gr.Tab("Scaling"):
                scaling_tab()
            with gr.Tab("How it works"):
                _lessons_tab()
            with gr.Tab("API"):
                gr.Markdown(api_markdown(DEFAULTS, REQUEST_HELP | field_help()))
        gr.api(gpu(duration=120)(run_search), api_name="run", **MODEL_QUEUE)
        # this machine's caps and what "auto" means here need torch: filled in once the page is up
        demo.load(
            widget_caps,
            None,
            [widgets[k] for k in CAPPED],
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
        demo.load(
            precision_hint,
            None,
            widgets["precision"],
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
    return demo
