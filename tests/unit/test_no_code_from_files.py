"""Static guarantees over the package source: no pickle, no user code without trust (docs/security.md).

- every ``torch.load`` passes ``weights_only=True`` (a literal), every ``np.load``/``numpy.load``
  ``allow_pickle=False``; ``pickle``/``dill``/``marshal`` are never imported;
- dynamic imports (``importlib.import_module``, ``__import__``, ``exec``, ``eval``, ``runpy``) appear only
  in ``nets/registry.py:_custom_architecture``, and only after the ``is_trusted`` check.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pnc_cli

ROOT = Path(pnc_cli.__file__).parent
FILES = sorted(ROOT.rglob("*.py"))


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


def _kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_the_scan_sees_the_package() -> None:
    assert len(FILES) > 30
    assert any(p.name == "registry.py" for p in FILES)


def test_torch_load_always_weights_only_and_numpy_never_pickles() -> None:
    for path in FILES:
        tree = ast.parse(path.read_text(), str(path))
        for name, call in _calls(tree):
            if name == "torch.load":
                assert _kw(call, "weights_only") is True, (
                    f"{path}:{call.lineno}: torch.load without weights_only=True"
                )
            if name in ("np.load", "numpy.load"):
                assert _kw(call, "allow_pickle") is False, (
                    f"{path}:{call.lineno}: np.load without allow_pickle=False"
                )
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for mod in mods:
                    assert mod.split(".")[0] not in ("pickle", "dill", "marshal", "cloudpickle"), (
                        f"{path}: imports {mod}"
                    )


def test_user_code_is_imported_only_behind_the_trust_check() -> None:
    dynamic = ("importlib.import_module", "__import__", "exec", "eval", "runpy.run_path", "runpy.run_module")
    found = []
    for path in FILES:
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for name, call in _calls(fn):
                if name in dynamic:
                    found.append((path.relative_to(ROOT).as_posix(), fn.name, call.lineno))
                    src = ast.unparse(fn)
                    assert "is_trusted(name)" in src, (
                        f"{path}:{call.lineno}: dynamic import without trust check"
                    )
                    guard = src.index("is_trusted(name)")
                    assert guard < src.index(name + "("), f"{path}: import before the trust check"
    assert found and {(f, n) for f, n, _ in found} == {("nets/registry.py", "_custom_architecture")}
