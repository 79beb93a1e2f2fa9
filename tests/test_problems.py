"""The arithmetic problem set is well-formed and its answers are right; the prompt measurement runs."""

from __future__ import annotations

import ast
import json
import operator
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ROOT / "assets" / "problems" / "arithmetic.json"
MULTISTEP = ROOT / "assets" / "problems" / "multistep.json"

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,  # on Fractions: exact
}


def evaluate(expression: str) -> Fraction:
    """Exact value of integer arithmetic (+ - * / parentheses, unary minus); nothing else parses."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval"))


def load() -> list[dict]:
    return json.loads(PROBLEMS.read_text())


def test_evaluator_is_exact_and_refuses_anything_else():
    assert evaluate("(2+3)*5") == 25
    assert evaluate("3*6/9") == 2
    assert evaluate("7/2") == Fraction(7, 2)
    assert evaluate("-4+10") == 6
    for bad in ("__import__('os')", "2**10", "1.5*2", "x+1", "abs(-3)", "[1][0]"):
        with pytest.raises(ValueError):
            evaluate(bad)


def test_problem_set_is_well_formed():
    problems = load()
    assert isinstance(problems, list) and len(problems) == 36
    questions = [p["question"] for p in problems]
    assert len(set(questions)) == len(questions), "duplicate questions"
    for p in problems:
        assert set(p) == {"question", "answer", "check"}, p
        assert all(isinstance(p[k], str) and p[k].strip() for k in p), p
        assert p["question"].rstrip().endswith("?"), p["question"]


@pytest.mark.parametrize("problem", load(), ids=lambda p: p["check"])
def test_answer_equals_its_check(problem):
    answer = problem["answer"]
    assert answer.isdigit() and int(answer) > 0, "answers are whole positive numbers"
    value = evaluate(problem["check"])
    assert value.denominator == 1, f"{problem['check']} is not whole"
    assert value == int(answer)
    # 1-3 operations, and the check uses the numbers the question gives
    tree = ast.parse(problem["check"], mode="eval")
    ops = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp)]
    assert 1 <= len(ops) <= 3
    numbers = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    for number in numbers:
        if number not in (2, 60):  # "half" and hours-to-minutes are not written as digits
            assert str(number) in problem["question"], (number, problem["question"])


def test_the_multi_step_set_needs_two_to_five_operations_and_its_answers_are_right():
    problems = json.loads(MULTISTEP.read_text())
    assert len(problems) == 16
    questions = [p["question"] for p in problems]
    assert len(set(questions)) == len(questions)
    assert not set(questions) & {p["question"] for p in load()}, "the tiers share no question"
    for p in problems:
        assert set(p) == {"question", "answer", "check"}, p
        assert p["question"].rstrip().endswith("?"), p["question"]
        value = evaluate(p["check"])
        assert value.denominator == 1 and value == int(p["answer"]) > 0, p
        tree = ast.parse(p["check"], mode="eval")
        assert 2 <= sum(isinstance(n, ast.BinOp) for n in ast.walk(tree)) <= 5, p["check"]
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and n.value not in (2, 3):  # "half", "Three": words
                assert str(n.value) in p["question"], (n.value, p["question"])


def test_answers_parse_as_numbers_for_the_grader():
    from strategies.answers import answers_equal, extract_answer

    for p in load():
        assert extract_answer(f"The answer is \\boxed{{{p['answer']}}}.") == p["answer"]
        assert answers_equal(p["answer"], f"{p['answer']}.0")


@pytest.mark.model
def test_measure_prompts_smoke(tmp_path):
    out = tmp_path / "prompts.json"
    env = {**os.environ, "THINKTREE_THREADS": os.environ.get("THINKTREE_THREADS", "1")}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "measure_prompts.py"),
            "--limit",
            "2",
            "--templates",
            "fewshot_steps",
            "--samples",
            "2",
            "--max-tokens",
            "96",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    header = next(line for line in run.stdout.splitlines() if line.startswith("template"))
    for column in ("steps>=2", "boxed", "greedy", "s.boxed", "s.acc", "maj@k", "pass@k"):
        assert column in header
    assert any(line.startswith("fewshot_steps ") for line in run.stdout.splitlines())

    data = json.loads(out.read_text())
    assert data["config"]["problems"] == 2 and data["config"]["samples"] == 2
    result = data["templates"]["fewshot_steps"]
    summary = result["summary"]
    expected = {
        "multi_step",
        "boxed",
        "greedy_acc",
        "s_multi_step",
        "s_boxed",
        "sample_acc",
        "maj_acc",
        "pass_acc",
        "mean_tokens",
        "seconds",
        "problems",
        "samples",
    }
    assert expected <= set(summary)
    for key in expected - {"mean_tokens", "seconds", "problems", "samples"}:
        assert 0.0 <= summary[key] <= 1.0, key
    assert len(result["per_problem"]) == 2
    for row in result["per_problem"]:
        assert {"question", "gold", "greedy", "samples", "majority"} <= set(row)
        assert len(row["samples"]) == 2
        assert {"text", "tokens", "steps", "boxed", "answer", "correct"} <= set(row["greedy"])
