"""The self-judge PRM on the embedded model: the right two tokens, scores in [0, 1], caching."""

from __future__ import annotations

import pytest
import torch

from backend.verifiers.self_judge import SelfJudgePRM

pytestmark = pytest.mark.model

Q = "Tom has 3 bags with 4 apples each. How many apples does he have?"
SOLS = [
    ["Tom has 3 x 4 = 12 apples.\n\n", "The answer is \\boxed{12}."],
    ["Tom has 3 x 4 = 15 apples.\n\n"],
]


def test_reads_yes_and_no_and_matches_a_manual_forward(policy):
    judge = SelfJudgePRM(policy.model, policy.tokenizer)
    tok = policy.tokenizer
    assert tok.decode([judge.yes_id]) == "Yes" and tok.decode([judge.no_id]) == "No"
    scores = judge.score(Q, SOLS)
    assert [len(s) for s in scores.steps] == [2, 1]
    assert all(0.0 <= x <= 1.0 for row in scores.steps for x in row)
    assert scores.tokens > 0
    # the batched, left-padded read-out equals a plain batch-1 forward on the same prompt
    prompt = judge.judge_prompt(Q, SOLS[1])
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logits = policy.model(**ids).logits[0, -1]
    p = torch.softmax(logits[[judge.yes_id, judge.no_id]].float(), -1)[0].item()
    assert scores.steps[1][0] == pytest.approx(p, abs=1e-4)


def test_earlier_steps_are_judged_once(policy):
    judge = SelfJudgePRM(policy.model, policy.tokenizer)
    first = judge.score(Q, [SOLS[0][:1]])
    again = judge.score(Q, [SOLS[0]])  # only the new second step is read
    assert again.steps[0][0] == first.steps[0][0]
    assert again.tokens > 0
    assert judge.score(Q, [SOLS[0]]).tokens == 0  # everything cached
