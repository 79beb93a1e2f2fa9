"""Where a step ends: at the step delimiter, at EOS, after the boxed answer, or at a token limit."""

from __future__ import annotations

from backend.engine.state import Row
from strategies.answers import answer_end
from strategies.protocols import STEP_DELIMITER, GeneratedStep, Sampling

# end-of-turn and end-of-text tokens of common chat formats (ChatML, Llama 3): a model may end
# its answer at one of them instead of at the EOS its tokenizer declares
END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")


class StopChecks:
    """The stop checks for one tokenizer: which tokens end a solution and which may end a step."""

    def __init__(self, model, tokenizer) -> None:
        self.tokenizer = tokenizer
        # a config may declare several EOS ids (a list, as Qwen2.5's generation configs do)
        eos = [tokenizer.eos_token_id, model.config.eos_token_id]
        for name in END_TOKENS:
            tid = tokenizer.convert_tokens_to_ids(name)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                eos.append(tid)
        self.eos_ids = {int(e) for e in _flatten(eos) if e is not None}
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        # the delimiter can only complete at a token holding a newline: decode only then
        self.newline_ids = {i for i, piece in enumerate(pieces) if "\n" in piece}

    def check(self, row: Row, sampling: Sampling, budget: int) -> GeneratedStep | None:
        """The finished step if this row should stop after its newest token, else None."""
        new = row.new
        tok = new[-1]
        solution_len = len(row.base_ids) - row.start.prompt_len + len(new)
        if tok in self.eos_ids:
            text = self.tokenizer.decode(new[:-1], skip_special_tokens=True)
            return GeneratedStep(text, len(new), True, "eos")
        if sampling.to_end and tok in self.newline_ids:
            # written to the end: the solution still ends after the step with its boxed answer
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            cut = answer_end(text, STEP_DELIMITER)
            if cut is not None:
                return GeneratedStep(text[:cut], len(new), True, "answer")
        elif tok in self.newline_ids:
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if STEP_DELIMITER in text:
                if not text.strip():
                    return GeneratedStep(text, len(new), True, "empty")
                return GeneratedStep(text, len(new), False, "delimiter")
        if solution_len >= sampling.max_solution_tokens or len(new) >= budget:
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            return GeneratedStep(text, len(new), True, "length")
        return None


def as_whole_solution(step: GeneratedStep) -> GeneratedStep:
    """A step written step by step, seen as the start of a continuation written to the end."""
    if step.finished:
        return step
    cut = answer_end(step.text, STEP_DELIMITER)
    if cut is not None:
        return GeneratedStep(step.text[:cut], step.tokens, True, "answer")
    return step


def _flatten(items):
    # a model config may declare several EOS ids at once
    for x in items:
        if isinstance(x, (list, tuple, set)):
            yield from x
        else:
            yield x
