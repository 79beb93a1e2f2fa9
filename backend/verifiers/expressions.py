"""The arithmetic checker's reader: LaTeX to plain text, tokens, a parser and an exact evaluator.

Text is untrusted: a linear-time tokenizer and a small recursive-descent evaluator over exact
Fractions (never `eval`); numbers, exponents, expression length and nesting are capped, and what
exceeds a cap raises `Unchecked` (the checker reports it as unchecked, not as wrong).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

MAX_DIGITS = 30  # a number with more digits is not checked
MAX_EXPRESSION_TOKENS = 64  # a longer side of an `=` is not checked
MAX_PAREN_DEPTH = 16
MAX_EXPONENT = 64  # |n| in a ** n or a ^ n
MAX_BITS = 1000  # numerator/denominator size of any intermediate value (~10^301, fits a float)
REL_TOL = Fraction(1, 10**6)


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


def normalise_latex(text: str) -> str:
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
BENIGN_BEFORE = set(":;,.([{\"'“‘")  # text that may touch the start of a calculation


@dataclass(slots=True)
class Tok:
    kind: str  # raw: num op lp rp pct eq word brk; after lex: num op lp rp pct eq brk
    text: str
    start: int
    end: int
    space_before: bool
    value: Fraction | None = None  # num: None when it has more than MAX_DIGITS digits
    decimals: int = 0  # num: digits after the decimal point


def raw_tokens(text: str) -> list[Tok]:
    toks: list[Tok] = []
    for m in _RAW.finditer(text):
        kind = m.lastgroup
        if kind == "end":
            break
        start = m.start(kind)
        tok = Tok(kind, m.group(kind), start, m.end(), start == 0 or start > m.start())
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


def _ends_operand(raw: list[Tok], i: int) -> bool:
    if i < 0:
        return False
    t = raw[i]
    if t.kind in ("num", "rp", "pct"):
        return True
    return t.kind == "word" and len(t.text) > 1 and i > 0 and raw[i - 1].kind == "num"  # a unit


def _starts_operand(raw: list[Tok], i: int) -> bool:
    if i < len(raw) and raw[i].kind == "op" and raw[i].text == "-":
        i += 1
    return i < len(raw) and raw[i].kind in ("num", "lp")


def _word_op(raw: list[Tok], i: int) -> str | None:
    """The operator a word stands for here ("3 x 12", "20% of 50"), or None."""
    w = raw[i].text.lower()
    if w in _WORD_OPS and _ends_operand(raw, i - 1) and _starts_operand(raw, i + 1):
        return _WORD_OPS[w]
    prev = raw[i - 1] if i > 0 else None
    after_pct = prev is not None and (prev.kind == "pct" or prev.text.lower() == "percent")
    if w == "of" and after_pct and _starts_operand(raw, i + 1):
        return "*"
    return None


def lex(raw: list[Tok]) -> list[Tok]:
    """Resolve words (operators, units, breaks), implicit products and juxtapositions."""
    out: list[Tok] = []
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
                t = Tok("op", op, t.start, t.end, t.space_before)
            elif t.text.lower() == "percent" and prev_num:
                t = Tok("pct", "%", t.start, t.end, t.space_before)
            elif len(t.text) > 1 and prev_num and _unit_follows(raw, i + 1):
                continue  # a unit: "12 dollars x 3"
            else:
                t = Tok("brk", t.text, t.start, t.end, t.space_before)
        if t.kind in ("num", "lp") and out and out[-1].kind in ("num", "rp", "pct"):
            if t.kind == "lp" and not t.space_before:
                out.append(Tok("op", "*", t.start, t.start, False))  # 2(3 + 4)
            else:
                out.append(Tok("brk", "", t.start, t.start, t.space_before))  # "Step 2 3 + 4"
        out.append(t)
    return out


def _is_rate(raw: list[Tok], i: int) -> bool:
    """A "/" that starts a per-unit suffix ("12/hour"), not a division."""
    if raw[i].kind != "op" or raw[i].text != "/" or i + 1 >= len(raw):
        return False
    word = raw[i + 1]
    if word.kind != "word" or len(word.text) < 2 or word.text.lower() in _WORD_OPS:
        return False
    return _ends_operand(raw, i - 1) and not _starts_operand(raw, i + 2)


def _unit_follows(raw: list[Tok], j: int) -> bool:
    if j >= len(raw):
        return False
    if raw[j].kind in ("op", "eq", "rp"):
        return True
    return (
        raw[j].kind == "word" and raw[j].text.lower() in _WORD_OPS and _starts_operand(raw, j + 1)
    )


# ---------------------------------------------------------------- parsing and evaluation


class Syntax(Exception):
    """Not an expression: the text around `=` is not arithmetic."""


class Unchecked(Exception):
    """An expression this checker refuses to evaluate (too big, ambiguous)."""


def parse(toks: list[Tok]) -> tuple:
    """Recursive descent: expr := term (+|- term)*; term := unary (*|/ unary)*;
    unary := (-|+) unary | power; power := postfix (^ unary)?; postfix := primary %?"""
    if len(toks) > MAX_EXPRESSION_TOKENS:
        raise Unchecked("expression too long")
    pos = 0
    depth = 0

    def peek(kind: str, text: str | None = None) -> bool:
        return pos < len(toks) and toks[pos].kind == kind and text in (None, toks[pos].text)

    def binary(operand: Callable[[], tuple], ops: str) -> tuple:
        """operand (op operand)*, left to right, for the operators in `ops` (one level)."""
        nonlocal pos
        node = operand()
        while any(peek("op", op) for op in ops):
            op = toks[pos].text
            pos += 1
            node = ("bin", op, node, operand())
        return node

    def expr() -> tuple:
        return binary(term, "+-")

    def term() -> tuple:
        return binary(unary, "*/")

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
                raise Unchecked("too deeply nested")
            pos += 1
            node = expr()
            if not peek("rp"):
                raise Syntax
            pos += 1
            depth -= 1
        else:
            raise Syntax
        if peek("pct"):
            pos += 1
            node = ("pct", node)
        return node

    node = expr()
    if pos != len(toks):
        raise Syntax
    return node


def is_compound(node: tuple) -> bool:
    if node[0] == "bin":
        return True
    return node[0] != "num" and is_compound(node[1])


def evaluate(node: tuple) -> tuple[Fraction, bool]:
    """(value, is a bare percentage). Raises Unchecked, ZeroDivisionError."""
    kind = node[0]
    if kind == "num":
        if node[1] is None:
            raise Unchecked(f"number with more than {MAX_DIGITS} digits")
        return node[1], False
    if kind == "neg":
        value, pct = evaluate(node[1])
        return -value, pct
    if kind == "pct":
        return evaluate(node[1])[0] / 100, True
    op, (a, a_pct), (b, b_pct) = node[1], evaluate(node[2]), evaluate(node[3])
    if op in "+-":
        if a_pct != b_pct:  # "50 + 20%": 50.2 or 60? don't guess
            raise Unchecked("adding a percentage to a number is ambiguous")
        result, pct = (a + b if op == "+" else a - b), a_pct
    elif op == "*":
        result, pct = a * b, False
    elif op == "/":
        result, pct = a / b, False
    else:
        result, pct = _power(a, b), False
    if max(result.numerator.bit_length(), result.denominator.bit_length()) > MAX_BITS:
        raise Unchecked("number too large")
    return result, pct


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1:
        raise Unchecked("non-integer exponent")
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(exponent) > MAX_EXPONENT or size * abs(exponent) > MAX_BITS:
        raise Unchecked("exponent too large")
    return base ** int(exponent)


def resolution(node: tuple) -> Fraction | None:
    """Half of this is how far a written, rounded number may be from the truth ("3.33")."""
    if node[0] == "neg":
        return resolution(node[1])
    if node[0] == "pct" and node[1][0] == "num":
        return Fraction(1, 100 * 10 ** node[1][2])
    if node[0] == "num" and node[2] > 0:
        return Fraction(1, 10 ** node[2])
    return None


def matches(expected: Fraction, written: Fraction, resolution: Fraction | None) -> bool:
    diff = abs(expected - written)
    if expected.denominator == 1 and written.denominator == 1:
        return diff == 0  # exact arithmetic: 999 * 1001 = 1000000 is a slip, not float noise
    if diff <= REL_TOL * max(abs(expected), abs(written)):
        return True
    return resolution is not None and diff <= resolution / 2


def lead(toks: list[Tok]) -> tuple[tuple, int] | None:
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
