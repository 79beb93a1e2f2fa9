"""The four hub process reward models as `StepScorer`s: each one's exact input and score read-out.

Formats, as the model cards write them (our steps end with the "\\n\\n" delimiter; every family
strips it, and surrounding whitespace, before formatting):
- Qwen2.5-Math-PRM: chat template; system "Please reason step by step, and put your final answer
  within \\boxed{}."; user = question; assistant = steps joined by `<extra_0>` plus a trailing
  `<extra_0>`. Score = softmax(score head)[class 1] at each `<extra_0>`.
- Skywork-o1-Open-PRM: no template: bos + question + "\\n", then every step line's tokens and the
  "\\n" token. Skywork's steps are single lines, so each non-empty line of our step becomes one
  Skywork step and blank lines are dropped (an empty step is a lone "\\n"); our step's score is
  sigmoid(v_head) at the "\\n" after its last line, i.e. Skywork's reward for everything so far.
- RLHFlow Llama3.1-8B-PRM: chat turns: user "question step1", assistant "+", user "step2",
  assistant "+", ... Score = P("+") from softmax over the "+" and "-" logits at the position that
  predicts each assistant "+".
- Math-Shepherd: plain text "question step1 ки\\nstep2 ки" with the tokenizer's BOS; score =
  P("+") over the "+"/"-" logits at each "ки".
Only the hidden states at those positions go through the head (never the full vocabulary at every
position). A step's score depends on its prefix alone, so scores are cached per (question, steps
so far): a beam's old steps are never scored twice, and a solution that is a prefix of another in
the same call rides along with it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from backend.verifiers.score_cache import Key, StepScoreCache
from strategies.protocols import Scores

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Encoded:
    """One solution as the PRM reads it."""

    ids: list[int]
    positions: list[int]  # per step: the token whose hidden state yields that step's score


def _single_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"the PRM tokenizer splits {text!r} into {len(ids)} tokens, expected 1")
    return ids[0]


def _dtype_of(module: Any, fallback: torch.dtype) -> torch.dtype:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return fallback


class HubPRM:
    """Batching, caching and the forward pass; a subclass gives its format and read-out."""

    family: ClassVar[str] = ""
    reserved: ClassVar[tuple[str, ...]] = ()  # marker strings removed from user text

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "",
        batch_size: int = 8,
        cache_size: int = 4096,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or self.family
        self.precision = ""  # set by the loader
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.pad_id = int(pad or 0)  # any id: padding is masked out
        self._cache = StepScoreCache(cache_size)
        self._lock = threading.Lock()

    # ---- the format (subclasses) ----------------------------------------------------------
    def clean(self, text: str) -> str:
        """Step or question text without surrounding whitespace or the format's markers."""
        for marker in self.reserved:
            text = text.replace(marker, "")
        return text.strip()

    def format_text(self, question: str, steps: Sequence[str]) -> str:
        """The PRM's input as text (for reading and tests)."""
        raise NotImplementedError

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        raise NotImplementedError

    def read(self, hidden: torch.Tensor) -> torch.Tensor:
        """(K, hidden) final hidden states at score positions -> (K,) scores in [0, 1]."""
        raise NotImplementedError

    def _positions_of(self, ids: list[int], token: int, steps: Sequence[str]) -> Encoded:
        positions = [i for i, t in enumerate(ids) if t == token]
        if len(positions) != len(steps):
            raise RuntimeError(
                f"{self.name}: found {len(positions)} score markers for {len(steps)} steps"
            )
        return Encoded(ids, positions)

    # ---- the protocol -------------------------------------------------------------------
    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        """Per-step scores for every solution; only prefixes not seen before are computed."""
        with self._lock, torch.inference_mode():
            known: dict[Key, float] = {}  # this call's scores
            todo: list[tuple[str, ...]] = []
            pending: set[Key] = set()  # computed with a longer solution of this call
            for sol in sorted({tuple(s) for s in solutions}, key=len, reverse=True):
                keys = [(question, sol[: j + 1]) for j in range(len(sol))]
                if all(k in pending or k in self._cache for k in keys):
                    known.update((k, self._cache.get(k)) for k in keys if k in self._cache)
                else:
                    todo.append(sol)
                    pending.update(keys)
            tokens = 0
            encoded = sorted(
                ((s, self.encode(question, s)) for s in todo), key=lambda item: len(item[1].ids)
            )
            for i in range(0, len(encoded), self.batch_size):
                chunk = encoded[i : i + self.batch_size]
                for (sol, enc), values in zip(chunk, self._forward([e for _, e in chunk])):
                    tokens += len(enc.ids)
                    for j, v in enumerate(values):
                        # a cached score wins over a recomputed one, so a step keeps its score
                        # from call to call (batch padding can move the last float bit)
                        key = (question, sol[: j + 1])
                        known[key] = self._cache.get(key, v)
            for key, value in known.items():
                self._cache.put(key, value)
            steps = [
                [known[(question, tuple(sol[: j + 1]))] for j in range(len(sol))]
                for sol in solutions
            ]
            return Scores(steps, tokens)

    def _forward(self, batch: list[Encoded]) -> list[list[float]]:
        """Run the decoder once over a right-padded batch and read scores at each step's position."""
        width = max(len(e.ids) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, e in enumerate(batch):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
        hidden = self.model.model(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False
        ).last_hidden_state  # (B, T, hidden)
        rows = torch.tensor([i for i, e in enumerate(batch) for _ in e.positions])
        cols = torch.tensor([p for e in batch for p in e.positions])
        flat = self.read(hidden[rows.to(self.device), cols.to(self.device)]).float().tolist()
        out, start = [], 0
        for e in batch:
            out.append(flat[start : start + len(e.positions)])
            start += len(e.positions)
        return out


class QwenMathPRM(HubPRM):
    """Qwen/Qwen2.5-Math-PRM-7B (model: backend.loading.prm.Qwen2ForProcessRewardModel)."""

    family = "qwen_prm"
    separator = "<extra_0>"
    reserved = (separator,)

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.sep_id = _single_token(tokenizer, self.separator)

    def format_text(self, question: str, steps: Sequence[str]) -> str:
        messages = [
            {"role": "system", "content": QWEN_PRM_SYSTEM},
            {"role": "user", "content": self.clean(question)},
            {
                "role": "assistant",
                "content": "".join(self.clean(s) + self.separator for s in steps),
            },
        ]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False
        )

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        ids = self.tokenizer.encode(self.format_text(question, steps), add_special_tokens=False)
        return self._positions_of(ids, self.sep_id, steps)

    def read(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.model.score
        logits = head(hidden.to(_dtype_of(head, hidden.dtype))).float()  # (K, 2)
        return torch.softmax(logits, dim=-1)[:, 1]


class SkyworkPRM(HubPRM):
    """Skywork/Skywork-o1-Open-PRM-Qwen-2.5-* (model: backend.loading.prm.Qwen2ForValueHeadPRM)."""

    family = "skywork"

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        bos = tokenizer.bos_token_id
        if bos is None:
            bos = getattr(model.config, "bos_token_id", None)
        self.bos_ids = [] if bos is None else [int(bos)]
        self.newline_id = tokenizer.encode("\n", add_special_tokens=False)[-1]

    @staticmethod
    def lines(step: str) -> list[str]:
        """Skywork steps (lines) of one of our steps; a step with no text is one empty line."""
        return [line for line in step.split("\n") if line.strip()] or [""]

    def format_text(self, question: str, steps: Sequence[str]) -> str:
        bos = self.tokenizer.convert_ids_to_tokens(self.bos_ids[0]) if self.bos_ids else ""
        body = "".join(line + "\n" for s in steps for line in self.lines(s))
        return f"{bos}{question}\n{body}"

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        # token by token as Skywork's prepare_input builds it: each line encoded on its own
        enc = self.tokenizer.encode
        ids = self.bos_ids + enc(question + "\n", add_special_tokens=False)
        positions = []
        for step in steps:
            for line in self.lines(step):
                ids += enc(line, add_special_tokens=False) + [self.newline_id]
            positions.append(len(ids) - 1)
        return Encoded(ids, positions)

    def read(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.model.v_head
        return torch.sigmoid(head(hidden.to(_dtype_of(head, hidden.dtype))).float()).squeeze(-1)


class _PlusMinusPRM(HubPRM):
    """A causal LM that answers "+" (step right) or "-" (wrong); score = P("+") of the two."""

    def read(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.model.lm_head
        logits = head(hidden.to(_dtype_of(head, hidden.dtype)))[:, [self.good_id, self.bad_id]]
        return torch.softmax(logits.float(), dim=-1)[:, 0]


class RLHFlowPRM(_PlusMinusPRM):
    """RLHFlow/Llama3.1-8B-PRM-Deepseek-Data (a LlamaForCausalLM)."""

    family = "rlhflow"

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.good_id = tokenizer.encode("+", add_special_tokens=False)[-1]
        self.bad_id = tokenizer.encode("-", add_special_tokens=False)[-1]

    def conversation(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for k, step in enumerate(steps):
            text = f"{question} {self.clean(step)}" if k == 0 else self.clean(step)
            turns += [{"role": "user", "content": text}, {"role": "assistant", "content": "+"}]
        return turns

    def _render(self, turns: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(turns, tokenize=False)

    def format_text(self, question: str, steps: Sequence[str]) -> str:
        return self._render(self.conversation(question, steps))

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        turns = self.conversation(question, steps)
        full = self._render(turns)
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, starts = enc["input_ids"], [a for a, _ in enc["offset_mapping"]]
        positions = []
        for k in range(1, len(steps) + 1):
            # the k-th assistant "+" is the last "+" of the conversation cut after that turn
            part = self._render(turns[: 2 * k])
            if not full.startswith(part):
                raise RuntimeError(f"{self.name}: the chat template is not stable under prefixes")
            tok = bisect.bisect_right(starts, part.rindex("+")) - 1
            if ids[tok] != self.good_id:
                raise RuntimeError(f"{self.name}: the assistant '+' is not a token of its own")
            positions.append(tok - 1)  # the position that predicts "+"
        return Encoded(ids, positions)


class MathShepherdPRM(_PlusMinusPRM):
    """peiyi9979/math-shepherd-mistral-7b-prm (a MistralForCausalLM)."""

    family = "math_shepherd"
    tag = "ки"
    reserved = (tag,)

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        pair = tokenizer.encode("+ -", add_special_tokens=False)  # the card's [648, 387]
        if len(pair) != 2:
            raise ValueError(f"{self.name}: '+ -' is {len(pair)} tokens, expected 2")
        self.good_id, self.bad_id = pair
        self.tag_id = tokenizer.encode(self.tag)[-1]

    def format_text(self, question: str, steps: Sequence[str]) -> str:
        # "question step1 ки\nstep2 ки": every tag follows exactly one space, since Mistral's
        # tokenizer reads only " ки" as the step tag token (an empty step is a bare " ки")
        text = self.clean(question)
        for k, step in enumerate(map(self.clean, steps)):
            sep = " " if k == 0 else "\n"
            text += f"{sep}{step} {self.tag}" if step else f"{sep.rstrip(' ')} {self.tag}"
        return text

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        ids = self.tokenizer.encode(self.format_text(question, steps))  # with BOS, as the card
        return self._positions_of(ids, self.tag_id, steps)


FAMILIES: dict[str, type[HubPRM]] = {
    cls.family: cls for cls in (QwenMathPRM, SkyworkPRM, RLHFlowPRM, MathShepherdPRM)
}
