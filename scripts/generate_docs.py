"""Write the tables the docs take from the code: the strategies (strategies/info.py) and the
settings with their defaults (the config's and the request's fields, the explorer's preset).

    .venv/bin/python scripts/generate_docs.py           # rewrite the tables in README.md and docs/
    .venv/bin/python scripts/generate_docs.py --check   # exit 1 if a table there is stale

Each table sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->` in its file; the
text around it is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.request import PRESET, REQUEST_HELP, RunRequest  # noqa: E402
from strategies.config import bounds, field_help  # noqa: E402
from strategies.info import PICK_WORDS, STRATEGY_INFO  # noqa: E402

TARGETS = {"strategies": ROOT / "README.md", "settings": ROOT / "docs" / "using-the-app.md"}


def strategies_table() -> str:
    rows = [
        "| strategy (`name`) | the answer | needs a PRM | uses | in plain words |",
        "|---|---|---|---|---|",
    ]
    for name, info in STRATEGY_INFO.items():
        first = info.lesson.split(". ")[0].rstrip(".") + "."
        uses = ", ".join(
            what
            for what, used in (("M", info.reads_beam_width), ("k", info.uses_lookahead))
            if used
        )
        rows.append(
            f"| {info.label} (`{name}`) | {PICK_WORDS[info.pick]} | "
            f"{'yes' if info.needs_scorer else 'no'} | {uses or '–'} | {first} |"
        )
    return "\n".join(rows)


def settings_table() -> str:
    request = RunRequest(prompt="?")
    rows = ["| setting | default | accepts | meaning |", "|---|---|---|---|"]
    for name, meaning in field_help().items():
        span = bounds(name)
        accepts = f"{span[0]:,} to {span[1]:,}" if span else ""
        if name == "top_p":
            accepts = f"above {span[0]:g}, to {span[1]:g}"
        if name == "seed":
            accepts = f"{span[0]} to 2⁶³ − 1"
        rows.append(f"| `{name}` | `{getattr(PRESET, name)!r}` | {accepts} | {meaning} |")
    for name, meaning in REQUEST_HELP.items():
        default = "" if name == "prompt" else f"`{getattr(request, name)!r}`"
        if name == "model":
            default = "`'qwen2.5-coder-0.5b'` where installed, else `'smollm2-135m'`"
        rows.append(f"| `{name}` | {default} | | {meaning} |")
    return "\n".join(rows)


TABLES = {"strategies": strategies_table, "settings": settings_table}


def render(text: str, name: str) -> str:
    pattern = re.compile(rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- generated: {name} --> block")
    return pattern.sub(lambda m: m.group(1) + TABLES[name]() + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for name, path in TARGETS.items():
        old = path.read_text()
        new = render(old, name)
        if new != old:
            stale.append(f"{path.relative_to(ROOT)} ({name})")
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print("stale: " + ", ".join(stale) + "; run scripts/generate_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
