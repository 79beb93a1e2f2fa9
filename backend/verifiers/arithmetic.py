"""An offline process reward model that re-does the arithmetic each step writes.

The embedded policy (SmolLM2-135M) writes steps like "so 3 x 12 = 36 eggs" and most of its slips
are checkable arithmetic, so a verifier that recomputes every `expression = value` it finds already
separates good samples from bad ones, with no model, no GPU and no download. A step scores
`right` (0.9) when every calculation in it holds, `wrong` (0.1) when any fails and `unchecked`
(0.5) when it has nothing to check. A boxed answer with no calculation anywhere behind it is
`unsupported` (0.2): saying nothing must not pay, or a search follows the line that never
calculates (SmolLM2 on "17 + 25": "we'd need to add the two numbers" then "\boxed{1}"), and a
few such answers must not outvote one whose calculation checks in weighted Best-of-N.

Text is untrusted: it is read by a linear-time tokenizer and a small recursive-descent evaluator
over exact Fractions (never `eval`); numbers, exponents, expression length, nesting and the
number of calculations per step are capped, and what exceeds a cap is reported as unchecked.

Comparison: integers must match exactly; otherwise a relative tolerance of 1e-6, or a written
value with decimals (or a percentage) may be off by half its last digit ("10 / 3 = 3.33").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from backend.verifiers.expressions import (
    BENIGN_BEFORE,
    MAX_DIGITS,
    REL_TOL,
    Syntax,
    Tok,
    Unchecked,
    evaluate,
    is_compound,
    lead,
    lex,
    matches,
    normalise_latex,
    parse,
    raw_tokens,
    resolution,
)
from strategies.answers import boxed_answer
from strategies.protocols import Scores

MAX_STEP_CHARS = 20_000  # only the start of a longer step is read (StepCheck.truncated)
MAX_CALCULATIONS = 64  # per step; later ones are ignored (StepCheck.truncated)

Verdict = Literal["right", "wrong", "unchecked"]


@dataclass(frozen=True)
class Calculation:
    """One `expression = value` found in a step."""

    text: str  # as written (after LaTeX normalisation), e.g. "3 x 12 = 36"
    expected: float | None  # value of the computed side; None when it could not be computed
    written: float | None  # value the step claims
    ok: bool | None  # None: found but not checkable (see note)
    note: str = ""  # why it is unchecked or wrong beyond the values ("division by zero", ...)


@dataclass(frozen=True)
class StepCheck:
    """Every calculation found in one step, in order."""

    calculations: tuple[Calculation, ...]
    truncated: bool = False  # past MAX_STEP_CHARS or MAX_CALCULATIONS: the rest was not read

    @property
    def verdict(self) -> Verdict:
        """'wrong' if any calculation fails, 'right' if at least one holds, else 'unchecked'."""
        oks = [c.ok for c in self.calculations if c.ok is not None]
        if not oks:
            return "unchecked"
        return "right" if all(oks) else "wrong"


@dataclass(frozen=True)
class ArithmeticPRM:
    """A `StepScorer` that scores each step by checking its arithmetic."""

    right: float = 0.9  # every calculation in the step holds
    wrong: float = 0.1  # some calculation is wrong
    unchecked: float = 0.5  # nothing checkable in the step
    unsupported: float = 0.2  # a boxed answer with no calculation in the solution behind it
    cache: bool = True  # remember each step's check (False: re-check every step every call)
    name: ClassVar[str] = "arithmetic"
    # scoring is cheap (no model): a search may score steps while others are still being written
    cheap: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for field_name in ("right", "wrong", "unchecked", "unsupported"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ArithmeticPRM.{field_name} must be in [0, 1], got {value}")

    def _check(self, step: str) -> StepCheck:
        # only what check_step reads (and one more character, for `truncated`) is the cache key:
        # 4096 cached steps of a model that rambles must not hold megabytes each
        step = step[: MAX_STEP_CHARS + 1]
        return check_step(step) if self.cache else check_step.__wrapped__(step)

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        """Score every step of every solution; the question is not read.

        Besides its own arithmetic, a step that states the boxed answer is checked for consistency:
        the answer must equal the result of the solution's latest calculation (so "5 + 7 = 12 ...
        \\boxed{10}" is wrong), and is only as right as that calculation; with no calculation
        anywhere up to it, the answer is `unsupported`. A step's score depends only on the steps
        up to it.
        `tokens` is a rough count of what was read: the whitespace-separated words of all steps.
        """
        steps = [self._score_solution(solution) for solution in solutions]
        tokens = sum(len(step.split()) for solution in solutions for step in solution)
        return Scores(steps=steps, tokens=tokens)

    def _score_solution(self, solution: Sequence[str]) -> list[float]:
        return [getattr(self, v) for v in self.verdicts(solution)]

    def verdicts(self, solution: Sequence[str]) -> list[str]:
        """Each step's verdict (right, wrong, unchecked or unsupported), as `score` scores it."""
        verdicts, last = [], None  # last: the latest calculation so far
        for step in solution:
            check = self._check(step)
            verdict = check.verdict
            for c in check.calculations:
                if c.written is not None:
                    last = c
            boxed = boxed_number(step)
            if boxed is not None and last is None and verdict == "unchecked":
                verdict = "unsupported"
            elif boxed is not None and last is not None and verdict != "wrong":
                # an answer taken from a wrong calculation is as wrong as the calculation
                consistent = _close(boxed, last.written)
                verdict = {True: "right", False: "wrong", None: verdict}[last.ok]
                verdict = verdict if consistent else "wrong"
            verdicts.append(verdict)
        return verdicts


_PLAIN_ANSWER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def boxed_number(step: str) -> float | None:
    """The step's boxed answer (`strategies.answers.boxed_answer`: the last complete one) when
    it is a plain number of at most MAX_DIGITS digits, else None."""
    answer = boxed_answer(step[:MAX_STEP_CHARS])
    answer = answer.strip().strip("$").strip() if answer is not None else ""
    # a longer number is not read, as in a calculation: as a float it would be inf, which
    # `_close` finds close to anything ("2 + 2 = 4 ... \boxed{999...9}" scored right)
    if not _PLAIN_ANSWER.fullmatch(answer) or sum(c.isdigit() for c in answer) > MAX_DIGITS:
        return None
    return float(answer.replace(",", ""))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOL * max(1.0, abs(a), abs(b))


# ---------------------------------------------------------------- finding calculations


def _strip_unmatched(seg: list[Tok]) -> list[Tok]:
    """Drop parentheses opened before or closed after the expression: "(so 3 + 4 = 7)"."""
    excess = sum(t.kind == "lp" for t in seg) - sum(t.kind == "rp" for t in seg)
    lo, hi = 0, len(seg)
    while lo < hi and excess > 0 and seg[lo].kind == "lp":
        lo, excess = lo + 1, excess - 1
    while lo < hi and excess < 0 and seg[hi - 1].kind == "rp":
        hi, excess = hi - 1, excess + 1
    return seg[lo:hi]


def _segments(lexemes: list[Tok]):
    """Yield the `=`-separated segments of each run of arithmetic between breaks."""
    run: list[list[Tok]] = [[]]
    before: Tok | None = None
    for t in [*lexemes, Tok("brk", "", 0, 0, True)]:
        if t.kind == "brk":
            if len(run) > 1:
                first, last = run[0], run[-1]
                touching = before is not None and first and not first[0].space_before
                if touching and (before.text[-1:] or " ") not in BENIGN_BEFORE:
                    run[0] = []  # "f(3) = ...", "x-2 = 5", "√16 + 1 = 5": not all of it is here
                if not t.space_before and (len(t.text) == 1 and t.text.isalpha()):
                    run[-1] = last[:0]  # "= 2x": an equation, not a result
                yield [_strip_unmatched(seg) for seg in run]
            run, before = [[]], t
        elif t.kind == "eq":
            run.append([])
        else:
            run[-1].append(t)


def _first_op_is_binary(seg: list[Tok]) -> bool:
    # "x - 2 = 5" leaves "- 2": a fragment of a longer expression, not a negative number
    if seg[0].kind != "op":
        return False
    return seg[0].text != "-" or (len(seg) > 1 and seg[1].space_before)


def _check_pair(text: str, left: list[Tok], right: list[Tok]) -> Calculation | None:
    span = _display(text[left[0].start : right[-1].end])
    try:
        lnode, rnode = parse(left), parse(right)
    except Syntax:
        return None
    except Unchecked as e:
        return Calculation(span, None, None, None, str(e))
    l_compound, r_compound = is_compound(lnode), is_compound(rnode)
    if not (l_compound or r_compound):
        return None  # "36 = 36" is not a calculation
    # the side that is a plain number is the claim; with two expressions the right one is
    exp_node, wr_node = (rnode, lnode) if not l_compound else (lnode, rnode)
    try:
        expected, _ = evaluate(exp_node)
        written, _ = evaluate(wr_node)
    except Unchecked as e:
        return Calculation(span, None, None, None, str(e))
    except ZeroDivisionError:
        return Calculation(span, None, None, False, "division by zero")
    ok = matches(expected, written, resolution(wr_node))
    chain = lead(right) if l_compound and r_compound and not ok else None
    if chain is not None:  # "4 * 9 = 36 - 20 = 16" is checked as 4 * 9 = 36, then 36 - 20 = 16
        try:
            lead_value, _ = evaluate(chain[0])
        except Unchecked as e:
            return Calculation(span, None, None, None, str(e))
        span, written = _display(text[left[0].start : chain[1]]), lead_value
        ok = matches(expected, written, resolution(chain[0]))
    return Calculation(span, _to_float(expected), _to_float(written), ok)


def _display(span: str, limit: int = 200) -> str:
    span = " ".join(span[: 4 * limit].split())
    return span if len(span) <= limit else span[: limit - 1] + "…"


def _to_float(value: Fraction) -> float:
    try:
        return float(value)
    except OverflowError:
        return float("inf") if value > 0 else float("-inf")


@functools.lru_cache(maxsize=4096)
def check_step(text: str) -> StepCheck:
    """Find and check every calculation in a step (the first MAX_CALCULATIONS, MAX_STEP_CHARS).

    A calculation is two neighbouring `=`-separated expressions of which at least one contains
    an operator; "= 36" or a lone number is not one. Time is linear in the length of the text.
    """
    truncated = len(text) > MAX_STEP_CHARS
    text = normalise_latex(text[:MAX_STEP_CHARS])
    calcs: list[Calculation] = []
    for segments in _segments(lex(raw_tokens(text))):
        if segments[0] and _first_op_is_binary(segments[0]):
            segments[0] = []
        has_op = [any(t.kind == "op" for t in seg) for seg in segments]
        for i in range(len(segments) - 1):
            left, right = segments[i], segments[i + 1]
            if not left or not right or not (has_op[i] or has_op[i + 1]):
                continue  # "= 36", "36 = 36"
            calc = _check_pair(text, left, right)
            if calc is None:
                continue
            if len(calcs) == MAX_CALCULATIONS:
                return StepCheck(tuple(calcs), truncated=True)
            calcs.append(calc)
    return StepCheck(tuple(calcs), truncated)
