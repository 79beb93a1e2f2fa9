"""Where a step ends: at the step delimiter, at EOS, after the boxed answer, or at a token limit.

One rule for both engines (llama.cpp's and transformers'): each gives the ids that end a
solution, which tokens hold a newline, and how to turn token ids into text.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from strategies.answers import answer_end
from strategies.protocols import STEP_DELIMITER, GeneratedStep, Sampling

# end-of-turn and end-of-text tokens of common chat formats (ChatML, Llama 3): a model may end
# its answer at one of them instead of at the EOS its tokenizer declares
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")


class StopChecks:
    """The stop checks for one vocabulary: which tokens end a solution and which may end a step."""

    def __init__(
        self,
        eos_ids: Collection[int],
        has_newline: Callable[[int], bool],
        decode: Callable[[list[int]], str],
    ) -> None:
        self.eos_ids = set(eos_ids)
        # the delimiter can only complete at a token holding a newline: decode only then
        self.has_newline = has_newline
        self.decode = decode  # token ids to text, special tokens left out

    def check(
        self, new: list[int], solution_len: int, sampling: Sampling, budget: int
    ) -> GeneratedStep | None:
        """The finished step if a row that wrote `new` (its solution `solution_len` tokens long,
        `new` included) should stop after its newest token, else None."""
        tok = new[-1]
        if tok in self.eos_ids:
            return GeneratedStep(self.decode(new[:-1]), len(new), True, "eos")
        if self.has_newline(tok):
            text = self.decode(new)
            if sampling.to_end:
                # written to the end: the solution still ends after the step with its boxed answer
                cut = answer_end(text, STEP_DELIMITER)
                if cut is not None:
                    return GeneratedStep(text[:cut], len(new), True, "answer")
            elif STEP_DELIMITER in text:
                if not text.strip():
                    return GeneratedStep(text, len(new), True, "empty")
                return GeneratedStep(text, len(new), False, "delimiter")
        if solution_len >= sampling.max_solution_tokens or len(new) >= budget:
            return GeneratedStep(self.decode(new), len(new), True, "length")
        return None


def as_whole_solution(step: GeneratedStep) -> GeneratedStep:
    """A step written step by step, seen as the start of a continuation written to the end."""
    if step.finished:
        return step
    cut = answer_end(step.text, STEP_DELIMITER)
    if cut is not None:
        return GeneratedStep(step.text[:cut], step.tokens, True, "answer")
    return step
