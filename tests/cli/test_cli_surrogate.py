"""`pnc surrogate` through Typer's CliRunner: --json output and `pnc info`; bad input → exit code, one
line on stderr, nothing on stdout, nothing written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pnc_cli.cli import app
from pnc_cli.core.errors import EXIT_INCOMPATIBLE, EXIT_USAGE
from pnc_cli.io.model_file import ModelSpec, save_model
from pnc_cli.nets import build_network

torch.set_num_threads(1)
FAST = ("--samples", "6", "--masks", "8", "--grid", "2", "--device", "cpu")
KEYS = {
    "output",
    "samples",
    "masks",
    "grid",
    "num_classes",
    "fidelity",
    "seconds",
    "images_per_second",
    "seed",
    "sha256",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 1-channel tiny model at the digits' native 8x8 and a 3-channel .npz of 8x8 images."""
    root = tmp_path_factory.mktemp("surrogate-cli")
    torch.manual_seed(0)
    net = build_network("tiny_cnn", num_classes=3, in_channels=1, input_size=8)
    save_model(root / "model.safetensors", net, ModelSpec("tiny_cnn", ("0", "1", "2"), 1, 8))
    rng = np.random.default_rng(0)
    np.savez(root / "rgb.npz", x=rng.random((20, 3, 8, 8), dtype=np.float32), y=np.arange(20) % 2)
    return {"model": root / "model.safetensors", "rgb": root / "rgb.npz"}


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(path: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_json_is_one_document_and_info_shows_the_file(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "g.safetensors"
    res = run(
        "surrogate", "--model", files["model"], "--data", "digits", "-c", "0-4", *FAST, "-o", out, "--json"
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert KEYS <= set(doc)
    assert (doc["samples"], doc["masks"], doc["grid"], doc["num_classes"], doc["seed"]) == (6, 8, 2, 3, 0)
    assert doc["output"] == str(out) and out.exists()

    res = run("info", out, "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["kind"] == "surrogate" and info["sha256"] == doc["sha256"]
    assert info["surrogate"]["config"]["masks"] == 8

    res = run("surrogate", "-m", files["model"], "-d", "digits", *FAST, "-o", out)  # exists, no --force
    assert res.exit_code == EXIT_USAGE and "--force" in res.stderr
    res = run("surrogate", "-m", files["model"], "-d", "digits", *FAST, "-o", out, "--force", "--quiet")
    assert res.exit_code == 0, res.stderr
    assert "samples N" in res.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--grid", "9"), EXIT_USAGE, "finer than"),
        (("--masking-rate", "0"), EXIT_USAGE, "--masking-rate must be in (0, 1)"),
        (("--masking-rate", "1.5"), EXIT_USAGE, "--masking-rate must be in (0, 1)"),
        (("--masks", "0"), EXIT_USAGE, "--masks must be at least 1"),
        (("--data", "RGB"), EXIT_INCOMPATIBLE, "3-channel images but model"),
        (("--model", "missing.safetensors"), EXIT_USAGE, "not found"),
    ],
)
def test_bad_input(
    tmp_path: Path,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    opts = {
        "--model": str(files["model"]),
        "--data": "digits",
        "--samples": "6",
        "--masks": "8",
        "--grid": "2",
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        opts[flag] = str(files["rgb"]) if value == "RGB" else value
    before = snapshot(tmp_path)
    res = run(
        "surrogate",
        *[x for kv in opts.items() for x in kv],
        "--device",
        "cpu",
        "-o",
        tmp_path / "g.safetensors",
    )
    assert res.exit_code == code, (res.stdout, res.stderr)
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""
    assert snapshot(tmp_path) == before
