"""EXAMPLE SCRIPT TEST: runs examples/api_example.py (the script shown in docs/api.md) in a subprocess.

If this fails, the documented Python API example is broken: fix the example and docs/api.md together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "api_example.py"
DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_example_script_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == documented_output(), "docs/api.md shows other output than the script prints"
    assert "cloned model: 6 outputs" in proc.stdout and "exactly the target: True" in proc.stdout
    assert "identical to the original target: True" in proc.stdout
    assert (tmp_path / "restored.safetensors").read_bytes() == (tmp_path / "target.safetensors").read_bytes()


def test_docs_show_the_example_script() -> None:
    """docs/api.md embeds the example verbatim (between its ```python fences)."""
    body = EXAMPLE.read_text()
    main = body[body.index("def main") : body.index('if __name__ == "__main__":')].strip()
    assert main in DOC.read_text()


def documented_output() -> str:
    """The block after "Its output" in docs/api.md."""
    doc = DOC.read_text()
    start = doc.index("```\n", doc.index("Its output")) + 4
    return doc[start : doc.index("```", start)]
