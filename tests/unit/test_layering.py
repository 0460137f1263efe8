"""The import rules of pnc_cli, checked by parsing every module with ``ast`` (nothing is imported).

The package is split into folders that are layers (docs/architecture.md), imports going one way:

    cli/     typer / rich live here and only here
    api/     orchestration, one function per command: read files, call the method, write files
    method/  the method on tensors (pure torch): surrogate, adapter, selector, branch, head, search, ranking
    io/      files: safetensors, the pnc header, model/delta/cloned/surrogate/search files, data sources
    nets/    the architecture registry, ``Network``, base-classifier training
    core/    errors, progress, config, device, version (stdlib + torch only)

``ALLOWED`` below says which folders each folder may import; io and method are siblings that never
import each other. The intra-package import graph has no cycles.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "pnc_cli"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
CLI_ONLY = {"typer", "rich", "click"}

# Which sub-packages each sub-package may import (docs/architecture.md). ``""`` is the package root
# (``pnc_cli/__init__.py``, ``__main__``), which may import anything below it.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "nets": {"core", "nets"},
    "io": {"core", "nets", "io"},
    "method": {"core", "nets", "method"},
    "api": {"core", "nets", "io", "method", "api"},
    "cli": {"core", "nets", "io", "method", "api", "cli"},
    "": {"core", "nets", "io", "method", "api", "cli", ""},
}


def area_of(module: str) -> str:
    """The sub-package a module belongs to: ``pnc_cli.io.delta_file`` -> ``io``; the root -> ``""``."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED and (ROOT / parts[1]).is_dir():
        return parts[1]
    return ""


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
        "pnc_cli.core.errors",
        "pnc_cli.io.model_file",
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
            if tgt is None or tgt == m or tgt == PACKAGE:
                continue
            if area_of(tgt) not in ALLOWED[area_of(m)]:
                bad.append(
                    f"{p.relative_to(ROOT.parent)}:{imp.line}: {m} ({area_of(m) or 'root'}) imports {tgt}"
                )
    assert not bad, "imports must follow ALLOWED in this file (docs/architecture.md):\n" + "\n".join(bad)


def test_every_module_lives_in_a_layer_folder() -> None:
    loose = [m for m in all_modules() if area_of(m) == "" and m not in (PACKAGE, f"{PACKAGE}.__main__")]
    assert not loose, f"modules outside the layer folders: {loose}"


def test_every_module_starts_with_a_docstring() -> None:
    missing = [m for m, p in all_modules().items() if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert not missing, f"modules without a docstring: {missing}"


def test_library_code_does_not_print() -> None:
    bad = []
    for m, p in all_modules().items():
        if m == "pnc_cli.cli" or m.startswith("pnc_cli.cli."):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{p.relative_to(ROOT.parent)}:{node.lineno}")
    assert not bad, "library code reports through Progress/logging, never print():\n" + "\n".join(bad)


TORCH_LOAD_MODULE = "pnc_cli.io.foreign"  # pnc import: the one reader of pickle-based checkpoints


def _weights_only_load(node: ast.Call) -> bool:
    """``torch.load(..., weights_only=True, ...)``, the literal True (no **kwargs that could override it)."""
    kws = {k.arg: k.value for k in node.keywords}
    flag = kws.get("weights_only")
    return None not in kws and isinstance(flag, ast.Constant) and flag.value is True


def test_no_pickle_anywhere() -> None:
    """Files are safetensors only: no torch.save, pickle, or allow_pickle=True in the package; torch.load
    only in io/foreign.py (``pnc import``) and only as ``torch.load(..., weights_only=True)``."""
    banned_modules = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
    bad = []
    for m, p in all_modules().items():
        tree = ast.parse(p.read_text())
        for imp in imports_of(m, p):
            if imp.target.split(".")[0] in banned_modules:
                bad.append(f"{p.name}:{imp.line} imports {imp.target}")
        allowed_loads: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                if m == TORCH_LOAD_MODULE and _weights_only_load(node):
                    allowed_loads.add(id(node.func))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ("load", "save")
                and ast.unparse(node.value) == "torch"
                and id(node) not in allowed_loads
            ):
                why = "" if node.attr == "save" else f" (only in {TORCH_LOAD_MODULE}, with weights_only=True)"
                bad.append(f"{p.name}:{node.lineno} uses torch.{node.attr}{why}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                    bad.append(f"{p.name}:{node.lineno} allow_pickle is not False")
    assert not bad, "\n".join(bad)


FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z](?![\w-]))")


def _raised_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """The string pieces of every ``raise`` statement (f-string parts included), with line numbers."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    found.append((sub.lineno, sub.value))
    return found


def test_no_cli_flags_below_the_cli() -> None:
    """Errors raised below cli/ name parameters (``epochs``), never flags (``--epochs``): the CLI edge
    turns the names an error declares in ``options`` into flags (cli/_flags.py ``cli_message``)."""
    bad = []
    for m, p in all_modules().items():
        if area_of(m) in ("cli", ""):
            continue
        for line, text in _raised_strings(ast.parse(p.read_text())):
            if FLAG.search(text):
                bad.append(f"{p.relative_to(ROOT.parent)}:{line}: {text!r}")
    assert not bad, "error messages below the CLI name flags:\n" + "\n".join(bad)


# --- the checker itself ------------------------------------------------------------------------------


def test_relative_imports_resolve(tmp_path: Path) -> None:
    node = ast.parse("from ..core.errors import X").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("pnc_cli.api.models", False, node) == "pnc_cli.core.errors"
    assert _resolve("pnc_cli.api", True, node) == "pnc_cli.core.errors"
    node = ast.parse("from . import models").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("pnc_cli.cli", True, node) == "pnc_cli.cli"


def test_graph_sees_known_edges() -> None:
    edges = graph(include_type_only=True)
    assert "pnc_cli.io.safetensors_io" in edges["pnc_cli.io.model_file"]
    assert "pnc_cli.core.version" in edges["pnc_cli.io.model_file"]
    assert "pnc_cli.cli.models" in edges["pnc_cli.cli"]  # from . import models
    assert "pnc_cli.api" in edges["pnc_cli.cli.models"]  # from .. import api
    assert (
        "pnc_cli.core.errors" in edges["pnc_cli.method.adapter"]
    )  # absolute: from pnc_cli.core.errors import ...


def test_find_cycle_detects_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize(
    ("module", "area"),
    [("pnc_cli.api.whatever", "api"), ("pnc_cli.cli.clone", "cli"), ("pnc_cli.io", "io"), ("pnc_cli", "")],
)
def test_modules_get_their_folder(module: str, area: str) -> None:
    assert area_of(module) == area


def test_weights_only_rule_checker() -> None:
    """The torch.load rule accepts only the literal weights_only=True form."""

    def call(src: str) -> ast.Call:
        node = ast.parse(src).body[0]
        assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
        return node.value

    assert _weights_only_load(call("torch.load(p, weights_only=True, map_location='cpu')"))
    assert not _weights_only_load(call("torch.load(p)"))
    assert not _weights_only_load(call("torch.load(p, weights_only=False)"))
    assert not _weights_only_load(call("torch.load(p, weights_only=flag)"))
    assert not _weights_only_load(call("torch.load(p, weights_only=True, **kw)"))
