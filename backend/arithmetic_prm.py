"""An offline process reward model that re-does the arithmetic each step writes.

The embedded policy (SmolLM2-135M) writes steps like "so 3 x 12 = 36 eggs" and most of its slips
are checkable arithmetic, so a verifier that recomputes every `expression = value` it finds already
separates good samples from bad ones, with no model, no GPU and no download. A step scores
`right` (0.9) when every calculation in it holds, `wrong` (0.1) when any fails and `unchecked`
(0.5) when it has nothing to check; a step's score depends on that step's text alone.

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

from strategies.protocols import Scores

MAX_STEP_CHARS = 20_000  # only the start of a longer step is read (StepCheck.truncated)
MAX_DIGITS = 30  # a number with more digits is not checked
MAX_CALCULATIONS = 64  # per step; later ones are ignored (StepCheck.truncated)
MAX_EXPRESSION_TOKENS = 64  # a longer side of an `=` is not checked
MAX_PAREN_DEPTH = 16
MAX_EXPONENT = 64  # |n| in a ** n or a ^ n
MAX_BITS = 1000  # numerator/denominator size of any intermediate value (~10^301, fits a float)
REL_TOL = Fraction(1, 10**6)

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
    cache: bool = True  # remember each step's check (False: re-check every step every call)
    name: ClassVar[str] = "arithmetic"
    # scoring is cheap (no model): a search may score steps while others are still being written
    cheap: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for field_name in ("right", "wrong", "unchecked"):
            value = getattr(self, field_name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ArithmeticPRM.{field_name} must be in [0, 1], got {value}")

    def score_step(self, step: str) -> float:
        return getattr(self, self._check(step).verdict)

    def _check(self, step: str) -> StepCheck:
        return check_step(step) if self.cache else check_step.__wrapped__(step)

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        """Score every step of every solution; the question is not read.

        Besides its own arithmetic, a step that states the boxed answer is checked for consistency:
        the answer must equal the result of the solution's latest calculation (so "5 + 7 = 12 ...
        \\boxed{10}" is wrong), and is only as right as that calculation. A step's score depends
        only on the steps up to it.
        `tokens` is a rough count of what was read: the whitespace-separated words of all steps.
        """
        steps = [self._score_solution(solution) for solution in solutions]
        tokens = sum(len(step.split()) for solution in solutions for step in solution)
        return Scores(steps=steps, tokens=tokens)

    def _score_solution(self, solution: Sequence[str]) -> list[float]:
        scores, last = [], None  # last: the latest calculation so far
        for step in solution:
            check = self._check(step)
            verdict = check.verdict
            for c in check.calculations:
                if c.written is not None:
                    last = c
            boxed = boxed_number(step)
            if boxed is not None and last is not None and verdict != "wrong":
                # an answer taken from a wrong calculation is as wrong as the calculation
                consistent = _close(boxed, last.written)
                verdict = {True: "right", False: "wrong", None: verdict}[last.ok]
                verdict = verdict if consistent else "wrong"
            scores.append(getattr(self, verdict))
        return scores


_BOXED_NUMBER = re.compile(r"\\boxed\s*\{\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*\}")


def boxed_number(step: str) -> float | None:
    """The number in the step's last `\\boxed{...}`, when it holds a plain number."""
    found = _BOXED_NUMBER.findall(step[:MAX_STEP_CHARS])
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOL * max(1.0, abs(a), abs(b))


# ---------------------------------------------------------------- LaTeX normalisation

_LATEX_SUBS = [
    (re.compile(r"\\(?:left|right)\b"), ""),
    (re.compile(r"\\[()\[\]]|\\[,;:! ]"), " "),  # math delimiters and spacing
    (re.compile(r"\\times\b"), " × "),
    (re.compile(r"\\cdot\b"), " · "),
    (re.compile(r"\\div\b"), " ÷ "),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\\$"), "$"),
    (re.compile(r"\{,\}"), ","),  # 1{,}200
    (re.compile(r"\\(?:boxed|text|mathrm|textbf|mbox)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\^\s*\{([^{}]*)\}"), r"^(\1)"),
]
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _frac(m: re.Match[str]) -> str:
    num, den = m.group(1).strip(), m.group(2).strip()
    if _PLAIN_NUMBER.fullmatch(num) and _PLAIN_NUMBER.fullmatch(den):
        return f"({num}/{den})"
    return f"(({num})/({den}))"


def _normalise_latex(text: str) -> str:
    if "\\" not in text and "{" not in text:
        return text
    for pattern, repl in _LATEX_SUBS:
        text = pattern.sub(repl, text)
    for _ in range(3):  # nested \frac, innermost first
        text, n = _FRAC.subn(_frac, text)
        if not n:
            break
    return text


# ---------------------------------------------------------------- tokens

_RAW = re.compile(
    r"\s*(?:(?P<num>(?:[$€£]\s?)?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+))"
    r"|(?P<op>\*\*|[-+−*×·⋅/÷^])"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<pct>%)|(?P<eq>[=≈])"
    r"|(?P<word>[A-Za-z]+)"
    r"|(?P<brk>[^\sA-Za-z0-9$€£+\-−*×·⋅/÷^()%=≈.]+|\S)"
    r"|(?P<end>\Z))"
)
_OPS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*", "⋅": "*"}
_OPS.update({"/": "/", "÷": "/", "^": "^", "**": "^"})
_WORD_OPS = {"x": "*", "times": "*", "plus": "+", "minus": "-"}
_BENIGN_BEFORE = set(":;,.([{\"'“‘")  # text that may touch the start of a calculation


@dataclass(slots=True)
class _Tok:
    kind: str  # raw: num op lp rp pct eq word brk; after _lex: num op lp rp pct eq brk
    text: str
    start: int
    end: int
    space_before: bool
    value: Fraction | None = None  # num: None when it has more than MAX_DIGITS digits
    decimals: int = 0  # num: digits after the decimal point


def _raw_tokens(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for m in _RAW.finditer(text):
        kind = m.lastgroup
        if kind == "end":
            break
        start = m.start(kind)
        tok = _Tok(kind, m.group(kind), start, m.end(), start == 0 or start > m.start())
        if kind == "num":
            digits = tok.text.lstrip("$€£ ").replace(",", "")
            whole, _, frac = digits.partition(".")
            tok.decimals = len(frac)
            if len(whole) + len(frac) <= MAX_DIGITS:
                tok.value = Fraction(digits)
        elif kind == "op":
            tok.text = _OPS[tok.text]
        toks.append(tok)
    return toks


def _ends_operand(raw: list[_Tok], i: int) -> bool:
    if i < 0:
        return False
    t = raw[i]
    if t.kind in ("num", "rp", "pct"):
        return True
    return t.kind == "word" and len(t.text) > 1 and i > 0 and raw[i - 1].kind == "num"  # a unit


def _starts_operand(raw: list[_Tok], i: int) -> bool:
    if i < len(raw) and raw[i].kind == "op" and raw[i].text == "-":
        i += 1
    return i < len(raw) and raw[i].kind in ("num", "lp")


def _word_op(raw: list[_Tok], i: int) -> str | None:
    """The operator a word stands for here ("3 x 12", "20% of 50"), or None."""
    w = raw[i].text.lower()
    if w in _WORD_OPS and _ends_operand(raw, i - 1) and _starts_operand(raw, i + 1):
        return _WORD_OPS[w]
    prev = raw[i - 1] if i > 0 else None
    after_pct = prev is not None and (prev.kind == "pct" or prev.text.lower() == "percent")
    if w == "of" and after_pct and _starts_operand(raw, i + 1):
        return "*"
    return None


def _lex(raw: list[_Tok]) -> list[_Tok]:
    """Resolve words (operators, units, breaks), implicit products and juxtapositions."""
    out: list[_Tok] = []
    skip = -1
    for i, t in enumerate(raw):
        if i == skip:
            continue
        if _is_rate(raw, i):
            skip = i + 1  # "$12/hour x 3": drop "/hour"
            continue
        if t.kind == "word":
            op = _word_op(raw, i)
            prev_num = i > 0 and raw[i - 1].kind == "num"
            if op is not None:
                t = _Tok("op", op, t.start, t.end, t.space_before)
            elif t.text.lower() == "percent" and prev_num:
                t = _Tok("pct", "%", t.start, t.end, t.space_before)
            elif len(t.text) > 1 and prev_num and _unit_follows(raw, i + 1):
                continue  # a unit: "12 dollars x 3"
            else:
                t = _Tok("brk", t.text, t.start, t.end, t.space_before)
        if t.kind in ("num", "lp") and out and out[-1].kind in ("num", "rp", "pct"):
            if t.kind == "lp" and not t.space_before:
                out.append(_Tok("op", "*", t.start, t.start, False))  # 2(3 + 4)
            else:
                out.append(_Tok("brk", "", t.start, t.start, t.space_before))  # "Step 2 3 + 4"
        out.append(t)
    return out


def _is_rate(raw: list[_Tok], i: int) -> bool:
    """A "/" that starts a per-unit suffix ("12/hour"), not a division."""
    if raw[i].kind != "op" or raw[i].text != "/" or i + 1 >= len(raw):
        return False
    word = raw[i + 1]
    if word.kind != "word" or len(word.text) < 2 or word.text.lower() in _WORD_OPS:
        return False
    return _ends_operand(raw, i - 1) and not _starts_operand(raw, i + 2)


def _unit_follows(raw: list[_Tok], j: int) -> bool:
    if j >= len(raw):
        return False
    if raw[j].kind in ("op", "eq", "rp"):
        return True
    return (
        raw[j].kind == "word" and raw[j].text.lower() in _WORD_OPS and _starts_operand(raw, j + 1)
    )


# ---------------------------------------------------------------- parsing and evaluation


class _Syntax(Exception):
    """Not an expression: the text around `=` is not arithmetic."""


class _Unchecked(Exception):
    """An expression this checker refuses to evaluate (too big, ambiguous)."""


def _parse(toks: list[_Tok]) -> tuple:
    """Recursive descent: expr := term (+|- term)*; term := unary (*|/ unary)*;
    unary := (-|+) unary | power; power := postfix (^ unary)?; postfix := primary %?"""
    if len(toks) > MAX_EXPRESSION_TOKENS:
        raise _Unchecked("expression too long")
    pos = 0
    depth = 0

    def peek(kind: str, text: str | None = None) -> bool:
        return pos < len(toks) and toks[pos].kind == kind and text in (None, toks[pos].text)

    def expr() -> tuple:
        nonlocal pos
        node = term()
        while peek("op", "+") or peek("op", "-"):
            op = toks[pos].text
            pos += 1
            node = ("bin", op, node, term())
        return node

    def term() -> tuple:
        nonlocal pos
        node = unary()
        while peek("op", "*") or peek("op", "/"):
            op = toks[pos].text
            pos += 1
            node = ("bin", op, node, unary())
        return node

    def unary() -> tuple:
        nonlocal pos
        if peek("op", "-") or peek("op", "+"):
            negate = toks[pos].text == "-"
            pos += 1
            operand = unary()
            return ("neg", operand) if negate else operand
        node = postfix()
        if peek("op", "^"):
            pos += 1
            node = ("bin", "^", node, unary())
        return node

    def postfix() -> tuple:
        nonlocal pos, depth
        if peek("num"):
            t = toks[pos]
            pos += 1
            node: tuple = ("num", t.value, t.decimals)
        elif peek("lp"):
            depth += 1
            if depth > MAX_PAREN_DEPTH:
                raise _Unchecked("too deeply nested")
            pos += 1
            node = expr()
            if not peek("rp"):
                raise _Syntax
            pos += 1
            depth -= 1
        else:
            raise _Syntax
        if peek("pct"):
            pos += 1
            node = ("pct", node)
        return node

    node = expr()
    if pos != len(toks):
        raise _Syntax
    return node


def _is_compound(node: tuple) -> bool:
    if node[0] == "bin":
        return True
    return node[0] != "num" and _is_compound(node[1])


def _evaluate(node: tuple) -> tuple[Fraction, bool]:
    """(value, is a bare percentage). Raises _Unchecked, ZeroDivisionError."""
    kind = node[0]
    if kind == "num":
        if node[1] is None:
            raise _Unchecked(f"number with more than {MAX_DIGITS} digits")
        return node[1], False
    if kind == "neg":
        value, pct = _evaluate(node[1])
        return -value, pct
    if kind == "pct":
        return _evaluate(node[1])[0] / 100, True
    op, (a, a_pct), (b, b_pct) = node[1], _evaluate(node[2]), _evaluate(node[3])
    if op in "+-":
        if a_pct != b_pct:  # "50 + 20%": 50.2 or 60? don't guess
            raise _Unchecked("adding a percentage to a number is ambiguous")
        result, pct = (a + b if op == "+" else a - b), a_pct
    elif op == "*":
        result, pct = a * b, False
    elif op == "/":
        result, pct = a / b, False
    else:
        result, pct = _power(a, b), False
    if max(result.numerator.bit_length(), result.denominator.bit_length()) > MAX_BITS:
        raise _Unchecked("number too large")
    return result, pct


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise _Unchecked("non-integer exponent")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(exponent) > MAX_EXPONENT or size * abs(exponent) > MAX_BITS:
        raise _Unchecked("exponent too large")
    return base ** int(exponent)


def _resolution(node: tuple) -> Fraction | None:
    """Half of this is how far a written, rounded number may be from the truth ("3.33")."""
    if node[0] == "neg":
        return _resolution(node[1])
    if node[0] == "pct" and node[1][0] == "num":
        return Fraction(1, 100 * 10 ** node[1][2])
    if node[0] == "num" and node[2] > 0:
        return Fraction(1, 10 ** node[2])
    return None


def _matches(expected: Fraction, written: Fraction, resolution: Fraction | None) -> bool:
    diff = abs(expected - written)
    if expected.denominator == 1 and written.denominator == 1:
        return diff == 0  # exact arithmetic: 999 * 1001 = 1000000 is a slip, not float noise
    if diff <= REL_TOL * max(abs(expected), abs(written)):
        return True
    return resolution is not None and diff <= resolution / 2


def _lead(toks: list[_Tok]) -> tuple[tuple, int] | None:
    """The number a compound right side starts with ("36" in "= 36 - 20"), for running chains."""
    i = 1 if toks[0].kind == "op" and toks[0].text == "-" else 0
    if i >= len(toks) or toks[i].kind != "num":
        return None
    node: tuple = ("num", toks[i].value, toks[i].decimals)
    i += 1
    if i < len(toks) and toks[i].kind == "pct":
        node, i = ("pct", node), i + 1
    if i >= len(toks) or toks[i].kind != "op":
        return None
    return (("neg", node) if toks[0].kind == "op" else node), toks[i - 1].end


# ---------------------------------------------------------------- finding calculations


def _strip_unmatched(seg: list[_Tok]) -> list[_Tok]:
    """Drop parentheses opened before or closed after the expression: "(so 3 + 4 = 7)"."""
    excess = sum(t.kind == "lp" for t in seg) - sum(t.kind == "rp" for t in seg)
    lo, hi = 0, len(seg)
    while lo < hi and excess > 0 and seg[lo].kind == "lp":
        lo, excess = lo + 1, excess - 1
    while lo < hi and excess < 0 and seg[hi - 1].kind == "rp":
        hi, excess = hi - 1, excess + 1
    return seg[lo:hi]


def _segments(lexemes: list[_Tok]):
    """Yield the `=`-separated segments of each run of arithmetic between breaks."""
    run: list[list[_Tok]] = [[]]
    before: _Tok | None = None
    for t in [*lexemes, _Tok("brk", "", 0, 0, True)]:
        if t.kind == "brk":
            if len(run) > 1:
                first, last = run[0], run[-1]
                touching = before is not None and first and not first[0].space_before
                if touching and (before.text[-1:] or " ") not in _BENIGN_BEFORE:
                    run[0] = []  # "f(3) = ...", "x-2 = 5", "√16 + 1 = 5": not all of it is here
                if not t.space_before and (len(t.text) == 1 and t.text.isalpha()):
                    run[-1] = last[:0]  # "= 2x": an equation, not a result
                yield [_strip_unmatched(seg) for seg in run]
            run, before = [[]], t
        elif t.kind == "eq":
            run.append([])
        else:
            run[-1].append(t)


def _first_op_is_binary(seg: list[_Tok]) -> bool:
    # "x - 2 = 5" leaves "- 2": a fragment of a longer expression, not a negative number
    if seg[0].kind != "op":
        return False
    return seg[0].text != "-" or (len(seg) > 1 and seg[1].space_before)


def _check_pair(text: str, left: list[_Tok], right: list[_Tok]) -> Calculation | None:
    span = _display(text[left[0].start : right[-1].end])
    try:
        lnode, rnode = _parse(left), _parse(right)
    except _Syntax:
        return None
    except _Unchecked as e:
        return Calculation(span, None, None, None, str(e))
    l_compound, r_compound = _is_compound(lnode), _is_compound(rnode)
    if not (l_compound or r_compound):
        return None  # "36 = 36" is not a calculation
    # the side that is a plain number is the claim; with two expressions the right one is
    exp_node, wr_node = (rnode, lnode) if not l_compound else (lnode, rnode)
    try:
        expected, _ = _evaluate(exp_node)
        written, _ = _evaluate(wr_node)
    except _Unchecked as e:
        return Calculation(span, None, None, None, str(e))
    except ZeroDivisionError:
        return Calculation(span, None, None, False, "division by zero")
    ok = _matches(expected, written, _resolution(wr_node))
    lead = _lead(right) if l_compound and r_compound and not ok else None
    if lead is not None:  # "4 * 9 = 36 - 20 = 16" is checked as 4 * 9 = 36, then 36 - 20 = 16
        try:
            lead_value, _ = _evaluate(lead[0])
        except _Unchecked as e:
            return Calculation(span, None, None, None, str(e))
        span, written = _display(text[left[0].start : lead[1]]), lead_value
        ok = _matches(expected, written, _resolution(lead[0]))
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
    text = _normalise_latex(text[:MAX_STEP_CHARS])
    calcs: list[Calculation] = []
    for segments in _segments(_lex(_raw_tokens(text))):
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
