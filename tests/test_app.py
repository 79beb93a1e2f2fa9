"""The web app, driven like a user's script would: launched on a free port, called with gradio_client.

UI wiring is tested against the deterministic fakes (milliseconds per run, via a patched
`backend.runtime.get_runtime`); the scripting API once against the real embedded model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app.api
import app.handlers
import app.service
import backend.runtime
from app.handlers import DEFAULTS, explore, request_from_widgets
from app.lessons import lesson_figure, lesson_tree
from app.panels import STEP_COLUMNS, comparison_markdown, compute_markdown, steps_table
from app.request import PRESET
from app.ui import INPUT_NAMES, OUTPUT_NAMES, load_examples
from backend.llama import native
from strategies.info import STRATEGY_NAMES
from strategies.tree import SearchTree
from tests.fakes import FakeGenerator, FakeScorer
from tests.serving import final, serving
from visualize import standalone_html

QUESTION = "Sara has 5 pencils and buys 7 more. How many pencils does she have now?"


class FakeRuntime:
    """What `stream_run` needs from a runtime: a generator, a scorer and the meta."""

    def __init__(self) -> None:
        self.generator = FakeGenerator(depth=3)
        self.scorer = FakeScorer()

    def meta(self) -> dict:
        return {"model": "fake", "prm": "fake", "device": "cpu", "precision": "fp32", "threads": 1}


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: FakeRuntime())


@pytest.fixture(scope="module")
def client():
    with serving() as url:
        yield Client(url, verbose=False)


def _widgets(**overrides) -> list:
    values = {**DEFAULTS, "prompt": QUESTION, **overrides}
    return [values[name] for name in INPUT_NAMES]


# ---- the scripting API ---------------------------------------------------------------------
@pytest.mark.model
def test_run_api_on_embedded_model(client):
    run = client.predict(
        QUESTION,
        strategy="beam_search",
        n=4,
        beam_width=2,
        max_iterations=3,
        expected="12",
        api_name="/run",
    )
    tree = SearchTree.from_dict(run)
    assert tree.done and "answer" in run
    assert tree.strategy == "beam_search" and tree.config["n"] == 4
    assert len(tree.nodes) > 1 and tree.compute.generated_tokens > 0
    for key in ("model", "precision", "threads", "device"):
        assert key in tree.meta
    assert tree.meta["model"] == "smollm2-135m"
    # SmolLM2 runs from its GGUF file in llama.cpp, at the file's own quantization
    assert tree.meta["engine"] == "llama.cpp" and tree.meta["precision"] == "gguf"
    assert tree.meta["precision_reason"].startswith("Q4_1")
    assert native.cpu_build() in tree.meta["precision_reason"]  # which build of llama.cpp ran
    assert tree.meta["cpu"] == native.cpu_name()
    # majority voting at the same N ran beside it, as in the explorer
    majority = run["comparison"]
    assert majority["strategy"] == "majority_vote" and majority["compute"]["generated_tokens"] > 0
    assert sum(v["count"] for v in majority["votes"].values()) <= 4


def test_a_run_with_only_a_prompt_takes_the_explorers_preset(client, fake_models):
    run = client.predict("1+1?", api_name="/run")
    tree = SearchTree.from_dict(run)
    assert tree.done and tree.meta["model"] == "fake"
    assert tree.config == PRESET.to_dict()
    assert {k: DEFAULTS[k] for k in tree.config} == tree.config  # what the widgets start from
    assert run["comparison"]["strategy"] == "majority_vote"
    run = client.predict(
        "1+1?", strategy="dvts", n=4, max_solution_tokens=1024, compare=False, api_name="/run"
    )
    tree = SearchTree.from_dict(run)
    assert (tree.strategy, tree.config["n"], tree.config["max_solution_tokens"]) == (
        "dvts",
        4,
        1024,
    )
    assert tree.config["max_step_tokens"] == PRESET.max_step_tokens and "comparison" not in run


def test_explorer_and_api_with_the_same_settings_build_the_same_tree(fake_models):
    """The explorer untouched and `/run` with only the prompt: one search, one comparison."""
    updates = list(explore({**DEFAULTS, "prompt": QUESTION}))
    explored = SearchTree.from_dict(next(u["run"] for u in updates if u.get("run")))
    api = final(app.api.run_search(QUESTION))
    called = SearchTree.from_dict(api)

    def shape(tree: SearchTree) -> list:
        return [(n.parent, n.text, n.score, n.status, n.answer) for n in tree.nodes]

    assert called.config == explored.config and called.strategy == explored.strategy
    assert shape(called) == shape(explored) and called.answer == explored.answer
    assert api["comparison"]["answer"] in updates[-1]["comparison"]  # the majority's answer


def test_bad_input_is_an_error_message_and_the_app_keeps_serving(client, fake_models):
    with pytest.raises(AppError, match="divisible by the beam width"):
        client.predict(QUESTION, strategy="beam_search", n=6, beam_width=4, api_name="/run")
    with pytest.raises(AppError, match="Please type a question"):
        client.predict("  ", n=4, api_name="/run")
    with pytest.raises(AppError, match="needs a PRM"):
        client.predict(QUESTION, strategy="beam_search", prm="none", api_name="/run")
    with pytest.raises(TypeError, match="hello"):  # the client refuses an unknown setting
        client.predict(QUESTION, hello=4, api_name="/run")
    with pytest.raises(AppError, match="not one JSON object"):
        client.predict({"prompt": QUESTION}, api_name="/run")
    with pytest.raises(AppError, match="not one JSON object"):  # the same call, sent as text
        client.predict(json.dumps({"prompt": QUESTION, "n": 4}), api_name="/run")
    braces = client.predict("{x | x > 2} has how many elements below 5?", n=2, api_name="/run")
    assert SearchTree.from_dict(braces).done  # a question that starts with a brace still runs
    run = client.predict(QUESTION, strategy="beam_search", n=8, beam_width=4, api_name="/run")
    assert SearchTree.from_dict(run).done


def test_run_takes_what_a_json_or_mcp_client_sends_and_reports_bugs_as_bugs(fake_models):
    import gradio as gr

    with pytest.raises(gr.Error, match="the iteration limit is max_iterations"):
        final(app.api.run_search(QUESTION, max_steps=3))
    run = final(app.api.run_search(QUESTION, n=4.0, expected=2, compare=False))
    tree = SearchTree.from_dict(run)
    assert tree.config["n"] == 4 and tree.meta["expected"] == "2"

    def broken(request, control=None):
        raise TypeError("a bug inside the search")
        yield

    original = app.api.stream_request
    app.api.stream_request = broken
    try:
        with pytest.raises(gr.Error) as caught:
            final(app.api.run_search(QUESTION))
    finally:
        app.api.stream_request = original
    assert caught.value.title != "Check the settings" and "TypeError" in str(caught.value)


def test_run_is_an_mcp_tool_with_a_typed_schema_and_answers_a_call(client, fake_models):
    import ast
    import asyncio
    import json
    import urllib.request

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    base = client.src.rstrip("/")
    with urllib.request.urlopen(f"{base}/gradio_api/mcp/schema") as response:
        tools = {t["name"]: t for t in json.load(response)}
    assert set(tools) == {"run_search"}  # the explorer's own endpoint is not a tool
    name = "run_search"
    schema = tools[name]["inputSchema"]["properties"]
    assert set(schema) == set(DEFAULTS) and schema["n"]["type"] == "integer"
    assert "budget N" in schema["n"]["description"]
    assert "majority vote" in tools[name]["description"]

    async def call() -> dict:
        async with streamablehttp_client(f"{base}/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = {t.name for t in (await session.list_tools()).tools}
                assert name in listed
                result = await session.call_tool(
                    name, {"prompt": QUESTION, "n": 2, "beam_width": 2}
                )
                # Gradio's MCP server hands a dict over as its Python text (`str(result)`)
            return ast.literal_eval(result.content[0].text)

    run = asyncio.run(call())
    tree = SearchTree.from_dict(run)
    assert tree.done and tree.config["n"] == 2 and run["comparison"]["answer"] is not None


# ---- the streaming explorer ----------------------------------------------------------------
def test_explorer_streams_tree_updates_before_the_final_one(client, fake_models):
    job = client.submit(*_widgets(strategy="beam_search", n=4, beam_width=2), api_name="/explore")
    updates = list(job)
    assert job.status().success
    # the State and the Run button are not sent to API clients: the other outputs in order
    names = [n for n in OUTPUT_NAMES if n not in ("run", "run_btn")]
    frames = [dict(zip(names, u)) for u in updates]
    trees = [f["tree"] for f in frames if isinstance(f["tree"], dict) and "plot" in f["tree"]]
    assert len(trees) >= 4  # three iterations streamed, then the finished tree
    final = next(f for f in frames if isinstance(f["answer"], str) and f["answer"])
    assert final["status"].startswith("Done")
    assert final["steps"]["headers"] == STEP_COLUMNS
    assert str(final["json_file"]).endswith(".json") and str(final["html_file"]).endswith(".html")
    assert str(final["graphml_file"]).endswith(".graphml")
    comparisons = [f["comparison"] for f in frames if isinstance(f["comparison"], str)]
    assert "Majority voting" in comparisons[-1]


def test_explorer_bad_widgets_raise_gr_error(client, fake_models):
    job = client.submit(*_widgets(strategy="dvts", n=2, beam_width=4), api_name="/explore")
    with pytest.raises(AppError, match="larger than the budget"):
        job.result()
    run = client.predict(QUESTION, n=2, beam_width=2, api_name="/run")
    assert SearchTree.from_dict(run).done


def test_explore_handler_directly(fake_models):
    values = {**DEFAULTS, "prompt": QUESTION, "strategy": "weighted_best_of_n", "compare": False}
    updates = list(explore(values))
    trees = [u["tree"] for u in updates if "tree" in u]
    assert len(trees) >= 3
    final = next(u for u in updates if "run" in u and u["run"])
    tree = SearchTree.from_dict(final["run"])
    assert tree.done and final["answer"] == tree.answer
    assert len(final["steps"]) == len(tree.nodes) - 1


def test_run_button_is_enabled_again_after_an_error(fake_models):
    import gradio as gr

    from app.ui import _explore

    updates = _explore(*_widgets(prompt=""))
    first = next(updates)
    assert first[OUTPUT_NAMES.index("run_btn")]["interactive"] is True
    with pytest.raises(gr.Error, match="Please type a question"):
        next(updates)


# ---- helpers -------------------------------------------------------------------------------
def test_request_from_widgets_converts_numbers_and_blank_expected():
    request = request_from_widgets(
        {**DEFAULTS, "prompt": QUESTION, "n": 8.0, "seed": 3.0, "max_iterations": 5.0}
    )
    assert request.config.n == 8 and request.config.seed == 3
    assert request.config.max_iterations == 5 and request.expected is None
    with pytest.raises(ValueError, match="whole number"):
        request_from_widgets({**DEFAULTS, "prompt": QUESTION, "seed": 1.5})


def test_exports_go_to_a_fresh_folder_and_old_ones_are_removed(tmp_path, monkeypatch):
    import networkx as nx

    monkeypatch.setattr(app.service, "EXPORT_ROOT", tmp_path)
    stale = tmp_path / "run-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    tree = lesson_tree("dvts")
    paths = app.service.write_exports(tree, standalone_html(lesson_figure("dvts")))
    assert not stale.exists()
    assert SearchTree.from_json(Path(paths["json"]).read_text()).answer == tree.answer
    assert nx.read_graphml(paths["graphml"]).number_of_nodes() == len(tree.nodes)
    assert "plotly" in Path(paths["html"]).read_text()[:100_000].lower()


def test_panels():
    tree = lesson_tree("beam_search")
    table = steps_table(tree)
    assert list(table.columns) == STEP_COLUMNS and len(table) == len(tree.nodes) - 1
    majority = lesson_tree("majority_vote")
    text = comparison_markdown(tree, majority, expected="11")
    assert "Beam search" in text and "Majority voting" in text and "disagree" in text
    tree.meta.update(engine="llama.cpp", device="cpu", precision="gguf", threads=2)
    assert "| llama.cpp · cpu · gguf · 2 |" in compute_markdown(tree)
    assert "| weights |" not in compute_markdown(tree)
    why = "Q4_K - Medium, as the GGUF file stores it (llama.cpp for AVX2 FMA F16C)"
    tree.meta.update(precision_reason=why, cpu="AMD EPYC 7B13")
    text = compute_markdown(tree)
    assert f"| weights | {why} |" in text
    assert "| CPU | AMD EPYC 7B13 |" in text


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_lesson_draws_a_finished_tree(strategy):
    tree = lesson_tree(strategy)
    assert tree.done and tree.answer is not None
    assert lesson_figure(strategy).data


def test_examples_file():
    examples = load_examples()
    assert len(examples["embedded"]) >= 3 and examples["hub"]
    for row in examples["embedded"] + examples["hub"]:
        assert row["prompt"].strip() and row["expected"].strip() and row["label"]
    assert all(r["label"].startswith("for hub models") for r in examples["hub"])
