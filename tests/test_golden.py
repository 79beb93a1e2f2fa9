"""A refactor changes no search: every strategy's tree over the fakes is the stored one."""

from __future__ import annotations

import json

import pytest

from tests.fake_trees import CASES, GOLDEN, run_case

STORED = json.loads(GOLDEN.read_text())


def test_every_case_is_stored():
    assert set(STORED) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_tree_is_the_golden_one(name):
    assert json.loads(json.dumps(run_case(CASES[name]))) == STORED[name]
