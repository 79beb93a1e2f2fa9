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
    """The embedded SmolLM2-135M (converted copy cached under ~/.cache/thinktree)."""
    from backend.runtime import get_policy

    return get_policy("smollm2-135m", "fp32")


@pytest.fixture(scope="session")
def engine(policy):
    from backend.engine import StepEngine
    from backend.prompts import PromptTemplate

    return StepEngine(policy.model, policy.tokenizer, PromptTemplate.load("fewshot_steps"))
