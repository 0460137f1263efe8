"""examples/ci.sh, the CI job of docs/cli.md#ci, runs green on tiny models (train, plan, clone, gate,
apply, remove, verify; each step's exit code checked by the script itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_example_passes(tmp_path: Path) -> None:
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(ROOT)}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        ["bash", str(ROOT / "examples" / "ci.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr.rstrip().endswith("ci: all steps passed")
    out = tmp_path / "out"
    gates = json.loads((out / "eval.json").read_text())["gates"]
    assert {g["metric"] for g in gates} == {"tar", "ori_drop"} and all(g["passed"] for g in gates)
    assert "gate failed: tar" in (out / "gate.err").read_text()
    assert json.loads((out / "plan.json").read_text())["dry_run"] is True
    assert (out / "restored.safetensors").read_bytes() == (out / "target.safetensors").read_bytes()


def test_github_actions_example_runs_the_same_script() -> None:
    text = (ROOT / "examples" / "github-actions.yml").read_text()
    assert "bash examples/ci.sh" in text and "runs-on:" in text
