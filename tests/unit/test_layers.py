"""The layer rule, read from the source with ``ast`` (nothing is imported).

Top to bottom: ``flows`` → ``virnucpro.cli`` → ``virnucpro.orchestration`` → ``virnucpro.pipeline``
(and ``virnucpro.validation``) → ``virnucpro.models`` → ``virnucpro.domain`` → ``virnucpro.config``,
``virnucpro.errors`` and the package root. Every import statement counts, at module level or inside a
function (a lazy import upward is still upward), under ``TYPE_CHECKING`` too.

- nothing imports a module of a higher layer;
- only ``virnucpro.orchestration`` and ``flows`` import prefect;
- ``virnucpro.domain`` (and the layers below it) import no torch;
- no import cycles between modules, except those listed in ``KNOWN_CYCLES`` (to be emptied).

The checker is a function of a source root, so the tests below plant violations in a fake tree.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# (module prefix, rank); rank 0 is the top. The longest matching prefix decides; the package
# root matches only itself, so a new subpackage must be given its layer here.
LAYERS: tuple[tuple[str, int], ...] = (
    ("flows", 0),
    ("virnucpro.cli", 1),
    ("virnucpro.progress_display", 1),  # the CLI's progress bar and lines
    ("virnucpro.process_exit", 1),  # how the console entry point ends a finished command
    ("virnucpro.orchestration", 2),
    ("virnucpro.pipeline", 3),
    ("virnucpro.validation", 3),
    ("virnucpro.models", 4),
    ("virnucpro.domain", 5),
    ("virnucpro.config", 6),
    ("virnucpro.errors", 6),
    ("virnucpro", 6),  # the package root (__init__: the version), itself only
)
ROOT_PACKAGE = "virnucpro"
PREFECT_ALLOWED = ("virnucpro.orchestration", "flows")
NO_TORCH = ("virnucpro.domain", "virnucpro.config", "virnucpro.errors")
TOP_PACKAGES = ("virnucpro", "flows")

# Import cycles that exist today and are being removed. Empty this set as they go: an entry that
# is no longer a cycle fails the test too, so the set never outlives its reason.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()  # emptied: RunInfo no longer imports the engine


@dataclass(frozen=True, slots=True)
class Import:
    """One imported name: who imports it, where, and the module it resolves to."""

    importer: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path) -> dict[str, Path]:
    """Every module of ``virnucpro/`` and ``flows/`` under ``root``: {dotted name: file}."""
    found: dict[str, Path] = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            found[module_name(root, path)] = path
    return found


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, known: Iterable[str]) -> list[Import]:
    """Every import in one file, resolved to the deepest module (``from a import b`` → ``a.b``
    when ``a.b`` is a module of the tree, else ``a``). Third-party names stay as written."""
    known = set(known)
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = (
                _resolve_relative(name, is_package, node.level, node.module)
                if node.level else node.module or ""
            )
            for alias in node.names:
                deeper = f"{base}.{alias.name}"
                found.append(Import(name, deeper if deeper in known else base, path, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(name, node.args[0].value, path, node.lineno))
    return found


def _within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer_of(module: str) -> int | None:
    matches = [
        (len(prefix), rank) for prefix, rank in LAYERS
        if module == prefix or (prefix != ROOT_PACKAGE and module.startswith(prefix + "."))
    ]
    return max(matches)[1] if matches else None


def _layer_name(rank: int) -> str:
    return " / ".join(prefix for prefix, r in LAYERS if r == rank)


def all_imports(root: Path) -> list[Import]:
    modules = source_modules(root)
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def layer_violations(root: Path) -> list[str]:
    """Every broken layer rule under ``root``, one readable line each (empty: all good)."""
    modules = source_modules(root)
    problems: list[str] = []
    for name in modules:
        if layer_of(name) is None:
            problems.append(f"{modules[name]}: module {name} belongs to no layer; add it to LAYERS")
    for imp in all_imports(root):
        target_top = imp.target.split(".")[0]
        if target_top == "prefect" and not _within(imp.importer, PREFECT_ALLOWED):
            problems.append(f"{imp.where()}: {imp.importer} imports {imp.target}; only "
                            f"{' and '.join(PREFECT_ALLOWED)} may import prefect")
        if target_top == "torch" and _within(imp.importer, NO_TORCH):
            problems.append(f"{imp.where()}: {imp.importer} imports {imp.target}; "
                            f"{', '.join(NO_TORCH)} must not import torch")
        if target_top not in TOP_PACKAGES:
            continue
        if imp.target not in modules and not any(m.startswith(imp.target + ".") for m in modules):
            problems.append(f"{imp.where()}: {imp.importer} imports {imp.target}, which does not exist")
            continue
        mine, theirs = layer_of(imp.importer), layer_of(imp.target)
        if mine is not None and theirs is not None and theirs < mine:
            problems.append(f"{imp.where()}: {imp.importer} ({_layer_name(mine)}) imports "
                            f"{imp.target} ({_layer_name(theirs)}), a layer above it")
    return problems


def import_cycles(root: Path) -> set[frozenset[str]]:
    """The sets of modules that import each other, directly or round a loop (Tarjan's SCCs).

    Edges go to modules of the tree only; importing ``a.b.c`` also runs ``a/__init__`` and
    ``a/b/__init__``, but those edges are left out (package ``__init__`` files import nothing)."""
    modules = source_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in all_imports(root):
        if imp.target in modules:
            graph[imp.importer].add(imp.target)

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def cycle_problems(root: Path, known: frozenset[frozenset[str]] = KNOWN_CYCLES) -> list[str]:
    found = import_cycles(root)
    problems = [f"import cycle between {', '.join(sorted(c))}; break it (an import inside a "
                "function still counts)" for c in found - known]
    problems += [f"KNOWN_CYCLES lists {', '.join(sorted(c))}, which is no longer a cycle; "
                 "remove the entry" for c in known - found]
    return problems


# -- the real tree ---------------------------------------------------------------------------
def test_the_package_keeps_its_layers() -> None:
    assert source_modules(REPO_ROOT).keys() >= {"virnucpro.cli", "flows.predict", "virnucpro.domain.fasta"}
    assert layer_violations(REPO_ROOT) == []


def test_the_package_has_no_import_cycles_but_the_known_ones() -> None:
    assert cycle_problems(REPO_ROOT) == []


# -- planted violations in a fake tree ---------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    base = {
        "virnucpro/__init__.py": "",
        "virnucpro/config.py": "from virnucpro.errors import ConfigError\n",
        "virnucpro/errors.py": "",
        "virnucpro/cli.py": "import click\nfrom virnucpro.pipeline.prediction import run\n",
        "virnucpro/domain/__init__.py": "",
        "virnucpro/domain/fasta.py": "import numpy as np\nfrom virnucpro.errors import InputError\n",
        "virnucpro/models/__init__.py": "",
        "virnucpro/models/esm2.py": "import torch\nfrom virnucpro.domain import fasta\n",
        "virnucpro/pipeline/__init__.py": "",
        "virnucpro/pipeline/prediction.py": "from virnucpro.models.esm2 import Esm2\n",
        "virnucpro/orchestration/__init__.py": "",
        "virnucpro/orchestration/tasks.py": "from prefect import task\nfrom virnucpro.pipeline import prediction\n",
        "flows/predict.py": "from prefect import flow\nfrom virnucpro.orchestration.tasks import x\n",
    }
    for rel, text in {**base, **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_clean_fake_tree_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {})
    assert layer_violations(root) == [] and import_cycles(root) == set()
    assert cycle_problems(root, frozenset()) == []


@pytest.mark.parametrize(
    ("rel", "text", "expected"),
    [
        pytest.param("virnucpro/domain/calls.py", "import torch.nn\n", "must not import torch", id="torch-in-domain"),
        pytest.param("virnucpro/domain/calls.py", "def f():\n    from torch import nn\n",
                     "must not import torch", id="lazy-torch-in-domain"),
        pytest.param("virnucpro/config.py", "import torch\n", "must not import torch", id="torch-in-config"),
        pytest.param("virnucpro/pipeline/stage.py", "from prefect import task\n",
                     "only virnucpro.orchestration and flows may import prefect", id="prefect-in-pipeline"),
        pytest.param("virnucpro/cli.py", "def main():\n    import prefect.client\n",
                     "may import prefect", id="lazy-prefect-in-cli"),
        pytest.param("virnucpro/models/discovery.py", "from virnucpro.pipeline.prediction import run\n",
                     "a layer above it", id="models-imports-pipeline"),
        pytest.param("virnucpro/domain/calls.py", "def f():\n    from virnucpro.models import esm2\n",
                     "(virnucpro.domain) imports virnucpro.models.esm2 (virnucpro.models)", id="lazy-upward"),
        pytest.param("virnucpro/pipeline/work.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from virnucpro.orchestration.tasks import x\n", "a layer above it", id="type-checking-upward"),
        pytest.param("virnucpro/orchestration/batch.py", "import virnucpro.cli\n", "a layer above it",
                     id="orchestration-imports-cli"),
        pytest.param("virnucpro/cli.py", "from flows import predict\n", "a layer above it", id="cli-imports-flows"),
        pytest.param("virnucpro/errors.py", "from virnucpro.domain.fasta import read\n", "a layer above it",
                     id="errors-imports-domain"),
        pytest.param("virnucpro/pipeline/run.py", "from . import prediction\nfrom ..orchestration import tasks\n",
                     "imports virnucpro.orchestration.tasks", id="relative-upward"),
        pytest.param("virnucpro/models/x.py", "import importlib\nimportlib.import_module('virnucpro.cli')\n",
                     "imports virnucpro.cli", id="import-module-upward"),
        pytest.param("virnucpro/helpers/util.py", "", "belongs to no layer", id="unknown-package"),
        pytest.param("virnucpro/models/x.py", "from virnucpro.pipline import y\n", "does not exist", id="typo"),
    ],
)
def test_a_planted_violation_is_caught(tmp_path: Path, rel: str, text: str, expected: str) -> None:
    root = _tree(tmp_path, {rel: text})
    problems = layer_violations(root)
    assert len(problems) == 1 and expected in problems[0], problems
    assert rel in problems[0]  # the line names the file to fix


def test_planted_cycles_are_caught_and_known_ones_must_still_exist(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "virnucpro/pipeline/a.py": "from virnucpro.pipeline import b\n",
        "virnucpro/pipeline/b.py": "def f():\n    from virnucpro.pipeline.c import g\n",
        "virnucpro/pipeline/c.py": "from virnucpro.pipeline.a import h\n",
        "virnucpro/domain/me.py": "import virnucpro.domain.me\n",
    })
    abc = frozenset({"virnucpro.pipeline.a", "virnucpro.pipeline.b", "virnucpro.pipeline.c"})
    me = frozenset({"virnucpro.domain.me"})
    assert import_cycles(root) == {abc, me}
    assert layer_violations(root) == []  # a cycle inside one layer breaks no layer rule
    (unknown,) = cycle_problems(root, frozenset({abc}))
    assert "import cycle between virnucpro.domain.me" in unknown
    stale = frozenset({"virnucpro.pipeline.prediction", "virnucpro.models.esm2"})
    assert any("no longer a cycle" in p for p in cycle_problems(root, frozenset({abc, me, stale})))
    assert cycle_problems(root, frozenset({abc, me})) == []
