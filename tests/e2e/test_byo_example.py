"""EXAMPLE SCRIPT TEST: examples/byo_model.sh (docs/formats.md#bring-your-own-model) in a subprocess.

A torchvision resnet18 state dict (.pth, a training checkpoint with a ``state_dict`` entry) at 32 px
goes through import -> clone -> apply -> eval -> remove, and the same with ``timm:resnet18`` when timm
is installed. 120 images of 32 px; the slowest test of the suite (resnet18 on a CPU).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo_model.sh"
HAS_TIMM = importlib.util.find_spec("timm") is not None


def test_byo_example_script_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PY": sys.executable, "PYTHONPATH": str(EXAMPLE.parents[1])}
    proc = subprocess.run(
        ["bash", str(EXAMPLE), str(tmp_path / "out")], capture_output=True, text=True, timeout=900, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    assert "restored == target (byte for byte)" in proc.stdout
    assert "| architecture | torchvision:resnet18" in proc.stdout  # the card of the imported model
    assert "imported from `resnet18.pth` (pytorch-pickle, entry `state_dict`)" in proc.stdout
    ev = json.loads((out / "eval.json").read_text())
    assert 0.0 <= ev["tar_acc"] <= 1.0 and ev["locality"] >= 0.0
    assert (out / "restored.safetensors").read_bytes() == (out / "target.safetensors").read_bytes()
    if HAS_TIMM:
        assert "timm: restored == target (byte for byte)" in proc.stdout
        assert json.loads((out / "timm_eval.json").read_text())["num_samples"] > 0
    else:
        assert "skipped: timm is not installed" in proc.stdout
