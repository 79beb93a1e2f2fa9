"""Problem sets: the committed tiers, and a strict reader for users' own JSONL files.

An evaluation is only as good as its problem file, so a bad line refuses the whole file by
default (`load_problems`): a typo must never silently shrink an evaluation from 120 problems to
119. A caller that prefers the good lines can ask for them (`skip_bad=True`, or `scan_problems`
for the reasons too).

The format is JSONL, one object per line:

    {"id": "tier1-001", "problem": "Sara has 7 pencils. ...", "answer": "12", "tier": "tier1_one_step"}

"problem" and "answer" are required (the answer a non-empty string or a number); "id" and "tier"
are optional (by default `<file stem>-<line>` and the file stem); other keys (the committed
tiers' "check", "template") are ignored. Blank lines are allowed; comments are not (strict JSON).
The older files (a JSON list of {"question", "answer"} objects, assets/problems/arithmetic.json)
are read too; "question" is accepted as another name for "problem" in both formats.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PROBLEMS_DIR = Path(__file__).resolve().parents[2] / "assets" / "problems"
# Tier name -> file. The four generated tiers come from scripts/generate_problems.py (regenerate,
# never edit by hand); competition.jsonl is written by hand, its answers checked by brute force
# in tests/test_problem_sets.py.
TIERS: dict[str, Path] = {
    name: PROBLEMS_DIR / f"{name}.jsonl"
    for name in (
        "tier1_one_step",
        "tier2_two_steps",
        "tier3_multi_step",
        "tier4_large_numbers",
        "competition",
    )
}
_TEXT_KEYS = ("problem", "question")  # "question": the older files' name
_JSON_TYPES = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
    dict: "an object",
}


class ProblemFileError(ValueError):
    """A problem file that cannot be used; the message names the file, and the line if one."""


@dataclass(frozen=True)
class Problem:
    """One problem: `answer` is the gold answer as text, compared with `answers_equal`."""

    id: str
    problem: str
    answer: str
    tier: str


@dataclass(frozen=True)
class BadLine:
    """A line (or, in a JSON list file, an item) that was refused, and why."""

    line: int  # 1-based
    reason: str


@dataclass(frozen=True)
class ProblemScan:
    """What a file holds: its good problems in file order, and the bad lines (in order)."""

    path: Path
    problems: list[Problem]
    bad: list[BadLine]
    unit: str = "line"  # "item" for a JSON list file, whose entries have no line of their own

    def describe(self, bad: BadLine) -> str:
        return f"{self.path}: {self.unit} {bad.line}: {bad.reason}"


def resolve_problems(name_or_path: str | Path) -> Path:
    """The file for a tier name (a TIERS key) or a path; ProblemFileError when there is none."""
    if str(name_or_path) in TIERS:
        return TIERS[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise ProblemFileError(
            f"{path}: no such problem file; give a path or a tier name ({', '.join(TIERS)})"
        )
    return path


def load_problems(path: str | Path, *, skip_bad: bool = False) -> list[Problem]:
    """Every problem in a JSONL (or older JSON list) file, in file order.

    By default the first bad line raises ProblemFileError naming the file, the 1-based line and
    what is wrong (not JSON, not an object, "problem" or "answer" missing or empty, an answer
    that is neither text nor a number, a repeated id). With `skip_bad=True` bad lines are logged
    and left out instead. A file that cannot be read, or holds no good problem, raises either way.
    """
    scan = scan_problems(path)
    if scan.bad and not skip_bad:
        others = len(scan.bad) - 1
        more = f"{others} more bad {scan.unit}{'s' * (others > 1)}; " if others else ""
        raise ProblemFileError(f"{scan.describe(scan.bad[0])} ({more}the whole file is refused)")
    for bad in scan.bad:
        logger.warning("skipped %s", scan.describe(bad))
    if not scan.problems:
        raise ProblemFileError(f"{scan.path}: no problems in the file")
    return scan.problems


def scan_problems(path: str | Path) -> ProblemScan:
    """The good problems and the bad lines of a file; raises ProblemFileError only when the file
    cannot be read at all (missing, not UTF-8, or a JSON list file that is not valid JSON).

    A file whose first line opens a JSON list is read as one (the older format) when the whole
    file parses; otherwise, if that first line is JSON by itself, as JSONL.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProblemFileError(f"{path}: cannot read the file ({err})") from err
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if lines and lines[0][1].lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            if not _is_json(lines[0][1]):  # a JSON list file, not JSONL that opens with an array
                raise ProblemFileError(
                    f"{path}: line {err.lineno}: not valid JSON ({err.msg} at column {err.colno})"
                ) from None
        else:
            return _collect(path, enumerate(items, start=1), unit="item")
    return _collect(path, lines, unit="line", decode=True)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


class _Bad(Exception):
    """Internal: why one record is refused."""


def _collect(
    path: Path, records: Iterable[tuple[int, object]], unit: str, decode: bool = False
) -> ProblemScan:
    """Check each (number, record) in turn; `decode`: the records are JSON text, one per line."""
    problems: list[Problem] = []
    bad: list[BadLine] = []
    first_line: dict[str, int] = {}  # id -> the line that first used it
    for number, record in records:
        try:
            if decode:
                record = _decoded(record)
            problem = _problem(record, default_id=f"{path.stem}-{number}", default_tier=path.stem)
            if problem.id in first_line:
                raise _Bad(
                    f"duplicate id {problem.id!r} (first on {unit} {first_line[problem.id]})"
                )
        except _Bad as why:
            bad.append(BadLine(number, str(why)))
            continue
        first_line[problem.id] = number
        problems.append(problem)
    return ProblemScan(path, problems, bad, unit)


def _decoded(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise _Bad(f"not valid JSON ({err.msg} at column {err.colno})") from None


def _problem(record: object, default_id: str, default_tier: str) -> Problem:
    if not isinstance(record, dict):
        raise _Bad(f"not a JSON object but {_JSON_TYPES.get(type(record), 'something else')}")
    names = [key for key in _TEXT_KEYS if key in record]
    if len(names) > 1:
        raise _Bad('both "problem" and "question"; give one')
    text = record[names[0]] if names else None
    if not isinstance(text, str) or not text.strip():
        raise _Bad('missing or empty "problem"')
    return Problem(
        id=_identifier(record.get("id"), default_id),
        problem=text.strip(),
        answer=_answer(record.get("answer")),
        tier=_tier(record.get("tier"), default_tier),
    )


def _answer(value: object) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise _Bad('missing or empty "answer"')
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Bad(f'"answer" must be text or a number, not {_JSON_TYPES[type(value)]}')
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad(f'"answer" must be a finite number, not {value}')
    return value.strip() if isinstance(value, str) else str(value)


def _identifier(value: object, default: str) -> str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise _Bad('"id" must be non-empty text or a whole number')
    return str(value).strip()


def _tier(value: object, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip():
        raise _Bad('"tier" must be non-empty text')
    return value.strip()
