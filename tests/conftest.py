"""Shared fixtures: the embedded model, loaded once per test session."""

from __future__ import annotations

import os

import pytest

# A request that names no model runs on the showcase policy (the 0.5B) where it is installed;
# the suite's explorer, API and CLI runs take the fast embedded model instead, wherever they run
# (test_versus checks the choice itself). Set before the app is imported: its widgets read it.
os.environ.setdefault("THINKTREE_MODEL", "smollm2-135m")


@pytest.fixture(scope="session")
def policy():
    """The embedded SmolLM2-135M, from its GGUF file in llama.cpp."""
    from backend.runtime import get_policy

    return get_policy("smollm2-135m")


@pytest.fixture(scope="session")
def engine(policy):
    """A llama.cpp step engine over the embedded model, shared by the session's tests."""
    from backend.llama.engine import LlamaStepEngine
    from backend.prompts import PromptTemplate

    return LlamaStepEngine(policy.model, PromptTemplate.load("fewshot_steps"))


@pytest.fixture(scope="session")
def hf_policy():
    """The embedded SmolLM2 in transformers (dequantized from its GGUF file): what the tests of
    the transformers engine, the hub path, run on."""
    from types import SimpleNamespace

    from tests.tiny_prms import smollm2_in_transformers

    model, tokenizer = smollm2_in_transformers()
    return SimpleNamespace(model=model, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def hf_engine(hf_policy):
    from backend.engine import StepEngine
    from backend.prompts import PromptTemplate

    return StepEngine(hf_policy.model, hf_policy.tokenizer, PromptTemplate.load("fewshot_steps"))
