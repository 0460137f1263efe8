"""``torchrun`` with 2 CPU processes (gloo): the same files as one process; one error when a rank fails.

Each test starts ``python -m torch.distributed.run --nproc_per_node=2 -m pnc_cli ...`` (the real CLI
entry, which joins the process group) on a tiny model and compares with the single-process result.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    cmd += ["--master_addr=127.0.0.1", "-m", "pnc_cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _without_provenance(path: Path) -> tuple[bytes, dict[str, str]]:
    """A pnc file's tensor bytes and its metadata less ``pnc.provenance`` and ``pnc.seal``."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key in ("pnc.provenance", "pnc.seal"):
        meta.pop(key, None)
    return save(tensors), meta


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_surrogate_in_two_processes_equals_one(tiny_target: Path, tmp_path: Path, run_cli) -> None:
    one = run_cli(
        "surrogate",
        "--model",
        tiny_target,
        "--data",
        "digits",
        "--samples",
        "6",
        "--masks",
        "16",
        "--output",
        tmp_path / "one.surrogate",
        "--device",
        "cpu",
        "--json",
    )
    assert one.exit_code == 0, one.stderr
    two = _torchrun(
        "surrogate",
        "--model",
        str(tiny_target),
        "--data",
        "digits",
        "--samples",
        "6",
        "--masks",
        "16",
        "--output",
        "two.surrogate",
        "--device",
        "cpu",
        "--json",
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr
    doc = json.loads(two.stdout)  # rank 0 alone prints: one JSON document
    assert doc["sha256"] == json.loads(one.stdout)["sha256"]
    # each G is its own ridge fit, sharded by sample: the tensors are identical byte for byte, and so is
    # the metadata but for the provenance (its command line names the launcher) and the seal over it
    assert _without_provenance(tmp_path / "two.surrogate") == _without_provenance(tmp_path / "one.surrogate")


def test_a_failing_rank_is_one_error(tiny_target: Path, tmp_path: Path) -> None:
    r = _torchrun(
        "surrogate",
        "--model",
        str(tiny_target),
        "--data",
        "no-such-data",
        "--output",
        "g.surrogate",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert r.returncode != 0 and r.stdout == ""
    assert _errors(r.stderr) == [
        "error: data 'no-such-data' not found: give a built-in name (digits, mnist5k), a directory, .npz or "
        ".safetensors"
    ]
    assert "exitcode  : 2" in r.stderr  # every rank left with the error's exit code (torchrun's report)
    assert not (tmp_path / "g.surrogate").exists()


def test_joint_clone_in_two_processes_equals_one(
    tiny_source: Path, tiny_target: Path, tmp_path: Path
) -> None:
    """The joint head's statistics are all-reduced sums: the same delta up to float64 rounding."""
    from pnc_cli import api
    from pnc_cli.io.safetensors_io import read_safetensors

    one = api.clone(
        source=tiny_source, target=tiny_target, classes="5,6", output=tmp_path / "one.delta", device="cpu"
    )
    two = _torchrun(
        "clone",
        "--source",
        str(tiny_source),
        "--target",
        str(tiny_target),
        "--classes",
        "5,6",
        "--output",
        "two.delta",
        "--device",
        "cpu",
        "--json",
        "--quiet",
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr
    doc = json.loads(two.stdout)
    assert (doc["source_end"], doc["pool"]) == (one["source_end"], one["pool"])  # the same candidate
    for key in ("ori_acc", "tar_acc", "avg_acc", "extra_params"):
        assert doc[key] == pytest.approx(one[key], abs=1e-6)
    a, _ = read_safetensors(tmp_path / "one.delta")
    b, _ = read_safetensors(tmp_path / "two.delta")
    assert a.keys() == b.keys()
    for name, t in a.items():
        if t.is_floating_point() and t.numel():
            scale = float(t.abs().max()) or 1.0
            assert float((t.double() - b[name].double()).abs().max()) <= 1e-4 * scale, name
        else:
            assert torch.equal(t, b[name]), name
