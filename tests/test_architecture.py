"""The package's layers: no module imports a higher layer (nor a peer on its rank), and no import cycle.

Every `import` and `from ... import` of a module counts, at module level and inside functions alike, relative or
absolute. The layers, lowest first (docs/architecture.md):

    0  _version, paths, metrics, plots     leaves: import nothing from the package
    1  models
    2  data
    3  corpus, engine                      the same rank: neither imports the other
    4  outputs
    5  serve                               the scoring service (`gamma-iqa serve`, the optional extra)
    6  cli
    7  the package root (__init__, __main__)

Inside one unit (a subpackage, or a top-level module) imports are free: a subpackage's `__init__` re-exports its
submodules, and a submodule uses its siblings; only cycles are checked there.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gamma_iqa"
RANKS = {
    "_version": 0,
    "paths": 0,
    "metrics": 0,
    "plots": 0,
    "models": 1,
    "data": 2,
    "corpus": 3,
    "engine": 3,
    "outputs": 4,
    "serve": 5,
    "cli": 6,
    "": 7,  # the package root: __init__ and __main__
}


class Import(NamedTuple):
    """One import of a package module by another: `source` imports `target` at `where` (file:line, from src/)."""

    source: str
    target: str
    where: str


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `package` under `root` (a package is its __init__)."""
    out = {}
    for file in sorted((root / package).rglob("*.py")):
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = file
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that `name` (a dotted module or module.attribute) lives in; None outside."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The package modules that one import statement of module `source` loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            # `from .x import y` in module a.b.c is a.b.x; in package a.b (its __init__) it is a.b.x as well.
            anchor = source if is_package else source.rpartition(".")[0]
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{node.module}" if node.module else anchor
        else:
            base = node.module or ""
        # `from pkg import sub` loads the submodule pkg.sub when there is one, else an attribute of pkg.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return {t for t in (_resolve(n, modules) for n in names) if t is not None}


def imports(root: Path, package: str = PACKAGE) -> list[Import]:
    """Every import of a package module by a package module under `root`, at any depth of the syntax tree."""
    modules = module_names(root, package)
    found = []
    for source, file in modules.items():
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in sorted(_targets(node, source, file.name == "__init__.py", modules)):
                    found.append(Import(source, target, f"{file.relative_to(root).as_posix()}:{node.lineno}"))
    return found


def unit(module: str, package: str = PACKAGE) -> str:
    """The layer unit of a module: its subpackage or top-level module ('' for the package root and __main__)."""
    first = module[len(package) + 1 :].split(".")[0]
    return "" if first == "__main__" else first


def upward_imports(found: list[Import], package: str = PACKAGE) -> list[str]:
    """One message per import of a higher layer or of another unit on the same rank, and per module without a layer."""
    problems = []
    for imp in found:
        src, dst = unit(imp.source, package), unit(imp.target, package)
        if src == dst:
            continue
        for u in (src, dst):
            if u not in RANKS:
                problems.append(f"{imp.where}: module {package}.{u} has no layer (add it to RANKS)")
        if src in RANKS and dst in RANKS and RANKS[dst] >= RANKS[src]:
            kind = "a higher layer" if RANKS[dst] > RANKS[src] else "a peer on the same rank"
            problems.append(f"{imp.where}: {imp.source} imports {kind}, {imp.target}")
    return sorted(set(problems))


def import_cycles(found: list[Import]) -> list[str]:
    """One message per import cycle (a back edge of a depth-first search), naming each import on it by file:line."""
    graph: dict[str, list[Import]] = {}
    for imp in found:
        graph.setdefault(imp.source, []).append(imp)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[Import] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        for imp in graph.get(module, []):
            if state.get(imp.target) == 1:
                start = next((i for i, e in enumerate(path) if e.source == imp.target), len(path))
                loop = [*path[start:], imp]
                cycles.append(" -> ".join(f"{e.source} ({e.where})" for e in loop) + f" -> {imp.target}")
            elif imp.target not in state:
                path.append(imp)
                visit(imp.target)
                path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_module_imports_a_higher_layer():
    found = imports(SRC)
    # The walk sees the real package (not an empty or wrong folder), imports inside functions included.
    assert {("gamma_iqa.engine.scoring", "gamma_iqa.models.base"), ("gamma_iqa.cli", "gamma_iqa.engine.train")} <= {
        (imp.source, imp.target) for imp in found
    }
    problems = upward_imports(found)
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(imports(SRC))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_module_has_a_layer():
    units = {unit(m) for m in module_names(SRC, PACKAGE)}
    assert units <= set(RANKS), f"modules without a layer: {sorted(units - set(RANKS))}"


# ---- the checker itself ------------------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        file = root / PACKAGE / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    return root


@pytest.fixture
def clean_files() -> dict[str, str]:
    """A small package in layer order, with the import forms the real one uses."""
    return {
        "__init__.py": "from . import metrics\nfrom .models import Model\nfrom .engine import scoring\n",
        "__main__.py": "from .cli import main\n",
        "metrics.py": "import math\n",
        "paths.py": "",
        "models/__init__.py": "from .base import Model\nfrom . import gamma\n",
        "models/base.py": "from ..paths import __name__ as p\n",
        "models/gamma.py": "from .base import Model\nfrom gamma_iqa.models import base\n",
        "engine/__init__.py": "",
        "engine/scoring.py": "from ..models.base import Model\nimport gamma_iqa.metrics\n",
        "corpus/__init__.py": "",
        "corpus/pipeline.py": "def f():\n    from gamma_iqa.models import gamma\n",
        "cli.py": "from . import engine\nfrom .engine.scoring import x\n",
    }


def test_checker_passes_a_clean_tree(tmp_path, clean_files):
    found = imports(_tree(tmp_path, clean_files))
    assert ("gamma_iqa.engine.scoring", "gamma_iqa.models.base") in {(i.source, i.target) for i in found}
    assert ("gamma_iqa.models", "gamma_iqa.models.gamma") in {(i.source, i.target) for i in found}
    assert upward_imports(found) == [] and import_cycles(found) == []


def test_checker_catches_an_upward_import_inside_a_function(tmp_path, clean_files):
    clean_files["models/base.py"] += "\n\ndef score():\n    from ..engine import scoring\n"
    clean_files["metrics.py"] += "from gamma_iqa.cli import main\n"
    problems = upward_imports(imports(_tree(tmp_path, clean_files)))
    assert problems == [
        "gamma_iqa/metrics.py:2: gamma_iqa.metrics imports a higher layer, gamma_iqa.cli",
        "gamma_iqa/models/base.py:5: gamma_iqa.models.base imports a higher layer, gamma_iqa.engine.scoring",
    ]


def test_checker_catches_peers_on_one_rank_and_unknown_modules(tmp_path, clean_files):
    clean_files["corpus/pipeline.py"] += "from ..engine.scoring import x\n"
    clean_files["models/base.py"] += "from gamma_iqa import extras\n"
    clean_files["extras.py"] = ""
    problems = upward_imports(imports(_tree(tmp_path, clean_files)))
    assert (
        "gamma_iqa/corpus/pipeline.py:3: gamma_iqa.corpus.pipeline imports a peer on the same rank, "
        "gamma_iqa.engine.scoring" in problems
    )
    assert "gamma_iqa/models/base.py:2: module gamma_iqa.extras has no layer (add it to RANKS)" in problems


def test_checker_catches_a_cycle_between_siblings(tmp_path, clean_files):
    clean_files["engine/a.py"] = "from . import b\n"
    clean_files["engine/b.py"] = "import os\n\n\ndef f():\n    from gamma_iqa.engine.a import g\n"
    found = imports(_tree(tmp_path, clean_files))
    assert upward_imports(found) == []  # siblings may import each other ...
    assert import_cycles(found) == [  # ... but not in a circle
        "gamma_iqa.engine.a (gamma_iqa/engine/a.py:1) -> gamma_iqa.engine.b (gamma_iqa/engine/b.py:5) -> "
        "gamma_iqa.engine.a"
    ]
