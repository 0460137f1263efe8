"""Shared fixtures: tiny trained checkpoints, small data files, and a CliRunner helper.

Everything heavy is session-scoped and written under ``tmp_path_factory`` (mergekit's pattern), so
a checkpoint is trained once per test run and reused by unit, CLI and cloning tests. Fixtures are
generic on purpose (``tiny_target``, ``tiny_source``, ``digits_npz``, ``run_cli``, ...).

Conventions: tests treat fixture files as read-only inputs (copy a file before changing it);
``torch`` runs on one thread so that parallel test runs on a small machine do not fight for cores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pnc_cli import api
from pnc_cli.core.config import TrainConfig

# Tiny-model recipe: tiny_cnn at 16 px on scikit-learn digits. Three epochs at lr 1e-2 take well
# under a second and reach ~95 % test accuracy (one epoch leaves BatchNorm statistics unwarmed and
# the model predicts a single class).
TINY_ARCH = "tiny_cnn"
TINY_DATA = "digits"
TINY_SIZE = 16
TINY_CONFIG = TrainConfig(epochs=3, lr=1e-2, batch_size=64, seed=0)


# --- options and session setup ----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    """One torch thread: deterministic timings and no contention on a shared 2-core machine."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No debug tracebacks leaking in from the caller's shell; subprocesses use one thread too."""
    monkeypatch.delenv("PNC_DEBUG", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("COLUMNS", "200")


# --- CLI --------------------------------------------------------------------------------------------


class CliResult(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """``run_cli("info", path, "--json")`` → (exit_code, stdout, stderr) through Typer's CliRunner.

    stdout and stderr are captured separately (Click >= 8.2), so ``json.loads(stdout)`` sees only
    what the command printed on stdout.
    """
    from pnc_cli.cli import app

    runner = CliRunner()

    def run(*args: Any) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args])
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


# --- data -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits as (x float32 [N, 8, 8] in [0, 1], y int64 [N])."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def digits_npz(
    tmp_path_factory: pytest.TempPathFactory, digits_arrays: tuple[np.ndarray, np.ndarray]
) -> Path:
    """The digits as an .npz with arrays x, y (int) and classes ("0".."9"): same rows as built-in
    ``digits``."""
    x, y = digits_arrays
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=x, y=y, classes=np.array([str(i) for i in range(10)]))
    return path


@pytest.fixture(scope="session")
def digit_png(tmp_path_factory: pytest.TempPathFactory, digits_arrays: tuple[np.ndarray, np.ndarray]) -> Path:
    """A 16x16 grayscale PNG of the first digit '3' of the data set."""
    from PIL import Image

    x, y = digits_arrays
    img = (x[int(np.flatnonzero(y == 3)[0])] * 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("images") / "three.png"
    Image.fromarray(img, mode="L").resize((16, 16), Image.BILINEAR).save(path)
    return path


# --- tiny trained checkpoints -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_tiny_model(classes="0-4", arch="tiny_cnn", data="digits", **train_kwargs)`` → path.

    Trains through ``pnc_cli.api.train_model`` once per distinct argument set and caches the file for
    the session. Files are read-only by convention; copy before modifying.
    """
    root = tmp_path_factory.mktemp("models")
    cache: dict[tuple[Any, ...], Path] = {}

    def make(classes: str = "0-4", *, arch: str = TINY_ARCH, data: str = TINY_DATA, **kwargs: Any) -> Path:
        key = (classes, arch, data, tuple(sorted(kwargs.items())))
        if key not in cache:
            name = hashlib.sha256(repr(key).encode()).hexdigest()[:12]
            out = root / f"{arch}-{classes.replace(',', '_')}-{name}.safetensors"
            opts: dict[str, Any] = {"config": TINY_CONFIG, "input_size": TINY_SIZE, "device": "cpu", **kwargs}
            api.train_model(arch=arch, data=data, classes=classes, output=out, **opts)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_target(make_tiny_model: Callable[..., Path]) -> Path:
    """tiny_cnn trained on digits 0-4 (16 px, 3 epochs, seed 0)."""
    return make_tiny_model("0-4")


@pytest.fixture(scope="session")
def tiny_source(make_tiny_model: Callable[..., Path]) -> Path:
    """tiny_cnn trained on digits 5-9 (16 px, 3 epochs, seed 0)."""
    return make_tiny_model("5-9")


# --- helpers ----------------------------------------------------------------------------------------


def dir_snapshot(path: Path) -> dict[str, str]:
    """{relative name: sha256 of content} of every file under ``path`` (to prove nothing was written)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, str]]:
    """``snapshot(dir)``: file names and content hashes under ``dir``; compare before/after a command."""
    return dir_snapshot


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test with ``tmp_path`` as the working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
