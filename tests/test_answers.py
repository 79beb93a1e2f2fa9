"""Tests for strategies/answers.py: extraction, normalization, equality and grouping of answers."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.answers import (
    answer_end,
    answers_equal,
    extract_answer,
    group_answers,
    normalize,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}} is it", "\\frac{\\sqrt{3}}{2}"),
        ("First \\boxed{1}, then on reflection \\boxed{2}.", "2"),
        ("Hence $\\boxed{-7}$.", "-7"),
        ("\\boxed 5$ done", "5"),
        ("\\fbox{12}", "12"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{ \\dfrac{3}{4} }", "\\dfrac{3}{4}"),
        ("done \\boxed{4} but then \\boxed{5", "4"),  # an unclosed box is skipped
        # cut while writing its only box: no answer (not "\\boxed{2", not the 2 of 25)
        ("So 15 + 10 = 25 muffins. The answer is \\boxed{2", None),
        ("The answer is \\boxed{\\frac{1}{2", None),
        ("\\boxed{} and 9", "9"),  # an empty box is no answer
        ("\\(\\boxed{7}\\)", "7"),
        ("The final answer is 42.", "42"),
        ("Final Answer: The final answer is $\\frac{1}{3}$. I hope it is correct.", "\\frac{1}{3}"),
        ("answer: 3.5.\nmore text 7", "3.5"),
        ("Thus the answer is \\(12\\).", "12"),
        ("We get 1,000 apples.", "1000"),
        ("A total of 1,234,567.5 grams", "1234567.5"),
        ("The temperature is -5 degrees", "-5"),
        ("10 - 3 = 7", "7"),  # a binary minus is not a sign
        ("the ratio is 3/4", "3/4"),
        ("half of it is $\\dfrac{1}{2}$", "\\dfrac{1}{2}"),
        ("nothing to see here", None),
        ("", None),
        ("$$", None),
        ("\\boxed{", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("$\\dfrac{1}{2}$", "\\frac{1}{2}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("3.0", "3"),
        ("3.50", "3.5"),
        (".5", "0.5"),
        ("1,000", "1000"),
        ("1\\,000", "1000"),
        ("x = 3", "3"),
        ("y = 2x + 1", "y=2x+1"),  # the right side has its own variable: kept
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("45^\\circ", "45"),
        ("\\pi r^2", "\\pi r^2"),  # the space after a command stays
        ("\\boxed{5}.", "5"),
        ("  ", ""),
    ],
)
def test_normalize(answer: str, expected: str) -> None:
    assert normalize(answer) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1/2", "0.5"),
        ("1/2", "\\frac{1}{2}"),
        ("0.5", "\\dfrac{1}{2}"),
        ("$\\frac12$", "1/2"),
        ("3", "3.0"),
        ("x=3", "3"),
        ("y=2x+1", "2x+1"),  # math-verify compares an equation's right side with an expression
        ("1,000", "1000"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("x^2+1", "1+x^2"),
        ("50\\%", "0.5"),
        ("\\text{(B)}", "B"),
        ("Yes", "yes"),
        ("2^{10}", "1024"),
    ],
)
def test_answers_equal(a: str, b: str) -> None:
    assert answers_equal(a, b)
    assert answers_equal(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1/2", "1/3"),
        ("3", "-3"),
        ("0.33", "1/3"),
        ("hello", "ohell"),  # math-verify alone would read both as the product h*e*l*l*o
        ("(3,4)", "4,3"),  # an interval and a set: verify agrees in one direction only
        ("", "0"),
    ],
)
def test_answers_not_equal(a: str, b: str) -> None:
    assert not answers_equal(a, b)
    assert not answers_equal(b, a)


@pytest.mark.parametrize(
    ("a", "b"), [("10^{10^{10}}", "5"), ("1000000!", "3"), ("9^9^9", "1"), ("1" * 300, "1")]
)
def test_costly_answers_are_compared_as_strings(a: str, b: str) -> None:
    start = time.perf_counter()
    assert not answers_equal(a, b)
    assert answers_equal(a, a)
    assert time.perf_counter() - start < 1.0


def test_answers_equal_odd_inputs() -> None:
    assert not answers_equal(None, "1")  # type: ignore[arg-type]
    assert not answers_equal("}{", "\\frac{")


def test_answers_equal_in_a_worker_thread(caplog: pytest.LogCaptureFixture) -> None:
    # Gradio runs handlers in worker threads, where signal.alarm raises; strings not used elsewhere
    # so that nothing comes from a cache filled in the main thread.
    results: dict[str, object] = {}

    def compare() -> None:
        try:
            results["equal"] = answers_equal("\\frac{7}{14}", "0.500")
            results["unequal"] = answers_equal("\\frac{7}{13}", "0.5000")
        except Exception as error:  # pragma: no cover - the failure being tested for
            results["error"] = error

    with caplog.at_level(logging.WARNING, logger="strategies.answers"):
        thread = threading.Thread(target=compare)
        thread.start()
        thread.join(timeout=30)
    assert results == {"equal": True, "unequal": False}
    assert not [r for r in caplog.records if r.name == "strategies.answers"]


def test_group_answers() -> None:
    assert group_answers(["1/2", "0.5", "\\frac{1}{2}", "3", None, "3.0"]) == [[0, 1, 2], [3, 5]]


def test_group_answers_order_of_first_appearance() -> None:
    answers = ["7", None, "1/4", "7.0", "0.25", "x = 7", "9"]
    assert group_answers(answers) == [[0, 3, 5], [2, 4], [6]]


def test_group_answers_empty() -> None:
    assert group_answers([]) == []
    assert group_answers([None, None]) == []


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_extract_answer_never_raises(text: str) -> None:
    answer = extract_answer(text)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip() and answer)


_LATEXY = st.text(alphabet=st.sampled_from(list("\\boxed{}$frac0123456789-.,/ =:^!x\n")))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["\\boxed", "answer is", "$", "{", "}"]) | _LATEXY).map("".join))
def test_extract_answer_never_raises_on_latexy_text(text: str) -> None:
    extract_answer(text)


_SHORT_ANSWERS = st.one_of(
    st.none(),
    st.sampled_from(["1/2", "0.5", "\\frac{1}{2}", "3", "3.0", "x=3", "-3", "2^{10}", "1024"]),
    st.text(alphabet="0123456789./-x^{}\\", max_size=6),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_SHORT_ANSWERS, max_size=10))
def test_group_answers_is_a_partition(answers: list[str | None]) -> None:
    groups = group_answers(answers)
    flat = [index for group in groups for index in group]
    assert sorted(flat) == [i for i, answer in enumerate(answers) if answer is not None]
    assert all(group == sorted(group) and group for group in groups)
    assert [group[0] for group in groups] == sorted(group[0] for group in groups)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12))
def test_answers_equal_never_raises_and_is_symmetric(a: str, b: str) -> None:
    assert answers_equal(a, b) == answers_equal(b, a)


# ---- where a solution written to the end stops ------------------------------------------------
@pytest.mark.parametrize(
    ("text", "end"),
    [
        (
            "The answer is \\boxed{50}\n\nExplanation: 12 x 8 = 96",
            len("The answer is \\boxed{50}\n\n"),
        ),
        ("So \\boxed{\\frac{1}{2}}.\n\nQuestion: next", len("So \\boxed{\\frac{1}{2}}.\n\n")),
        ("\\boxed 7\n\nmore", len("\\boxed 7\n\n")),
        (
            "a\n\nb = 3\n\n\\boxed{3} and \\boxed{4}\n\nc",
            len("a\n\nb = 3\n\n\\boxed{3} and \\boxed{4}\n\n"),
        ),
        ("The answer is \\boxed{50}", None),  # its step has not ended yet
        ("The answer is \\boxed{5\n\n0", None),  # the box is still open
        (
            "\\boxed{}\n\nThe answer is \\boxed{2}\n\n",
            len("\\boxed{}\n\nThe answer is \\boxed{2}\n\n"),
        ),
        ("no answer\n\nhere\n\n", None),
        ("\\boxed 7", None),  # `\boxed 7` may still grow into `\boxed 72`
    ],
)
def test_answer_end(text, end):
    assert answer_end(text) == end


@pytest.mark.parametrize(
    ("text", "written", "number"),
    [
        ("The answer is \\boxed{42}.", True, 42),
        ("So \\boxed 7", True, 7),  # a finished step: its token is whole
        ("\\fbox{x = 3}", True, None),  # written, but not a plain number
        ("The answer is \\boxed{1,000}", True, 1000),
        ("The answer is \\boxed{", False, None),  # never closed: no answer yet
        ("The answer is \\boxed{ }.", False, None),  # empty
        ("I will put it in \\boxed{} later", False, None),
        ("3 + 4 = 7", False, None),
    ],
)
def test_the_one_rule_for_an_answer_that_is_written(text, written, number):
    """One rule, called by the search (a step that writes it ends its solution), the engine
    (`answer_end`: where writing to the end stops) and the arithmetic checker (its number)."""
    from backend.verifiers.arithmetic import boxed_number
    from strategies.answers import answer_written

    assert answer_written(text) is written
    assert (answer_end(text + "\n\nmore") is not None) is written
    assert boxed_number(text) == number


def test_the_search_ends_a_solution_exactly_where_the_rule_says():
    from strategies.config import SearchConfig
    from strategies.registry import run
    from tests.fakes import FakeGenerator, FakeScorer

    steps = {0: "I will box it: \\boxed{\n\n", 1: "The answer is \\boxed{5}.\n\n"}
    gen = FakeGenerator(script=lambda partial, i: steps[min(len(partial), 1)])
    tree = run("q", SearchConfig("beam_search", n=2, beam_width=2), gen, FakeScorer())
    leaf = tree.nodes[tree.selected[-1]]
    assert leaf.depth == 2 and leaf.finish_reason == "answer" and leaf.answer == "5"
