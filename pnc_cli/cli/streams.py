"""``-`` as a file name: stdin for an input file, stdout for a one-file output (docs/cli.md#streams).

Layer cli. The library only ever reads and writes regular files (io/safetensors_io.py refuses devices,
symlinks, FIFOs and directories); this edge turns ``-`` into a file in a private temporary directory:
stdin is copied there before the command runs, and an output written there is copied to stdout after
the command succeeded (nothing reaches stdout when it fails). While a file goes to stdout, the JSON
document and the summary go to stderr.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import UsageError

DASH = "-"


class Streams:
    """The ``-`` inputs and outputs of one command, backed by one temporary directory."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stdin: Path | None = None
        self._stdout: Path | None = None

    def _dir(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pnc-stream-")
        return Path(self._tmp.name)

    def input(self, path: Path) -> Path:
        if str(path) != DASH:
            return path
        if self._stdin is None:
            if sys.stdin is None or sys.stdin.isatty():
                raise UsageError("input '-' reads stdin, but stdin is a terminal; pipe a file into it")
            self._stdin = self._dir() / "stdin.safetensors"
            with self._stdin.open("wb") as f:
                shutil.copyfileobj(sys.stdin.buffer, f)
            if self._stdin.stat().st_size == 0:
                raise UsageError("input '-': stdin is empty; pipe a pnc file into it")
        return self._stdin

    def output(self, path: Path) -> Path:
        if str(path) != DASH:
            return path
        if self._stdout is not None:
            raise UsageError("only one output can be '-' (stdout)")
        self._stdout = self._dir() / "stdout.safetensors"
        return self._stdout

    def relabel(self, doc: Any) -> Any:
        """The temporary paths in a result document shown as ``-``."""
        names = {str(p): DASH for p in (self._stdin, self._stdout) if p is not None}
        if not names:
            return doc
        if isinstance(doc, dict):
            return {k: self.relabel(v) for k, v in doc.items()}
        if isinstance(doc, list):
            return [self.relabel(v) for v in doc]
        return names.get(doc, doc) if isinstance(doc, str) else doc

    def flush_to_stdout(self) -> bool:
        """Copy a ``-o -`` output to stdout; True when stdout carried a file (print the rest to stderr)."""
        if self._stdout is None:
            return False
        if self._stdout.exists():
            sys.stdout.flush()
            with self._stdout.open("rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        return True

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
