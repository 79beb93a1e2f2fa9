"""Text that goes into figures: escaped, wrapped and cut so model output can't break the page.

Plotly renders a subset of HTML in hover labels, tick labels and text (`<br>`, `<b>`, `<span>`...),
and model output is arbitrary (`<`, `&`, even `<script>`), so every string that came from a model or
a user passes through `html.escape` here before it reaches a figure. We cut and wrap the *raw* text
first and escape afterwards, so an entity like `&lt;` is never split and line widths count the
characters a reader sees.
"""

from __future__ import annotations

import html
import textwrap

from strategies.tree import Node

WRAP = 60  # characters per hover line
MAX_CHARS = 400  # longest step text shown in a hover
ELLIPSIS = "…"


def cut(text: str, limit: int) -> str:
    """`text` unchanged if it fits in `limit` characters, else its first ones and an ellipsis."""
    text = text.strip()
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def short(text: str | None, limit: int = 16) -> str:
    """One escaped line for labels (answers, tick labels): newlines folded, cut to `limit`."""
    return html.escape(cut(" ".join((text or "").split()), limit))


def wrap_html(text: str, width: int = WRAP, limit: int = MAX_CHARS) -> str:
    """Cut, wrap at `width` and escape `text`; lines joined with `<br>`, blank lines dropped."""
    lines: list[str] = []
    for para in cut(text, limit).splitlines():
        # break_on_hyphens off: LaTeX like `3-2=1` reads better unbroken.
        lines.extend(textwrap.wrap(para, width, break_on_hyphens=False) or [])
    return "<br>".join(html.escape(line) for line in lines)


def _fmt(score: float | None) -> str:
    return "–" if score is None else f"{score:.3f}"


def node_hover(node: Node) -> str:
    """Hover label of a step: numbers first (they are what one compares), then the step text."""
    head = [
        f"<b>step {node.depth}</b> · node {node.id} · {node.status}",
        f"step score {_fmt(node.score)} · path score {_fmt(node.agg_score)}",
        f"subtree {node.subtree} · {node.tokens} tokens · iteration {node.iteration}",
    ]
    if node.finish_reason:
        head.append(f"ended by: {html.escape(node.finish_reason)}")
    if node.answer is not None:
        head.append(f"answer: <b>{short(node.answer, 40)}</b>")
    body = wrap_html(node.text) or "<i>(empty step)</i>"
    return "<br>".join(head) + "<br>―――<br>" + body


def root_hover(question: str) -> str:
    """Hover label of the root, which stands for the question."""
    return "<b>Q</b> (question)<br>―――<br>" + (wrap_html(question) or "<i>(no question)</i>")
