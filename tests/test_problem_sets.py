"""The problem tiers are reproducible and right, the competition answers survive brute force, and
the loader refuses bad files with the line that is wrong.

Answers are checked independently of the generator: each "check" is evaluated exactly by the
test suite's own Fraction evaluator (tests/test_problems.py, not backend/verifiers/), and every
number it uses must be written in the problem (or named by a word: "dozen" is 12, "%" is 100).
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
import math
import re
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from app.lab.problem_sets import (
    TIERS,
    BadLine,
    Problem,
    ProblemFileError,
    load_problems,
    resolve_problems,
    scan_problems,
)
from tests.test_problems import evaluate

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "generate_problems", ROOT / "scripts" / "generate_problems.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


GEN = _generator()
# operations (binary operators in the check) each tier allows
OPERATIONS = {
    "tier1_one_step": (1, 1),
    "tier2_two_steps": (2, 2),
    "tier3_multi_step": (3, 5),
    "tier4_large_numbers": (2, 3),
}
# numbers a check may use without the problem writing them as digits, and the words that name them
IMPLIED = {
    2: r"\b(?:half|twice|two)\b",
    3: r"\b(?:thirds?|three)\b",
    4: r"\b(?:quarters?|four)\b",
    5: r"\bfifths?\b",
    7: r"\bweeks?\b",
    12: r"\b(?:dozen|year)\b",
    60: r"\b(?:hours?|minutes?)\b",
    100: r"%|\bcentimetres\b",
    1000: r"\b(?:kg|grams)\b",
}
_NUMBER_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)|\d+")


def records(tier: str) -> list[dict]:
    return [json.loads(line) for line in TIERS[tier].read_text(encoding="utf-8").splitlines()]


def check_numbers(check: str) -> list[int]:
    return [n.value for n in ast.walk(ast.parse(check, mode="eval")) if isinstance(n, ast.Constant)]


def operations(check: str) -> int:
    return sum(isinstance(n, ast.BinOp) for n in ast.walk(ast.parse(check, mode="eval")))


# ---- the generator ----------------------------------------------------------------------------
def test_the_generated_tiers_are_the_committed_files_byte_for_byte():
    assert set(GEN.GENERATED) == set(OPERATIONS) == set(TIERS) - {"competition"}
    for tier in GEN.GENERATED:
        assert GEN.render(GEN.generate(tier)).encode("utf-8") == TIERS[tier].read_bytes(), tier
    assert GEN.main(["--check"]) == 0


def test_check_mode_fails_on_a_file_that_differs(tmp_path, monkeypatch, capsys):
    tier = "tier2_two_steps"
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(TIERS[tier].read_bytes().replace(b'"answer": "', b'"answer": "1', 1))
    monkeypatch.setitem(TIERS, tier, edited)
    assert GEN.main(["--check"]) == 1
    assert "edited.jsonl differs" in capsys.readouterr().err
    monkeypatch.setitem(TIERS, tier, tmp_path / "missing.jsonl")
    assert GEN.main(["--check"]) == 1


def test_numbers_of_four_digits_or_more_get_thousands_separators():
    assert GEN.with_thousands("It had 12500 people and $1000, not 999.") == (
        "It had 12,500 people and $1,000, not 999."
    )
    assert GEN.with_thousands("12,500 stays") == "12,500 stays"


# ---- the tiers --------------------------------------------------------------------------------
@pytest.mark.parametrize("tier", OPERATIONS)
def test_a_tier_has_enough_varied_unique_problems(tier):
    rows = records(tier)
    assert len(rows) >= 100
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["problem"] for r in rows}) == len(rows)
    assert len({r["template"] for r in rows}) >= 15, "templates, so the problems differ in kind"
    for r in rows:
        assert set(r) == {"id", "tier", "problem", "answer", "check", "template"}, r
        assert r["tier"] == tier and r["problem"].endswith("?"), r
    loaded = load_problems(TIERS[tier])
    assert [p.id for p in loaded] == [r["id"] for r in rows]
    assert all(p.tier == tier for p in loaded)


@pytest.mark.parametrize("tier", OPERATIONS)
def test_every_answer_is_its_check_over_numbers_the_problem_gives(tier):
    low, high = OPERATIONS[tier]
    for r in records(tier):
        value = evaluate(r["check"])
        assert value.denominator == 1 and value > 0, r
        assert r["answer"] == str(value.numerator), r
        assert low <= operations(r["check"]) <= high, r
        written = {int(n.replace(",", "")) for n in _NUMBER_RE.findall(r["problem"])}
        for number in check_numbers(r["check"]):
            named = number in IMPLIED and re.search(IMPLIED[number], r["problem"], re.IGNORECASE)
            assert number in written or named, (number, r["problem"])


def test_the_large_number_tier_is_large():
    for r in records("tier4_large_numbers"):
        numbers = check_numbers(r["check"])
        assert max(numbers) >= 1000 or sum(n >= 100 for n in numbers) >= 2, r
        assert int(r["answer"]) >= 1000, r


def test_no_problem_is_in_two_sets():
    seen: dict[str, str] = {}
    for tier in TIERS:
        for problem in load_problems(TIERS[tier]):
            assert problem.problem not in seen, (problem.problem, seen.get(problem.problem), tier)
            seen[problem.problem] = tier
    for old in ("arithmetic.json", "multistep.json"):
        for problem in load_problems(ROOT / "assets" / "problems" / old):
            assert problem.problem not in seen, problem.problem


# ---- the competition set: hand-derived answers, reproduced by brute force ---------------------
def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, math.isqrt(n) + 1))


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


def _trailing_zeros(n: int) -> int:
    digits = str(n)
    return len(digits) - len(digits.rstrip("0"))


def _dice_fraction_sum() -> int:
    chance = Fraction(
        sum(a * b % 3 == 0 for a in range(1, 7) for b in range(1, 7)), 36
    )  # lowest terms
    return chance.numerator + chance.denominator


def _reciprocal_cubes() -> int:
    x = (5 + math.sqrt(21)) / 2
    assert math.isclose(x + 1 / x, 5)
    value = x**3 + 1 / x**3
    assert abs(value - round(value)) < 1e-9
    return round(value)


BRUTE_FORCE = {
    "competition-01": lambda: sum(1 for n in range(1, 1000) if n % 7 == 0 and n % 11 != 0),
    "competition-02": lambda: 3**100 % 7,
    "competition-03": lambda: len(set(itertools.permutations("LEVEL"))),
    "competition-04": lambda: next(abs(x - (40 - x)) for x in range(41) if x * (40 - x) == 351),
    "competition-05": lambda: sum(
        1 for x in range(-5, 6) for y in range(-5, 6) if x * x + y * y < 25
    ),
    "competition-06": lambda: sum(d for d in range(1, 361) if 360 % d == 0),
    "competition-07": lambda: _trailing_zeros(math.factorial(125)),
    "competition-08": lambda: sum(
        1
        for chosen in itertools.product((False, True), repeat=10)
        if not any(chosen[i] and chosen[i + 1] for i in range(9))
    ),
    "competition-09": lambda: next(n for n in itertools.count(1) if not _is_prime(n * n + n + 41)),
    "competition-10": lambda: next(
        a * b
        for a in range(1, 24)
        for b in range(a, 24)
        if 2 * (a + b) == 46 and a * a + b * b == 17 * 17
    ),
    "competition-11": lambda: next(
        n for n in itertools.count(1) if n % 3 == 2 and n % 5 == 3 and n % 7 == 4
    ),
    "competition-12": lambda: sum(
        1 for n in range(1000, 10000) if sum(int(c) for c in str(n)) == 9
    ),
    "competition-13": _dice_fraction_sum,
    "competition-14": _reciprocal_cubes,
    "competition-15": lambda: sum(
        1
        for a in range(1, 16)
        for b in range(a, 16)
        for c in range(b, 16)
        if a + b + c == 15 and a + b > c
    ),
    "competition-16": lambda: sum(int(c) for c in str(2**20)),
    "competition-17": lambda: sum(1 for n in range(1, 101) if (n * n + 1) % 5 == 0),
    "competition-18": lambda: sum(
        1 for a in range(1, 9) for b in range(1, 9) for c in range(1, 9) if a + b + c == 8
    ),
    "competition-19": lambda: next(n for n in range(3, 1000) if 180 * (n - 2) == 156 * n),
    "competition-20": lambda: _fibonacci(100) % 9,
}


def test_competition_answers_are_reproduced_by_brute_force():
    problems = load_problems(TIERS["competition"])
    assert 12 <= len(problems) <= 20
    assert {p.id for p in problems} == set(BRUTE_FORCE), "every problem has its computation"
    for p in problems:
        assert p.tier == "competition" and p.answer.isdigit(), p
        assert BRUTE_FORCE[p.id]() == int(p.answer), p
    for line in TIERS["competition"].read_text(encoding="utf-8").splitlines():
        assert json.loads(line)["check"].strip(), "each says how its answer is checked"


# ---- the loader -------------------------------------------------------------------------------
GOOD = '{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}'
BAD_LINES = {
    "not json": ('{"problem": "What is 1 + 1?", "answer": ', "not valid JSON"),
    "an array": ('["What is 1 + 1?", "2"]', "not a JSON object but an array"),
    "a string": ('"What is 1 + 1?"', "not a JSON object but a string"),
    "no problem": ('{"answer": "2"}', 'missing or empty "problem"'),
    "empty problem": ('{"problem": "  ", "answer": "2"}', 'missing or empty "problem"'),
    "problem not text": ('{"problem": 7, "answer": "2"}', 'missing or empty "problem"'),
    "no answer": ('{"problem": "What is 1 + 1?"}', 'missing or empty "answer"'),
    "empty answer": ('{"problem": "What is 1 + 1?", "answer": " "}', 'missing or empty "answer"'),
    "answer a list": ('{"problem": "What is 1 + 1?", "answer": [2]}', "not an array"),
    "answer a bool": ('{"problem": "What is 1 + 1?", "answer": true}', "not true or false"),
    "answer null": ('{"problem": "What is 1 + 1?", "answer": null}', 'missing or empty "answer"'),
    "duplicate id": ('{"id": "a", "problem": "What is 1 + 1?", "answer": 2}', "duplicate id 'a'"),
    "both names": ('{"problem": "x?", "question": "y?", "answer": 2}', "both"),
    "bad id": ('{"id": true, "problem": "What is 1 + 1?", "answer": 2}', '"id" must be'),
}


def write(tmp_path: Path, lines: list[str], name: str = "mine.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", BAD_LINES)
def test_a_bad_line_refuses_the_file_naming_the_file_and_the_line(tmp_path, kind):
    bad, reason = BAD_LINES[kind]
    path = write(tmp_path, [GOOD, "", bad, '{"problem": "What is 4 - 1?", "answer": "3"}'])
    with pytest.raises(ProblemFileError) as caught:
        load_problems(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line 3: "), message
    assert reason in message, message
    scan = scan_problems(path)
    assert scan.bad == [BadLine(3, scan.bad[0].reason)] and len(scan.problems) == 2


def test_skip_bad_keeps_the_good_lines_and_says_which_were_left_out(tmp_path, caplog):
    lines = [GOOD, BAD_LINES["no answer"][0], "", '{"problem": "What is 9 / 3?", "answer": 3}']
    lines += [BAD_LINES["not json"][0], BAD_LINES["duplicate id"][0]]
    path = write(tmp_path, lines)
    problems = load_problems(path, skip_bad=True)
    assert problems == [
        Problem("a", "What is 2 + 3?", "5", "mine"),
        Problem("mine-4", "What is 9 / 3?", "3", "mine"),
    ]
    assert [bad.line for bad in scan_problems(path).bad] == [2, 5, 6]
    assert sum("skipped" in r.getMessage() and "line 5" in r.getMessage() for r in caplog.records)


def test_what_a_good_line_may_hold(tmp_path):
    path = write(
        tmp_path,
        [
            '{"problem": "  What is 2.5 * 2?  ", "answer": 5, "tier": "mine-hard", "notes": "x"}',
            '{"id": 7, "question": "What is half of 3?", "answer": 1.5}',
            '{"id": "x", "problem": "What is 1/2 of 1?", "answer": "\\\\frac{1}{2}"}',
        ],
    )
    assert load_problems(path) == [
        Problem("mine-1", "What is 2.5 * 2?", "5", "mine-hard"),
        Problem("7", "What is half of 3?", "1.5", "mine"),
        Problem("x", "What is 1/2 of 1?", "\\frac{1}{2}", "mine"),
    ]


def test_files_that_cannot_be_used_at_all(tmp_path):
    with pytest.raises(ProblemFileError, match="cannot read"):
        load_problems(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(
        '{"problem": "caf\xe9?", "answer": 1}'.encode("latin-1")
    )
    with pytest.raises(ProblemFileError, match="cannot read"):
        load_problems(tmp_path / "latin1.jsonl")
    with pytest.raises(ProblemFileError, match="no problems"):
        load_problems(write(tmp_path, ["", "  "], "blank.jsonl"))
    with pytest.raises(ProblemFileError, match="no problems"):
        load_problems(write(tmp_path, [BAD_LINES["no answer"][0]], "all_bad.jsonl"), skip_bad=True)
    broken_list = write(tmp_path, ["[", '  {"question": "What is 1 + 1?", "answer": "2"},', "]"])
    with pytest.raises(ProblemFileError, match=r": line 3: not valid JSON"):
        load_problems(broken_list)


def test_the_older_json_list_files_still_load():
    problems = load_problems(ROOT / "assets" / "problems" / "arithmetic.json")
    assert len(problems) == 36
    first = json.loads((ROOT / "assets" / "problems" / "arithmetic.json").read_text())[0]
    assert problems[0] == Problem("arithmetic-1", first["question"], first["answer"], "arithmetic")


def test_a_json_list_item_is_named_by_its_place(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"question": "What is 1 + 1?", "answer": "2"}, {"question": "?"}]))
    with pytest.raises(ProblemFileError, match=r"old.json: item 2: missing or empty \"answer\""):
        load_problems(path)


def test_tier_names_and_paths_resolve(tmp_path):
    assert resolve_problems("tier3_multi_step") == TIERS["tier3_multi_step"]
    own = write(tmp_path, [GOOD])
    assert resolve_problems(str(own)) == own == resolve_problems(own)
    with pytest.raises(ProblemFileError, match="tier1_one_step"):
        resolve_problems("tier9")
    assert all(path.is_file() for path in TIERS.values())
