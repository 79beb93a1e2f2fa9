"""Final answers: when one is written, pull it out of a solution, normalize it, group equal ones.

Majority voting and weighted Best-of-N both need "which samples gave the same answer", where
`1/2`, `0.5` and `\\frac{1}{2}` count as one answer. Equality goes through math-verify, with guards
of its own, because math-verify's timeouts use `signal.alarm`, which raises outside the main thread
(Gradio runs handlers in worker threads), so they are switched off. Instead, inputs that could make
sympy run for a long time (very long strings, towers of powers or factorials in any disguise, LaTeX
commands that start symbolic work, products of sums in many letters) are compared as normalized
strings only (`_too_costly`; tests/test_fuzz.py holds the nastiest inputs found so far), and a
comparison that still runs past its CPU-time cap is given up as unequal (strategies/verify_guard.py).
Nothing here raises on any string.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from strategies.protocols import STEP_DELIMITER
from strategies.verify_guard import verified

logger = logging.getLogger(__name__)

MAX_VERIFY_CHARS = 200  # longer answers are compared as strings: sympy cost grows fast with size
# Letters in one answer (uses, and distinct variables): simplify expands products of sums, whose size
# grows as a power of both ((a+1)^3 (b+1)^3 ... (f+1)^3 runs for minutes).
MAX_VERIFY_LETTERS = 6
MAX_VERIFY_VARIABLES = 3
# How far a bracket group with letters may be raised: (a+b+c)^{99} never ends.
MAX_GROUP_POWER = 2
# The LaTeX commands math-verify may see; any other (\Gamma, \sum, \int, \lim, ...) can start
# symbolic work without bound (`\Gamma(\Gamma(99))`, `\binom{999}{e}` never end), so such answers
# are compared as strings.
_CHEAP_COMMANDS = frozenset(
    {
        "frac",
        "dfrac",
        "tfrac",
        "cfrac",
        "sqrt",
        "pi",
        "cdot",
        "times",
        "div",
        "pm",
        "mp",
        "infty",
        "circ",
        "degree",
        "le",
        "leq",
        "ge",
        "geq",
        "lt",
        "gt",
        "ne",
        "neq",
        "approx",
        "in",
        "cup",
        "cap",
        "emptyset",
        "varnothing",
        "text",
        "textbf",
        "textit",
        "textrm",
        "mathrm",
        "mbox",
        "boxed",
        "displaystyle",
        "sin",
        "cos",
        "tan",
        "cot",
        "sec",
        "csc",
        "log",
        "ln",
        "exp",
    }
)
# Operators whose result can be far larger than their operand, besides `^`: at most one per answer,
# and never together with a power (`(99!)!`, `9!!!!`, `10^{99}!`, `(999!)^{99}`, `\exp(\exp(...))`).
_GROWTH_RE = re.compile(r"!|\\exp(?![A-Za-z])")
# Functions, at most one per answer: sympy's simplify rewrites nested or multiplied ones without
# bound (`\sin(\tan(a+b+c))` takes seconds, six nested tangents never end).
_FUNCTION_RE = re.compile(r"\\(?:sin|cos|tan|cot|sec|csc|log|ln|exp)(?![A-Za-z])")
_OPENERS = {")": "(", "]": "[", "}": "{"}

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_SPACES_RE = re.compile(r"\s*")
_BOX_TOKEN_RE = re.compile(r"[^\s${}]+")  # `\boxed 5`: the box takes one token
_PHRASE_RE = re.compile(r"(?:final\s+answer|\banswer)\s*(?:\bis\b\s*:?|:|=)\s*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\n")
# A number not glued to a word; "-" counts as a sign only when it cannot be a binary minus.
# `\frac{1}{2}` counts as one number, or the fallback would answer "2".
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])-)?(?<![\w.])"
    r"(?:\\[dt]?frac\s*\{\d+\}\s*\{\d+\}"
    r"|(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)"
)
_TOKEN_RE = re.compile(r"\\[A-Za-z]+|[^\s$]")  # one LaTeX argument without braces: `^2`, `^\pi`
_TRAILING_PUNCT = ".,;:"
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_RE = re.compile(r"-?\d+\.\d+")
_ASSIGNMENT_RE = re.compile(r"[A-Za-z]\s*=\s*([^=]+)")
_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_TEXT_GROUP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname)\s*\{[^{}]*\}")


def _strip_delimiters(answer: str) -> str:
    """Remove surrounding whitespace, `$`, `\\(...\\)`, `\\[...\\]` and trailing punctuation."""
    previous = None
    while previous != answer:
        previous = answer
        answer = answer.strip().rstrip(_TRAILING_PUNCT).strip("$").strip()
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if answer.startswith(left) and answer.endswith(right) and len(answer) >= 4:
                answer = answer[2:-2]
    return answer


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each `{` mapped to the index of its `}`, in one pass; `\\{` is not a brace."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 1
        elif char == "{":
            stack.append(i)
        elif char == "}" and stack:
            closing[stack.pop()] = i
        i += 1
    return closing


def _read_group(text: str, pos: int) -> tuple[str, int] | None:
    """The LaTeX argument at `pos` (a brace group or one token) and the index just past it.

    None when there is none or its brace never closes.
    """
    pos = _SPACES_RE.match(text, pos).end()
    if pos < len(text) and text[pos] == "{":
        end = _closing_braces(text).get(pos)
        return (text[pos + 1 : end], end + 1) if end is not None else None
    match = _TOKEN_RE.match(text, pos)
    return (match.group(), match.end()) if match else None


def _boxes(text: str) -> list[tuple[str, int]]:
    """Every complete, non-empty box (`\\boxed{...}`, `\\fbox{...}`, `\\boxed 5`) in order, as
    (content, index just past it); a box whose brace never closes is skipped."""
    found = []
    boxes = list(_BOX_RE.finditer(text))
    closing = _closing_braces(text) if boxes else {}
    for match in boxes:
        start = _SPACES_RE.match(text, match.end()).end()
        if start < len(text) and text[start] == "{":
            end = closing.get(start)
            if end is None:
                continue
            content, after = text[start + 1 : end], end + 1
        else:
            token = _BOX_TOKEN_RE.match(text, start)
            if token is None:
                continue
            content, after = token.group(), token.end()
        if _strip_delimiters(content):
            found.append((content, after))
    return found


def boxed_answer(text: str) -> str | None:
    """The content of the last complete, non-empty box, or None."""
    boxes = _boxes(text)
    return boxes[-1][0] if boxes else None


def answer_written(text: str) -> bool:
    """The rule for "the answer is written": the text holds a complete, non-empty boxed answer.

    A step that writes it ends the solution (the search marks it completed, the engine stops
    writing after it, the checker reads its number); an unclosed or empty box is not an answer.
    """
    return bool(_boxes(text))


def answer_end(text: str, delimiter: str = STEP_DELIMITER) -> int | None:
    """Where a solution that has written its answer ends: just past the first `delimiter` after
    the first box that `answer_written` counts; None while there is no such box or no delimiter.

    When a generator writes the rest of a solution in one go, this is where it should stop: what
    a small model writes after its answer (a second "explanation", a new question) is not part of
    the solution. A `\\boxed 5` at the very end may still be growing; it has no delimiter after
    it yet, so it does not end the text either.
    """
    boxes = _boxes(text)
    if not boxes:
        return None
    cut = text.find(delimiter, boxes[0][1])
    return None if cut < 0 else cut + len(delimiter)


def _phrase_answer(text: str) -> str | None:
    """The rest of the sentence after the last "final answer is" / "answer:" / "the answer is"."""
    for match in reversed(list(_PHRASE_RE.finditer(text))):
        end = _SENTENCE_END_RE.search(text, match.end())
        candidate = _strip_delimiters(text[match.end() : end.start() if end else len(text)])
        if candidate:
            return candidate
    return None


def _cut_in_a_box(text: str) -> bool:
    """Whether the text's last box opens a brace that never closes (a solution cut mid-answer)."""
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return False
    start = _SPACES_RE.match(text, boxes[-1].end()).end()
    return start < len(text) and text[start] == "{" and start not in _closing_braces(text)


def extract_answer(text: str) -> str | None:
    """The final answer of a solution text, or None when it has none.

    Tries, in order: the last `\\boxed{...}` (nested braces matched; `\\fbox` and `\\boxed 5` too;
    unclosed boxes are skipped, and a text with no complete box that ends inside an unclosed one
    has no answer: it was cut while writing it), the sentence after the last "final answer is" /
    "answer:" phrase, and the last number in the text (`1,000` becomes `1000`; `-3`, `2.5` and `3/4` are numbers).
    The result has surrounding `$`, `\\(...\\)`, whitespace and trailing punctuation removed.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        answer = boxed_answer(text)
        if answer is None and _cut_in_a_box(text):
            return None  # "... the answer is \boxed{2": the answer was being written when cut
        answer = answer or _phrase_answer(text)
        if answer is None:
            numbers = _NUMBER_RE.findall(text)
            answer = numbers[-1].replace(",", "") if numbers else None
        answer = _strip_delimiters(answer) if answer is not None else None
        return answer or None
    except Exception:  # never let one odd sample break a whole search
        logger.warning("could not extract an answer", exc_info=True)
        return None


def normalize(answer: str) -> str:
    """A canonical display form: `$`, spaces, `\\left`/`\\right`, thin spaces, `^\\circ` removed;
    `\\dfrac`/`\\tfrac` become `\\frac`; `\\frac12` becomes `\\frac{1}{2}`; `1,000` becomes `1000`;
    `3.50` becomes `3.5` and `3.0` becomes `3`; `x = 3` becomes `3` (only when the right side has
    no variable of its own, so `y = 2x + 1` stays). A whole-string `\\boxed{...}` is unwrapped.
    """
    if not isinstance(answer, str):
        return ""
    s = _strip_delimiters(answer)
    box = _BOX_RE.match(s)
    if box:
        group = _read_group(s, box.end())
        if group is not None and group[1] == len(s):
            s = _strip_delimiters(group[0])
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[!,;: ]", " ", s).replace("{,}", ",")
    s = re.sub(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ(?![A-Za-z]))", "", s)
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", s)
    # Drop spaces, except between two letters (`\pi r` must not become `\pir`).
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"(?<![A-Za-z]) | (?![A-Za-z])", "", s)
    assignment = _ASSIGNMENT_RE.fullmatch(s)
    if assignment and not re.search(r"[A-Za-z]", _COMMAND_RE.sub("", assignment.group(1))):
        s = assignment.group(1)
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if re.fullmatch(r"-?\.\d+", s):  # `.5` -> `0.5`
        s = s.replace(".", "0.", 1)
    if _DECIMAL_RE.fullmatch(s):
        s = s.rstrip("0").rstrip(".")
    return _strip_delimiters(s)


def _too_costly(s: str) -> bool:
    """Whether sympy might run for a long time on `s` (a heuristic, not a guarantee: each rule
    answers inputs that were measured to run for seconds or never end)."""
    if len(s) > MAX_VERIFY_CHARS or "**" in s:
        return True
    if any(command[1:] not in _CHEAP_COMMANDS for command in _COMMAND_RE.findall(s)):
        return True
    growth = _GROWTH_RE.findall(s)
    if (growth or "^" in s) and re.search(r"\d{5}", s):
        return True
    if len(growth) > 1 or (growth and "^" in s) or len(_FUNCTION_RE.findall(s)) > 1:
        return True
    if re.search(r"\d{4}\s*!|[)\]}]\s*!", s):  # 9999! has 35660 digits; (a)! is anyone's guess
        return True
    letters = re.findall(r"[A-Za-z]", _COMMAND_RE.sub(" ", _TEXT_GROUP_RE.sub(" ", s)))
    if len(letters) > MAX_VERIFY_LETTERS or len(set(letters)) > MAX_VERIFY_VARIABLES:
        return True
    for caret in re.finditer(r"\^", s):
        group = _read_group(s, caret.end())
        if group is None:
            return True
        exponent, end = group
        base_is_integer = caret.start() > 0 and s[caret.start() - 1].isdigit()
        digits = sum(char.isdigit() for char in exponent)
        if "^" in exponent or "!" in exponent or digits > (3 if base_is_integer else 2):
            return True
        if s[end:].lstrip().startswith("^"):  # `9^9^9`: a tower in disguise
            return True
        base = _base_group(s, caret.start())
        if base is not None and "^" in base:  # `(10^{99})^{99}`: a tower through brackets
            return True
        if base is not None and re.search(r"[A-Za-z]", base):  # `(a+b+c)^{99}` expands
            power = exponent.strip()
            if not power.isdigit() or int(power) > MAX_GROUP_POWER:
                return True
    return False


def _base_group(s: str, caret: int) -> str | None:
    """What the bracket group that the `^` at `caret` raises holds (`a+b` in `(a+b)^2`); None
    when the base is no bracket group. Brackets of any kind count alike (an interval `(1, 2]`)."""
    end = len(s[:caret].rstrip()) - 1
    if end < 0 or s[end] not in _OPENERS:
        return None
    depth = 0
    for i in range(end, -1, -1):
        if s[i] in _OPENERS:
            depth += 1
        elif s[i] in "([{":
            depth -= 1
            if depth == 0:
                return s[i + 1 : end]
    return s[:end]  # never opened: all of it


def _is_wordy(s: str) -> bool:
    """Whether `s` has a bare word: math-verify reads `hello` as the product h*e*l*l*o."""
    bare = _COMMAND_RE.sub(" ", _TEXT_GROUP_RE.sub(" ", s))
    return re.search(r"[A-Za-z]{3,}", bare) is not None


def answers_equal(a: str, b: str) -> bool:
    """Whether two answers are mathematically equal: `1/2`, `0.5`, `\\dfrac{1}{2}`, `$\\frac12$`
    and `50\\%` are; so are `3` and `3.0`, and `x = 3` and `3`: an answer written as
    `variable = value` is that value (math-verify compares an equation's right side with a bare
    expression, so `y = 2x + 1` equals `2x + 1` too).

    Equal normalized strings are always equal. Otherwise math-verify decides, in both directions
    (symmetric). Answers with bare words (`five apples`) are compared as case-folded normalized
    strings, since math-verify would read a word as a product of letters; costly inputs (see
    `_too_costly`) are compared as normalized strings. Never raises: on any error, or for non-string
    input, the answers are equal only if their normalized strings are.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    norm_a, norm_b = normalize(a), normalize(b)
    try:
        if norm_a == norm_b:
            return True
        if not norm_a or not norm_b:
            return False
        # words first: their letters would count as variables in `_too_costly`
        if _is_wordy(norm_a) or _is_wordy(norm_b):
            return norm_a.casefold() == norm_b.casefold()
        if _too_costly(norm_a) or _too_costly(norm_b):
            return False
        first, second = sorted((norm_a, norm_b))  # one cache entry per unordered pair
        return bool(verified(first, second))
    except Exception:
        logger.warning("math-verify failed on %r vs %r", norm_a, norm_b, exc_info=True)
        return False


def group_answers(answers: Sequence[str | None]) -> list[list[int]]:
    """Indices of equal answers, grouped: groups in order of first appearance, indices ascending.

    None answers are left out. Each answer joins the first existing group whose first member
    (its representative) it equals, or starts a new group; equality is not transitive in general
    (`0.333333` vs `1/3` vs `0.33`), so comparing with representatives keeps the result stable.
    """
    groups: list[list[int]] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        for group in groups:
            if answers_equal(answers[group[0]], answer):
                group.append(index)
                break
        else:
            groups.append([index])
    return groups
