"""The app's words: the introduction, the API tab, and the labels of its outputs."""

from __future__ import annotations

import json

INTRO = """# ThinkTree: see test-time compute
A small language model solves a math question many times over, and a **process reward model
(PRM)** judges every step. Pick a strategy and a budget **N**, press **Run**, and watch the search
tree grow: colour is the PRM's score, pruned steps fade, the chosen solution is the blue path.
After the search, majority voting at the same N runs for comparison, and, for a policy with a
bigger model in the catalog (Qwen2.5-Coder 0.5B → 1.5B), the bigger model answers alone: greedy,
and by majority voting at the search's compute, with each side's FLOPs and a one-line verdict.
"""


def api_markdown(settings: dict[str, object], helps: dict[str, str]) -> str:
    """The API tab: how to call `/run` from Python and as an MCP tool, and every setting with
    the value it takes when left out (the explorer's preset)."""
    rows = "\n".join(
        f"| `{name}` | `{json.dumps(value)}` | {helps[name]} |"
        for name, value in settings.items()
        if name != "prompt"
    )
    return f"""### Scripting API
A prompt and any settings in, the run JSON out (the export's format, plus the majority vote at
the same N under `comparison` and the bigger model's side under `comparison.bigger`, as the
explorer shows them):
```python
from gradio_client import Client
client = Client("http://127.0.0.1:7860/")
run = client.predict("A box holds 6 eggs. How many eggs are in 4 boxes?",
                     strategy="beam_search", n=4, beam_width=2, api_name="/run")
print(run["answer"], run["comparison"]["answer"], run["compute"])
```
A setting left out takes the value the explorer starts with, so a call with only the prompt runs
the search the explorer runs for it untouched. A bad setting (say N=6 with M=4) comes back as an
error message.

`/run` streams: `client.submit(...)` and `job.outputs()` give the run JSON after every iteration
of the search, the whole run last. `job.cancel()`, or a client that goes away, ends the run
within a step, as Stop does here.

**As an MCP tool:** the same endpoint is the tool `run_search` of the app's MCP server at
`http://127.0.0.1:7860/gradio_api/mcp/` (its schema: `/gradio_api/mcp/schema`), so an assistant
can run searches and read their trees.

| setting | when left out | meaning |
|---|---|---|
{rows}
"""


def verifiers_markdown() -> str:
    """The verifiers in plain words, for the "How it works" tab; the value head's lines say what
    the shipped heads learned from (assets/verifiers/)."""
    from backend.verifiers.value_head import HEADS_DIR

    learned = []
    for path in sorted(HEADS_DIR.glob("*.json")):
        seen = json.loads(path.read_text()).get("trained_on", {})
        if seen:
            learned.append(
                f"{path.stem}: {seen.get('solutions')} solutions to "
                f"{len(seen.get('problems', []))} practice problems"
            )
    heads = "; ".join(learned) or "none is trained yet"
    return f"""### The verifiers (the step judges)
- **Arithmetic checker:** re-computes every calculation in a step. It catches a wrong sum, not
  a right sum of the wrong numbers.
- **Value head (learned):** a small network that learned, from the policy's own solutions to
  practice problems whose answers are known, which of the model's own hidden states come before a
  right answer (every step of a solution labelled by whether the solution ended right). At search
  time it reads the state the model already computed after each step, so judging costs nothing
  extra; it knows the kinds of problems it was trained on ({heads}).
- **Checker + value head:** a step with wrong arithmetic is vetoed; the head judges the rest.
- **1.5B judge:** the bigger model is asked "is this step correct?", Yes or No.
"""
