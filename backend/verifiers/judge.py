"""Model judges: a language model asked whether the newest step of a solution is right.

Score = P(yes) / (P(yes) + P(no)) for the first token of the judge's reply: the self-verification
idea of the reference work, one forward per step judged, read at its last position only. Two uses:
- `self_judge`: the policy judges its own steps. It needs no second model (no extra memory), and
  on a 135M policy it is a weak verifier; the app says so.
- a bigger model judging a small policy (Qwen2.5-Coder 1.5B reading the 0.5B's steps): the
  verifier that can tell a right calculation on a wrong path from the right path, which the
  arithmetic checker cannot.
`CheckedJudgePRM` puts the arithmetic checker in front of a judge (see its docstring).
Scores are cached per (question, steps so far), so a beam's earlier steps are judged only once;
prompts are judged in batches, shortest first, so rows of one batch pad little. A judge run from
its GGUF file reads its prompts in llama.cpp (`GGUFModel.last_logits`), one from the hub in
transformers.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from backend.catalog import COMBINES
from backend.verifiers.arithmetic import ArithmeticPRM
from backend.verifiers.score_cache import Key, StepScoreCache
from strategies.protocols import Scores

JUDGE_SYSTEM = "You check math solutions. Reply with Yes or No only."
JUDGE_USER = (
    "Problem: {question}\n\nSolution so far:\n{before}\n\nNew step: {step}\n\n"
    "Is the new step correct? Answer Yes or No."
)


class JudgePRM:
    """Implements `StepScorer` with a causal LM's Yes/No judgement of each step.

    `tokens` of a `score` call counts the prompt tokens the judge read (cached steps cost none);
    `judged` counts the prefixes judged over the scorer's life.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str = "self_judge",
        batch_size: int = 8,
        cache_size: int = 4096,
    ) -> None:
        self.model = model
        self.gguf = hasattr(model, "last_logits")  # a GGUFModel: read in llama.cpp
        if self.gguf:
            self.tokenizer = tokenizer
        else:
            # its own copy: the engine over the same model uses the shared tokenizer from other
            # threads, and batched encoding mutates a fast tokenizer's padding state
            self.tokenizer = copy.deepcopy(tokenizer)
            self.tokenizer.padding_side = "left"  # the answer token is read at every row's end
        self.name = name
        self.batch_size = batch_size
        self.yes_id, self.no_id = self.answer_ids(tokenizer)
        self.judged = 0
        self._cache = StepScoreCache(cache_size)
        self._lock = threading.Lock()

    @staticmethod
    def answer_ids(tokenizer) -> tuple[int, int]:
        """The single tokens "Yes" and "No" that open the judge's reply."""
        ids = []
        for word in ("Yes", "No"):
            toks = tokenizer.encode(word, add_special_tokens=False)
            if len(toks) != 1:
                raise ValueError(f"the tokenizer splits {word!r} into {len(toks)} tokens")
            ids.append(toks[0])
        return ids[0], ids[1]

    def judge_prompt(self, question: str, steps: Sequence[str]) -> str:
        before = "".join(steps[:-1]).strip() or "(nothing yet)"
        messages = [
            {"role": "system", "content": JUDGE_SYSTEM},
            {
                "role": "user",
                "content": JUDGE_USER.format(
                    question=question.strip(), before=before, step=steps[-1].strip()
                ),
            },
        ]
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        keys = [_prefixes(question, sol) for sol in solutions]
        known, tokens = self.judge_keys([k for row in keys for k in row])
        return Scores([[known[k] for k in row] for row in keys], tokens)

    def judge_keys(self, keys: Sequence[Key]) -> tuple[dict[Key, float], int]:
        """P(yes) for each (question, steps so far) key, judging those not cached; and the
        prompt tokens read."""
        with self._lock:
            known = {k: self._cache.get(k) for k in keys if k in self._cache}
            todo = sorted({k for k in keys if k not in known}, key=lambda k: (len(k[1]), k[1]))
            prompts = [self.judge_prompt(q, s) for q, s in todo]
            # shortest prompts together: a batch pads to its longest row
            order = sorted(range(len(todo)), key=lambda i: len(prompts[i]))
            tokens = 0
            for i in range(0, len(order), self.batch_size):
                chunk = order[i : i + self.batch_size]
                probs, read = self._judge([prompts[j] for j in chunk])
                tokens += read
                for j, p in zip(chunk, probs):
                    known[todo[j]] = p
                    self._cache.put(todo[j], p)
            self.judged += len(todo)
            return known, tokens

    def _judge(self, prompts: list[str]) -> tuple[list[float], int]:
        """P(yes) / (P(yes) + P(no)) per prompt, and the tokens read."""
        if self.gguf:
            ids = [self.tokenizer.encode(p) for p in prompts]
            pair = self.model.last_logits(ids, [self.yes_id, self.no_id]).astype(np.float64)
            read = sum(len(i) for i in ids)
        else:
            pair, read = self._judge_in_torch(prompts)
        return (1.0 / (1.0 + np.exp(pair[:, 1] - pair[:, 0]))).tolist(), read

    def _judge_in_torch(self, prompts: list[str]) -> tuple[np.ndarray, int]:
        import torch

        tok = self.tokenizer
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        mask = batch["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(**batch, position_ids=pos, logits_to_keep=1)
        logits = out.logits[:, -1, [self.yes_id, self.no_id]].float()
        return logits.cpu().numpy().astype(np.float64), int(mask.sum())


@dataclass(eq=False)  # holds a model: compared by identity
class CheckedJudgePRM:
    """The arithmetic checker in front of a model judge (or of a value head, which judges keys
    the same way: backend/verifiers/value_head.py).

    - "veto": a step whose calculation is wrong (or whose answer contradicts the solution's
      arithmetic) gets the checker's `wrong` score and is never shown to the judge; every other
      step gets the judge's P(correct). Right arithmetic on a wrong path is left to the judge.
    - "fallback": the checker's verdict wherever it has one (right or wrong), the judge's where
      the step has nothing to check.
    Which one ranks steps better is measured by `benchmarks/verifiers.py` (docs/verifiers.md).
    `tokens` counts what the judge read; the checker reads no model.
    """

    judge: JudgePRM
    checker: ArithmeticPRM
    combine: str = "veto"  # one of backend.catalog.COMBINES
    name: str = "checker+judge"
    cheap: ClassVar[bool] = False  # the judge is a model: score in batches, not step by step

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")

    def score(self, question: str, solutions: Sequence[Sequence[str]]) -> Scores:
        # the checker decides the steps of these verdicts; the judge all others
        decides = {"veto": ("wrong",), "fallback": ("wrong", "right")}[self.combine]
        verdicts = [self.checker.verdicts(sol) for sol in solutions]
        keys = [_prefixes(question, sol) for sol in solutions]
        ask = [k for row, vs in zip(keys, verdicts) for k, v in zip(row, vs) if v not in decides]
        known, tokens = self.judge.judge_keys(ask)
        steps = [
            [getattr(self.checker, v) if v in decides else known[k] for k, v in zip(row, vs)]
            for row, vs in zip(keys, verdicts)
        ]
        return Scores(steps, tokens)


def _prefixes(question: str, solution: Sequence[str]) -> list[Key]:
    return [(question, tuple(solution[: j + 1])) for j in range(len(solution))]
