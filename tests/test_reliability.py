"""Reliability under a classroom's load: limits, Stop, the line of waiting runs, and faults.

Each fault is injected where it would really happen (the loader, the engine's forward, the
scorer, a missing model file) and followed by a request that must succeed, since a fault must
never take the app down for the next user.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
from collections import deque
from pathlib import Path

import gradio as gr
import pytest

import app.api
import app.handlers
import app.service
import backend.loading.failures
import backend.runtime
from app.admission import Busy, Gate
from app.control import RunControl
from app.handlers import DEFAULTS, explore
from app.request import RunRequest
from app.service import run_json, stream_run
from backend.catalog import catalog
from backend.limits import limits_for
from backend.loading import gguf_parts
from strategies.config import SearchConfig
from strategies.invariants import tree_problems
from tests.fakes import FakeGenerator, FakeScorer, StreamingFakeGenerator

QUESTION = "Sara has 5 pencils and buys 7 more. How many pencils does she have now?"


class FakeRuntime:
    """What `stream_run` needs from a runtime, with a generator and scorer a test may break."""

    def __init__(self, generator=None, scorer=None) -> None:
        self.generator = generator or StreamingFakeGenerator(depth=4)
        self.scorer = scorer or FakeScorer()

    def meta(self) -> dict:
        return {"model": "fake", "prm": "fake", "device": "cpu", "precision": "fp32", "threads": 1}


def _fake(monkeypatch, runtime: FakeRuntime) -> FakeRuntime:
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: runtime)
    return runtime


def _request(**config) -> RunRequest:
    settings = dict(strategy="beam_search", n=4, beam_width=2, max_iterations=4) | config
    return RunRequest(
        QUESTION, SearchConfig(**settings), model="smollm2-135m", prm="arithmetic", compare=False
    )


def _last(frames):
    (tree,) = deque(frames, maxlen=1)
    return tree


class SlowGenerator(StreamingFakeGenerator):
    """Streams each step after `delay_s`: a run that takes as long as a test needs."""

    def __init__(self, delay_s: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def stream_steps(self, question, partials, n, sampling):
        for item in super().stream_steps(question, partials, n, sampling):
            time.sleep(self.delay_s)
            yield item


# ---- limits ---------------------------------------------------------------------------------
def test_caps_depend_on_the_device_and_the_model():
    small, big = limits_for("qwen2.5-coder-0.5b", "cpu"), limits_for("qwen2.5-coder-1.5b", "cpu")
    gpu = limits_for("qwen2.5-coder-1.5b", "cuda")
    assert small.max_n == 64 and big.max_n == 16  # the 1.5B writes about a third as fast
    assert big.max_run_tokens < small.max_run_tokens < gpu.max_run_tokens
    assert gpu.max_n > big.max_n and gpu.max_step_tokens > big.max_step_tokens
    with pytest.raises(
        ValueError,
        match=r"N=64 is more than .* qwen2.5-coder-1.5b on a CPU "
        r"\(at most 16\)",
    ):
        big.check(64, 10, 96, 512)
    with pytest.raises(ValueError, match=r"max_step_tokens=1000 .* \(at most 256\)"):
        small.check(4, 10, 1000, 512)
    small.check(64, 40, 256, 2048)  # the caps themselves are allowed


def test_operator_sets_the_limits_with_environment_variables(monkeypatch):
    monkeypatch.setenv("THINKTREE_MAX_N", "8")
    monkeypatch.setenv("THINKTREE_TIME_LIMIT_S", "12.5")
    limits = limits_for("smollm2-135m", "cpu")
    assert limits.max_n == 8 and limits.time_limit_s == 12.5
    monkeypatch.setenv("THINKTREE_MAX_N", "lots")
    with pytest.raises(ValueError, match="THINKTREE_MAX_N must be a number"):
        limits_for("smollm2-135m", "cpu")


def test_a_request_over_the_caps_is_refused_before_anything_loads(monkeypatch):
    loads = []
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: loads.append(a))
    request = RunRequest(
        QUESTION, SearchConfig(n=64, beam_width=4), model="qwen2.5-coder-1.5b", prm="arithmetic"
    )
    with pytest.raises(ValueError, match="at most 16"):
        next(stream_run(request))
    assert loads == []
    with pytest.raises(gr.Error, match="at most 16"):  # in the explorer: a message
        list(explore({**DEFAULTS, "prompt": QUESTION, "model": "qwen2.5-coder-1.5b", "n": 64}))


def test_the_time_limit_ends_a_run_cleanly_keeping_its_tree(monkeypatch):
    monkeypatch.setenv("THINKTREE_TIME_LIMIT_S", "0.3")
    _fake(monkeypatch, FakeRuntime(SlowGenerator(0.05, depth=6)))
    tree = _last(stream_run(_request(max_iterations=6)))
    # 6 iterations of 4 steps take 1.2 s or more: it ended at the limit, before the last one
    assert tree.iteration < 6
    assert tree.done and tree.stopped == "time limit (0 s)" and tree.answer is None
    assert len(tree.nodes) > 1 and not tree.selected
    assert tree_problems(tree) == []
    assert tree.to_dict()["stopped"].startswith("time limit")  # the run JSON says so


def test_the_token_limit_ends_a_run(monkeypatch):
    monkeypatch.setenv("THINKTREE_MAX_RUN_TOKENS", "10")
    _fake(monkeypatch, FakeRuntime(StreamingFakeGenerator(depth=6)))
    tree = _last(stream_run(_request(max_iterations=6)))
    assert tree.stopped == "token limit (10 tokens)" and 10 < tree.compute.generated_tokens < 40
    assert tree_problems(tree) == []


# ---- the line of waiting runs ---------------------------------------------------------------
def test_the_line_is_bounded_and_says_how_long_to_wait():
    gate = Gate(max_waiting=2)
    first = gate.join("a")
    assert list(gate.wait(first)) == []  # the models are free: it goes at once
    waiting = [gate.join("a"), gate.join("a")]
    with pytest.raises(Busy, match=r"busy: 2 runs are waiting.*Try again in about 90 s"):
        gate.join("a")  # 3 runs before it, 30 s each before any run has been timed
    gate.leave(waiting[1])  # one left the line: there is room again
    gate.join("b")


def test_a_waiting_run_sees_its_place_and_goes_when_the_models_are_free():
    gate = Gate(max_waiting=4)
    running = gate.join("a")
    list(gate.wait(running))
    ticket = gate.join("a")
    places = gate.wait(ticket, poll_s=0.01)
    assert next(places)[0] == 1  # one run ahead of it
    gate.leave(running)
    assert list(places) == []  # its turn now
    gate.leave(ticket)


def test_runs_for_the_loaded_model_go_first_without_starving_the_others():
    """Two users asking for two models, alternately: taken strictly in turn every run would
    load a model; the gate groups them, and a run for the other model is passed over at most
    max_skips times."""
    gate = Gate(max_waiting=10, max_skips=2)
    holder = gate.join("a")
    list(gate.wait(holder))
    keys = ["b", "a", "b", "a", "b", "a"]
    tickets = [gate.join(k) for k in keys]
    ran: list[str] = []

    def one(ticket):
        for _ in gate.wait(ticket, poll_s=0.01):
            pass
        ran.append(ticket.key)
        time.sleep(0.01)
        gate.leave(ticket)

    threads = [threading.Thread(target=one, args=(t,)) for t in tickets]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    gate.leave(holder)
    for thread in threads:
        thread.join(10)
    assert sorted(ran) == sorted(keys)
    # "a" is loaded: the a's go first, until the first b has been passed over twice
    assert ran == ["a", "a", "b", "b", "b", "a"]
    switches = sum(x != y for x, y in zip(["a", *ran], ran))
    assert switches == 2  # strictly in turn: 6


def test_the_explorer_says_busy_when_the_line_is_full(monkeypatch):
    gate = Gate(max_waiting=1)
    monkeypatch.setattr(app.handlers, "GATE", gate)
    holder = gate.join("x")
    list(gate.wait(holder))
    waiting = gate.join("x")
    with pytest.raises(gr.Error, match="busy: 1 run is waiting.*Try again in about 60 s"):
        list(explore({**DEFAULTS, "prompt": QUESTION}))
    gate.leave(waiting)
    gate.leave(holder)


def test_stop_while_waiting_leaves_the_line(monkeypatch):
    _fake(monkeypatch, FakeRuntime())
    gate = Gate(max_waiting=2)
    monkeypatch.setattr(app.handlers, "GATE", gate)
    holder = gate.join("x")
    list(gate.wait(holder))
    updates = explore({**DEFAULTS, "prompt": QUESTION, "compare": False}, token="page-1")
    assert "Waiting for the models: 1 run ahead" in next(updates)["status"]
    assert gate.waiting == 1
    assert "Stopping" in app.handlers.stop("page-1")
    assert "Stopped" in list(updates)[-1]["status"]
    assert gate.waiting == 0 and app.handlers.stop("page-1") == "Nothing is running."
    gate.leave(holder)


# ---- Stop -----------------------------------------------------------------------------------
def test_stop_ends_the_run_within_a_step_and_keeps_its_tree(monkeypatch):
    _fake(monkeypatch, FakeRuntime(SlowGenerator(0.02, depth=8)))
    control = RunControl()
    frames = stream_run(_request(n=8, max_iterations=8), control)
    for k, tree in enumerate(frames):  # noqa: B007 (the tree at the break is the one stopped)
        if k == 5:
            control.stop()
            break
    nodes = len(tree.nodes)
    final = next(frames)  # the frame after Stop is the last, and no step more was written
    assert final.stopped == "stopped" and final.done and final.answer is None
    assert len(final.nodes) == nodes > 1
    assert list(frames) == [] and tree_problems(final) == []


def test_stop_in_the_explorer_shows_the_tree_so_far(monkeypatch):
    _fake(monkeypatch, FakeRuntime(SlowGenerator(0.01, depth=8)))
    updates = explore({**DEFAULTS, "prompt": QUESTION, "max_iterations": 8}, token="page-2")
    for update in updates:
        if "tree" in update:
            app.handlers.stop("page-2")
            break
    rest = list(updates)
    assert rest[-1]["status"].startswith("Stopped · ")
    assert rest[-1]["run"]["stopped"] == "stopped" and rest[-1]["tree"] is not None
    assert all("versus" not in u or not u["versus"] for u in rest[1:])  # no comparison after it


@pytest.mark.model
def test_stop_frees_the_runs_memory_and_the_next_run_works():
    """The real engine: Stop a big search mid-iteration; its KV caches are freed (resident
    memory back within 10% of before the run), and the next run is normal."""
    runtime = backend.runtime.get_runtime("smollm2-135m", "arithmetic", "auto")
    engine = runtime.generator
    request = _request(
        strategy="beam_search",
        n=16,
        beam_width=4,
        max_iterations=8,
        max_step_tokens=48,
        max_solution_tokens=256,
    )
    run_json(_request(n=4, max_iterations=2))  # warm: thread pools, the prompt's state
    gc.collect()
    before = _rss()
    control, peak, t_stop = RunControl(), 0, 0.0
    for tree in stream_run(request, control):
        peak = max(peak, _rss())
        if tree.iteration >= 3 and not t_stop:
            t_stop = time.perf_counter()
            control.stop()
    waited = time.perf_counter() - t_stop
    # ended in the iteration it was stopped in (within about one step: the engine's next one)
    assert tree.stopped == "stopped" and tree.iteration == 3 and tree_problems(tree) == []
    print(f"ended {waited:.2f} s after Stop")
    assert not [key for key in engine.store if key[1]]
    after = _rss()
    print(
        f"rss before {before / 2**20:.0f} MiB, peak {peak / 2**20:.0f}, after {after / 2**20:.0f}"
    )
    assert after < before * 1.10
    normal = run_json(_request(n=4, max_iterations=3))
    assert normal["done"] and not normal["stopped"] and len(normal["nodes"]) > 4


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- faults ---------------------------------------------------------------------------------
class FailingScorer(FakeScorer):
    def __init__(self, fail_on_call: int) -> None:
        super().__init__()
        self.fail_on_call = fail_on_call

    def score(self, question, solutions):
        if self.calls + 1 == self.fail_on_call:
            self.calls += 1
            raise ZeroDivisionError("division by zero")
        return super().score(question, solutions)


def test_a_prm_that_raises_keeps_the_tree_and_says_which_step(monkeypatch):
    scorer = FailingScorer(fail_on_call=2)
    scorer.name = "arithmetic"
    _fake(monkeypatch, FakeRuntime(StreamingFakeGenerator(depth=4), scorer))
    tree = _last(stream_run(_request()))
    assert tree.stopped.startswith("the PRM arithmetic failed scoring step 2 (nodes ")
    assert "ZeroDivisionError: division by zero" in tree.stopped
    assert len(tree.nodes) == 1 + 4 + 4 and tree_problems(tree) == []  # 2 iterations written
    _fake(monkeypatch, FakeRuntime())
    assert not _last(stream_run(_request())).stopped  # the next run is normal


def test_a_prm_failure_in_the_explorer_is_a_warning_and_the_tree(monkeypatch):
    _fake(monkeypatch, FakeRuntime(StreamingFakeGenerator(depth=4), FailingScorer(1)))
    warnings = []
    monkeypatch.setattr(gr, "Warning", lambda message, **k: warnings.append(message))
    updates = list(explore({**DEFAULTS, "prompt": QUESTION}))
    assert updates[-1]["status"].startswith("Stopped · ")
    assert "the PRM failed scoring step 1" in updates[-1]["run"]["stopped"]
    assert warnings and "failed scoring step 1" in warnings[0]


@pytest.mark.model
def test_out_of_memory_in_a_step_is_caught_freed_and_suggests_a_smaller_n(monkeypatch):
    """The real engine's forward fails to allocate (as a CPU does when memory runs out) in the
    second iteration: the run ends with the tree so far and a hint, and the engine still works."""
    runtime = backend.runtime.get_runtime("smollm2-135m", "arithmetic", "auto")
    engine, forward = runtime.generator, runtime.generator._forward
    calls = {"n": 0, "at": None}

    def failing(ids, *args, **kwargs):
        calls["n"] += 1
        if calls["at"] is not None and calls["n"] == calls["at"]:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 68719476736 bytes."
            )
        return forward(ids, *args, **kwargs)

    monkeypatch.setattr(engine, "_forward", failing)
    request = _request(n=8, beam_width=2, max_iterations=4, max_step_tokens=32, seed=3)
    frames = stream_run(request)
    for tree in frames:
        if tree.iteration == 2 and calls["at"] is None:
            calls["at"] = calls["n"] + 2
    assert tree.stopped.startswith("out of memory at step 2: try a smaller N (this run: 8)")
    assert tree_problems(tree) == [] and len(tree.nodes) > 8
    assert not [key for key in engine.store if key[1]]  # what the run held is freed
    monkeypatch.setattr(engine, "_forward", forward)
    normal = run_json(request)
    assert normal["done"] and not normal["stopped"]


def test_a_model_that_cannot_load_is_a_message_and_the_default_still_serves(monkeypatch):
    real = backend.runtime.load_policy
    faults = {
        "qwen2.5-coder-0.5b": OSError("GGUF header is corrupt: unexpected magic b'\\x00\\x00'"),
        "qwen2.5-coder-1.5b": MemoryError("failed to allocate 2147483648 bytes"),
    }

    def load(name, *args, **kwargs):
        if name in faults:
            raise faults[name]
        return real(name, *args, **kwargs)

    monkeypatch.setattr(backend.runtime, "load_policy", load)
    monkeypatch.setattr(gguf_parts, "installed", lambda *a: True)
    pool = backend.runtime.ModelPool()
    with pytest.raises(
        backend.loading.failures.ModelLoadError,
        match=r"Could not load qwen2.5-coder-0.5b "
        r"\(OSError: GGUF header is corrupt.*delete .*run `bash scripts/setup.sh`",
    ):
        pool.runtime("qwen2.5-coder-0.5b", "arithmetic", "auto")
    with pytest.raises(
        backend.loading.failures.ModelLoadError,
        match="Out of memory while loading qwen2.5-coder-1.5b: choose a smaller model or precision",
    ):
        pool.runtime("qwen2.5-coder-1.5b", "arithmetic", "auto")
    runtime = pool.runtime("smollm2-135m", "arithmetic", "auto")  # the default loads and serves
    monkeypatch.setattr(backend.runtime, "get_runtime", lambda *a, **k: runtime)
    assert _last(stream_run(_request(max_iterations=2))).done


@pytest.mark.model
def test_a_corrupt_gguf_file_is_a_clear_message(monkeypatch, tmp_path):
    """A real GGUF read: the file's bytes are garbage (a broken download or disk)."""
    monkeypatch.setenv("THINKTREE_CACHE", str(tmp_path))
    bad = tmp_path / "models" / "gguf" / "qwen2.5-coder-0.5b.gguf"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    real = backend.loading.policy.gguf_path
    monkeypatch.setattr(
        backend.loading.policy,
        "gguf_path",
        lambda name, cache=None: bad if name == "qwen2.5-coder-0.5b" else real(name),
    )
    monkeypatch.setattr(gguf_parts, "installed", lambda *a: True)
    pool = backend.runtime.ModelPool()
    with pytest.raises(
        backend.loading.failures.ModelLoadError,
        match="Could not load qwen2.5-coder-0.5b.*could not read the GGUF file",
    ):
        pool.runtime("qwen2.5-coder-0.5b", "arithmetic", "auto")
    assert pool.runtime("smollm2-135m", "arithmetic").generator is not None  # and serves on


def test_a_model_that_is_not_installed_is_refused_before_the_loaded_one_goes(monkeypatch, tmp_path):
    monkeypatch.setenv("THINKTREE_CACHE", str(tmp_path))
    monkeypatch.setattr(gguf_parts, "installed", lambda *a: False)
    pool = backend.runtime.ModelPool()
    held = object()
    pool._policy = (("smollm2-135m", "gguf", "cpu"), held)
    with pytest.raises(gguf_parts.ModelNotInstalled, match="install it with `bash scripts/setup"):
        pool.runtime("qwen2.5-coder-0.5b", "arithmetic", "auto")
    assert pool._policy[1] is held  # nothing was dropped for a model that cannot load


def test_the_bigger_model_not_installed_is_said_and_the_search_still_runs(monkeypatch, tmp_path):
    _fake(monkeypatch, FakeRuntime(FakeGenerator(depth=3)))
    monkeypatch.setenv("THINKTREE_CACHE", str(tmp_path))
    monkeypatch.setattr(gguf_parts, "installed", lambda name, cache: name != "qwen2.5-coder-1.5b")
    request = RunRequest(
        QUESTION,
        SearchConfig(strategy="beam_search", n=4, beam_width=2),
        model="qwen2.5-coder-0.5b",
        prm="arithmetic",
    )
    assert request.bigger_model == "qwen2.5-coder-1.5b"
    run = run_json(request)
    assert run["done"] and run["answer"] is not None and "votes" in run["comparison"]
    error = run["comparison"]["bigger"]["error"]
    assert "'qwen2.5-coder-1.5b' is not installed" in error and "scripts/setup.sh" in error
    values = {**DEFAULTS, "prompt": QUESTION, "model": "qwen2.5-coder-0.5b"}
    last_versus = [u["versus"] for u in explore(values) if u.get("versus")][-1]
    assert "could not answer here" in last_versus and "not installed" in last_versus


def test_faults_are_messages_through_the_served_app(monkeypatch):
    """A failing model load through /run: an error message, and the next call is answered."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.serving import serving

    _fake(monkeypatch, FakeRuntime())
    real = app.service.stream_request
    state = {"fail": True}

    def flaky(request, control=None):
        if state["fail"]:
            raise backend.loading.failures.ModelLoadError("Could not load the model (test)")
        yield from real(request, control)

    monkeypatch.setattr(app.api, "stream_request", flaky)
    with serving() as url:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="Could not load the model"):
            client.predict(QUESTION, api_name="/run")
        state["fail"] = False
        assert client.predict(QUESTION, compare=False, api_name="/run")["done"]


def test_catalog_models_have_limits():
    for name in catalog().names("policy"):
        limits = limits_for(name, "cpu")
        assert limits.max_n >= 8 and limits.time_limit_s > 0


def _same_run(run: dict) -> dict:
    """A run's JSON without what differs between two runs of one request (its seconds)."""
    run = dict(run, compute={k: v for k, v in run["compute"].items() if k != "wall_s"})
    run.pop("comparison", None)
    return run


def test_eight_clients_at_once_each_get_their_own_tree(monkeypatch):
    """Eight scripts call /run at once with different seeds: each gets the tree the same request
    gets alone, and the line never refuses one of them (8 fit)."""
    from gradio_client import Client

    from tests.serving import serving

    monkeypatch.setattr(
        backend.runtime, "get_runtime", lambda *a, **k: FakeRuntime(SlowGenerator(0.002, depth=4))
    )
    with serving() as url:
        alone = {
            s: Client(url, verbose=False).predict(
                QUESTION, seed=s, n=8, compare=False, api_name="/run"
            )
            for s in range(8)
        }
        clients = [Client(url, verbose=False) for _ in range(8)]
        jobs = [
            c.submit(QUESTION, seed=s, n=8, compare=False, api_name="/run")
            for s, c in enumerate(clients)
        ]
        together = {s: job.result(timeout=120) for s, job in enumerate(jobs)}
    for s in range(8):
        assert _same_run(together[s]) == _same_run(alone[s])
        assert together[s]["config"]["seed"] == s
    assert len({str(_same_run(r)["nodes"]) for r in together.values()}) == 8  # all different


def test_the_served_app_refuses_past_the_line_with_busy(monkeypatch):
    from gradio_client import Client

    from tests.serving import serving

    gate = Gate(max_waiting=1)
    monkeypatch.setattr(app.handlers, "GATE", gate)
    holder = gate.join("x")
    list(gate.wait(holder))  # a run holds the models
    _fake(monkeypatch, FakeRuntime())
    with serving() as url:
        client = Client(url, verbose=False)
        waiting = client.submit(QUESTION, compare=False, api_name="/run")
        deadline = time.monotonic() + 30
        while gate.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        from gradio_client.exceptions import AppError

        with pytest.raises(AppError, match="busy: 1 run is waiting.*Try again in about"):
            Client(url, verbose=False).predict(QUESTION, compare=False, api_name="/run")
        gate.leave(holder)
        assert waiting.result(timeout=60)["done"]  # the one in line runs once the models free


LONG_RUN = {"strategy": "beam_search", "n": 16, "beam_width": 4, "max_iterations": 8}


def _run_ends_when_its_client_leaves(monkeypatch, leave) -> None:
    """A long /run (N=16 over 8 iterations: about 6 s of steps) whose client `leave(url,
    slow)`s once two iterations ran: its search stops within a step, and a request sent next
    is served at once, not after the first one's end."""
    from gradio_client import Client

    from tests.serving import serving

    slow = SlowGenerator(0.05, depth=8)
    _fake(monkeypatch, FakeRuntime(slow))
    with serving() as url:
        leave(url, slow)
        time.sleep(1.5)  # the server notices at the stream's next value: one step, 0.05 s
        calls = len(slow.calls)
        time.sleep(0.5)
        assert len(slow.calls) == calls < 8, "the abandoned search went on writing"
        t0 = time.monotonic()
        run = Client(url, verbose=False).predict(
            QUESTION,
            strategy="majority_vote",
            n=2,
            max_iterations=2,
            compare=False,
            api_name="/run",
        )
        assert run["done"] and time.monotonic() - t0 < 5


def _until_two_iterations(slow: SlowGenerator) -> None:
    deadline = time.monotonic() + 30
    while len(slow.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_cancelled_run_call_ends_within_a_step_and_frees_the_models(monkeypatch):
    from gradio_client import Client

    def cancel(url, slow):
        job = Client(url, verbose=False).submit(
            QUESTION, compare=False, **LONG_RUN, api_name="/run"
        )
        _until_two_iterations(slow)
        job.cancel()

    _run_ends_when_its_client_leaves(monkeypatch, cancel)


def test_a_run_call_whose_client_goes_away_ends_within_a_step(monkeypatch):
    """The client joins the line and reads the run's stream as any client does (Gradio's
    queue protocol), then drops the connection without a word."""
    import uuid

    import httpx
    from gradio_client import Client

    def go_away(url, slow):
        fn_index = Client(url, verbose=False)._infer_fn_index("/run", None)
        settings = {**LONG_RUN, "compare": False}
        data = [QUESTION] + [settings.get(k, v) for k, v in DEFAULTS.items() if k != "prompt"]
        session = uuid.uuid4().hex
        body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None}
        with httpx.Client(base_url=url, timeout=30) as http:
            http.post("gradio_api/queue/join", json=body).raise_for_status()
            with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}):
                _until_two_iterations(slow)

    _run_ends_when_its_client_leaves(monkeypatch, go_away)


def test_a_stopped_search_is_compared_by_nothing(monkeypatch):
    """The one run flow: after a search that Stop (or a limit) ended, neither majority voting
    nor the bigger model runs, for the explorer, `/run` and the CLI alike."""
    from app.service import Outcome, stream_request

    _fake(monkeypatch, FakeRuntime(SlowGenerator(0.01, depth=6)))
    request = dataclasses.replace(_request(max_iterations=6), compare=True)
    control = RunControl()
    parts = []
    for frame in stream_request(request, control):
        parts.append(frame.part)
        if frame.part == "search" and frame.tree.iteration == 2:
            control.stop()
    assert parts[0] == "loaded" and set(parts[1:]) == {"search"}
    outcome = Outcome(request)
    for frame in stream_request(request):  # not stopped: the comparison runs after it
        outcome.add(frame)
    run = outcome.to_json()
    assert run["done"] and not run["stopped"] and run["comparison"]["strategy"] == "majority_vote"
