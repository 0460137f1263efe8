"""Console output for the CLI: JSON on stdout, tables on stdout, messages and progress on stderr.

Layer L5 (the only place with rich). ``--json`` prints exactly one JSON document on stdout; every
human-facing message goes to stderr so shell pipes stay clean.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar
from rich.table import Table

from ..core.device import is_main_process

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


_debug_flag = False


def set_debug(on: bool) -> None:
    """``--debug`` for this invocation only (the root callback sets it on every run)."""
    global _debug_flag
    _debug_flag = on


def debug_enabled() -> bool:
    return _debug_flag or os.environ.get("PNC_DEBUG", "") not in ("", "0")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(_clean(doc), indent=2) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)


def note(message: str, *, quiet: bool = False) -> None:
    if not quiet and is_main_process():
        stderr.print(message, highlight=False, markup=False)


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    if value is None:
        return "-"
    return str(value)


def pct(value: Any) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else f"{100 * value:.1f}"
    )


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    stdout.print(t)


def key_values(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in pairs:
        t.add_row(
            k, v if isinstance(v, str) else json.dumps(_clean(v)) if isinstance(v, (dict, list)) else fmt(v)
        )
    stdout.print(t)


class RichProgress:
    """The library's Progress protocol drawn with rich on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and stderr.is_terminal and is_main_process()
        self._bar: RichBar | None = None
        self._task: Any = None

    def start(self, stage: str, total: int | None = None) -> None:
        if not self.enabled:
            return
        self.finish()
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=stderr,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(stage, total=total, info="")

    def advance(self, n: int = 1, **metrics: Any) -> None:
        if self._bar is not None:
            info = " ".join(f"{k}={fmt(v, 3)}" for k, v in metrics.items())
            self._bar.update(self._task, advance=n, info=info)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def setup_logging(quiet: bool) -> None:
    """Library notes (logging 'pnc_cli') go to stderr, INFO unless --quiet."""
    log = logging.getLogger("pnc_cli")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.WARNING if quiet or not is_main_process() else logging.INFO)
    handler = RichHandler(console=stderr, show_time=False, show_path=False, show_level=False, markup=False)
    log.addHandler(handler)
