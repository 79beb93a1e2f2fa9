"""The scripting endpoint: `/run`, and the MCP tool of the same name.

A prompt and any settings in, the run as JSON out: the search tree and, unless `compare` is
false, majority voting at the same N and the bigger model's answer (app/service.py). It streams
the JSON as the run grows, so a client that cancels or goes away ends the run within a step.
Its signature, schema and docs are built from the request's fields and the preset, so every
setting appears with the value the explorer starts from. It waits in the explorer's line
(`handlers.GATE`) and reports errors as the explorer does.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Iterator
from typing import Any, Literal

import gradio as gr

from app import handlers
from app.request import REQUEST_HELP, RunRequest, setting_choices
from app.service import Outcome, stream_request
from strategies.config import field_help


def _bind(args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's settings by name, the preset's where left out (ValueError in words a user
    understands for a call the signature does not take)."""
    prompt = args[0] if args else kwargs.get("prompt")
    if isinstance(prompt, dict) or _json_request(prompt):
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
    for key in handlers.INT_KEYS:  # a JSON or MCP client may send 4.0 for 4
        values[key] = handlers.whole(key, values[key])
    expected = values.get("expected")
    values["expected"] = (str(expected).strip() or None) if expected is not None else None
    return values


def _json_request(prompt: Any) -> bool:
    """Whether `prompt` is the old one-object call sent as text: a JSON object with a "prompt"."""
    if not isinstance(prompt, str) or not prompt.lstrip().startswith("{"):
        return False
    try:
        sent = json.loads(prompt)
    except ValueError:
        return False
    return isinstance(sent, dict) and "prompt" in sent


def _run(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The run as JSON, growing: {} while it waits its turn, the tree so far after every
    iteration of the search, the whole run (with its comparison) last. A generator, so that a
    client that cancels or goes away ends the run within a step: Gradio closes the stream at
    its next value, which ends the search and frees the models for the next caller (a plain
    function would run on to its end). Between iterations the last value is sent again."""
    try:
        request = RunRequest.from_dict(_bind(args, kwargs))
        ticket = handlers.GATE.join(request.model)
    except Exception as err:
        raise handlers.as_user_error(err) from None
    try:
        for _ in handlers.GATE.wait(ticket):
            yield {}
        outcome, sent = Outcome(request), {}
        with contextlib.closing(stream_request(request)) as frames:  # closed: the search ends
            for frame in frames:
                outcome.add(frame)
                tree = frame.tree
                if frame.part == "search" and not tree.done and not tree.writing:
                    sent = outcome.to_json()
                yield sent
        yield outcome.to_json()
    except gr.Error:
        raise
    except Exception as err:
        raise handlers.as_user_error(err) from None
    finally:
        handlers.GATE.leave(ticket)


def _api_types() -> dict[str, Any]:
    """Each argument's type: a choice among names (typed as Literal, so the API's schema lists
    them), or the preset value's type."""
    choices = setting_choices()
    return {
        name: Literal[choices[name]] if name in choices else type(value)
        for name, value in handlers.DEFAULTS.items()
    }


def _api_doc() -> str:
    helps = REQUEST_HELP | field_help()
    args = "\n".join(f"        {name}: {helps[name]}" for name in handlers.DEFAULTS)
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
        for name, value in handlers.DEFAULTS.items()
        if name != "prompt"
    ]
    return inspect.Signature(params, return_annotation=dict)


def run_search(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    yield from _run(*args, **kwargs)


# The scripting endpoint (/run, and the MCP tool of the same name): a typed signature built from
# the request's fields and the preset, so the API, its schema and its docs list every setting with
# the value the explorer starts from, and a new setting appears in all of them at once.
run_search.__signature__ = _api_signature()
run_search.__annotations__ = {
    p.name: p.annotation for p in run_search.__signature__.parameters.values()
}
run_search.__annotations__["return"] = dict
run_search.__doc__ = _api_doc()
