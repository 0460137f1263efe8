"""SIGINT / SIGTERM at any moment — during the imports and during training — exit 130 / 143 with one
line on stderr and nothing written (pnc_cli/__main__.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pnc_cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _train_args() -> list[str]:
    return ["train", "--arch", "tiny_cnn", "--data", "digits", "--epochs", "1000", "-o", "out.safetensors"]


def _wait_for_torch(proc: subprocess.Popen[bytes]) -> None:
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if "libtorch" in maps.read_text():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError("torch was never imported")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("when", ["imports", "training"])
def test_signal_exits_with_one_line_and_writes_nothing(
    tmp_path: Path, sig: int, code: int, when: str
) -> None:
    proc = _start(tmp_path, *_train_args())
    # "imports": as soon as torch's shared library is being mapped (the heavy imports are under way);
    # "training": a few seconds later, when the command runs its epochs.
    _wait_for_torch(proc)
    if when == "training":
        time.sleep(8)
    assert proc.poll() is None
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == code, err.decode()
    assert lines[-1] == "error: interrupted; nothing was written", err.decode()
    assert "Traceback" not in err.decode() and out == b""
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
