"""The model catalog: which policies and PRMs ThinkTree can run, read from assets/models.json.

Each entry names a hub repo, its prompt format, its default precision on a GPU, its license, and
the parameter counts that the memory estimate is computed from. This module imports no torch, so
the app can list models and sizes without loading anything.

Memory estimate (bytes) for P parameters, of which P16 stay 16-bit when the rest is quantized
(embeddings, an untied LM head, a PRM head; bitsandbytes quantizes only the decoder's Linear layers):
  fp32: 4 P    bf16: 2 P    int8: 1 (P - P16) + 2 P16
  nf4:  (0.5 + 1/64 + 4/(64*256)) (P - P16) + 2 P16   (one 8-bit absmax per 64-weight block and,
        with double quantization, one fp32 constant per 256 blocks)
Weights only: activations, the KV cache and the CUDA context come on top (see backend/quantization).

Only catalogued names load: a request naming anything else (a hub id, a path) is refused before
anything is read or downloaded. An operator may add models with `THINKTREE_EXTRA_MODELS`, a file
in this catalog's format whose entries join the catalog, checked like its own; they load through
the same loaders, which never run a model's remote code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CATALOG_PATH = ASSETS / "models.json"
PROMPTS_DIR = ASSETS / "prompts"
# an operator's own models, added to the catalog (docs/models.md): a file in its format
EXTRA_MODELS_ENV = "THINKTREE_EXTRA_MODELS"

Kind = Literal["policy", "prm"]
NO_PRM = "none"  # the PRM choice "no verifier": majority voting only
Family = Literal[
    "causal_lm", "offline", "judge", "value_head", "qwen_prm", "skywork", "rlhflow", "math_shepherd"
]
WeightPrecision = Literal["fp32", "bf16", "int8", "nf4"]
WEIGHT_PRECISIONS: tuple[str, ...] = get_args(WeightPrecision)
# what a user may ask for: "auto" (this machine's choice, see backend/loading/policy.py) or one
PRECISIONS: tuple[str, ...] = ("auto", *WEIGHT_PRECISIONS)
HUB_PRM_FAMILIES = ("qwen_prm", "skywork", "rlhflow", "math_shepherd")

# how a "judge" PRM combines the arithmetic checker with its model (backend/verifiers/judge.py)
COMBINES = ("veto", "fallback")
# a GGUF inside one installed package, or split across data-only part wheels
GGUF_KEYS = ({"package", "file"}, {"parts", "count", "size", "sha256", "architecture", "title"})
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # packed 4-bit weight + double-quantized block constants
_QUANTIZED_BYTES = {"int8": 1.0, "nf4": NF4_BYTES}
_FULL_BYTES = {"fp32": 4.0, "bf16": 2.0}
# A name is one short path component (an assembled GGUF file is named after it), never a
# hub id or a path: "evil/model", "../x" and "/tmp/x" can be no model's name.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
RESERVED_NAMES = ("auto", NO_PRM)  # menu choices that are no model ("auto": the catalog's pick)
# where a model downloads from: a hub repo ("org/name") or, for an operator's model, a local folder
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# what an extra models file may hold: entries, never the catalog's defaults
EXTRA_KEYS = {"description", "policies", "prms"}


def estimate_bytes(params: int, params_16bit: int, precision: str) -> int:
    """Approximate bytes of weights for `params` parameters at `precision` (formula above)."""
    if precision in _FULL_BYTES:
        return round(params * _FULL_BYTES[precision])
    if precision in _QUANTIZED_BYTES:
        return round((params - params_16bit) * _QUANTIZED_BYTES[precision] + 2 * params_16bit)
    raise ValueError(f"precision must be one of {', '.join(WEIGHT_PRECISIONS)}; got {precision!r}")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    kind: Kind
    label: str
    family: Family  # "causal_lm" for every policy; a PRM's input format and read-out
    license: str
    hub_id: str | None = None  # None: nothing to download (offline PRMs)
    prompt: str = "plain"  # policy: template in assets/prompts; PRM: "chat" or "plain"
    default_precision: str = "bf16"  # what "auto" means on a CUDA GPU
    params: int = 0  # parameters as loaded (0: adds no model)
    params_16bit: int = 0  # kept in 16-bit under quantization
    # policy: an installed package that ships a GGUF of it ({"package": ..., "file": ...})
    gguf: dict[str, str] | None = None
    short: str = ""  # a policy's name in one-line verdicts ("0.5B"); default: its catalog name
    # policy: the bigger model its answers are compared with in the explorer (a policy name)
    bigger: str | None = None
    # a "judge" PRM: the catalog policy that judges the steps (its params are the judge's), and
    # whether the arithmetic checker stands in front of it ("veto"; None: the judge alone)
    judge: str | None = None
    combine: str | None = None

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        if not NAME.fullmatch(self.name) or self.name in RESERVED_NAMES:
            raise ValueError(
                f"{where}: a name is letters, digits and . _ + - (at most 64), "
                "not a hub id, a path, 'auto' or 'none'"
            )
        if self.hub_id is not None and not (
            HUB_ID.fullmatch(self.hub_id) or Path(self.hub_id).is_absolute()
        ):
            raise ValueError(
                f"{where}: hub_id is a hub repo (org/name) or an absolute folder, "
                f"got {self.hub_id!r}"
            )
        if self.kind not in get_args(Kind):
            raise ValueError(f"{where}: kind must be policy or prm, got {self.kind!r}")
        if self.family not in get_args(Family):
            raise ValueError(f"{where}: unknown family {self.family!r}")
        if (self.kind == "policy") != (self.family == "causal_lm"):
            raise ValueError(f"{where}: a policy has family causal_lm, a PRM never does")
        if self.default_precision not in WEIGHT_PRECISIONS:
            raise ValueError(f"{where}: default_precision {self.default_precision!r} is unknown")
        if not 0 <= self.params_16bit <= self.params:
            raise ValueError(f"{where}: need 0 <= params_16bit <= params")
        if (self.family == "judge") != (self.judge is not None):
            raise ValueError(f"{where}: a judge PRM names its model in 'judge', nothing else does")
        if self.combine is not None and self.combine not in COMBINES:
            raise ValueError(f"{where}: combine is one of {COMBINES}, got {self.combine!r}")
        if self.family not in ("offline", "judge", "value_head") and not (
            self.hub_id and self.params
        ):
            raise ValueError(f"{where}: a downloadable model needs hub_id and params")
        if self.kind == "policy" and not (PROMPTS_DIR / f"{self.prompt}.json").is_file():
            raise ValueError(f"{where}: no prompt template assets/prompts/{self.prompt}.json")
        if self.gguf is not None and (self.kind != "policy" or set(self.gguf) not in GGUF_KEYS):
            raise ValueError(
                f"{where}: gguf is a policy's {{package, file}} or "
                "{parts, count, size, sha256, architecture, title}"
            )
        if self.kind == "prm" and self.prompt not in ("chat", "plain"):
            raise ValueError(f"{where}: a PRM's prompt is 'chat' or 'plain', got {self.prompt!r}")

    @property
    def short_name(self) -> str:
        return self.short or self.name

    @property
    def is_hub_prm(self) -> bool:
        return self.family in HUB_PRM_FAMILIES

    def memory_bytes(self, precision: str) -> int:
        """Approximate weight memory at `precision` (fp32/bf16/int8/nf4)."""
        return estimate_bytes(self.params, self.params_16bit, precision)

    def memory_gb(self) -> dict[str, float]:
        """Approximate weight memory in GB (10^9 bytes) at every precision, for display."""
        return {p: round(self.memory_bytes(p) / 1e9, 2) for p in WEIGHT_PRECISIONS}


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, CatalogEntry]
    default_policy: str = ""  # the embedded model: always there, what library code loads
    default_prm: str = ""
    # what the explorer, /run and the CLI start with where it is installed (app/service.py)
    showcase_policy: str = ""

    def get(self, name: str, kind: Kind | None = None) -> CatalogEntry:
        """The entry called `name` (of `kind`, if given); ValueError listing the known names."""
        entry = self.entries.get(name)
        if entry is None or (kind is not None and entry.kind != kind):
            known = ", ".join(self.names(kind))
            what = kind.upper() if kind == "prm" else (kind or "model")
            raise ValueError(f"Unknown {what} {name!r}; the catalog lists: {known}.")
        return entry

    def names(self, kind: Kind | None = None) -> tuple[str, ...]:
        """Names in catalog order, optionally of one kind."""
        return tuple(n for n, e in self.entries.items() if kind is None or e.kind == kind)

    def hub_prm_names(self) -> tuple[str, ...]:
        return tuple(n for n, e in self.entries.items() if e.is_hub_prm)

    def prm_choices(self) -> tuple[str, ...]:
        """What a user may pick as the PRM: the offline ones, NO_PRM, then the hub PRMs
        (downloaded on first use)."""
        hub = self.hub_prm_names()
        return (*(n for n in self.names("prm") if n not in hub), NO_PRM, *hub)

    def prm_label(self, name: str) -> str:
        return "No verifier" if name == NO_PRM else self.get(name, "prm").label


def _read_entries(data: dict, source: str) -> dict[str, CatalogEntry]:
    """The entries of one catalog file's "policies" and "prms" (a name appears once in it)."""
    fields_ = dataclasses.fields(CatalogEntry)
    known = {f.name for f in fields_} - {"name", "kind"}
    required = {f.name for f in fields_ if f.default is dataclasses.MISSING} - {"name", "kind"}
    entries: dict[str, CatalogEntry] = {}
    for section, kind in (("policies", "policy"), ("prms", "prm")):
        for name, fields in data.get(section, {}).items():
            if name in entries:
                raise ValueError(f"{source}: {name!r} is listed twice")
            fields = dict(fields)
            if kind == "policy":
                fields.setdefault("family", "causal_lm")
            unknown, missing = sorted(set(fields) - known), sorted(required - set(fields))
            if unknown:  # say which, rather than a TypeError
                raise ValueError(f"{source}: model {name!r} has unknown fields {unknown}")
            if missing:
                raise ValueError(f"{source}: model {name!r} needs the fields {missing}")
            try:
                entries[name] = CatalogEntry(name=name, kind=kind, **fields)
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
    return entries


def _read_extra(path: Path, catalogued: dict[str, CatalogEntry]) -> dict[str, CatalogEntry]:
    """An operator's extra models (`THINKTREE_EXTRA_MODELS`): new names only, and models that
    download (a hub repo or a local folder), not GGUF packages or offline verifiers (the code
    knows those by name)."""
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{EXTRA_MODELS_ENV}={source}: cannot read it ({err})") from None
    if not isinstance(data, dict) or set(data) - EXTRA_KEYS:
        raise ValueError(
            f"{source}: an extra models file has only {sorted(EXTRA_KEYS)}; the "
            "catalog's defaults stay assets/models.json's"
        )
    added = _read_entries(data, source)
    for name, entry in added.items():
        if name in catalogued:
            raise ValueError(f"{source}: {name!r} is a catalogued name; pick another")
        if entry.gguf is not None or entry.family == "offline":
            raise ValueError(
                f"{source}: model {name!r} must download (hub_id and params); "
                "GGUF packages and offline verifiers come with the catalog only"
            )
    return added


def load_catalog(path: Path = CATALOG_PATH, extra: Path | str | None = None) -> Catalog:
    """Read and validate a catalog file (a name may appear once across policies and PRMs), plus
    an extra models file in its format (`extra`) whose entries may not replace the catalog's."""
    data = json.loads(Path(path).read_text())
    entries = _read_entries(data, Path(path).name)
    added = _read_extra(Path(extra), entries) if extra else {}
    entries |= added
    for name, entry in list(entries.items()):
        named = {"judge": entry.judge, "bigger": entry.bigger}
        for what, other in named.items():
            if other is not None and getattr(entries.get(other), "kind", None) != "policy":
                source = str(extra) if name in added else Path(path).name
                raise ValueError(
                    f"{source}: {name!r} names {other!r} as its {what}, which is not a policy"
                )
        if entry.judge is not None:  # the judge's size is its model's: written once
            judge = entries[entry.judge]
            entries[name] = dataclasses.replace(
                entry,
                params=judge.params,
                params_16bit=judge.params_16bit,
                default_precision=judge.default_precision,
            )
    policies = [n for n, e in entries.items() if e.kind == "policy"]
    found = Catalog(
        entries,
        data.get("default_policy") or (policies[0] if policies else ""),
        data.get("default_prm", NO_PRM),
        data.get("showcase_policy") or data.get("default_policy") or "",
    )
    if policies:
        found.get(found.default_policy, "policy")  # a ValueError naming the file's policies
    if found.default_prm != NO_PRM:
        found.get(found.default_prm, "prm")
    if found.showcase_policy:
        found.get(found.showcase_policy, "policy")
    return found


@functools.cache
def catalog() -> Catalog:
    """The catalog from assets/models.json (and `$THINKTREE_EXTRA_MODELS`), read once per process."""
    return load_catalog(extra=os.environ.get(EXTRA_MODELS_ENV) or None)


def models_cache_dir() -> Path:
    """Where assembled models live: `$THINKTREE_CACHE/models`, default
    `~/.cache/thinktree/models`."""
    root = os.environ.get("THINKTREE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "thinktree") / "models"


def get(name: str, kind: Kind | None = None) -> CatalogEntry:
    """Shortcut for `catalog().get(name, kind)`."""
    return catalog().get(name, kind)
