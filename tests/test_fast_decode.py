"""The lean decoder (backend/kernels/fast_decode.py) computes what the model's own forward computes."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.cache_utils import Cache, DynamicCache

from backend.engine import SlabLayer, StepEngine
from backend.kernels import fast_decode, small_batch
from strategies.protocols import STEP_DELIMITER, Sampling

PREFIX = [5, 17, 42, 99, 7, 3, 250, 31]  # shared by every row, as a question's prompt is
SUFFIXES = [[], [12], [8, 9, 10], [200, 1]]  # each row's own tokens after it
NEXT = [4, 77, 150, 60]  # the token each row feeds now (its "pending" one)


def tiny(family: str, dtype=torch.float32, **extra):
    torch.manual_seed(0)
    common = dict(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    common.update(extra)
    if family == "qwen2":  # q/k/v with biases
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.to(dtype).eval()


def row_kv(model, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of shape (heads, len(ids), dim), from the model's own forward."""
    cache = DynamicCache()
    model(torch.tensor([ids]), past_key_values=cache, use_cache=True)
    return [(layer.keys[0], layer.values[0]) for layer in cache.layers]


def batch(model, skip: int):
    """The rows as a left-padded slab without their first `skip` positions; mask; positions."""
    kvs = [row_kv(model, PREFIX + s) for s in SUFFIXES]
    lengths = [len(PREFIX) + len(s) - skip for s in SUFFIXES]
    width = max(lengths)
    layers = []
    for i in range(model.config.num_hidden_layers):
        k0 = kvs[0][i][0]
        k = k0.new_zeros(len(kvs), k0.shape[0], width + 4, k0.shape[2])
        v = torch.zeros_like(k)
        for j, kv in enumerate(kvs):
            k[j, :, width - lengths[j] : width] = kv[i][0][:, skip:]
            v[j, :, width - lengths[j] : width] = kv[i][1][:, skip:]
        layers.append(SlabLayer(k, v, width))
    mask = torch.zeros(len(kvs), width + 1, dtype=torch.long)
    for j, n in enumerate(lengths):
        mask[j, width - n :] = 1
    pos = torch.tensor([len(PREFIX) + len(s) for s in SUFFIXES])[:, None]
    return layers, mask, pos


def stock_logits(model, rows=slice(None)):
    layers, mask, pos = batch(model, 0)
    with torch.inference_mode():
        return model(
            input_ids=torch.tensor(NEXT)[:, None][rows],
            attention_mask=mask[rows],
            position_ids=pos[rows],
            past_key_values=Cache(layers=[_rows(lay, rows) for lay in layers]),
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]


def lean_logits(decoder, model, shared: bool, rows=slice(None)):
    skip = len(PREFIX) if shared else 0
    layers, mask, pos = batch(model, skip)
    layers = [_rows(lay, rows) for lay in layers]
    if shared:
        for lay, (k, v) in zip(layers, row_kv(model, PREFIX)):
            lay.prefix = (k, v)
    with torch.inference_mode():
        return decoder(torch.tensor(NEXT)[:, None][rows], pos[rows], layers, mask[rows])[:, -1]


def _rows(layer: SlabLayer, rows) -> SlabLayer:
    return SlabLayer(layer.k_slab[rows].clone(), layer.v_slab[rows].clone(), layer.length)


@pytest.mark.parametrize(
    "family,extra",
    [("llama", {}), ("llama", {"attention_bias": True}), ("qwen2", {})],
    ids=["llama", "llama-biases", "qwen2"],
)
@pytest.mark.parametrize("shared", [False, True], ids=["whole-slab", "shared-prefix"])
def test_matches_the_models_own_forward(family, extra, shared):
    model = tiny(family, **extra)
    decoder = fast_decode.FastDecoder.build(model)
    assert decoder is not None
    ref = stock_logits(model)
    got = lean_logits(decoder, model, shared)
    assert got.shape == ref.shape == (len(NEXT), 300)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_weights_are_fused_into_views_not_copies():
    model = tiny("llama")
    before = stock_logits(model)
    decoder = fast_decode.FastDecoder.build(model)
    att = model.model.layers[0].self_attn
    fused = decoder.layers[0][1].weight
    for proj in (att.q_proj, att.k_proj, att.v_proj):  # views of the one q/k/v matrix
        assert proj.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
    assert fused.shape == (64 + 2 * 32, 64)
    assert torch.equal(stock_logits(model), before)  # the model's own forward is unchanged


def test_a_decoder_built_without_packing_keeps_no_second_copy_and_the_same_logits():
    """The pool's second model (the 1.5B judge and bigger model) is built with pack=False: no
    oneDNN copy of its bf16 weights, the same logits as the packed decoder."""
    model = tiny("llama", torch.bfloat16, tie_word_embeddings=True)
    plain = fast_decode.FastDecoder.build(model, pack=False)
    assert plain is not None and not plain.packed
    assert all(lin.packed is None for lin in plain.linears())
    packed = fast_decode.FastDecoder(model)
    assert packed.packed == fast_decode.can_pack()
    got = lean_logits(plain, model, True).float()
    ref = lean_logits(packed, model, True).float()
    assert (got - ref).abs().max() <= 0.02 * ref.abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_int8_small_batches_and_the_models_dtype_for_large_ones_match_the_model(dtype):
    """bf16, or fp32 where "auto" keeps it (a CPU without bf16 instructions): the same copies."""
    model = tiny("llama", dtype, tie_word_embeddings=True)
    small_batch.attach(model, rows=2)
    decoder = fast_decode.FastDecoder.build(model)
    assert decoder is not None and decoder.layers[0][1].rows == 2
    assert decoder.head(torch.randn(1, 64, dtype=dtype)).dtype == dtype
    for rows in (slice(0, 1), slice(0, 2), slice(None)):  # int8, int8, the model's weights
        ref = stock_logits(model, rows).float()
        got = lean_logits(decoder, model, True, rows).float()
        assert (got - ref).abs().max() <= 0.02 * ref.abs().max()
        assert got.argmax(-1).equal(ref.argmax(-1))


def test_the_models_own_forward_is_unchanged_with_4_bit_small_batches():
    """Fusing must leave every layer's own low-bit copy intact: the engine still prefills short
    texts (a few tokens: rows <= 8, the 4-bit path) through the model's own forward."""
    from tests.test_models import q4_1_layers

    def four_bit(**shape):
        model = tiny("llama", torch.bfloat16, tie_word_embeddings=True, **shape)
        q4_1_layers(model)
        small_batch.attach(model)
        return model

    # k and v of 32 rows: their packed 4-bit rows cannot be joined (torch packs blocks of 64),
    # so the fused q/k/v has no low-bit path; gate/up (128 rows each) keep theirs
    decoder = fast_decode.FastDecoder.build(four_bit())
    assert decoder.layers[0][1].rows == 0 and decoder.layers[0][4].kind == "int4"
    # head_dim 64, one kv head: q 128 rows, k and v 64: all joinable
    model = four_bit(hidden_size=128, num_attention_heads=2, num_key_value_heads=1,
                     intermediate_size=256)  # fmt: skip
    assert model.model.layers[0].self_attn.q_proj.kind == "int4"
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        before = [model(ids[:, :n]).logits for n in (1, 3, 5)]
        decoder = fast_decode.FastDecoder.build(model)
        after = [model(ids[:, :n]).logits for n in (1, 3, 5)]
    assert decoder is not None and decoder.layers[0][1].kind == "int4"
    assert decoder.layers[0][1].rows == small_batch.INT4_ROWS
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    # and the lean decoder's fused 4-bit path computes the same step
    got = lean_logits(decoder, model, True, slice(0, 2)).float()
    ref = stock_logits(model, slice(0, 2)).float()
    assert (got - ref).abs().max() <= 0.02 * ref.abs().max()
    assert got.argmax(-1).equal(ref.argmax(-1))


def test_unsupported_models_get_no_lean_decoder(monkeypatch):
    assert fast_decode.FastDecoder.build(tiny("llama", hidden_act="gelu")) is None
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).eval()
    assert fast_decode.FastDecoder.build(gpt2) is None
    monkeypatch.setenv("THINKTREE_FAST_DECODE", "0")
    assert fast_decode.for_model(tiny("llama")) is None


@pytest.mark.model
def test_engine_steps_are_the_same_with_the_models_own_forward(policy, engine, monkeypatch):
    """The embedded model (fp32), two iterations with pruning and speculation: the lean decoder
    with the prompt as a shared prefix (and, for the last rows of a batch, copied back into
    their own rows) writes the same steps as the model's own forward."""
    from backend.engine import batch as batch_module

    unshared = []
    real_unshare = batch_module.unshare
    monkeypatch.setattr(
        batch_module,
        "unshare",
        lambda layers, slot, mask: unshared.append(len(slot)) or real_unshare(layers, slot, mask),
    )
    assert engine.fast is not None
    plain = StepEngine(policy.model, policy.tokenizer, engine.template)
    plain.fast = None
    q = "Ann has 3 bags of 9 apples and eats 4. How many apples are left?"
    sampling = Sampling(seed=11, max_step_tokens=40)
    to_end = Sampling(seed=12, to_end=True, max_solution_tokens=100)
    runs = []
    for eng in (engine, plain):
        first = [s.text for s in eng.next_steps(q, [[]], 4, sampling)[0]]
        kept = [[s] for s in first if STEP_DELIMITER in s][:2]
        second = eng.next_steps(q, kept, 2, sampling)
        # written to the end (no speculation): rows end one by one and the batch shrinks
        third = eng.next_steps(q, kept[:1], 4, to_end)[0]
        runs.append((first, [[s.text for s in row] for row in second], [s.text for s in third]))
    assert runs[0] == runs[1]
    assert unshared and max(unshared) <= batch_module.UNSHARE_ROWS
    # the rows decoded with the shared prefix keep only their own tokens' KV, and the prompt's
    # KV once: every stored state points at the same prompt tensors
    prompt = engine.store[(q, ())]
    split = [s for (question, key), s in engine.store.items() if question == q and key]
    assert split and all(s.prefix is not None for s in split)
    for s in split:
        assert s.kv[0][0].shape[1] == len(s.ids) - prompt.prompt_len
        assert s.prefix[0][0].data_ptr() == prompt.kv[0][0].data_ptr()


def test_bf16_weights_are_read_in_onednns_layout_with_the_same_results(monkeypatch):
    """bf16 layers keep a copy of their weights reordered once for oneDNN's linear kernel (a
    plain bf16 linear reorders them at every call); it computes the same bits. On a CPU where
    oneDNN cannot pack bf16 (no bf16 instructions, or ONEDNN_MAX_CPU_ISA=AVX2), nothing is
    packed and the plain linear gives the results."""
    if not fast_decode.packing_enabled():
        pytest.skip("this torch build has no oneDNN linear")
    model = tiny("qwen2", torch.bfloat16)  # biases on q/k/v too
    decoder = fast_decode.FastDecoder.build(model)
    linears = decoder.linears()
    assert len(linears) == 4 * len(decoder.layers) + 1  # q/k/v, o, gate/up, down; the head
    # the feature's path where this CPU has it, the fallback where it does not
    assert all((lin.packed is not None) is fast_decode.can_pack() for lin in linears)
    assert decoder.packed is fast_decode.can_pack()
    x = torch.randn(16, 64, dtype=torch.bfloat16)
    for lin in linears[:3]:  # the fused q/k/v (with its bias), o, the fused gate/up
        want = torch.nn.functional.linear(x[:, : lin.weight.shape[1]], lin.weight, lin.bias)
        assert torch.equal(lin(x[:, : lin.weight.shape[1]]), want)
    packed = lean_logits(decoder, model, True)
    for lin in linears:
        lin.packed = None
    assert torch.equal(packed, lean_logits(decoder, model, True))
    monkeypatch.setenv("THINKTREE_PACKED_WEIGHTS", "0")
    assert fast_decode._packed(model.lm_head.weight) is None
    assert fast_decode._packed(model.lm_head.weight.float()) is None  # fp32 keeps MKL's path


def test_onednn_packs_bf16_exactly_where_the_cpu_runs_bf16():
    """Packing follows the CPU (the variables that make a machine play a smaller one included):
    oneDNN packs bf16 weights where it runs bf16, and refuses where it does not."""
    from backend import machine

    if not fast_decode.packing_enabled():
        pytest.skip("this torch build has no oneDNN linear")
    assert fast_decode.can_pack() is machine.cpu_info().onednn_bf16
