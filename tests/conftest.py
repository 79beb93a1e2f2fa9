"""Shared fixtures: the embedded model, loaded once per test session."""

from __future__ import annotations

import pytest


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
