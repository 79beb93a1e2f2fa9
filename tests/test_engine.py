"""The transformers step engine (hub policies) against plain `model.generate`: sharing, row
selection and writing ahead change only speed. On the embedded SmolLM2 read by transformers."""

from __future__ import annotations

import pytest
import torch

from strategies.protocols import STEP_DELIMITER, Sampling

pytestmark = pytest.mark.model

Q = "Sara has 5 boxes with 6 pencils each. She gives away 7 pencils. How many pencils are left?"
GREEDY = Sampling(temperature=0.0, max_step_tokens=48)


def reference(hf_policy, ids: list[int], new: int) -> list[int]:
    """Greedy continuation of exactly these token ids by model.generate, batch 1, no cache tricks."""
    out = hf_policy.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=new,
        do_sample=False,
        pad_token_id=hf_policy.tokenizer.eos_token_id,
    )
    return out[0, len(ids) :].tolist()


def new_ids(hf_engine, partial: tuple[str, ...], step: str) -> tuple[list[int], list[int]]:
    """(parent ids, the step's ids) as the engine stored them."""
    parent = hf_engine.store[(Q, partial)]
    child = hf_engine.store[(Q, partial + (step,))]
    return parent.ids, child.ids[len(parent.ids) :]


def test_greedy_steps_match_generate_after_pruning_and_reexpansion(hf_policy, hf_engine):
    # iteration 1: four sampled first steps from the shared prompt prefix
    first = [
        s.text for s in hf_engine.next_steps(Q, [[]], 4, Sampling(seed=7, max_step_tokens=48))[0]
    ]
    first = [s for s in first if STEP_DELIMITER in s]
    assert len(first) >= 2
    # iteration 2: "prune" to two beams, in a new order, and re-expand each to two greedy copies
    kept = [first[-1], first[0]]
    second = hf_engine.next_steps(Q, [[s] for s in kept], 2, GREEDY)
    for s, (a, b) in zip(kept, second):
        assert a.text == b.text  # both copies of a greedy row agree
        parent, step = new_ids(hf_engine, (s,), a.text) if not a.finished else (None, None)
        if parent is None:
            continue
        assert step == reference(hf_policy, parent, len(step))  # token-identical
    # iteration 3: continue only the second beam's (cached) state, alone in its batch
    s, step2 = kept[1], second[1][0]
    if not step2.finished:
        (third,) = hf_engine.next_steps(Q, [[s, step2.text]], 1, GREEDY)[0]
        if not third.finished:
            parent, step = new_ids(hf_engine, (s, step2.text), third.text)
            assert step == reference(hf_policy, parent, len(step))


def test_first_step_matches_generate_from_the_prompt(hf_policy, hf_engine):
    (step,) = hf_engine.next_steps(Q, [[]], 1, GREEDY)[0]
    prompt = hf_engine.store[(Q, ())].ids
    ref = reference(hf_policy, prompt, step.tokens)
    assert hf_policy.tokenizer.decode(ref, skip_special_tokens=True) == step.text


def test_rows_stop_at_the_step_delimiter(hf_engine):
    steps = hf_engine.next_steps(Q, [[]], 6, Sampling(seed=3, max_step_tokens=64))[0]
    for step in steps:
        if step.finish_reason == "delimiter":
            assert STEP_DELIMITER in step.text
            parent, ids = new_ids(hf_engine, (), step.text)
            before = hf_engine.tokenizer.decode(ids[:-1], skip_special_tokens=True)
            assert STEP_DELIMITER not in before  # it stopped at the first delimiter
        elif step.finish_reason == "length":
            assert step.tokens == 64 and step.finished
        assert step.tokens >= 1


def test_seeded_sampling_reproduces(hf_engine):
    def sample(seed):
        return [
            s.text
            for s in hf_engine.next_steps(Q, [[]], 4, Sampling(seed=seed, max_step_tokens=24))[0]
        ]

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


def test_foreign_partials_are_prefilled_and_continue(hf_policy, hf_engine):
    partial = ["Sara has 5 x 6 = 30 pencils.\n\n"]  # text the hf_engine never wrote
    (step,) = hf_engine.next_steps(Q, [partial], 1, GREEDY)[0]
    assert step.tokens >= 1
    state = hf_engine.store[(Q, tuple(partial))]
    ids = state.ids
    assert hf_engine.tokenizer.decode(ids[len(hf_engine.store[(Q, ())].ids) :]) == partial[0]
    if not step.finished:
        _, got = new_ids(hf_engine, tuple(partial), step.text)
        assert got == reference(hf_policy, ids, len(got))


def test_to_end_writes_past_the_delimiter(hf_engine):
    (step,) = hf_engine.next_steps(
        Q, [[]], 1, Sampling(temperature=0.0, to_end=True, max_solution_tokens=120)
    )[0]
    assert step.finished and step.finish_reason in ("eos", "length")
    assert step.text.count(STEP_DELIMITER) >= 1 or step.finish_reason == "eos"


def test_speculative_next_steps_change_nothing_but_speed(hf_policy, hf_engine):
    """Writing next steps ahead may change the speed, never what is written."""
    from backend.engine import StepEngine

    plain = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template, speculate=False)
    ahead = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template)  # on by default
    starts = [["Sara has 5 boxes.\n\n"], ["Each box has 6 pencils, so 5 x 6 = 30.\n\n"], []]

    def three_calls(eng):
        texts, partials = [], starts
        for _ in range(3):
            steps = [row[0] for row in eng.next_steps(Q, partials, 1, GREEDY)]
            texts.append([s.text for s in steps])
            partials = [p + [s.text] for p, s in zip(partials, steps) if not s.finished]
            if not partials:
                break
        return texts

    assert three_calls(ahead) == three_calls(plain)
    assert ahead.stats.prefetch_hits > 0  # the speculative path was really taken
    assert plain.stats.prefetch_hits == 0 and plain.stats.speculative_tokens == 0


def test_streamed_steps_come_as_rows_end_and_match_next_steps(hf_policy, hf_engine):
    from backend.engine import StepEngine

    sampling = Sampling(temperature=0.8, max_step_tokens=40, seed=11)
    partials = [[], ["Sara has 5 x 6 = 30 pencils.\n\n"]]
    fresh = [StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template) for _ in range(2)]
    streamed = list(fresh[0].stream_steps(Q, partials, 3, sampling))
    assert sorted(i for i, _ in streamed) == list(range(6))
    tokens = [step.tokens for _, step in streamed]
    assert tokens == sorted(tokens)  # rows decode in lockstep: shorter steps end first
    assert tokens[0] < tokens[-1]  # ...and the first was handed over before the call ended
    whole = fresh[1].next_steps(Q, partials, 3, sampling)
    assert dict(streamed) == {
        i * 3 + j: s for i, row in enumerate(whole) for j, s in enumerate(row)
    }


def test_a_solution_written_to_the_end_stops_after_its_boxed_answer(hf_engine):
    text = "The answer is \\boxed{50}\n\nExplanation: There are 12 trays * 8 muffins = 96."
    ids = hf_engine.tokenizer.encode(text, add_special_tokens=False)
    to_end = Sampling(temperature=0.0, to_end=True, max_solution_tokens=500)
    new: list[int] = []
    for tok in ids:
        new.append(tok)
        step = hf_engine.stops.check(new, len(new), to_end, 500)
        if step is not None:
            break
    assert step is not None, "never stopped"
    assert step.text == "The answer is \\boxed{50}\n\n"
    k = len(new)  # it stopped at the first token that completes the delimiter
    assert (step.finished, step.finish_reason, step.tokens) == (True, "answer", k)
    assert "\n\n" in hf_engine.tokenizer.decode(ids[:k])
    assert "\n\n" not in hf_engine.tokenizer.decode(ids[: k - 1])
    # written step by step, the same text ends its step at the delimiter and goes on
    new = []
    for tok in ids:
        new.append(tok)
        step = hf_engine.stops.check(new, len(new), GREEDY, 48)
        if step is not None:
            break
    assert (step.finished, step.finish_reason) == (False, "delimiter")


def test_written_ahead_steps_start_a_solution_written_to_the_end(hf_policy, hf_engine):
    """A to-the-end call may start from a whole step written ahead, and must then still write to
    the end (not hand back the step written ahead as the whole rest of the solution)."""
    from backend.engine import Prefetch, StepEngine
    from backend.engine.state import sampling_key

    to_end = Sampling(temperature=0.0, max_step_tokens=48, to_end=True, max_solution_tokens=200)
    start: tuple[str, ...] = ()
    fast = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template, speculate=False)
    (s1,) = fast.next_steps(Q, [start], 1, GREEDY)[0]
    (s2,) = fast.next_steps(Q, [start + (s1.text,)], 1, GREEDY)[0]
    assert not s2.finished and "boxed" not in s2.text
    # what a speculating row leaves behind: the next step of start + s1, written whole
    base = fast.store[(Q, start + (s1.text,))]
    after = fast.store[(Q, start + (s1.text, s2.text))]
    tokens = after.ids[len(base.ids) :]
    fast.written.waiting[(Q, start + (s1.text,))] = [
        Prefetch(after, base.ids, tokens, s2, sampling_key(GREEDY))
    ]
    (got,) = fast.next_steps(Q, [start + (s1.text,)], 1, to_end)[0]
    assert fast.stats.prefetch_hits == 1  # the written-ahead step was used
    plain = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template, speculate=False)
    assert plain.next_steps(Q, [start], 1, GREEDY)[0] == [s1]  # the same cached path...
    (want,) = plain.next_steps(Q, [start + (s1.text,)], 1, to_end)[0]  # ...then to the end
    assert got.finished and got.text.startswith(s2.text) and len(got.text) > len(s2.text)
    assert (got.text, got.tokens, got.finish_reason) == (want.text, want.tokens, want.finish_reason)


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_sampling_follows_the_distribution(top_p):
    from backend.engine.sampler import sample

    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, -float("inf")]]).repeat(40000, 1)
    sampling = Sampling(temperature=1.0, top_p=top_p)
    picked = sample(logits, sampling, torch.Generator().manual_seed(0))
    freq = torch.bincount(picked, minlength=5).double() / len(picked)
    p = torch.softmax(logits[0].double(), -1)
    if top_p < 1.0:  # the nucleus: 3 (0.644) and 2 (0.237) reach 0.7; the rest is cut
        p = torch.tensor([0.0, 0.0, 0.237, 0.644, 0.0], dtype=torch.double)
        p = p / p.sum()
    assert freq[4] == 0 and torch.allclose(freq, p, atol=0.01), (freq, p)
    again = sample(logits, sampling, torch.Generator().manual_seed(0))
    assert torch.equal(picked, again)  # seeded: reproducible


@pytest.mark.parametrize("width", [40, 700, 3000])
def test_nucleus_sampling_beyond_the_top_tokens_tried_first(width):
    """A nucleus wider than the top 64 (then 1024) tokens tried first still comes out whole:
    rows whose set fits and rows that need a full sort, in one batch, each drawn exactly."""
    from backend.engine.sampler import nucleus, sample

    vocab, rows = 5000, 8000
    logits = torch.full((rows, vocab), -30.0)
    # even rows: `width` tokens in slowly falling order hold nearly all the mass
    logits[0::2, :width] = -torch.arange(width) / width
    logits[1::2, 7] = 5.0  # odd rows: one token dominates
    logits[1::2, 8] = 4.0
    sampling = Sampling(temperature=1.0, top_p=0.9)
    picked = sample(logits, sampling, torch.Generator().manual_seed(1))
    even, odd = picked[0::2], picked[1::2]
    p = torch.softmax(logits[0].double(), -1)
    size = int(((p.cumsum(-1) - p) < 0.9).sum())  # the nucleus: tokens 0 .. size-1
    assert bool((even < size).all()), (int(even.max()), size)
    kept = p[:size] / p[:size].sum()
    for lo, hi in ((0, 64), (64, 1024), (1024, size)):  # each part is drawn as often as it should
        if lo < size:
            want = float(kept[lo:hi].sum())
            got = float(((even >= lo) & (even < hi)).double().mean())
            assert abs(got - want) < 0.025, (lo, hi, got, want)
    # peaked rows: 7 (0.73) alone is short of 0.9, so 8 (0.27) joins; nothing else
    assert set(odd.tolist()) == {7, 8}
    assert abs(float((odd == 7).double().mean()) - 0.731) < 0.025
    w = logits.clone().sub_(logits.amax(-1, keepdim=True)).exp_()
    again = nucleus(w, 0.9, torch.Generator().manual_seed(1))
    assert torch.equal(picked, again)  # seeded: reproducible


def test_a_new_question_reads_only_its_own_tokens(hf_policy, hf_engine):
    """The template's fixed head is read once (`warm` reads it ahead of a first request); a new
    question prefills its own tokens, and decodes exactly as from a prompt read whole."""
    from backend.engine import StepEngine

    fresh = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template)
    other = "Tom buys 4 packs of 6 pens and loses 5 pens. How many pens does he have?"
    fresh.warm(other)  # what a first request reads, without decoding
    read = fresh.stats.prefill_tokens
    assert (
        read == len(hf_engine.template.prompt_ids(hf_policy.tokenizer, other)) - 1
    )  # last: pending
    assert fresh.stats.decode_forwards == 0 and (other, ()) in fresh.store
    (step,) = fresh.next_steps(Q, [[]], 1, GREEDY)[0]
    prompt = hf_engine.template.prompt_ids(hf_policy.tokenizer, Q)
    assert fresh.stats.prefill_tokens - read < len(prompt) // 3  # not the whole prompt again
    state = fresh.store[(Q, ())]
    assert state.ids == prompt and state.prompt_len == len(prompt)
    assert not step.finished
    got = fresh.store[(Q, (step.text,))].ids[len(prompt) :]  # the step's ids as generated
    assert got == reference(hf_policy, prompt, len(got))


def test_ranking_picks_the_rows_to_copy_and_stops_the_copies_of_the_rest():
    from backend.engine import RowState
    from backend.engine.speculation import rerank
    from backend.engine.state import Row

    state = RowState([1, 2], [], prompt_len=1)
    a, b, c = ("a\n\n",), ("b\n\n",), ("c \\boxed{3}",)
    ranked, favored = [], set()
    slot = [Row(None, a, state, state.ids, []), Row(None, a, state, state.ids, [])]
    rerank(ranked, favored, 1, (0.5, 3, a), slot)
    assert favored == {a}
    rerank(ranked, favored, 1, (0.5, 1, b), slot)  # the same rank: the earlier one is kept
    assert favored == {b}
    assert slot == [None, None]  # a (and its copy) stop writing ahead: it will not be kept
    rerank(ranked, favored, 3, (float("-inf"), 0, c), slot)  # an ended solution: never kept
    assert c not in favored


def test_likely_survivors_are_written_ahead_in_as_many_copies_as_the_next_call_asks(
    hf_policy, hf_engine
):
    """With the search's hints (how many it keeps and how it ranks them), the rows the search
    will likely keep are copied when their step ends and each copy writes a next step ahead; the
    next call takes one per continuation. Greedy, every copy must write what the plain path
    writes (which also checks the copied caches)."""
    from dataclasses import replace

    from backend.engine import StepEngine

    def rank(steps) -> float:  # shorter partial solutions first
        return -float(len("".join(steps)))

    hinted = replace(GREEDY, rank=rank, keep=2)
    question = (
        "A baker makes 12 trays of 8 muffins. She sells 57 muffins and gives away 15. "
        "How many muffins are left?"
    )
    # the third start writes a long step (to the limit), so the others write ahead meanwhile,
    # for the next call and (their own next steps ended) for the one after it
    starts = [
        [],
        ["The baker makes 12 trays.\n\n"],
        ["Let me count every muffin one by one: 1, 2, 3, 4, 5, 6,"],
    ]

    def three_calls(eng):
        texts, partials = [], starts
        for _ in range(3):
            rows = eng.next_steps(question, partials, 2, hinted)
            texts.append([[s.text for s in row] for row in rows])
            children = []
            for p, row in zip(partials, rows):
                for s in row:
                    if not s.finished and p + [s.text] not in children:
                        children.append(p + [s.text])
            partials = sorted(children, key=lambda c: -rank(c))[:2]  # stable: ties by order
            if not partials:
                break
        return texts

    ahead = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template)
    plain = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template, speculate=False)
    assert three_calls(ahead) == three_calls(plain)
    assert ahead.stats.copied_rows > 0  # rows were copied to write ahead...
    assert ahead.stats.prefetch_hits >= 2  # ...and more than one continuation started from them
    assert ahead.stats.two_ahead_tokens > 0  # and steps for the call after the next one too
    single = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template, forks=1)
    assert three_calls(single) == three_calls(plain)
    assert single.stats.copied_rows == 0  # one continuation per row only


def test_likely_survivors_write_ahead_to_the_end_for_a_call_that_will(hf_policy, hf_engine):
    """When the next call writes to the end, the likely survivors write ahead to the end too (not
    just one step); that call takes what they wrote, which is what it would have written itself
    (greedy). What was written to the end never serves a step-by-step call."""
    from dataclasses import replace

    from backend.engine import StepEngine

    def rank(steps) -> float:
        return -float(len("".join(steps)))

    last = Sampling(temperature=0.0, to_end=True, max_step_tokens=48, max_solution_tokens=160)
    before = replace(GREEDY, rank=rank, keep=2, last_call_in=1)
    starts = [[], ["Let me count every pencil one by one: 1, 2, 3, 4, 5, 6,"]]

    def two_calls(eng):
        rows = eng.next_steps(Q, starts, 2, before)
        children = []
        for p, row in zip(starts, rows):
            for s in row:
                if not s.finished and p + [s.text] not in children:
                    children.append(p + [s.text])
        kept = sorted(children, key=lambda c: -rank(c))[:2]
        written = [p for waiting in eng.written.waiting.values() for p in waiting]
        return rows, kept, written, eng.next_steps(Q, kept, 2, last)

    ahead = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template)
    plain = StepEngine(hf_policy.model, hf_policy.tokenizer, hf_engine.template, speculate=False)
    rows, kept, written, final = two_calls(ahead)
    assert any(p.to_end for p in written)  # written ahead past a step delimiter, to the end
    assert ahead.stats.prefetch_hits >= 2  # the last call started from them
    want_rows, want_kept, _, want_final = two_calls(plain)
    assert (rows, kept, final) == (want_rows, want_kept, want_final)
    # written to the end, it never starts a step-by-step continuation
    done = next(p for p in written if p.to_end)
    ahead.written.waiting[(Q, ("x",))] = [done]
    assert ahead.written.take(Q, ("x",), GREEDY, ahead.stats) is None
    ahead.written.waiting[(Q, ("x",))] = [done]
    assert ahead.written.take(Q, ("x",), last, ahead.stats) is done


def test_written_ahead_steps_are_taken_by_identity_not_by_their_tensors():
    """Bookkeeping that holds tensors is found and removed by identity. Two steps written ahead
    for one partial solution may hold the same ids (two copies that sampled alike) in different
    tensors: comparing them by value asks torch whether two tensors are equal as a whole, which
    raised "Boolean value of Tensor with more than one value is ambiguous" in `_ahead_rows` (now
    `WrittenAhead.rows_for`; a user's run crashed). Deterministic: the state that crashed, built
    by hand."""
    from backend.engine import Prefetch, RowState, StepEngine
    from backend.engine.state import Row, sampling_key
    from backend.prompts import PromptTemplate
    from tests.tiny_prms import smollm2_tokenizer, tiny_lm

    tokenizer = smollm2_tokenizer()
    model = tiny_lm("llama", vocab_size=len(tokenizer))
    hf_engine = StepEngine(model, tokenizer, PromptTemplate.load("fewshot_steps"))
    sampling = Sampling(temperature=0.8, max_step_tokens=16, keep=1)
    key, question = ("Step 1.\n\n",), "q"

    def written(to_end: bool) -> Prefetch:
        kv = [(torch.randn(1, 5, 16), torch.randn(1, 5, 16))]  # other tensors, the same ids
        state = RowState([1, 2, 3, 4, 5, 6], kv, prompt_len=2)
        return Prefetch(state, [1, 2, 3, 4], [5, 6], None, sampling_key(sampling), to_end)

    # the first one was written for a call that writes to the end: not usable here, so the
    # second one is taken and removed past it
    first, second = written(to_end=True), written(to_end=False)
    hf_engine.written.waiting[(question, key)] = [first, second]
    base = RowState([1, 2, 3, 4], [], prompt_len=2)
    rows = hf_engine.written.rows_for(question, key, base, 2, sampling, hf_engine.stats)
    assert hf_engine.written.waiting[(question, key)] == [first]
    assert hf_engine.written.waiting[(question, key)][0] is first
    assert [r.start for r in rows][0] is second.state  # goes on from where it stopped
    assert rows[0].new == [5, 6] and rows[1].start is base
    assert hf_engine.stats.copied_rows == 1  # the second row is a copy: another continuation
    assert all(isinstance(r, Row) and r.ahead == 1 for r in rows)


def test_every_backend_dataclass_that_holds_tensors_compares_by_identity():
    """The root of the crash above, for every module: a dataclass in backend/ whose fields hold
    tensors (or models, states, engines that do) must not compare field by field."""
    import dataclasses
    import importlib
    import pkgutil

    import backend

    holds = ("Tensor", "KV", "RowState", "Prefetch", "LoadedModel", "StepEngine")
    found = []
    for info in pkgutil.walk_packages(backend.__path__, "backend."):  # subpackages too
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if not (dataclasses.is_dataclass(obj) and isinstance(obj, type)):
                continue
            if obj.__module__ != module.__name__:
                continue
            types = " ".join(str(f.type) for f in dataclasses.fields(obj))
            model = any(f.name == "model" and "Any" in str(f.type) for f in dataclasses.fields(obj))
            if model or any(word in types for word in holds):
                found.append(obj.__name__)
                assert obj.__eq__ is object.__eq__, f"{obj.__name__} compares its tensors"
    assert {"RowState", "Prefetch", "Row", "LoadedModel", "Runtime"} <= set(found)
