"""The real entry points in a subprocess: a shell pipeline of train → info → eval → predict, plus
``python -m pnc_cli --help`` and the ``pnc`` console script."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

PY = shlex.quote(sys.executable)

PIPELINE = f"""
set -euo pipefail
pnc() {{ {PY} -m pnc_cli "$@"; }}
pnc train --arch tiny_cnn --data digits --classes 0-4 --epochs 3 --lr 0.01 --input-size 16 \\
    -o target.safetensors --quiet --json > train.json
pnc info target.safetensors --json \\
    | {PY} -c 'import json, sys; d = json.load(sys.stdin); assert d["kind"] == "model"; print(d["sha256"])' \\
    > sha.txt
pnc eval --model target.safetensors --data digits --json \\
    | {PY} -c 'import json, sys; d = json.load(sys.stdin); print(json.dumps(d))' > eval.json
pnc predict --model target.safetensors "$1" --json > predict.json
set +e
pnc info missing.safetensors --json > missing.out 2> missing.err
echo $? > missing.rc
"""


def test_shell_pipeline(tmp_path: Path, digit_png: Path) -> None:
    proc = subprocess.run(
        ["bash", "-c", PIPELINE, "pipeline", str(digit_png)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    train = json.loads((tmp_path / "train.json").read_text())
    assert {"output", "test_accuracy", "sha256", "classes"} <= set(train)
    assert train["output"] == "target.safetensors" and train["test_accuracy"] > 0.8
    assert (tmp_path / "sha.txt").read_text().strip() == train["sha256"]
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["accuracy"] == train["test_accuracy"] and set(ev["per_class"]) == set("01234")
    pred = json.loads((tmp_path / "predict.json").read_text())
    assert pred["predictions"][0]["prediction"] == "3"
    assert {"image", "prediction", "top"} <= set(pred["predictions"][0])
    assert (tmp_path / "missing.rc").read_text().strip() == "2"
    assert (tmp_path / "missing.out").read_text() == ""
    err = (tmp_path / "missing.err").read_text().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: missing.safetensors: file not found")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == ["target.safetensors"]


def test_python_m_help(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pnc_cli", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for cmd in ("train", "info", "eval", "predict", "list-archs", "import"):
        assert cmd in proc.stdout


def test_console_script_version(tmp_path: Path) -> None:
    from pnc_cli import __version__

    script = Path(sys.executable).parent / "pnc"
    proc = subprocess.run(
        [str(script), "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pnc {__version__}"
