"""The llama.cpp step engine on the embedded SmolLM2 GGUF: forks, batches, seeds, limits, hidden states.

Run twice by the test command: natively, and on llama.cpp's AVX2-only build (THINKTREE_EXPECT_AVX2).
"""

from __future__ import annotations

import os
from collections import deque

import numpy as np
import pytest

from backend.llama import native
from backend.llama.engine import LlamaStepEngine
from backend.llama.sequences import Sequences
from strategies.protocols import STEP_DELIMITER, Sampling

pytestmark = pytest.mark.model

Q = "Sara has 5 boxes with 6 pencils each. She gives away 7 pencils. How many pencils are left?"
GREEDY = Sampling(temperature=0.0, max_step_tokens=48)


def fresh(policy, engine) -> LlamaStepEngine:
    return LlamaStepEngine(policy.model, engine.template)


def log_probs(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    """Two next-token distributions that llama.cpp's own rounding tells apart at most: where a
    sequence's cells lie in the cache, and how many rows a matmul takes, change which kernels
    run and the logits' last bits and more (a KL of ~0.003-0.007 between the same prompt read
    beside other sequences or alone, measured on the 0.5B and SmolLM2); a wrong cell (a fork
    that lost its parent's cells, a wrong position) changes them by orders of magnitude more."""
    p, q = log_probs(a), log_probs(b)
    kl = float((np.exp(p) * (p - q)).sum())
    assert kl < 0.03, kl
    likely = p > -4
    assert np.abs(p - q)[likely].max() < 1.0


def same_choice(want: int, logits: np.ndarray) -> bool:
    """The greedy choice `want` is the top token of `logits`, or ties with it (within 0.5 of a
    log-probability: llama.cpp's rounding may order such a pair either way)."""
    p = log_probs(logits)
    return int(np.argmax(p)) == want or p.max() - p[want] < 0.5


class Replay:
    """llama.cpp without the engine: a context of its own, one sequence, no forks, the tokens
    read in the chunks the engine reads them in (the template's head, the question's part, a
    foreign partial solution; then token by token), since llama.cpp's batched reads and its
    one-token decodes round differently (up to ~0.5 in a logit)."""

    def __init__(self, policy, eng: LlamaStepEngine, question: str, foreign: str = "") -> None:
        tok = eng.tokenizer
        prompt = eng.template.prompt_ids(tok, question)
        head = eng.template.prompt_ids(tok, "A")
        head = head[: next(i for i, (a, b) in enumerate(zip(head, prompt)) if a != b)]
        self.kv = Sequences(policy.model.native, policy.model.threads)
        self.seq = self.kv.new()
        self.kv.prefill(self.seq, head[:-1], 0, hidden=False)
        self.kv.prefill(self.seq, [head[-1], *prompt[len(head) : -1]], len(head) - 1, False)
        self.ids = list(prompt)  # all read but the last (pending)
        if foreign:
            more = tok.encode(foreign)
            self.kv.prefill(self.seq, [prompt[-1], *more[:-1]], len(prompt) - 1, False)
            self.ids += more

    def feed(self, tokens: list[int]) -> list[np.ndarray]:
        """Read the pending token and then `tokens`, one at a time, the last of them becoming
        the pending one; the logits after each token read."""
        out = []
        for tok in tokens:
            pending = self.ids[-1]
            (at,) = self.kv.decode([(pending, len(self.ids) - 1, self.seq, True)], hidden=False)
            out.append(self.kv.ctx.logits(at).copy())
            self.ids.append(tok)
        return out

    def follows_greedily(self, tokens: list[int]) -> bool:
        """Whether greedy decoding from here writes `tokens` (near ties either way, see
        `same_choice`), read with teacher forcing."""
        logits = self.feed(tokens)
        return all(same_choice(t, x) for t, x in zip(tokens, logits))

    def close(self) -> None:
        self.kv.close()


def test_the_build_is_the_one_this_pass_asks_for():
    """The AVX2 pass really runs llama.cpp's AVX2-only build; the native one what this CPU has."""
    built = native.cpu_build()
    assert "AVX2" in built
    if os.environ.get("THINKTREE_EXPECT_AVX2") == "1":
        assert "AVX512" not in built and "AMX" not in built, built


def test_a_fork_continues_where_its_parent_stopped(policy, engine):
    """A row forked off a partial solution's sequence (sharing its cells, never reading them
    again) decodes what one sequence that read the same tokens in the same chunks decodes."""
    eng = fresh(policy, engine)
    partial = "Sara has 5 x 6 = 30 pencils.\n\n"  # text the engine never wrote: read
    (step,) = eng.next_steps(Q, [[partial]], 1, GREEDY)[0]
    assert not step.finished
    state = eng.store[(Q, (partial, step.text))]
    kv = eng.kv
    fork = kv.new(state.seq)
    try:
        (at,) = kv.decode([(state.ids[-1], len(state.ids) - 1, fork, True)])
        got = kv.ctx.logits(at).copy()
    finally:
        kv.drop(fork)
    ref = Replay(policy, eng, Q, partial)
    try:
        ref.feed(state.ids[len(ref.ids) :])
        assert ref.ids == state.ids
        (want,) = ref.feed([0])
    finally:
        ref.close()
    assert_close(got, want)


def test_greedy_steps_match_llama_cpp_after_pruning(policy, engine):
    eng = fresh(policy, engine)
    first = [s.text for s in eng.next_steps(Q, [[]], 4, Sampling(seed=7, max_step_tokens=48))[0]]
    first = [s for s in first if s.endswith(STEP_DELIMITER)]
    assert len(first) >= 2
    kept = [first[-1], first[0]]  # "pruned" to two beams, in a new order
    second = eng.next_steps(Q, [[s] for s in kept], 2, GREEDY)
    for s, (a, b) in zip(kept, second):
        assert a.text == b.text  # both copies of a greedy row agree
        if a.finished:
            continue
        ref = Replay(policy, eng, Q)
        try:
            parent = eng.store[(Q, (s,))].ids
            ref.feed(parent[len(ref.ids) :])
            got = eng.store[(Q, (s, a.text))].ids[len(parent) :]
            assert ref.follows_greedily(got)
        finally:
            ref.close()


def test_rows_decoded_together_equal_rows_decoded_one_by_one(policy, engine):
    """Three partial solutions read the same tokens in one batch and each alone: the
    distributions at every step agree within llama.cpp's rounding (`assert_close`)."""
    eng = fresh(policy, engine)
    partials = [(), ("Sara has 5 x 6 = 30 pencils.\n\n",), ("Each box has 6 pencils.\n\n",)]
    states = [eng.partials.resolve(Q, p) for p in partials]
    feed = eng.tokenizer.encode("So she has 30 - 7 = 23 pencils left.")
    kv = eng.kv

    def decode(group: list) -> list[list[np.ndarray]]:
        seqs = [kv.new(states[i].seq) for i in group]
        got: list[list[np.ndarray]] = [[] for _ in group]
        try:
            tokens = [[states[i].ids[-1], *feed] for i in group]
            for k in range(len(feed) + 1):
                entries = [
                    (tokens[g][k], len(states[i].ids) - 1 + k, seqs[g], True)
                    for g, i in enumerate(group)
                ]
                for g, at in enumerate(kv.decode(entries)):
                    got[g].append(kv.ctx.logits(at).copy())
        finally:
            for seq in seqs:
                kv.drop(seq)
        return got

    together = decode([0, 1, 2])
    alone = [decode([i])[0] for i in range(3)]
    for row, single in zip(together, alone):
        for a, b in zip(row, single):
            assert_close(a, b)


def test_a_seed_reproduces_its_tree(policy, engine):
    """Whatever ran before, a search with the same seed writes the same tree (a run starts from
    an empty cache, its prompt put back from a snapshot)."""
    from backend.verifiers.arithmetic import ArithmeticPRM
    from strategies.config import SearchConfig
    from strategies.registry import search

    eng = fresh(policy, engine)
    checker = ArithmeticPRM()
    config = SearchConfig(
        strategy="beam_search",
        n=4,
        beam_width=2,
        max_iterations=3,
        seed=5,
        max_step_tokens=32,
        max_solution_tokens=96,
    )

    def run():
        (tree,) = deque(search(Q, config, eng, checker), maxlen=1)
        return [(n.text, n.parent, n.status) for n in tree.nodes]

    first = run()
    other = SearchConfig(strategy="dvts", n=4, beam_width=2, max_iterations=2, seed=9)
    deque(search("What is 17 + 25?", other, eng, checker), maxlen=0)  # other work in between
    assert run() == first
    assert run() != [] and len(first) > 4


def test_streamed_steps_come_as_rows_end_and_match_next_steps(policy, engine):
    sampling = Sampling(temperature=0.8, max_step_tokens=40, seed=11)
    partials = [[], ["Sara has 5 x 6 = 30 pencils.\n\n"]]
    streamed = list(fresh(policy, engine).stream_steps(Q, partials, 3, sampling))
    assert sorted(i for i, _ in streamed) == list(range(6))
    tokens = [step.tokens for _, step in streamed]
    assert tokens == sorted(tokens)  # rows decode in lockstep: shorter steps end first
    whole = fresh(policy, engine).next_steps(Q, partials, 3, sampling)
    assert dict(streamed) == {
        i * 3 + j: s for i, row in enumerate(whole) for j, s in enumerate(row)
    }


def test_rows_stop_at_the_step_delimiter_and_at_their_limits(policy, engine):
    eng = fresh(policy, engine)
    steps = eng.next_steps(Q, [[]], 6, Sampling(seed=3, max_step_tokens=24))[0]
    for step in steps:
        assert step.tokens >= 1
        if step.finish_reason == "delimiter":
            ids = eng.store[(Q, (step.text,))].ids
            before = eng.tokenizer.decode(ids[-step.tokens : -1])
            assert step.text.endswith(STEP_DELIMITER) and STEP_DELIMITER not in before
        elif step.finish_reason == "length":
            assert step.tokens == 24 and step.finished
    (whole,) = eng.next_steps(
        Q, [[]], 1, Sampling(temperature=0.0, to_end=True, max_solution_tokens=40)
    )[0]
    assert whole.finished and whole.finish_reason in ("eos", "answer", "length")
    assert whole.tokens <= 40


def test_foreign_partials_are_read_and_continue(policy, engine):
    eng = fresh(policy, engine)
    partial = ["Sara has 5 x 6 = 30 pencils.\n\n"]  # text the engine never wrote
    (step,) = eng.next_steps(Q, [partial], 1, GREEDY)[0]
    state = eng.store[(Q, tuple(partial))]
    prompt = eng.store[(Q, ())].ids
    assert eng.tokenizer.decode(state.ids[len(prompt) :]) == partial[0]
    if not step.finished:
        got = eng.store[(Q, (*partial, step.text))].ids[len(state.ids) :]
        ref = Replay(policy, eng, Q, partial[0])
        try:
            assert ref.follows_greedily(got)
        finally:
            ref.close()


def test_a_new_question_reads_only_its_own_tokens(policy, engine):
    eng = fresh(policy, engine)
    other = "Tom buys 4 packs of 6 pens and loses 5 pens. How many pens does he have?"
    eng.warm(other)
    prompt = eng.template.prompt_ids(eng.tokenizer, other)
    assert eng.stats.prefill_tokens == len(prompt) - 1  # all but the pending last token
    read = eng.stats.prefill_tokens
    eng.next_steps(Q, [[]], 1, GREEDY)
    assert eng.stats.prefill_tokens - read < len(prompt) // 3  # the head was not read again
    before = eng.stats.prefill_tokens
    eng.next_steps(Q, [[]], 1, GREEDY)  # the same question again: put back, not read
    assert eng.stats.prefill_tokens == before


def test_pruned_partials_are_dropped_with_their_cells(policy, engine):
    eng = fresh(policy, engine)
    first = eng.next_steps(Q, [[]], 4, Sampling(seed=1, max_step_tokens=32))[0]
    open_ = [[s.text] for s in first if not s.finished]
    assert len(open_) >= 2
    used = eng.kv.used
    for _ in range(eng.keep_calls):  # continue the first partial only, as a beam of one
        eng.next_steps(Q, open_[:1], 1, GREEDY)
    kept = {k[1] for k in eng.store}
    assert tuple(open_[0]) in kept
    assert not any(tuple(p) in kept for p in open_[1:])  # the pruned ones went
    assert eng.kv.used < used + eng.keep_calls * 48  # and their cells with them


def test_the_context_grows_for_a_call_that_needs_more_room(policy, engine):
    eng = fresh(policy, engine)
    eng.kv.grow(0)  # the shared context may have grown already: measure from its size now
    cells = eng.kv.cells
    wide = Sampling(seed=2, to_end=True, max_step_tokens=256, max_solution_tokens=2048)
    n = cells // 2048 + 2  # every row may write 2048 tokens: more than the context holds
    steps = eng.next_steps(Q, [[]], n, wide)[0]
    assert eng.kv.cells > cells and len(steps) == n and all(s.finished for s in steps)


def test_hidden_states_are_kept_for_every_step_and_match_a_fresh_read(policy, engine):
    eng = fresh(policy, engine)
    (step,) = eng.next_steps(Q, [[]], 1, GREEDY)[0]
    kept = eng.hidden_state(Q, [step.text])
    assert kept.shape == (policy.model.native.n_embd,)
    other = fresh(policy, engine)  # reads the same text as a foreign partial
    read = other.hidden_state(Q, [step.text])
    cosine = float(read @ kept / np.linalg.norm(read) / np.linalg.norm(kept))
    assert cosine > 0.99, cosine  # the same state, within llama.cpp's rounding
    assert eng.stats.decode_forwards > 0 and other.stats.decode_forwards == 0  # read, not written


def test_the_last_step_of_a_solution_ending_at_eos_keeps_the_state_a_fresh_read_gives(
    policy, engine
):
    """The writer reads a step's last token before EOS comes; a fresh read of the text must read
    it too, or a value head would score a finished solution on another state than it learned."""
    eng = fresh(policy, engine)
    steps, ends = [], []
    while not (ends and ends[-1].finished) and len(steps) < 10:
        (step,) = eng.next_steps(Q, [steps], 1, GREEDY)[0]
        steps.append(step.text)
        ends.append(step)
    assert ends[-1].finish_reason == "eos", [e.finish_reason for e in ends]
    other = fresh(policy, engine)
    for j in range(len(steps)):
        kept, read = eng.hidden_state(Q, steps[: j + 1]), other.hidden_state(Q, steps[: j + 1])
        cosine = float(read @ kept / np.linalg.norm(read) / np.linalg.norm(kept))
        assert cosine > 0.99, (j, cosine)


def test_reading_more_partials_than_the_context_has_sequences_makes_room(policy, engine):
    """A scorer may ask for the states of many partials no search wrote (a benchmark reading
    sampled solutions): the stored ones give way instead of running out of sequences."""
    eng = fresh(policy, engine)
    many = [[f"First, {i} apples.\n\n"] for i in range(eng.kv.ctx.n_seq + 8)]
    states = [eng.hidden_state(Q, steps) for steps in many]
    assert len(states) == len(many) and eng.kv.free_ids >= 0
    again = fresh(policy, engine).hidden_state(Q, many[0])
    assert float(again @ states[0] / np.linalg.norm(again) / np.linalg.norm(states[0])) > 0.99


def test_stop_ends_a_call_and_frees_its_rows(policy, engine):
    eng = fresh(policy, engine)
    stream = eng.stream_steps(Q, [[]], 4, Sampling(seed=4, max_step_tokens=48))
    next(stream)
    stream.close()  # what Stop does between two steps
    live = eng.kv.ctx.n_seq - eng.kv.free_ids  # only what is stored is left, no row
    assert live == len(eng.store) + (
        eng.partials.head is not None and eng.kv.valid(eng.partials.head.seq)
    )
    (step,) = eng.next_steps(Q, [[]], 1, GREEDY)[0]  # and the engine goes on
    assert step.tokens >= 1


def test_a_damaged_gguf_file_is_refused_with_a_clear_error(tmp_path):
    from backend.llama.model import GGUFModel
    from backend.loading.policy import gguf_path

    good = gguf_path("smollm2-135m").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match="could not read the GGUF file"):
        GGUFModel(cut)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(ValueError, match="damaged or truncated"):
        GGUFModel(junk)


def test_the_token_limit_ends_a_real_run_with_its_tree(monkeypatch):
    """Through the app's own path on the real engine: the run ends at its token cap, its tree
    kept and sound, and the next run is normal."""
    from app.request import RunRequest
    from app.service import stream_run
    from strategies.config import SearchConfig
    from strategies.invariants import tree_problems

    config = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=6, seed=1)
    request = RunRequest(Q, config, model="smollm2-135m", prm="arithmetic", compare=False)
    monkeypatch.setenv("THINKTREE_MAX_RUN_TOKENS", "60")
    (tree,) = deque(stream_run(request), maxlen=1)
    assert tree.stopped == "token limit (60 tokens)" and tree.answer is None
    assert len(tree.nodes) > 1 and tree_problems(tree) == []
    monkeypatch.delenv("THINKTREE_MAX_RUN_TOKENS")
    (tree,) = deque(stream_run(request), maxlen=1)
    assert tree.done and not tree.stopped


def test_without_llama_cpp_a_gguf_model_says_how_to_build_it(monkeypatch):
    """A machine where the build failed: picking an offline model is a message naming what is
    missing, and nothing else breaks."""
    from backend.loading.failures import ModelLoadError
    from backend.runtime import ModelPool

    def missing():
        raise native.LlamaUnavailable(
            f"llama.cpp is not available (ImportError): {native.BUILD_HINT}."
        )

    monkeypatch.setattr(native, "lib", missing)
    with pytest.raises(ModelLoadError, match=r"smollm2-135m runs in llama\.cpp.*cmake and a C\+\+"):
        ModelPool().runtime("smollm2-135m", "arithmetic")


def test_token_log_probabilities_of_a_written_step(policy, engine):
    """The policy's own confidence in a text (a verifier without training): one log-probability
    per token of each step, none above 0, the same when read again, and higher for what the
    model wrote greedily than for the same words shuffled."""
    eng = fresh(policy, engine)
    (step,) = eng.next_steps(Q, [[]], 1, GREEDY)[0]
    words = step.text.split()
    shuffled = " ".join(words[::-1]) + "\n\n"
    first = eng.token_logprobs(Q, [step.text, shuffled])
    assert [len(x) for x in first] == [len(eng.tokenizer.encode(t)) for t in (step.text, shuffled)]
    assert all((x <= 0).all() for x in first)
    again = eng.token_logprobs(Q, [step.text, shuffled])
    np.testing.assert_allclose(first[0], again[0])
    assert first[0].mean() > eng.token_logprobs(Q, [shuffled])[0].mean()
