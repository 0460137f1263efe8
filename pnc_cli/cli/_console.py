"""Console output for the CLI: JSON and tables on stdout; notes, progress and errors on stderr.

Layer cli (the only place with rich). ``--json`` prints exactly one JSON document (floats to 6
significant digits). On a terminal, tables and progress bars are drawn with rich; otherwise (a pipe,
a CI log) tables are plain full-width text (or TSV with ``--tsv``) and progress is one plain line per
stage/epoch, plus a heartbeat line whenever nothing was printed for ``HEARTBEAT_S`` seconds.
``--log-file`` receives the same plain lines. Rules in docs/cli.md#streams.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..core.errors import PncError
from ._flags import cli_message

HEARTBEAT_S = float(os.environ.get("PNC_HEARTBEAT_S", "10"))
DIGITS = 6


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a plain process: the one that prints."""
    return _is_main_process()


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # same rule as core.device.is_main_process


def _tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _State:
    """Per-invocation settings (the CLI runs one command per process; tests run many in one)."""

    def __init__(self) -> None:
        self.debug = False
        self.quiet = False
        self.tsv = False
        self.started = time.monotonic()
        self.last_line = time.monotonic()
        self.stage = ""
        self.log: IO[str] | None = None
        self.stdout_to_stderr = False
        self.heartbeat: _Heartbeat | None = None
        self.lock = threading.Lock()


_state = _State()


def set_debug(on: bool) -> None:
    """``pnc --debug COMMAND`` (the root callback, once per invocation)."""
    _state.debug = on


def debug_enabled() -> bool:
    return _state.debug or os.environ.get("PNC_DEBUG", "") not in ("", "0")


def _out() -> Console:
    err = _state.stdout_to_stderr
    stream = sys.stderr if err else sys.stdout
    tty = _tty(stream)
    return Console(file=stream, soft_wrap=True, force_terminal=tty or None, width=None if tty else 10_000)


def _err() -> Console:
    return Console(file=sys.stderr, soft_wrap=True, width=None if _tty(sys.stderr) else 10_000)


# --- lines on stderr (plain) and in the log file ------------------------------------------------------


def elapsed() -> float:
    return time.monotonic() - _state.started


def line(text: str, *, to_stderr: bool = True) -> None:
    """One plain progress/heartbeat line, prefixed with the elapsed time; also into --log-file."""
    stamped = f"[{elapsed():7.1f}s] {text}"
    with _state.lock:
        _state.last_line = time.monotonic()
        if to_stderr and not _state.quiet and _is_main_process():
            sys.stderr.write(stamped + "\n")
            sys.stderr.flush()
        if _state.log is not None:
            _state.log.write(stamped + "\n")
            _state.log.flush()


class _Heartbeat(threading.Thread):
    """Prints ``still working`` when no line went out for HEARTBEAT_S seconds (non-TTY stderr only)."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="pnc-heartbeat")
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(min(1.0, HEARTBEAT_S / 4)):
            if time.monotonic() - _state.last_line >= HEARTBEAT_S:
                stage = f" ({_state.stage})" if _state.stage else ""
                line(f"still working{stage}")


# --- configuration per command ------------------------------------------------------------------------


class _PlainHandler(logging.Handler):
    """Library notes (logging 'pnc_cli') as plain lines on stderr; warnings even with --quiet."""

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple):  # a PncError logged as an argument: its names as flags
            record.args = tuple(cli_message(a) if isinstance(a, PncError) else a for a in record.args)
        note(record.getMessage(), quiet=_state.quiet and record.levelno < logging.WARNING)


def configure(*, quiet: bool, debug: bool = False, log_file: Any = None, tsv: bool = False) -> None:
    """Set up one command's output: debug flag, library notes (logging 'pnc_cli'), log file, heartbeat."""
    close_log()
    _state.quiet = quiet
    _state.tsv = tsv
    _state.debug = _state.debug or debug  # `pnc --debug CMD` or `pnc CMD --debug`
    _state.started = _state.last_line = time.monotonic()
    _state.stage = ""
    if log_file is not None:
        _state.log = open(log_file, "a", encoding="utf-8")  # noqa: SIM115  (closed by close_log)
    log = logging.getLogger("pnc_cli")
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if _is_main_process() else logging.WARNING)
    log.addHandler(_PlainHandler())


def _arm_heartbeat() -> None:
    """From the first progress stage to the end of the command (a command that fails fast, before
    any stage, prints its one error line and nothing else)."""
    if _state.heartbeat is None and not _state.quiet and not _tty(sys.stderr) and HEARTBEAT_S > 0:
        _state.heartbeat = _Heartbeat()
        _state.heartbeat.start()


def close_log() -> None:
    if _state.heartbeat is not None:
        _state.heartbeat.stop.set()
        _state.heartbeat.join()
        _state.heartbeat = None
    if _state.log is not None:
        _state.log.close()
        _state.log = None


# --- JSON --------------------------------------------------------------------------------------------


def round_sig(value: float, digits: int = DIGITS) -> float:
    """``0.9660000205039978`` → ``0.966``: float32 noise removed, 6 significant digits kept."""
    return float(f"{value:.{digits}g}")


def clean(value: Any) -> Any:
    """A document ready for json.dumps: non-finite floats → null, floats to 6 significant digits."""
    if isinstance(value, float):
        return round_sig(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def print_json(doc: Any, *, stderr: bool = False) -> None:
    stream = sys.stderr if stderr else sys.stdout
    stream.write(json.dumps(clean(doc), indent=2) + "\n")
    stream.flush()


# --- messages ----------------------------------------------------------------------------------------


def error(message: str) -> None:
    if _state.log is not None:
        line(f"error: {message}", to_stderr=False)
    if _tty(sys.stderr):
        _err().print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    else:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()


def note(message: str, *, quiet: bool | None = None) -> None:
    """A message for people on stderr (not with --quiet); also into --log-file."""
    if _state.log is not None:
        line(message, to_stderr=False)
    if (_state.quiet if quiet is None else quiet) or not _is_main_process():
        return
    if _tty(sys.stderr):
        _err().print(message, highlight=False, markup=False)
    else:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    _state.last_line = time.monotonic()


# --- tables ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def redirect_stdout(on: bool) -> Iterator[None]:
    """Render to stderr instead of stdout (while stdout carries a file, ``-o -``)."""
    before = _state.stdout_to_stderr
    _state.stdout_to_stderr = on
    try:
        yield
    finally:
        _state.stdout_to_stderr = before


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(clean(value))
    return str(value)


def pct(value: Any) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else f"{100 * value:.1f}"
    )


def _write(text: str) -> None:
    stream = sys.stderr if _state.stdout_to_stderr else sys.stdout
    stream.write(text)
    stream.flush()


def _plain(title: str | None, columns: Sequence[str] | None, rows: list[list[str]]) -> None:
    """Full-width text: no wrapping, no cut values, no trailing spaces (a pipe or a CI log)."""
    if _state.tsv:
        head = [] if columns is None else ["\t".join(columns)]
        _write("".join(r + "\n" for r in head + ["\t".join(c.replace("\t", " ") for c in r) for r in rows]))
        return
    table = ([list(columns)] if columns is not None else []) + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))] if table else []
    out = [title] if title else []
    for r in table:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    _write("".join(o + "\n" for o in out))


def _rich_stream() -> bool:
    return _tty(sys.stderr if _state.stdout_to_stderr else sys.stdout) and not _state.tsv


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cells = [[fmt(v) for v in r] for r in rows]
    if not _rich_stream():
        _plain(title, columns, cells)
        return
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in cells:
        t.add_row(*r)
    _out().print(t)


def key_values(title: str, pairs: Iterable[tuple[str, Any]]) -> None:
    cells = [[k, fmt(v) if not isinstance(v, str) else v] for k, v in pairs]
    if not _rich_stream():
        _plain(title, None, cells)
        return
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in cells:
        t.add_row(k, v)
    _out().print(t)


def text(message: str) -> None:
    """One result line on stdout (stderr while stdout carries a file)."""
    _write(message + "\n")


# --- progress (core.progress.Progress) ---------------------------------------------------------------


class RichProgress:
    """The library's Progress protocol drawn with rich on a terminal's stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and _tty(sys.stderr) and _is_main_process()
        self._bar: Any = None
        self._task: Any = None

    def start(self, stage: str, total: int | None = None) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichBar

        self.finish()
        self._bar = RichBar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=_err(),
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


class PlainProgress:
    """Progress as plain lines: stage start, each step when steps are few (epochs), else at most one
    line per ``every`` seconds, and the stage end with elapsed time, throughput and the last metrics."""

    FEW = 100

    def __init__(self, *, to_stderr: bool, every: float = 5.0) -> None:
        self.to_stderr = to_stderr
        self.every = every
        self._stage: str | None = None

    def start(self, stage: str, total: int | None = None) -> None:
        self.finish()
        self._stage, self._total, self._done = stage, total, 0
        self._t0 = self._last = time.monotonic()
        self._metrics: dict[str, Any] = {}
        _state.stage = stage
        if self.to_stderr:
            _arm_heartbeat()
        line(f"{stage}: start" + (f" ({total} steps)" if total else ""), to_stderr=self.to_stderr)

    def _status(self) -> str:
        spent = time.monotonic() - self._t0
        of = f"/{self._total}" if self._total else ""
        rate = f" {self._done / spent:.1f} steps/s" if spent > 0 and self._done else ""
        metrics = "".join(f" {k}={fmt(v, 4)}" for k, v in self._metrics.items())
        return f"{self._stage}: {self._done}{of} steps {spent:.1f}s{rate}{metrics}"

    def advance(self, n: int = 1, **metrics: Any) -> None:
        if self._stage is None:
            return
        self._done += n
        self._metrics.update(metrics)
        now = time.monotonic()
        few = self._total is not None and self._total <= self.FEW
        if few or now - self._last >= self.every:
            self._last = now
            line(self._status(), to_stderr=self.to_stderr)

    def finish(self) -> None:
        if self._stage is not None:
            line(self._status() + " done", to_stderr=self.to_stderr)
            self._stage = None
            _state.stage = ""


class TeeProgress:
    """Forwards every call to several Progress objects (rich bar on the TTY + lines in --log-file)."""

    def __init__(self, *parts: Any) -> None:
        self.parts = parts

    def start(self, stage: str, total: int | None = None) -> None:
        for p in self.parts:
            p.start(stage, total)

    def advance(self, n: int = 1, **metrics: Any) -> None:
        for p in self.parts:
            p.advance(n, **metrics)

    def finish(self) -> None:
        for p in self.parts:
            p.finish()


def make_progress(*, quiet: bool) -> Any:
    """Rich on a terminal, plain lines otherwise; --log-file always gets the plain lines."""
    if _tty(sys.stderr):
        bar = RichProgress(enabled=not quiet)
        return TeeProgress(bar, PlainProgress(to_stderr=False)) if _state.log is not None else bar
    return PlainProgress(to_stderr=not quiet)
