"""Safety on a public Space: no model's remote code ever runs, only catalogued models load (an
operator may add some), what a model or a user writes is shown as text, no file outside the
exports is served, exports are cleaned up, and the API and MCP server offer only `/run`.

Nothing here loads a model: loading is refused, or its first call is recorded and stopped.
"""

from __future__ import annotations

import ast
import json
import os
import re
import urllib.error
import urllib.request
import uuid
from html.parser import HTMLParser
from pathlib import Path

import gradio as gr
import gradio.utils
import pytest
import torch
from gradio_client import Client
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

import app.api
import app.handlers
import app.service
import backend.runtime
from app.handlers import DEFAULTS
from app.panels import (
    STEP_COLUMNS,
    comparison_markdown,
    compute_markdown,
    escape_markdown,
    status_line,
    steps_table,
)
from app.request import RunRequest, bigger_choices, setting_choices
from app.ui import INPUT_NAMES, OUTPUT_NAMES, build_demo
from app.versus import verdict_line, versus_markdown
from backend import catalog as cat
from backend.catalog import EXTRA_MODELS_ENV, load_catalog, models_cache_dir
from backend.loading.prm import load_hub_prm
from backend.runtime import ModelPool
from strategies.tree import Compute, SearchTree
from tests.serving import final, serving
from tests.test_app import FakeRuntime

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Sara has 5 pencils and buys 7 more. How many pencils does she have now?"
REMOTE_CODE = "trust_remote" + "_code"  # spelled apart, so this file does not match itself


# ---- 1. no remote code ---------------------------------------------------------------------
def _project_files() -> list[Path]:
    """Every .py file of the project: not the virtual env, not git's or a tool's hidden folders."""
    return [
        p
        for p in sorted(ROOT.rglob("*.py"))
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    ]


def _remote_code_settings(tree: ast.AST) -> list[tuple[int, ast.AST]]:
    """(line, value) of every place the code sets trust_remote_code, as a keyword argument, a
    dict entry (`**{...}`, a kwargs dict) or an item assignment."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found += [(k.value.lineno, k.value) for k in node.keywords if k.arg == REMOTE_CODE]
        elif isinstance(node, ast.Dict):
            found += [
                (v.lineno, v)
                for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant) and k.value == REMOTE_CODE
            ]
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                key = getattr(target, "slice", None)
                if isinstance(key, ast.Constant) and key.value == REMOTE_CODE:
                    found.append((node.lineno, node.value))
    return found


def _is_false(value: ast.AST) -> bool:
    return isinstance(value, ast.Constant) and value.value is False


def test_no_file_of_the_project_trusts_remote_code():
    """No code sets trust_remote_code but to a literal False; outside tests/ (which look for
    the words), no text says it either, not even a string of code."""
    files = _project_files()
    assert ROOT / "backend" / "loading" / "policy.py" in files and len(files) > 50
    in_text = re.compile(REMOTE_CODE + r"""["']?\s*[=:]\s*(?!False\b)""")
    bad = []
    for path in files:
        text, where = path.read_text(), path.relative_to(ROOT)
        settings = _remote_code_settings(ast.parse(text))
        bad += [f"{where}:{line}" for line, value in settings if not _is_false(value)]
        if where.parts[0] != "tests":
            bad += [f"{where}: {m.group()!r}" for m in in_text.finditer(text)]
    assert bad == []


def test_every_loader_call_refuses_remote_code_in_so_many_words():
    """Each from_pretrained in backend/ passes trust_remote_code=False itself: left out,
    transformers asks on a terminal whether to run a repo's code, and a "y" would run it."""
    calls = []
    for path in sorted((ROOT / "backend").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "from_pretrained":
                given_ = {k.arg: k.value for k in node.keywords}
                ok = REMOTE_CODE in given_ and _is_false(given_[REMOTE_CODE])
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert len(calls) >= 4  # policy.py: the hub's model and tokenizer; prm.py: the same
    assert [where for where, ok in calls if not ok] == []


# ---- 2. only catalogued models, unless the operator adds some --------------------------------
UNCATALOGUED = (
    "evil/model",
    "HuggingFaceTB/SmolLM2-135M-Instruct",  # a catalogued model's hub id is not its name
    "/tmp/x",
    "../x",
    "smollm2-135m/../../x",
    "smollm2-135m ",
)


class Recorded(Exception):
    """Raised by a stand-in for a loading call, after it noted its arguments."""


def _stops_at_the_recorded_load(call, *args) -> None:
    """`call(*args)` fails with Recorded (the pool may wrap it as a load error)."""
    with pytest.raises(Exception) as caught:
        call(*args)
    err: BaseException | None = caught.value
    while err is not None and not isinstance(err, Recorded):
        err = err.__cause__ or err.__context__
    assert isinstance(err, Recorded), caught.value


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load or download a model fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to load {args} {kwargs}")

    for cls in (AutoModelForCausalLM, AutoTokenizer, PreTrainedModel):
        monkeypatch.setattr(cls, "from_pretrained", refuse)
    monkeypatch.setattr(backend.runtime, "load_policy", refuse)
    monkeypatch.setattr(backend.loading.prm, "load_hub_prm", refuse)


@pytest.mark.parametrize("name", UNCATALOGUED)
def test_an_uncatalogued_model_is_refused_with_the_choices_before_anything_loads(name, no_loading):
    listed = r"the catalog lists: smollm2-135m, qwen2\.5-coder-0\.5b"
    pool = ModelPool()
    with pytest.raises(ValueError, match=rf"Unknown policy {re.escape(repr(name))}; {listed}"):
        pool.runtime(name, "arithmetic", "fp32")
    with pytest.raises(ValueError, match=r"Unknown PRM .*; choose one of arithmetic"):
        pool.runtime("smollm2-135m", name, "fp32")
    with pytest.raises(ValueError, match=listed):
        pool.bigger(name)
    with pytest.raises(ValueError, match="Unknown bigger model"):
        RunRequest(QUESTION, bigger=name)
    with pytest.raises(gr.Error, match=rf"Unknown policy.*{listed}"):  # the /run endpoint
        final(app.api.run_search(QUESTION, model=name))
    assert name not in setting_choices()["model"] and name not in cat.catalog().names()


def test_a_name_is_never_a_hub_id_or_a_path():
    base = {"label": "x", "license": "x", "hub_id": "org/m", "params": 10, "prompt": "reference"}
    for name in ("evil/model", "../x", "/tmp/x", ".hidden", "auto", "none", "a b", "x" * 65):
        with pytest.raises(ValueError, match="not a hub id, a path"):
            cat.CatalogEntry(name, "policy", **base | {"family": "causal_lm"})
    for hub_id in ("../x", "org/../../x", "relative/folder/x", "org/m; rm -rf"):
        with pytest.raises(ValueError, match="hub_id is a hub repo"):
            cat.CatalogEntry("m", "policy", **base | {"family": "causal_lm", "hub_id": hub_id})


_DOWNLOADS = {"prompt": "reference", "params": 1000, "license": "MIT"}
EXTRA = {  # an operator's file: two policies (a hub repo, a local folder) and a hub PRM
    "description": "our own models",
    "policies": {
        "my-policy": _DOWNLOADS
        | {"label": "Ours", "hub_id": "someorg/some-model", "bigger": "qwen2.5-coder-1.5b"},
        "my-local": _DOWNLOADS | {"label": "A local folder", "hub_id": "/srv/models/tiny"},
    },
    "prms": {
        "my-prm": _DOWNLOADS
        | {"label": "Our PRM", "hub_id": "someorg/some-prm", "family": "rlhflow", "prompt": "chat"}
    },
}


@pytest.fixture
def extra_models(tmp_path, monkeypatch):
    """THINKTREE_EXTRA_MODELS names a file with EXTRA; the cached catalog is read again."""
    path = tmp_path / "extra-models.json"
    path.write_text(json.dumps(EXTRA))
    monkeypatch.setenv(EXTRA_MODELS_ENV, str(path))
    cat.catalog.cache_clear()
    yield path
    monkeypatch.delenv(EXTRA_MODELS_ENV, raising=False)
    cat.catalog.cache_clear()


@pytest.fixture
def recorded_loads(monkeypatch):
    """Each from_pretrained call's (location, keywords), the first call stopped by `Recorded`."""
    calls = []

    def record(location, *args, **kwargs):
        calls.append((str(location), kwargs))
        raise Recorded

    for cls in (AutoModelForCausalLM, AutoTokenizer, PreTrainedModel):
        monkeypatch.setattr(cls, "from_pretrained", record)
    return calls


def test_an_operators_extra_models_are_choices_and_load_through_the_same_loaders(
    extra_models, recorded_loads
):
    models = cat.catalog()
    assert models.names("policy")[-2:] == ("my-policy", "my-local")  # after the catalog's own
    assert models.get("my-policy").bigger == "qwen2.5-coder-1.5b"
    assert {"my-policy", "my-local"} <= set(setting_choices()["model"]) & set(bigger_choices())
    assert "my-prm" in setting_choices()["prm"] and "my-prm" in models.hub_prm_names()
    assert models.default_policy == "smollm2-135m"  # the defaults stay the catalog's
    with pytest.raises(ValueError, match="the catalog lists: .*my-policy, my-local"):
        models.get("evil/model", "policy")
    assert RunRequest(QUESTION, model="my-policy").bigger_model == "qwen2.5-coder-1.5b"

    _stops_at_the_recorded_load(ModelPool().runtime, "my-policy", "arithmetic", "fp32")
    _stops_at_the_recorded_load(ModelPool().runtime, "my-local", "arithmetic", "bf16")
    _stops_at_the_recorded_load(load_hub_prm, "my-prm", "fp32", "cpu")
    (policy, kw1), (local, kw2), (prm, kw3) = recorded_loads
    assert (policy, local, prm) == ("someorg/some-model", "/srv/models/tiny", "someorg/some-prm")
    assert kw1["dtype"] is torch.float32 and kw2["dtype"] is torch.bfloat16
    assert kw3["output_loading_info"] is True  # the PRM loader's own call
    assert [kw[REMOTE_CODE] for kw in (kw1, kw2, kw3)] == [False, False, False]


def test_without_the_variable_the_extra_names_are_unknown(extra_models, monkeypatch, no_loading):
    monkeypatch.delenv(EXTRA_MODELS_ENV)
    cat.catalog.cache_clear()
    with pytest.raises(ValueError, match="Unknown policy 'my-policy'"):
        ModelPool().runtime("my-policy", "arithmetic", "fp32")


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            lambda d: d["policies"].update({"smollm2-135m": d["policies"]["my-local"]}),
            "'smollm2-135m' is a catalogued name",
        ),
        (lambda d: d["prms"].update({"arithmetic": d["prms"]["my-prm"]}), "catalogued name"),
        (
            lambda d: d["policies"].update({"evil/model": d["policies"]["my-local"]}),
            "not a hub id, a path",
        ),
        (lambda d: d["policies"].update({"../x": d["policies"]["my-local"]}), "not a hub id"),
        (lambda d: d.update(default_policy="my-policy"), "has only"),
        (lambda d: d.update(showcase_policy="my-policy"), "has only"),
        (
            lambda d: d["policies"]["my-local"].update({REMOTE_CODE: True}),
            rf"'my-local' has unknown fields \['{REMOTE_CODE}'\]",
        ),
        (lambda d: d["policies"]["my-local"].update(prompt="nope"), "no prompt template"),
        (lambda d: d["policies"]["my-local"].update(hub_id="models/../../x"), "hub_id"),
        (
            lambda d: d["policies"]["my-local"].update(gguf={"package": "x", "file": "y"}),
            "must download",
        ),
        (lambda d: d["policies"]["my-local"].update(bigger="my-prm"), "which is not a policy"),
        (
            lambda d: d["prms"].update(mine={"label": "x", "family": "offline", "license": "x"}),
            "must download",
        ),
        (lambda d: d["prms"]["my-prm"].update(family="qwen"), "unknown family"),
        (lambda d: d["prms"].update(mine={"label": "x"}), r"needs the fields \['family', 'lic"),
    ],
)
def test_extra_models_are_checked_like_the_catalogs_own(tmp_path, change, problem):
    data = json.loads(json.dumps(EXTRA))
    change(data)
    path = tmp_path / "extra.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=problem) as caught:
        load_catalog(extra=path)
    assert str(path) in str(caught.value)  # the operator's file is named


def test_an_extra_models_file_that_cannot_be_read_stops_the_start(tmp_path):
    with pytest.raises(ValueError, match=f"{EXTRA_MODELS_ENV}=.*missing.json: cannot read it"):
        load_catalog(extra=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read it"):
        load_catalog(extra=tmp_path / "bad.json")


# ---- 3. what a model or a user writes is shown as text ---------------------------------------
EVIL = (
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[link](javascript:alert(1))",
    "![img](https://evil.example/x.png)",
    "**bold** _it_ ~~del~~",
    "`code` and ``more``",
    "a | b | c",
    "$$x$$ and \\frac{1}{2}",
    "&lt;b&gt; &amp;",
    "42\n\n# heading\n- item\n> quote",
)
# what our own panels are made of (tables, bold notes, the italic "answering…" line)
OWN_TAGS = {"table", "thead", "tbody", "tr", "th", "td", "p", "strong", "em"}


class _Rendered(HTMLParser):
    """The tags, attributes and text pieces (split at every tag) of rendered markdown."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []
        self.pieces: list[str] = [""]
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs
        self.pieces.append("")

    def handle_endtag(self, tag):
        self.pieces.append("")

    def handle_data(self, data):
        self.pieces[-1] += data


def render(markdown: str) -> _Rendered:
    """Markdown as CommonMark with GFM tables renders it (Gradio's marked follows both, and
    links any URL: markdown-it's refusal of `javascript:` is switched off to match)."""
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    md.validateLink = lambda url: True
    return _Rendered(md.render(markdown))


def assert_literal(markdown: str, text: str, times: int) -> None:
    """`text` shows `times` in `markdown`, each exactly as written (its whitespace runs one
    space) in one piece, and nothing but our own tags is rendered. (A table cell that `|` split
    loses its text: GFM drops cells beyond the header's.)"""
    out = render(markdown)
    assert out.tags <= OWN_TAGS and out.attrs == [], markdown
    assert "$$" not in markdown  # Gradio would cut it out for KaTeX before reading the markdown
    folded = " ".join(text.split())
    assert sum(piece.count(folded) for piece in out.pieces) == times, markdown


def _tree(answer: str, strategy: str = "beam_search", n: int = 4) -> SearchTree:
    tree = SearchTree(question=answer, strategy=strategy, config={"n": n})
    node = tree.add_node(0, f"Step 1: {answer}\n\n", score=0.5, answer=answer)
    tree.set_status(node.id, "completed")
    tree.answer = answer
    tree.compute = Compute(generated_tokens=10, scored_tokens=5)
    tree.meta.update(model="smollm2-135m", prm="arithmetic", params=1000, prm_params=0)
    return tree


@pytest.mark.parametrize("evil", EVIL)
def test_model_answers_and_user_text_are_literal_in_the_comparison_panel(evil):
    search, majority = _tree(evil), _tree("7", strategy="majority_vote")
    for text, times in (
        (comparison_markdown(search, majority, expected=evil), 3),  # a cell, the note, expected
        (comparison_markdown(search, _tree(evil, "majority_vote")), 3),  # two cells: they agree
        (comparison_markdown(_tree("7"), _tree(evil, "majority_vote"), expected="7"), 2),
        (comparison_markdown(search, None, expected=evil), 2),
    ):
        assert_literal(text, evil, times)


@pytest.mark.parametrize("evil", EVIL)
def test_model_answers_are_literal_in_the_bigger_models_panel(evil):
    search, greedy = _tree(evil), _tree(evil, "majority_vote", n=1)
    voted = _tree(evil, "majority_vote", n=3)
    for expected in (None, evil, "7"):
        text = versus_markdown(search, greedy, voted, "0.5B", "1.5B", expected)
        assert_literal(text, evil, 6)  # three answer cells, three answers in the verdict
        line = verdict_line(search, greedy, voted, "0.5B", "1.5B", expected, markdown=True)
        assert line in text and "0.5B + Beam search (N=4): " in line
    # the verdict itself stays plain text (the /run JSON's and the CLI's)
    assert verdict_line(search, greedy, None, "0.5B", "1.5B").startswith(
        f"0.5B + Beam search (N=4): {evil} — 1.5B alone: {evil} — "
    )


@pytest.mark.parametrize("evil", EVIL)
def test_the_status_and_compute_panels_hold_no_model_text(evil):
    tree = _tree(evil)
    tree.done = True
    for text in (status_line(tree), compute_markdown(tree)):
        out = render(text)
        assert out.tags <= OWN_TAGS and out.attrs == []
        assert " ".join(evil.split()) not in " ".join(out.pieces)


def test_the_steps_table_is_plain_text():
    """The table keeps a step's text as written, and the app shows that column as plain text
    (Gradio's "str" cells are text nodes; "markdown" or "html" would render it)."""
    evil = EVIL[0]
    assert steps_table(_tree(evil))["text"].tolist() == [f"Step 1: {evil}"]
    table = next(
        b
        for b in build_demo().blocks.values()
        if isinstance(b, gr.Dataframe) and b.headers == STEP_COLUMNS
    )
    assert table.datatype[STEP_COLUMNS.index("text")] == "str"


@given(st.text(st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from("\n\t é—")))
def test_any_text_escaped_renders_as_itself(text):
    folded = " ".join(text.split())
    if folded:
        out = render(escape_markdown(text))
        assert out.tags == {"p"} and out.pieces[1] == folded  # one paragraph of that text


def test_escaped_text_has_no_autolink_or_math_left():
    """Gradio's markdown (GFM) links bare URLs and addresses, and cuts out $$…$$ for KaTeX
    before it reads the markdown: neither may survive the escaping."""
    text = escape_markdown("see https://evil.example, www.evil.example, a@evil.example $$\\x$$")
    assert not re.search(r"://|www\.|\w@\w|\$\$", text)


# ---- 4-6. the served app: files, uploads, the API and the MCP server -------------------------
@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: FakeRuntime())


@pytest.fixture(scope="module")
def url():
    with serving() as served:
        yield served.rstrip("/")


def _get(address: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of a GET, an error status included."""
    try:
        response = urllib.request.urlopen(address, timeout=30)
    except urllib.error.HTTPError as err:
        response = err
    with response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def _gradio_cache() -> Path:
    """Where Gradio keeps its copies of what the app returns (and what is uploaded)."""
    return Path(gradio.utils.get_upload_folder()).resolve()


def test_no_file_outside_the_exports_is_served(url, tmp_path, monkeypatch):
    secret = models_cache_dir() / f".probe-{uuid.uuid4().hex}"  # a file in the model cache
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("weights")
    monkeypatch.setattr(app.service, "EXPORT_ROOT", tmp_path)
    export = app.service.write_exports(_tree("7"), "<html></html>")["json"]
    cache = _gradio_cache()
    try:
        for path in (
            "/etc/passwd",
            ROOT / "app.py",
            ROOT / "assets" / "models.json",
            f"{cache}/../../etc/passwd",
            f"{ROOT}/assets/../app.py",
            "..%2F..%2F..%2Fetc%2Fpasswd",
            "app.py",  # relative to the server's folder (the repo)
            "assets/models.json",
            secret,
            export,  # the export folder itself: only Gradio's copy of what a run returns is served
        ):
            status, _, body = _get(f"{url}/gradio_api/file={path}")
            assert status in (403, 404), (path, body[:100])
    finally:
        secret.unlink()


def test_a_runs_exports_are_served_from_gradios_copy_as_downloads(url, fake_models):
    """The explorer returns its export paths; Gradio copies each into its cache and serves the
    copy (the HTML, which holds model text and scripts, as an attachment, never inline)."""
    client = Client(url + "/", verbose=False, download_files=False)
    values = {**DEFAULTS, "prompt": QUESTION, "strategy": "beam_search", "compare": False}
    job = client.submit(*[values[n] for n in INPUT_NAMES], api_name="/explore")
    frames = list(job)
    names = [n for n in OUTPUT_NAMES if n not in ("run", "run_btn")]
    final = next(
        dict(zip(names, f))
        for f in reversed(frames)
        if "url" in (f[names.index("json_file")] or {})  # a frame's skipped outputs are updates
    )
    files = {fmt: final[f"{fmt}_file"] for fmt in ("json", "graphml", "html")}
    for fmt, data in files.items():
        assert Path(data["path"]).resolve().is_relative_to(_gradio_cache()), data
        status, headers, body = _get(data["url"])
        assert status == 200 and body, fmt
    assert SearchTree.from_dict(json.loads(_get(files["json"]["url"])[2])).done
    _, headers, body = _get(files["html"]["url"])
    assert b"plotly" in body[:200_000].lower()
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment")


def test_uploads_are_refused(url):
    """The app takes no uploads, and Gradio's upload route would keep anyone's files for an
    hour: it refuses every byte (LAUNCH's max_file_size=0)."""
    boundary = "thinktree"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.bin"\r\n\r\n'
    body = head.encode() + b"x" * 4096 + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url}/gradio_api/upload",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413


def test_the_api_documents_only_run(url):
    status, _, body = _get(f"{url}/gradio_api/info")
    info = json.loads(body)
    assert status == 200 and set(info["named_endpoints"]) == {"/run"}
    assert info["unnamed_endpoints"] == {}
    client = Client(url + "/", verbose=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/run"
    }
    spec = json.loads(_get(f"{url}/gradio_api/openapi.json")[2])
    calls = [p for p in spec["paths"] if "/call/" in p]
    assert calls and all(re.search(r"/call/(v2/)?run(/|$)", p) for p in calls), calls


def test_the_ui_only_events_are_no_api_endpoints(url):
    """Every event but /run is the page's own: the UI-only ones are private (the API client
    cannot name them), the explorer's stream and the examples' fills undocumented."""
    config = json.loads(_get(f"{url}/config")[2])
    seen = {d["api_name"]: d["api_visibility"] for d in config["dependencies"]}
    assert {n for n, v in seen.items() if v == "public"} == {"run"}
    assert {n for n, v in seen.items() if v == "undocumented"} == {
        "explore",
        *(n for n in seen if n.startswith("load_example")),
    }
    private = [n for n, v in seen.items() if v == "private"]
    assert {"replay", "precision_hint"} <= set(private)
    client = Client(url + "/", verbose=False)
    for name in private:
        with pytest.raises(ValueError, match="Cannot find a function"):
            client.predict(QUESTION, api_name=f"/{name}")


def test_the_mcp_server_offers_only_the_run_tool(url):
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    status, _, body = _get(f"{url}/gradio_api/mcp/schema")
    assert status == 200 and [t["name"] for t in json.loads(body)] == ["run_search"]

    async def offered() -> tuple[list, list, list]:
        async with (
            streamablehttp_client(f"{url}/gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = (await session.list_tools()).tools
            resources = (await session.list_resources()).resources
            prompts = (await session.list_prompts()).prompts
        return [t.name for t in tools], resources, prompts

    assert asyncio.run(offered()) == (["run_search"], [], [])


# ---- 5. exports: one fresh folder per run, old ones removed ----------------------------------
def test_each_run_exports_into_a_folder_of_its_own_and_stale_ones_go(tmp_path, monkeypatch):
    monkeypatch.setattr(app.service, "EXPORT_ROOT", tmp_path)
    stale, fresh = tmp_path / "run-stale", tmp_path / "run-fresh"
    stale.mkdir(), fresh.mkdir()
    os.utime(stale, (0, 0))
    first = app.service.write_exports(_tree("7"), "<html></html>")
    second = app.service.write_exports(_tree("7"), "<html></html>")
    folders = {Path(p).parent for p in (*first.values(), *second.values())}
    assert len(folders) == 2 and all(f.parent == tmp_path for f in folders)
    assert all(
        sorted(p.name for p in f.iterdir()) == sorted(Path(p).name for p in first.values())
        for f in folders
    )
    assert not stale.exists() and fresh.exists()  # older than EXPORT_TTL_S: removed


@pytest.mark.skipif(
    not hasattr(app.service, "EXPORT_MAX_RUNS"), reason="proposed: a cap on export folders kept"
)
def test_a_crowd_of_quick_runs_keeps_only_the_newest_exports(tmp_path, monkeypatch):
    """~5 MB per run (the HTML's plotly.js), one run after another on the model queue: within
    EXPORT_TTL_S the newest EXPORT_MAX_RUNS folders stay, the oldest go."""
    monkeypatch.setattr(app.service, "EXPORT_ROOT", tmp_path)
    keep = app.service.EXPORT_MAX_RUNS
    paths = [app.service.write_exports(_tree("7"), "<html></html>") for _ in range(keep + 3)]
    left = sorted(p for p in tmp_path.iterdir())
    assert len(left) == keep and Path(paths[-1]["json"]).parent in left
    assert not Path(paths[0]["json"]).exists()
