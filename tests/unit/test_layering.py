"""The import rules of pnc_cli, checked by parsing every module with ``ast`` (nothing is imported).

Layers, one direction (README "How the code is organised"):

    5  cli.*                 typer / rich live here and only here
    4  api.*                 orchestration: read files, call algorithms, write files
    3  cloned_model, clone_training, search, ranking           algorithms that combine others
    2  surrogate, adapter, selector, zest, training, metrics, losses   algorithms on tensors
    1  fileio, registry, architectures, checkpoint, data, delta, surrogate_file, search_file   IO and structure
    0  errors, progress, config, device, the package __init__

A module imports only modules of a lower or equal layer, and the intra-package import graph has no
cycles (so equal-layer imports are fine as long as they go one way). A module missing from LAYER
gets a layer from its name: ``api.*`` 4, ``cli.*`` 5, ``*_file``/``*_io``/``*_format`` 1, anything
else 3 (an algorithm). Add new modules to LAYER when that guess is wrong.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "pnc_cli"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
CLI_ONLY = {"typer", "rich", "click"}

LAYER: dict[str, int] = {
    "pnc_cli": 0,
    "pnc_cli.errors": 0,
    "pnc_cli.progress": 0,
    "pnc_cli.config": 0,
    "pnc_cli.device": 0,
    "pnc_cli.fileio": 1,
    "pnc_cli.registry": 1,
    "pnc_cli.architectures": 1,
    "pnc_cli.checkpoint": 1,
    "pnc_cli.data": 1,
    "pnc_cli.delta": 1,
    "pnc_cli.surrogate_file": 1,
    "pnc_cli.search_file": 1,
    "pnc_cli.surrogate": 2,
    "pnc_cli.adapter": 2,
    "pnc_cli.selector": 2,
    "pnc_cli.zest": 2,
    "pnc_cli.training": 2,
    "pnc_cli.metrics": 2,
    "pnc_cli.losses": 2,
    "pnc_cli.cloned_model": 3,
    "pnc_cli.clone_training": 3,
    "pnc_cli.search": 3,
    "pnc_cli.ranking": 3,
    "pnc_cli.api": 4,
    "pnc_cli.cli": 5,
    "pnc_cli.__main__": 5,
}


def layer_of(module: str) -> int:
    if module in LAYER:
        return LAYER[module]
    if module.startswith("pnc_cli.api."):
        return 4
    if module.startswith("pnc_cli.cli."):
        return 5
    if module.endswith(("_file", "_io", "_format")):
        return 1
    return 3


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # an absolute dotted name (external package or pnc_cli module)
    line: int
    type_only: bool  # inside ``if TYPE_CHECKING:``


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path) -> list[Import]:
    """Every import statement in the module (function-level ones included), made absolute."""
    modules = all_modules()
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, node.lineno, type_only) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"  # ``from . import models`` names a module
                found.append(Import(module, sub if sub in modules else base, node.lineno, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def intra_package(target: str, modules: dict[str, Path]) -> str | None:
    """The pnc_cli module an import refers to (longest existing prefix), or None if external."""
    if target != PACKAGE and not target.startswith(PACKAGE + "."):
        return None
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def graph(*, include_type_only: bool) -> dict[str, set[str]]:
    modules = all_modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, p in modules.items():
        for imp in imports_of(m, p):
            if imp.type_only and not include_type_only:
                continue
            tgt = intra_package(imp.target, modules)
            if tgt is not None and tgt != m:
                edges[m].add(tgt)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = dfs(start)
            if cycle:
                return cycle
    return None


# --- the rules ----------------------------------------------------------------------------------------


def test_modules_are_found() -> None:
    modules = all_modules()
    for name in (
        "pnc_cli",
        "pnc_cli.errors",
        "pnc_cli.checkpoint",
        "pnc_cli.api.models",
        "pnc_cli.cli._common",
    ):
        assert name in modules


def test_cli_frameworks_only_in_cli() -> None:
    bad = []
    for m, p in all_modules().items():
        if m == "pnc_cli.cli" or m.startswith("pnc_cli.cli."):
            continue
        for imp in imports_of(m, p):
            if imp.target.split(".")[0] in CLI_ONLY:
                bad.append(f"{p.relative_to(ROOT.parent)}:{imp.line} imports {imp.target}")
    assert not bad, "typer/rich/click belong to pnc_cli/cli only:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph(include_type_only=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_go_down_the_layers() -> None:
    modules = all_modules()
    bad = []
    for m, p in modules.items():
        for imp in imports_of(m, p):
            tgt = intra_package(imp.target, modules)
            if tgt is None or tgt == m:
                continue
            if layer_of(tgt) > layer_of(m):
                bad.append(
                    f"{p.relative_to(ROOT.parent)}:{imp.line}: {m} (layer {layer_of(m)}) imports "
                    f"{tgt} (layer {layer_of(tgt)})"
                )
    assert not bad, "imports must go to a lower or equal layer (see LAYER in this file):\n" + "\n".join(bad)


def test_library_code_does_not_print() -> None:
    bad = []
    for m, p in all_modules().items():
        if m == "pnc_cli.cli" or m.startswith("pnc_cli.cli."):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{p.relative_to(ROOT.parent)}:{node.lineno}")
    assert not bad, "library code reports through Progress/logging, never print():\n" + "\n".join(bad)


def test_no_pickle_anywhere() -> None:
    """Files are safetensors only: no torch.load/torch.save, pickle, or allow_pickle=True in the package."""
    banned_modules = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
    bad = []
    for m, p in all_modules().items():
        tree = ast.parse(p.read_text())
        for imp in imports_of(m, p):
            if imp.target.split(".")[0] in banned_modules:
                bad.append(f"{p.name}:{imp.line} imports {imp.target}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "save")
                and ast.unparse(node.value) == "torch"
            ):
                bad.append(f"{p.name}:{node.lineno} uses torch.{node.attr}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    bad.append(f"{p.name}:{node.lineno} allow_pickle is not False")
    assert not bad, "\n".join(bad)


# --- the checker itself ------------------------------------------------------------------------------


def test_relative_imports_resolve(tmp_path: Path) -> None:
    node = ast.parse("from ..errors import X").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("pnc_cli.api.models", False, node) == "pnc_cli.errors"
    assert _resolve("pnc_cli.api", True, node) == "pnc_cli.errors"
    node = ast.parse("from . import models").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("pnc_cli.cli", True, node) == "pnc_cli.cli"


def test_graph_sees_known_edges() -> None:
    edges = graph(include_type_only=True)
    assert "pnc_cli.fileio" in edges["pnc_cli.checkpoint"]
    assert "pnc_cli" in edges["pnc_cli.checkpoint"]  # from . import __version__
    assert "pnc_cli.cli.models" in edges["pnc_cli.cli"]  # from . import models
    assert "pnc_cli.api" in edges["pnc_cli.cli.models"]  # from .. import api
    assert "pnc_cli.errors" in edges["pnc_cli.adapter"]  # absolute: from pnc_cli.errors import ...


def test_find_cycle_detects_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("pnc_cli.api.whatever", 4),
        ("pnc_cli.cli.clone", 5),
        ("pnc_cli.new_file", 1),
        ("pnc_cli.insertion", 3),
    ],
)
def test_unknown_modules_get_a_layer_by_name(module: str, layer: int) -> None:
    assert layer_of(module) == layer
