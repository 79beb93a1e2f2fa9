"""A GGUF file's tokenizer as the rest of the backend uses one: its chat template, encode, decode.

The chat template is the Jinja template the file carries (`tokenizer.chat_template`), rendered
the way transformers renders it (a sandbox, `trim_blocks` and `lstrip_blocks`, loop controls,
`raise_exception`), so a prompt is the same text whichever library reads the model. Text is
tokenized by llama.cpp itself, with the special tokens the template writes read as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property

from jinja2 import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backend.llama.native import Model
from backend.stopping import END_TOKENS


def _raise(message: str) -> None:
    raise TemplateError(message)


class GGUFTokenizer:
    """Implements what PromptTemplate, the judge and the stop checks ask of a tokenizer."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.chat_template = model.meta("tokenizer.chat_template")
        if not self.chat_template:
            raise ValueError(f"the GGUF file {model.path} has no chat template")
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(self.chat_template)
        self.bos_token_id = _int(model.meta("tokenizer.ggml.bos_token_id"))
        self.eos_token_id = _int(model.meta("tokenizer.ggml.eos_token_id"))

    def __len__(self) -> int:
        return self.model.n_vocab

    def _text(self, token: int | None) -> str:
        return self.model.special_text(token) if token is not None else ""

    def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
    ) -> str | list[int]:
        text = self._template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self._text(self.bos_token_id),
            eos_token=self._text(self.eos_token_id),
        )
        return self.encode(text) if tokenize else text

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text` (the chat markers it holds read as special tokens); never a BOS:
        the chat template writes whatever the model wants in front."""
        return self.model.tokenize(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens (chat markers, EOS) left out unless asked for."""
        parts = []
        for t in ids:
            piece = self.model.piece(t)  # empty for a special token
            if not piece and not skip_special_tokens:
                piece = self.model.special_text(t).encode()
            parts.append(piece)
        return b"".join(parts).decode("utf-8", "replace")

    def has_newline(self, token: int) -> bool:
        return b"\n" in self.model.piece(token)

    @cached_property
    def end_ids(self) -> frozenset[int]:
        """Tokens that end a solution: the file's end-of-generation tokens and the chat formats'
        end markers (backend/stopping.py)."""
        ends = {t for t in range(self.model.n_vocab) if self.model.is_eog(t)}
        for text in END_TOKENS:
            ids = self.model.tokenize(text)
            if len(ids) == 1 and self.model.special_text(ids[0]) == text:
                ends.add(ids[0])
        if self.eos_token_id is not None:
            ends.add(self.eos_token_id)
        return frozenset(ends)


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None
