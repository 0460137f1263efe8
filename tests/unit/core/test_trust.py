"""Custom architectures are user code: a file's metadata never imports them (docs/security.md).

An "evil" module next to the model file (in the working directory and on PYTHONPATH) records every
import in a marker file. It is imported only when the user trusts it (--trust-arch, PNC_TRUST_ARCH,
or naming it with --arch in train/import); info never imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pnc_cli import api
from pnc_cli.core.errors import UntrustedArchitectureError
from pnc_cli.core.trust import ENV_TRUST, no_user_code, trusted_archs
from pnc_cli.nets import build_network
from tests.conftest import TINY_CONFIG

EVIL = "rt_evil_mod:build"
EVIL_SOURCE = """
import os
with open(os.environ["PNC_TEST_EVIL_MARK"], "a") as f:
    f.write("imported\\n")
from tests.custom_arch import build
"""


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(model file with pnc.arch = rt_evil_mod:build, marker) in a directory holding rt_evil_mod.py."""
    (tmp_path / "rt_evil_mod.py").write_text(EVIL_SOURCE)
    mark = tmp_path / "imported.txt"
    monkeypatch.setenv("PNC_TEST_EVIL_MARK", str(mark))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path.cwd()}")
    monkeypatch.delenv(ENV_TRUST, raising=False)
    model = tmp_path / "evil.safetensors"
    api.train_model(  # naming the arch to train it is trusting it
        arch=EVIL, data="digits", classes="0-1", output=model, config=TINY_CONFIG, input_size=16, device="cpu"
    )
    assert mark.read_text() == "imported\n"
    mark.unlink()
    sys.modules.pop("rt_evil_mod", None)
    yield model, mark
    sys.modules.pop("rt_evil_mod", None)


def _commands(model: Path, other: Path, png: Path, out: Path) -> list[list[str]]:
    return [
        ["info", model, "--json"],
        ["eval", "--model", model, "--data", "digits", "--json"],
        ["predict", "--model", model, png, "--json"],
        ["clone", "-s", model, "-t", other, "-c", "0", "-o", out, "--data", "digits", "--epochs", "1"],
        ["clone", "-s", other, "-t", model, "-c", "5", "-o", out, "--data", "digits", "--epochs", "1"],
        ["surrogate", "-m", model, "-d", "digits", "-o", out, "--samples", "2", "--masks", "4"],
        ["rank-sources", model, "-t", other, "-c", "0", "-d", "digits", "--samples", "2", "--masks", "4"],
    ]


def test_metadata_alone_never_imports_user_code(run_cli, evil, tiny_source: Path, digit_png: Path) -> None:
    model, mark = evil
    out = model.parent / "out.safetensors"
    for args in _commands(model, tiny_source, digit_png, out):
        code, stdout, stderr = run_cli(*args)
        assert not mark.exists(), f"{args[0]} imported user code"
        assert not out.exists()
        if args[0] == "info":
            assert code == 0, stderr
            assert json.loads(stdout)["arch"] == EVIL
        elif args[0] == "rank-sources":  # the untrusted source is listed as ineligible, with the reason
            assert code != 0 and "--trust-arch rt_evil_mod:build" in stderr, stderr
        else:
            assert code == 2, (args, stderr)
            assert "--trust-arch rt_evil_mod:build" in stderr, stderr
            assert len(stderr.strip().splitlines()) == 1


def test_info_never_imports_even_when_trusted(run_cli, evil, monkeypatch: pytest.MonkeyPatch) -> None:
    model, mark = evil
    monkeypatch.setenv(ENV_TRUST, EVIL)
    code, _, stderr = run_cli("info", model, "--json")
    assert code == 0, stderr
    assert not mark.exists()
    code, _, stderr = run_cli("info", model, "--trust-arch", EVIL)
    assert code == 2 and "No such option" in stderr  # header-only commands do not offer it


def test_trust_arch_option_allows_the_import(run_cli, evil) -> None:
    model, mark = evil
    code, stdout, stderr = run_cli(
        "eval", "--model", model, "--data", "digits", "--json", "--trust-arch", EVIL
    )
    assert code == 0, stderr
    assert mark.exists()
    assert set(json.loads(stdout)["per_class"]) == {"0", "1"}


def test_env_var_allows_the_import(run_cli, evil, monkeypatch: pytest.MonkeyPatch) -> None:
    model, mark = evil
    monkeypatch.setenv(ENV_TRUST, f"other:thing, {EVIL}")
    code, _, stderr = run_cli("eval", "--model", model, "--data", "digits", "--json")
    assert code == 0, stderr
    assert mark.exists()


def test_trusting_another_name_is_not_enough(run_cli, evil) -> None:
    model, mark = evil
    code, _, stderr = run_cli(
        "eval", "--model", model, "--data", "digits", "--trust-arch", "rt_evil_mod:other"
    )
    assert code == 2 and "not trusted" in stderr
    assert not mark.exists()


def test_stdlib_module_named_in_metadata_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TRUST, raising=False)
    sys.modules.pop("this", None)
    with pytest.raises(UntrustedArchitectureError, match="not trusted"):
        build_network("this:s", num_classes=2)
    assert "this" not in sys.modules


def test_trust_is_scoped_and_no_user_code_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TRUST, raising=False)
    name = "tests.custom_arch:build"
    with trusted_archs(name):
        assert build_network(name, num_classes=2).num_blocks == 2
        with no_user_code(), pytest.raises(UntrustedArchitectureError, match="headers only"):
            build_network(name, num_classes=2)
    with pytest.raises(UntrustedArchitectureError):
        build_network(name, num_classes=2)
