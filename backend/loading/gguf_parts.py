"""GGUF files that ship split across data-only wheels: find the parts, assemble them once, check them.

Each part wheel holds one `<module>/data/partNN.bin`; the parts, concatenated in order, are one
GGUF (../shared/OFFLINE_MODELS.md). The part modules are located without being imported (their
`__init__` is someone else's code). The assembled file goes into the model cache through a
temporary sibling and counts only once its size, its sha256 and its GGUF header (architecture,
model name) are what the catalog says; a mismatch is an error that names the file and loads
nothing. A stamp beside it records the check (and the file's size and time), so later starts
trust the file as long as it is the one that was checked.

    python -m backend.loading.gguf_parts assemble    # every catalog model whose parts are installed
    python -m backend.loading.gguf_parts status      # exit 0 when every parted model is assembled
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from backend import catalog as model_catalog

log = logging.getLogger(__name__)

CHUNK = 1 << 24  # bytes read at a time while copying and hashing
INSTALL_HINT = "install it with `bash scripts/setup.sh` (without --small)"


class ModelNotInstalled(ValueError):
    """A catalog model whose files are not on this machine (a ValueError: the app shows it)."""


@dataclass(frozen=True)
class PartedGGUF:
    """One catalog model's split GGUF, as assets/models.json describes it."""

    name: str  # the catalog name; the assembled file is `<name>.gguf`
    parts: tuple[str, ...]  # the part modules, in order
    size: int  # bytes of the assembled file
    sha256: str
    architecture: str  # the header's general.architecture
    title: str  # the header's general.name

    @classmethod
    def of(cls, name: str) -> PartedGGUF | None:
        """The split GGUF of catalog policy `name`, or None when it has none."""
        gguf = model_catalog.get(name, "policy").gguf
        if not gguf or "parts" not in gguf:
            return None
        modules = tuple(gguf["parts"].format(i) for i in range(1, int(gguf["count"]) + 1))
        return cls(
            name, modules, int(gguf["size"]), gguf["sha256"], gguf["architecture"], gguf["title"]
        )

    def part_files(self) -> list[Path] | None:
        """Each part module's data file, in order; None when any part is not installed."""
        files = []
        for module in self.parts:
            spec = importlib.util.find_spec(module)  # finds it without running its __init__
            if spec is None or not spec.submodule_search_locations:
                return None
            folder = Path(next(iter(spec.submodule_search_locations))) / "data"
            found = sorted(folder.glob("part*.bin"))
            if len(found) != 1:
                return None
            files.append(found[0])
        return files


def gguf_dir(cache_dir: Path) -> Path:
    return cache_dir / "gguf"


def assembled(model: PartedGGUF, cache_dir: Path) -> Path | None:
    """The checked, assembled file of `model` in the cache, or None when there is none yet.

    A file whose stamp does not match it (touched, copied, restored; a stamp lost in a crash) is
    checked again from its bytes, and stamped when it passes: the parts may be long gone.
    """
    path = gguf_dir(cache_dir) / f"{model.name}.gguf"
    if not path.is_file():
        return None
    stat = path.stat()
    if _read_stamp(path) == _stamp_data(model, stat.st_size, stat.st_mtime_ns):
        return path
    if stat.st_size != model.size or file_sha256(path) != model.sha256:
        return None
    try:
        check_header(path, model)
    except ValueError:
        return None
    _write_stamp(path, model)
    return path


def installed(name: str, cache_dir: Path) -> bool:
    """Whether catalog policy `name` can load here without a hub: it has no parted GGUF (it is
    embedded or a hub model), or its GGUF is assembled, or its part wheels are installed."""
    parted = PartedGGUF.of(name)
    return parted is None or assembled(parted, cache_dir) is not None or bool(parted.part_files())


def assemble(model: PartedGGUF, cache_dir: Path) -> Path:
    """The assembled file of `model`, concatenating its installed parts into the cache once.

    Raises ModelNotInstalled when a part is missing, ValueError when the result's size, sha256
    or header is not the catalog's (nothing is left behind then).
    """
    done = assembled(model, cache_dir)
    if done is not None:
        return done
    files = model.part_files()
    if files is None:
        raise ModelNotInstalled(f"The model {model.name!r} is not installed: {INSTALL_HINT}.")
    target = gguf_dir(cache_dir) / f"{model.name}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in files:
                with part.open("rb") as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ValueError(
                f"The parts of {model.name!r} ({files[0].parent.parent.name} ... "
                f"{files[-1].parent.parent.name}) assemble to {size:,} bytes with sha256 "
                f"{digest.hexdigest()}, not the catalog's {model.size:,} bytes and "
                f"{model.sha256}: refusing to load {target.name}; reinstall the parts."
            )
        check_header(tmp, model)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(target, model)
    log.info("assembled %s from %d parts", target, len(files))
    return target


def check_header(path: Path, model: PartedGGUF) -> None:
    """ValueError naming the file unless its GGUF header has the catalog's architecture and name."""
    from gguf import GGUFReader  # reads the header and maps the file; no weights are loaded

    try:
        fields = GGUFReader(path).fields
        found = {key: fields[key].contents() for key in ("general.architecture", "general.name")}
    except Exception as err:
        raise ValueError(f"{path.name} is not a readable GGUF file: {err}") from err
    want = {"general.architecture": model.architecture, "general.name": model.title}
    if found != want:
        raise ValueError(f"{path.name}: its GGUF header says {found}, the catalog {want}.")


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".checked")


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(_stamp(path).read_text())
    except (OSError, ValueError):  # missing, or cut short by a crash: not a stamp
        return None


def _write_stamp(path: Path, model: PartedGGUF) -> None:
    stat = path.stat()
    tmp = _stamp(path).with_name(f".{_stamp(path).name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(_stamp_data(model, stat.st_size, stat.st_mtime_ns)))
    os.replace(tmp, _stamp(path))  # whole or not at all


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temps(target: Path) -> None:
    """Delete temporary copies of `target` left by processes that died (each may be GBs)."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
        try:
            os.kill(int(pid), 0)  # signal 0 only checks that the process exists
        except (ValueError, ProcessLookupError):
            log.info("removing stale temporary copy %s", tmp)
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, owned by someone else


def _stamp_data(model: PartedGGUF, size: int, mtime_ns: int) -> dict:
    return {"sha256": model.sha256, "size": size, "mtime_ns": mtime_ns}


def parted_models() -> list[PartedGGUF]:
    found = (PartedGGUF.of(name) for name in model_catalog.catalog().names("policy"))
    return [m for m in found if m is not None]


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cache = model_catalog.models_cache_dir()
    if argv[:1] == ["status"]:
        missing = [m.name for m in parted_models() if assembled(m, cache) is None]
        print("assembled" if not missing else f"not assembled: {', '.join(missing)}")
        return 1 if missing else 0
    if argv[:1] == ["assemble"]:
        for model in parted_models():
            try:
                print(f"{model.name}: {assemble(model, cache)}")
            except ModelNotInstalled:
                print(f"{model.name}: parts not installed, skipped")
            except ValueError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
        return 0
    print("usage: python -m backend.loading.gguf_parts assemble|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
