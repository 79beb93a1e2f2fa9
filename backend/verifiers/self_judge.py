"""The self-judge PRM: the policy model itself asked whether the newest step of a solution is right.

Score = P(yes) / (P(yes) + P(no)) for the first token of the model's reply: the self-verification
idea of the reference work. On a 135M model this is a weak verifier, and the app says so; it is
here because it needs no second model: it reuses the loaded policy, adding no memory.
Scores are cached per (question, steps so far), so a beam's earlier steps are judged only once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from backend.verifiers.score_cache import StepScoreCache
from strategies.protocols import Scores

JUDGE_SYSTEM = "You check math solutions. Reply with Yes or No only."
JUDGE_USER = (
    "Problem: {question}\n\nSolution so far:\n{before}\n\nNew step: {step}\n\n"
    "Is the new step correct? Answer Yes or No."
)


class SelfJudgePRM:
    """Implements `StepScorer` with the policy model's own Yes/No judgement."""

    name = "self_judge"

    def __init__(self, model, tokenizer, *, batch_size: int = 8, cache_size: int = 4096) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.yes_id, self.no_id = self.answer_ids(tokenizer)
        self.device = next(model.parameters()).device
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
        with self._lock, torch.inference_mode():
            wanted = {
                k for sol in solutions for k in _prefixes(question, sol) if k not in self._cache
            }
            todo = sorted(wanted, key=lambda k: (len(k[1]), k[1]))
            known = {k: self._cache.get(k) for sol in solutions for k in _prefixes(question, sol)}
            tokens = 0
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i : i + self.batch_size]
                probs, read = self._judge([self.judge_prompt(q, s) for q, s in chunk])
                tokens += read
                for key, p in zip(chunk, probs):
                    known[key] = p
                    self._cache.put(key, p)
            steps = [[known[k] for k in _prefixes(question, sol)] for sol in solutions]
            return Scores(steps, tokens)

    def _judge(self, prompts: list[str]) -> tuple[list[float], int]:
        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"  # the answer token is read at the last position of every row
        try:
            batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        batch = {k: v.to(self.device) for k, v in batch.items()}
        mask = batch["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**batch, position_ids=pos, logits_to_keep=1).logits[:, -1, :].float()
        pair = torch.softmax(logits[:, [self.yes_id, self.no_id]], dim=-1)
        return pair[:, 0].tolist(), int(mask.sum())


def _prefixes(question: str, solution: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    return [(question, tuple(solution[: j + 1])) for j in range(len(solution))]
