"""The model judges: the self-judge on the embedded model (the right two tokens, scores in [0, 1],
caching), a model judge on a tiny Qwen2 (batch invariance, one read per prefix, compute counted),
and the arithmetic checker in front of a judge."""

from __future__ import annotations

import pytest
import torch

from backend.verifiers.judge import JudgePRM

Q = "Tom has 3 bags with 4 apples each. How many apples does he have?"
SOLS = [
    ["Tom has 3 x 4 = 12 apples.\n\n", "The answer is \\boxed{12}."],
    ["Tom has 3 x 4 = 15 apples.\n\n"],
]


@pytest.mark.model
def test_reads_yes_and_no_and_matches_a_plain_read_in_llama_cpp(policy):
    """The self-judge on the embedded model, in llama.cpp: P(yes) from a batch of prompts read
    together agrees with each prompt read alone in a context of its own (within llama.cpp's
    rounding between batch shapes), and a judge that reads one prompt at a time matches that
    plain read exactly."""
    import numpy as np

    from backend.llama.sequences import Sequences

    judge = JudgePRM(policy.model, policy.tokenizer)
    tok = policy.tokenizer
    assert tok.decode([judge.yes_id]) == "Yes" and tok.decode([judge.no_id]) == "No"
    scores = judge.score(Q, SOLS)
    assert [len(s) for s in scores.steps] == [2, 1]
    assert all(0.0 <= x <= 1.0 for row in scores.steps for x in row)
    assert scores.tokens > 0
    ids = tok.encode(judge.judge_prompt(Q, SOLS[1]))
    kv = Sequences(policy.model.native, policy.model.threads)
    try:
        at = kv.prefill(kv.new(), ids, 0, hidden=False)
        yes, no = kv.ctx.logits(at)[[judge.yes_id, judge.no_id]].astype(np.float64)
    finally:
        kv.close()
    plain = 1.0 / (1.0 + np.exp(no - yes))
    assert scores.steps[1][0] == pytest.approx(plain, abs=0.05)
    alone = JudgePRM(policy.model, policy.tokenizer, batch_size=1).score(Q, SOLS)
    assert alone.steps[1][0] == pytest.approx(plain, abs=1e-5)


@pytest.mark.model
def test_earlier_steps_are_judged_once(policy):
    judge = JudgePRM(policy.model, policy.tokenizer)
    first = judge.score(Q, [SOLS[0][:1]])
    again = judge.score(Q, [SOLS[0]])  # only the new second step is read
    assert again.steps[0][0] == first.steps[0][0]
    assert again.tokens > 0
    assert judge.score(Q, [SOLS[0]]).tokens == 0  # everything cached


# ---- a model judge on a tiny Qwen2-shaped model (random weights, a real tokenizer) -----------
def _tiny_judge(**kwargs):
    from transformers import Qwen2ForCausalLM

    from backend.verifiers.judge import JudgePRM
    from tests.tiny_prms import CHATML_TEMPLATE, smollm2_tokenizer, tiny_config

    tok = smollm2_tokenizer()
    tok.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_config("qwen_prm", len(tok))).eval()
    return JudgePRM(model, tok, name="judge-tiny", **kwargs)


STEPS = [
    "Tom has 3 x 4 = 12 apples.\n\n",
    "He gives away 5, so 12 - 5 = 7 are left.\n\n",
    "The answer is \\boxed{7}.",
]


def test_model_judge_scores_do_not_depend_on_the_batch():
    one, many = _tiny_judge(batch_size=1), _tiny_judge(batch_size=8)
    sols = [STEPS, STEPS[:1], ["A much longer first step that pads the others. " * 6 + "\n\n"]]
    a, b = one.score(Q, sols), many.score(Q, sols)
    assert [len(r) for r in a.steps] == [3, 1, 1]
    for ra, rb in zip(a.steps, b.steps):
        assert ra == pytest.approx(rb, abs=1e-5)
    assert a.tokens == b.tokens > 0  # the same prompts read, however they were batched
    assert len({round(x, 6) for row in a.steps for x in row}) > 1  # not one constant


def test_model_judge_reads_each_prefix_once_and_counts_what_it_read():
    judge = _tiny_judge()
    tok = judge.tokenizer

    def prompt_tokens(steps) -> int:
        return len(tok.encode(judge.judge_prompt(Q, steps), add_special_tokens=False))

    first = judge.score(Q, [STEPS[:2]])
    assert judge.judged == 2 and first.tokens == prompt_tokens(STEPS[:1]) + prompt_tokens(STEPS[:2])
    again = judge.score(Q, [STEPS, STEPS])  # two beams sharing a history: one new prefix
    assert judge.judged == 3 and again.tokens == prompt_tokens(STEPS)
    assert again.steps[0][:2] == first.steps[0] and again.steps[0] == again.steps[1]
    assert judge.score(Q, [STEPS]).tokens == 0  # all cached


def test_model_judge_compute_is_counted_in_the_run():
    from strategies.config import SearchConfig
    from strategies.registry import search
    from tests.fakes import FakeGenerator

    judge = _tiny_judge()
    config = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=3)
    *_, tree = search(Q, config, FakeGenerator(depth=3), judge)
    assert tree.done and judge.judged > 0
    tok = judge.tokenizer
    read = sum(
        len(tok.encode(judge.judge_prompt(q, list(steps)), add_special_tokens=False))
        for q, steps in judge._cache._scores
    )
    assert tree.compute.scored_tokens == read  # every prompt the judge read, each prefix once


def test_checker_in_front_of_the_judge():
    from backend.verifiers.arithmetic import ArithmeticPRM
    from backend.verifiers.judge import CheckedJudgePRM

    checker = ArithmeticPRM()
    wrong = ["Tom has 3 x 4 = 15 apples.\n\n"]
    prose = ["Tom should multiply the bags by the apples.\n\n"]
    veto = CheckedJudgePRM(_tiny_judge(), checker, "veto")
    v = veto.score(Q, [wrong, STEPS[:1], prose]).steps
    assert v[0] == [checker.wrong]  # vetoed, and never shown to the judge
    assert veto.judge.judged == 2
    alone = veto.judge.score(Q, [STEPS[:1], prose]).steps
    assert v[1] == alone[0] and v[2] == alone[1]  # right arithmetic is still the judge's call
    fallback = CheckedJudgePRM(_tiny_judge(), checker, "fallback")
    f = fallback.score(Q, [wrong, STEPS[:1], prose]).steps
    assert f[:2] == [[checker.wrong], [checker.right]]
    assert f[2] == pytest.approx(alone[1], abs=1e-5)  # judged in another batch: fp32 sums differ
    assert fallback.judge.judged == 1
    with pytest.raises(ValueError, match="combine"):
        CheckedJudgePRM(veto.judge, checker, "average")
