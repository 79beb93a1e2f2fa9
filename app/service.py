"""One run, from a plain request to a stream of trees: shared by the explorer, its API and the CLI.

`PRESET` is the app's one preset of settings: the explorer's widgets start from it, and a `/run`
call or a CLI run that leaves a setting out gets the same value, so all three run the same search
for the same prompt. `compare` adds majority voting at the same budget N, as the explorer shows it,
and the bigger model's own answer (`bigger`): greedy, and majority voting with as many samples
as the search's compute buys it (app/versus.py counts the FLOPs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.control import RunControl, controlled, run_limits
from app.versus import MIN_VOTERS, equal_compute_voters, verdict_line, versus
from backend.catalog import NO_PRM, PRECISIONS, catalog, models_cache_dir
from backend.loading import gguf_parts
from strategies.answers import answers_equal
from strategies.config import AGGREGATIONS, SearchConfig
from strategies.info import STRATEGY_NAMES, check_scorer
from strategies.registry import search
from strategies.tree import SearchTree

log = logging.getLogger(__name__)

# The library's defaults are the reference work's scale; on two CPU cores a teaching demo wants
# answers in seconds: a small budget, few iterations, and token caps a small model's steps fit in
# (a longer step is rambling, and the longest step of an iteration sets everyone's wait; the last
# iteration writes each solution to its end, which without a cap runs to 2048 tokens at batch 1).
# A step cut at the cap ends its solution unanswered: 96 tokens cut 1 in 20 of the 0.5B's
# solutions (64 cut 1 in 5; SmolLM2's steps rarely pass 53; README, "Prompting the models").
PRESET = SearchConfig(
    n=4, beam_width=2, max_iterations=10, max_step_tokens=96, max_solution_tokens=512
)
MAX_PROMPT_CHARS = 2000
EXPORT_ROOT = Path(tempfile.gettempdir()) / "thinktree-exports"
EXPORT_TTL_S = 3600  # downloads are offered right after a run; older export folders are removed
# and at most this many are kept (a run writes ~5 MB, mostly plotly.js in the HTML): Gradio
# copies a run's files as its last frame is sent, so only the newest are ever still needed
# (more than the runs that can be in flight at once, app/ui.py MODEL_QUEUE)
EXPORT_MAX_RUNS = 50


@dataclass(frozen=True)
class RunRequest:
    """What to run: the prompt, its search settings, the models, and what to show beside it."""

    prompt: str
    config: SearchConfig = PRESET
    model: str = field(default_factory=lambda: starting_model())
    prm: str = field(default_factory=lambda: catalog().default_prm)
    precision: str = "auto"
    expected: str | None = None  # the answer the user expects, shown beside the votes
    compare: bool = True  # also run majority voting at the same N, for comparison
    # with compare: the bigger model that answers alone ("auto": the catalog's for the policy)
    bigger: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("Please type a question.")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ValueError(
                f"The question is too long ({len(self.prompt)} > {MAX_PROMPT_CHARS} characters)."
            )
        models = catalog()
        if not isinstance(self.model, str) or not isinstance(self.prm, str):
            raise ValueError("model and prm are names from the catalog.")
        models.get(self.model, "policy")  # a ValueError listing the policies
        if self.prm not in models.prm_choices():
            raise ValueError(
                f"Unknown PRM {self.prm!r}; choose one of {', '.join(models.prm_choices())}."
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"Unknown precision {str(self.precision)[:40]!r}; choose one of "
                f"{', '.join(PRECISIONS)}."
            )
        if not isinstance(self.compare, bool):
            raise ValueError(f"compare must be true or false, got {str(self.compare)[:40]!r}.")
        if isinstance(self.expected, (int, float)) and not isinstance(self.expected, bool):
            object.__setattr__(self, "expected", str(self.expected))  # a JSON number: its text
        if self.expected is not None and not isinstance(self.expected, str):
            raise ValueError(f'expected must be text, e.g. "12", got {str(self.expected)[:40]!r}.')
        check_scorer(self.config.strategy, self.prm != NO_PRM)
        choices = bigger_choices()
        if self.bigger not in choices:
            raise ValueError(
                f"Unknown bigger model {self.bigger!r}; choose one of {', '.join(choices)}."
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRequest:
        """A request from one JSON object: a prompt, and any of the request's and the
        `SearchConfig`'s fields; what it leaves out comes from `PRESET` and the catalog. Unknown
        keys are an error, so a typo never silently runs the defaults."""
        if not isinstance(d, dict):
            raise ValueError("The request must be a JSON object.")
        d = dict(d)
        own = {k: d.pop(k) for k in REQUEST_FIELDS if k in d}
        if "prompt" not in own:
            raise ValueError("The request needs a 'prompt'.")
        return cls(config=SearchConfig.from_dict({**PRESET.to_dict(), **d}), **own)

    def with_strategy(self, strategy: str) -> RunRequest:
        return dataclasses.replace(self, config=dataclasses.replace(self.config, strategy=strategy))

    def as_majority(self, n: int) -> RunRequest:
        """Majority voting over `n` samples with this request's other settings."""
        config = dataclasses.replace(self.config, strategy="majority_vote", n=n)
        return dataclasses.replace(self, config=config)

    @property
    def compares(self) -> bool:
        """Whether majority voting runs beside the search (not beside itself)."""
        return self.compare and self.config.strategy != "majority_vote"

    @property
    def bigger_model(self) -> str | None:
        """The policy that answers alone beside the search, or None (no comparison asked, none
        in the catalog for this policy, or it is the policy itself)."""
        if not self.compares or self.bigger == NO_BIGGER:
            return None
        name = catalog().get(self.model, "policy").bigger if self.bigger == "auto" else self.bigger
        return name if name != self.model else None


NO_BIGGER = "none"


def starting_model() -> str:
    """The policy a request that names none runs on: `$THINKTREE_MODEL`, else the catalog's
    showcase policy (Qwen2.5-Coder 0.5B: the one that shows the thesis, README) where it is
    installed, else the embedded default policy (a `setup.sh --small`, a Space without the parts)."""
    models = catalog()
    wanted = os.environ.get("THINKTREE_MODEL")
    if wanted:
        return models.get(wanted, "policy").name  # a ValueError listing the policies
    show = models.showcase_policy
    if show and gguf_parts.installed(show, models_cache_dir()):
        return show
    return models.default_policy


def bigger_choices() -> tuple[str, ...]:
    return ("auto", NO_BIGGER, *catalog().names("policy"))


REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(RunRequest) if f.name != "config")
REQUEST_HELP = {
    "prompt": "the (math) question to solve",
    "model": "the policy model, a name from assets/models.json",
    "prm": f"the PRM (step judge), a name from assets/models.json, or {NO_PRM!r}",
    "precision": "for a hub model: auto (nf4 on a GPU, fp32 on a CPU), fp32, bf16, int8 or nf4; "
    "an offline model runs at its GGUF file's own (auto)",
    "expected": "the answer you expect, marked right or wrong beside the votes",
    "compare": "also run majority voting at the same N, for comparison",
    "bigger": "with compare: the bigger model that answers alone, greedy and by majority at equal "
    "FLOPs ('auto': the catalog's for the model, 'none': skip it)",
}


def setting_choices() -> dict[str, tuple[str, ...]]:
    """The settings that take one of a list of names, with the names (for the CLI's choices and
    the API's typed schema)."""
    models = catalog()
    return {
        "strategy": STRATEGY_NAMES,
        "aggregation": AGGREGATIONS,
        "model": models.names("policy"),
        "prm": models.prm_choices(),
        "precision": PRECISIONS,
        "bigger": bigger_choices(),
    }


def preset_values() -> dict[str, Any]:
    """Every setting of a request that gives only a prompt, flat: the explorer's widget values
    before a user touches them (the prompt and the expected answer empty)."""
    request = RunRequest(prompt="?")
    own = {f: getattr(request, f) for f in REQUEST_FIELDS} | {"prompt": "", "expected": ""}
    return {"prompt": ""} | request.config.to_dict() | own


def stream_run(request: RunRequest, control: RunControl | None = None) -> Iterator[SearchTree]:
    """Load (or reuse) the models and stream the run's tree, its meta filled in. The run ends
    early, its tree kept and marked `stopped`, on Stop, at the time or token limit, or when a
    model fails on a step (`controlled`)."""
    from backend.runtime import get_runtime  # torch loads with the first run, not with the page

    limits = run_limits(request.model, request.config)  # before anything loads
    runtime = get_runtime(request.model, request.prm, request.precision)
    meta = runtime.meta()
    if request.expected:
        meta["expected"] = request.expected
    control = control or RunControl()
    control.start(limits.time_limit_s, limits.max_run_tokens)
    policy = None
    if request.config.strategy == "compute_optimal":  # fitted per model and verifier
        from app.lab.compute_optimal_fit import stored_policy

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


def run_json(request: RunRequest, control: RunControl | None = None) -> dict[str, Any]:
    """The whole run as JSON: the search's tree and, when the request compares, the majority
    vote at the same N under "comparison" (what a user sees in the explorer). A search that
    ended early (its "stopped" says why) is compared with nothing."""
    control = control or RunControl()
    tree = run_to_end(request, control)
    run = tree.to_dict()
    if tree.stopped:
        return run
    if request.compares:
        (majority,) = deque(stream_majority(request, control), maxlen=1)
        run["comparison"] = comparison(tree, majority)
    if request.bigger_model and not control.stopped:
        run["comparison"]["bigger"] = run_bigger(request, tree, control)
    return run


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


def run_bigger(
    request: RunRequest, search_tree: SearchTree, control: RunControl | None = None
) -> dict[str, Any]:
    """The bigger model's side of the comparison, run to the end (the JSON's comparison.bigger,
    with the verdict line). When the bigger model cannot run (not installed, out of memory,
    ended early), {"model", "error"}: the finished search and its majority vote are kept."""
    try:
        (side,) = deque(stream_bigger_side(request, search_tree, control), maxlen=1)
    except Exception as err:  # the search the user waited for must not be lost with it
        log.warning("the bigger model %s failed: %s", request.bigger_model, err)
        return {"model": request.bigger_model, "error": f"{type(err).__name__}: {err}"}
    if side.stopped:
        return {"model": request.bigger_model, "error": f"its run ended early: {side.stopped}"}
    bigger = versus(search_tree, side.greedy, side.majority, request.expected)
    bigger["verdict"] = verdict_line(
        search_tree, side.greedy, side.majority, *short_names(request), request.expected
    )
    return bigger


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
