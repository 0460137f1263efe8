"""The cloning flow as a user runs it: one real shell pipeline in a subprocess (`python -m pnc_cli`).

train target + source on digits → clone (short form) → apply → remove → `cmp` the restored file with the
original target (byte-identical). Every step's exit code is recorded and checked. (Real exit codes of
refused commands: tests/e2e/test_shell.py; every bad input: tests/cli/test_cli_clone.py.)
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

PY = shlex.quote(sys.executable)

PIPELINE = f"""
set -uo pipefail
pnc() {{ {PY} -m pnc_cli "$@"; }}
step() {{ local name=$1; shift; "$@"; echo "$name $?" >> rc.txt; }}
step train-target pnc train --arch tiny_cnn --data digits --classes 0-4 --epochs 3 --lr 0.01 \\
    --input-size 16 -o target.safetensors --quiet
step train-source pnc train --arch tiny_cnn --data digits --classes 5-9 --epochs 3 --lr 0.01 \\
    --input-size 16 -o source.safetensors --quiet
step clone pnc clone --source source.safetensors --target target.safetensors --classes 5 -o d.safetensors \\
    --epochs 1 --json > clone.json 2> clone.err
step apply pnc apply --target target.safetensors --delta d.safetensors -o cloned.safetensors --quiet
step remove pnc remove cloned.safetensors -o restored.safetensors --quiet
step cmp cmp restored.safetensors target.safetensors
"""


def test_clone_apply_remove_pipeline(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", "-c", PIPELINE], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    codes = dict(line.split() for line in (tmp_path / "rc.txt").read_text().splitlines())
    assert codes == {
        "train-target": "0",
        "train-source": "0",
        "clone": "0",
        "apply": "0",
        "remove": "0",
        "cmp": "0",
    }, (codes, proc.stderr)
    doc = json.loads((tmp_path / "clone.json").read_text())
    assert doc["output"] == "d.safetensors" and doc["classes"] == ["5"] and doc["tar_acc"] > 0.5
    assert "using the source's recorded training data: digits" in (tmp_path / "clone.err").read_text()
    assert (tmp_path / "restored.safetensors").read_bytes() == (tmp_path / "target.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "cloned.safetensors",
        "d.safetensors",
        "restored.safetensors",
        "source.safetensors",
        "target.safetensors",
    ]
