"""Prompt templates: how a question becomes the policy's chat prompt (templates live in assets/).

A template is a system message plus optional worked examples (few-shot turns); the partial
solution is appended as raw assistant text after the chat template's generation prompt, so every
step the model writes continues the same assistant message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from backend.catalog import PROMPTS_DIR


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    few_shot: tuple[tuple[str, str], ...] = ()  # (question, worked solution) pairs

    def messages(self, question: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for q, a in self.few_shot:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": question}]

    def prompt_text(self, tokenizer, question: str) -> str:
        return tokenizer.apply_chat_template(
            self.messages(question), add_generation_prompt=True, tokenize=False
        )

    def prompt_ids(self, tokenizer, question: str) -> list[int]:
        return tokenizer.encode(self.prompt_text(tokenizer, question), add_special_tokens=False)

    @classmethod
    def load(cls, name: str) -> PromptTemplate:
        path = PROMPTS_DIR / f"{name}.json"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PROMPTS_DIR.glob("*.json")))
            raise ValueError(f"Unknown prompt template {name!r}; known: {known}.")
        data = json.loads(path.read_text())
        shots = tuple((s["question"], s["solution"]) for s in data.get("few_shot", []))
        return cls(name=name, system=data["system"], few_shot=shots)
