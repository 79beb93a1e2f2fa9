"""Tests for the arithmetic step checker PRM: what it finds, how it judges, and that hostile text
can neither run code nor take long."""

from __future__ import annotations

import builtins
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.verifiers.arithmetic import (
    MAX_CALCULATIONS,
    ArithmeticPRM,
    StepCheck,
    check_step,
)
from strategies.protocols import StepScorer

# (step, verdict): "right" = every calculation holds, "wrong" = one fails, "unchecked" = none
TABLE = [
    # plain operators, words around them
    ("He buys 3 packs of 12 eggs, so 3 x 12 = 36 eggs.", "right"),
    ("17 + 25 = 32", "wrong"),
    ("17 + 25 = 42", "right"),
    ("100 - 37 = 63", "right"),
    ("12 / 4 = 3", "right"),
    ("12 ÷ 4 = 4", "wrong"),
    ("6 × 7 = 42", "right"),
    ("6 · 7 = 42", "right"),
    ("6 X 7 = 42", "right"),
    ("6*7=43", "wrong"),
    ("5x3 = 15", "right"),
    ("2 + 3 * 4 = 14", "right"),  # precedence
    ("2 + 3 * 4 = 20", "wrong"),
    # chains: each `=` segment is checked, running totals allowed
    ("4 * 9 = 36 - 20 = 16", "right"),
    ("4 * 9 = 36 - 20 = 15", "wrong"),
    ("5 * 9 = 36 - 20 = 16", "wrong"),
    ("x = 5 + 3 = 8", "right"),
    ("3 x 4 = 12 eggs x 2 = 24", "right"),
    # parentheses, unary minus, implicit product
    ("(2 + 3) * 4 = 20", "right"),
    ("(2 + 3) * 4 = 14", "wrong"),
    ("2(3 + 4) = 14", "right"),
    ("5 - 8 = -3", "right"),
    ("15 - (-5) = 20", "right"),
    ("-5 + 10 = 5", "right"),
    ("(so 3 + 4 = 7)", "right"),
    # decimals, thousands, rounding to the written precision
    ("0.5 * 12 = 6", "right"),
    ("0.1 + 0.2 = 0.3", "right"),
    ("1,200 / 4 = 300", "right"),
    ("1,200 + 800 = 2,000", "right"),
    ("10 / 3 = 3.33", "right"),
    ("10 / 3 = 3.3", "right"),
    ("10 / 3 = 3.34", "wrong"),
    ("2 / 3 = 0.67", "right"),
    ("2 / 3 = 0.66", "wrong"),
    ("7 / 2 = 3", "wrong"),  # an integer result is not a rounding
    # percentages
    ("20% of 50 = 10", "right"),
    ("20% of 50 = 12", "wrong"),
    ("50 * 20% = 10", "right"),
    ("25% * 80 = 20", "right"),
    ("20 percent of 50 = 10", "right"),
    ("10 / 50 = 20%", "right"),
    ("1 / 3 = 33.33%", "right"),
    ("50 + 20% = 60", "unchecked"),  # 50.2 or 60: ambiguous, not guessed
    # currency and units
    ("$12 x 3 = $36", "right"),
    ("$12 x 3 = $38", "wrong"),
    ("12 dollars x 3 = 36 dollars", "right"),
    ("3 boxes x 4 = 12", "right"),
    ("12 eggs = 3 x 4", "right"),
    ("Janet has 16 - 3 - 4 = 9 eggs left. She sells them for 9 * $2 = $18.", "right"),
    ("She has 20 - 5 = 15 apples, and 15 / 3 = 6 each.", "wrong"),
    ("She earns $15/hour * 8 hours = $120.", "right"),
    ("2.5 hours x $12/hour = $31", "wrong"),
    ("2 hours * 60 minutes/hour = 120 minutes", "right"),
    ("3 times 4 = 12", "right"),
    ("10 minus 3 = 7", "right"),
    # LaTeX
    (r"\frac{3}{4} \times 8 = 6", "right"),
    (r"12 \div 4 = 3", "right"),
    (r"3 \cdot 4 = 12", "right"),
    (r"3 \cdot 4 = 13", "wrong"),
    (r"\( 2^{10} = 1024 \)", "right"),
    (r"8 / \frac{1}{2} = 16", "right"),
    (r"3 \times 12 = \boxed{36}", "right"),
    ("2**3 = 8", "right"),
    # nothing to check
    ("= 36", "unchecked"),
    ("The answer is 36.", "unchecked"),
    ("36 = 36", "unchecked"),
    ("", "unchecked"),
    ("Let's think step by step.", "unchecked"),
    ("2x + 3 = 7", "unchecked"),  # algebra, not arithmetic
    ("x - 2 * 3 = 5", "unchecked"),
    ("3 + 4 = 2x", "unchecked"),
    ("f(3) = 7", "unchecked"),
    ("√16 + 1 = 5", "unchecked"),
    ("The box has 3 toys", "unchecked"),  # "x" inside a word is not a product
    ("9**9**9**9 = 1", "unchecked"),
    ("5 / 0 = 0", "wrong"),
]


@pytest.mark.parametrize(("step", "verdict"), TABLE)
def test_verdicts(step: str, verdict: str) -> None:
    assert check_step(step).verdict == verdict


def test_table_covers_all_verdicts() -> None:
    assert {v for _, v in TABLE} == {"right", "wrong", "unchecked"}
    assert len(TABLE) >= 25


def test_calculation_records_values() -> None:
    (calc,) = check_step("He had 17 + 25 = 32 marbles.").calculations
    assert calc.text == "17 + 25 = 32"
    assert (calc.expected, calc.written, calc.ok) == (42.0, 32.0, False)


def test_chain_is_checked_segment_by_segment() -> None:
    calcs = check_step("5 * 9 = 36 - 20 = 16").calculations
    assert [(c.text, c.expected, c.written, c.ok) for c in calcs] == [
        ("5 * 9 = 36", 45.0, 36.0, False),
        ("36 - 20 = 16", 16.0, 16.0, True),
    ]


def test_several_calculations_in_one_step() -> None:
    check = check_step("First 3 + 4 = 7, then 7 * 2 = 15, and 15 - 1 = 14.")
    assert [c.ok for c in check.calculations] == [True, False, True]
    assert check.verdict == "wrong"


def test_unchecked_calculations_say_why() -> None:
    (calc,) = check_step("9**9**9**9 = 1").calculations
    assert calc.ok is None and calc.expected is None and "exponent" in calc.note
    (calc,) = check_step("1" * 40 + " + 1 = 2").calculations
    assert calc.ok is None and "digits" in calc.note


def test_calculation_cap_marks_truncated() -> None:
    check = check_step("1 + 1 = 2. " * (MAX_CALCULATIONS + 10))
    assert len(check.calculations) == MAX_CALCULATIONS and check.truncated
    assert not check_step("1 + 1 = 2").truncated


HOSTILE = {
    "import": "__import__('os').system('echo hi')",
    "import with equals": "__import__('os').system('echo hi') = 0 + 1",
    "power tower": "9**9**9**9 = 1",
    "caret tower": "2^" * 40 + "2 = 4",
    "1000 digits": "7" * 1000 + " * 3 = 21",
    "1000 decimals": "0." + "3" * 1000 + " * 3 = 1",
    "100 kB of sums": "3 x 12 = 36. " * 8000,
    "100 kB expression": "1 + " * 25000 + "1 = 25001",
    "100 kB of equals": "1=" * 50000,
    "100 kB of parens": "(" * 50000 + "1" + ")" * 50000 + " = 1",
    "unclosed parens": "(" * 19000 + "1 = 1 + 1",
    "unopened parens": "1 + 1 = 1" + ")" * 19000,
    "100 kB of minus": "-" * 100000 + "1 = 1",
    "100 kB of fracs": r"\frac{" * 20000,
    "100 kB of garbage": "ab+(%=x3" * 12500,
    "100 kB of digits": "9" * 100000,
    "huge product": " * ".join(["9" * 30] * 30) + " = 1",
}


@pytest.mark.parametrize("step", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_steps_are_safe_and_fast(
    step: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checker tried to run code")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, forbidden)
    monkeypatch.setattr(os, "system", forbidden)
    check_step.cache_clear()
    start = time.perf_counter()
    score = ArithmeticPRM().score("q", [[step]]).steps[0][0]
    assert time.perf_counter() - start < 1.0
    assert 0.0 <= score <= 1.0
    assert "hi" not in capfd.readouterr().out


def test_score_shapes_bounds_and_tokens() -> None:
    prm = ArithmeticPRM()
    solutions = [
        ["3 x 12 = 36.\n\n", "36 - 20 = 15.\n\n", "The answer is \\boxed{15}."],
        ["Let me think.\n\n"],
        [],
    ]
    scores = prm.score("How many eggs?", solutions)
    assert [len(s) for s in scores.steps] == [3, 1, 0]
    assert scores.steps[0] == [0.9, 0.1, 0.1]  # the answer repeats a wrong result
    assert scores.steps[1] == [0.5]
    assert all(0.0 <= x <= 1.0 for s in scores.steps for x in s)
    assert scores.tokens == sum(len(step.split()) for s in solutions for step in s)
    assert prm.score("q", []).steps == []


def test_scores_are_prefix_stable() -> None:
    prm = ArithmeticPRM()
    steps = ["2 + 2 = 4", "4 * 3 = 13", "So the answer is 13.", "13 - 1 = 12"]
    full = prm.score("q", [steps]).steps[0]
    for k in range(len(steps) + 1):
        assert prm.score("q", [steps[:k]]).steps[0] == full[:k]


def test_protocol_name_and_config() -> None:
    prm = ArithmeticPRM(right=1.0, wrong=0.0, unchecked=0.25)
    assert isinstance(prm, StepScorer)
    assert prm.name == "arithmetic"
    assert prm.score("q", [["1 + 1 = 2", "1 + 1 = 3", "hello"]]).steps == [[1.0, 0.0, 0.25]]
    with pytest.raises(ValueError, match="right"):
        ArithmeticPRM(right=1.5)
    assert isinstance(check_step("1 + 1 = 2"), StepCheck)


ARITHMETIC_TEXT = st.text(alphabet="0123456789 +-*/x×÷·^%=().,$eo\\frac{}\n", max_size=80)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), ARITHMETIC_TEXT))
def test_random_text_never_raises(text: str) -> None:
    check = check_step(text)
    assert check.verdict in ("right", "wrong", "unchecked")
    (score,) = ArithmeticPRM().score("", [[text]]).steps[0]
    assert 0.0 <= score <= 1.0


@settings(max_examples=100, deadline=None)
@given(
    a=st.integers(-10_000, 10_000),
    b=st.integers(0, 10_000),
    op=st.sampled_from(["+", "-", "*", "x", "×"]),
    off=st.integers(1, 100),
)
def test_integer_arithmetic_is_judged_exactly(a: int, b: int, op: str, off: int) -> None:
    result = a + b if op == "+" else a - b if op == "-" else a * b
    assert check_step(f"so {a} {op} {b} = {result}.").verdict == "right"
    assert check_step(f"so {a} {op} {b} = {result + off}.").verdict == "wrong"


def test_boxed_answer_must_match_the_latest_calculation():
    prm = ArithmeticPRM()
    sols = [
        ["Sara has 5 + 7 = 12 pencils.\n\n", "The answer is \\boxed{10}."],
        ["Sara has 5 + 7 = 12 pencils.\n\n", "The answer is \\boxed{12}."],
        ["The answer is \\boxed{12}."],  # nothing computed: nothing behind the answer
        ["5 + 7 = 12, so the answer is \\boxed{10}"],
        ["3 x 4 = 12 apples.\n\n", "12 - 2 = 10 left.\n\n", "The answer is \\boxed{1,000}."],
    ]
    steps = prm.score("q", sols).steps
    assert steps[0] == [prm.right, prm.wrong]
    assert steps[1] == [prm.right, prm.right]
    assert steps[2] == [prm.unsupported]
    assert steps[3] == [prm.wrong]
    assert steps[4] == [prm.right, prm.right, prm.wrong]  # 1,000 is not the 10 just computed
    # without the cache of step checks (the benchmark's naive port): the same scores, and no
    # step is served from the cache
    check_step.cache_clear()
    assert ArithmeticPRM(cache=False).score("q", sols).steps == steps
    assert check_step.cache_info().currsize == 0


def test_an_answer_with_nothing_behind_it_scores_below_one_that_checks():
    """The search that followed "we'd need to add the two numbers" to \\boxed{1} (issue 16)."""
    prm = ArithmeticPRM()
    question = "What is 17 + 25?"
    vacuous = [
        "To find the total value, we'd need to add the two numbers.\n\n",
        "The answer is \\boxed{1}.",
    ]
    checked = ["17 + 25 = 42.\n\n", "The answer is \\boxed{42}."]
    wrong = ["17 + 25 = 32.\n\n", "The answer is \\boxed{32}."]
    v, c, w = prm.score(question, [vacuous, checked, wrong]).steps
    assert v[0] == prm.unchecked  # prose with nothing to check stays neutral
    assert v[1] < v[0] and v[1] < c[0] and v[1] < c[1]  # the answer it leads to does not pay
    assert w[1] < v[1]  # an answer from a wrong calculation is still worse
    # weighted Best-of-N: four vacuous answers do not outvote one whose calculation checks
    assert 4 * v[1] < c[1]
    # every way of writing the answer alone: boxed in the first step, or after more prose
    for sol in (["\\boxed{1}"], ["Let me think.\n\n", "So.\n\n", "It is \\boxed{1}."]):
        assert prm.score(question, [sol]).steps[0][-1] == prm.unsupported
    with pytest.raises(ValueError, match="unsupported"):
        ArithmeticPRM(unsupported=2.0)
