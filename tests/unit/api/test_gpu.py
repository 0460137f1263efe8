"""CPU and GPU give the same clone within the tolerance of docs/scale.md (runs only where CUDA exists)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pnc_cli import api
from pnc_cli.core.device import configure, runtime

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METRICS = ("ori_acc", "tar_acc", "avg_acc")


@pytest.fixture
def cpu_clone(tiny_source: Path, tiny_target: Path, tmp_path: Path) -> dict:
    return api.clone(
        source=tiny_source, target=tiny_target, classes="5,6", output=tmp_path / "cpu.delta", device="cpu"
    )


@pytest.mark.parametrize(("precision", "points"), [("fp32", 1.0), ("bf16", 3.0)])
def test_gpu_clone_agrees_with_cpu(
    cpu_clone: dict, tiny_source: Path, tiny_target: Path, tmp_path: Path, precision: str, points: float
) -> None:
    before = runtime()
    configure(precision=precision)
    try:
        gpu = api.clone(
            source=tiny_source,
            target=tiny_target,
            classes="5,6",
            output=tmp_path / f"gpu-{precision}.delta",
            device="cuda",
        )
    finally:
        configure(precision=before.precision)
    if precision == "fp32":
        assert (gpu["source_end"], gpu["pool"]) == (cpu_clone["source_end"], cpu_clone["pool"])
    for key in METRICS:
        assert abs(gpu[key] - cpu_clone[key]) * 100 <= points, key
