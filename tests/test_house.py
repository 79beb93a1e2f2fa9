"""The shape of the house, checked from the code itself: no import cycle, small modules, torch
only where models are, and requirements.txt listing what the code imports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "backend", "strategies", "visualize")
# a guide, not a goal: a module's size follows from its one job, and one past this has
# likely taken on a second (split it by job, never by moving code out to stay under)
MAX_LINES = 500
# the formatter (ruff format, pyproject.toml) owns the layout; a rare hand-kept block says why
MAX_FORMAT_EXEMPTIONS = 10
# declared for what they do behind another package's back, not imported by name
USED_THROUGH_OTHERS = {
    "accelerate": "transformers needs it for device_map",
    "bitsandbytes": "transformers' BitsAndBytesConfig loads it for int8 / nf4",
}


def production_files() -> list[Path]:
    files = [ROOT / "app.py"]
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module an import in the file names, at any depth (imports inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> nx.DiGraph:
    modules = {module_name(p): p for p in production_files()}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for target in imported_names(path):
            if target in modules and target != name and not name.startswith(target + "."):
                graph.add_edge(name, target)
    return graph


def test_no_module_imports_itself_back_through_others():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_layers_point_one_way():
    """strategies/ imports nothing of the house above it; visualize/ only strategies/;
    backend/ no app/ or visualize/."""
    allowed = {
        "strategies": {"strategies"},
        "visualize": {"strategies", "visualize"},
        "backend": {"strategies", "backend"},
    }
    for source, target in import_graph().edges:
        layer = source.split(".")[0]
        if layer in allowed:
            assert target.split(".")[0] in allowed[layer], f"{source} imports {target}"


def test_no_production_module_is_oversized():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in production_files()}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_the_formatter_is_configured_not_fought():
    """`# fmt: skip` / `# fmt: off` are rare, and each says why the formatter's layout is
    worse there (text after the marker)."""
    marker = re.compile(r"#\s*fmt:\s*(skip|off)\b(.*)")
    exemptions = []
    for path in ROOT.rglob("*.py"):
        if {".venv", ".git", "runs"} & set(path.relative_to(ROOT).parts):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found = marker.search(line)
            if found:
                exemptions.append((f"{path.relative_to(ROOT)}:{number}", found.group(2).strip()))
    assert len(exemptions) <= MAX_FORMAT_EXEMPTIONS, exemptions
    assert [where for where, why in exemptions if len(why) < 10] == []


def test_only_the_backend_imports_torch_transformers_or_bitsandbytes():
    heavy = {"torch", "transformers", "bitsandbytes"}
    for path in production_files():
        roots = {name.split(".")[0] for name in imported_names(path)}
        if not module_name(path).startswith("backend"):
            assert not roots & heavy, f"{path.relative_to(ROOT)} imports {roots & heavy}"


def test_importing_the_ui_pulls_in_no_torch():
    """The first page appears before any model code loads: building the app reads no torch."""
    code = (
        "import sys; import app.ui; app.ui.build_demo(); "
        "print(sorted(m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(_canonical(re.split(r"[\[=<>~ ]", line)[0]))
    return names


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_list_what_is_imported_and_nothing_else():
    distributions = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    ours = {*PACKAGES, "app", "tests"}
    imported = set()
    for path in production_files():
        for name in imported_names(path):
            root = name.split(".")[0]
            if root in stdlib or root in ours or root == "__future__":
                continue
            if root == "spaces":  # Hugging Face ZeroGPU's own package, present only there
                continue
            imported |= {_canonical(d) for d in distributions.get(root, [root])}
    # llama-cpp-python is built for this CPU by set-up, from its own pin (scripts/build_llama.sh)
    built = _requirement_names(ROOT / "requirements-llama.txt")
    declared = _requirement_names(ROOT / "requirements.txt")
    assert imported - declared - built == set(), "imported but not in requirements.txt"
    assert declared - imported == set(USED_THROUGH_OTHERS), "declared but never imported"
    assert built <= imported
