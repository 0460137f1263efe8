"""``python -m pnc_cli`` and the ``pnc`` script (``pnc_cli.__main__:main``): signal handlers first,
then the (heavy) command line.

Stdlib only, imported before typer, rich or torch. SIGINT and SIGTERM at any moment — during the
imports too — end the process with one line on stderr and exit 130 (SIGINT) or 143 (SIGTERM):

- during the imports nothing can have been written, so the handler prints the line and exits at once;
- once a command runs, both signals raise ``KeyboardInterrupt`` so that every ``finally`` (temporary
  output files, streams) runs, the command prints its one line and exits 130; SIGTERM's 143 is
  restored here.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

EXIT_SIGINT = 130
EXIT_SIGTERM = 143
MESSAGE = "error: interrupted; nothing was written\n"

_terminated = False
_signalled = False


def _during_import(signum: int, frame: FrameType | None) -> None:
    try:
        sys.stderr.write(MESSAGE)
        sys.stderr.flush()
    finally:
        os._exit(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)


def _while_running(signum: int, frame: FrameType | None) -> None:
    global _terminated, _signalled
    if signum == signal.SIGTERM:
        _terminated = True
    if _signalled:  # the first one did not end the command: end the process now
        _during_import(signum, frame)
    _signalled = True
    raise KeyboardInterrupt


def _install(handler: object) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler)  # type: ignore[arg-type]
        except ValueError:  # not the main thread (embedded use): leave the handlers alone
            return


def main() -> None:
    _install(_during_import)
    from .cli import main as cli_main  # heavy imports happen here

    _install(_while_running)
    code: str | int | None
    try:
        try:
            cli_main()
        except KeyboardInterrupt:  # outside a command body (argument parsing, group setup)
            sys.stderr.write(MESSAGE)
            code = EXIT_SIGINT
        except SystemExit as exc:
            code = exc.code  # type: ignore[assignment]
        else:
            code = 0
    except KeyboardInterrupt:  # a signal while the first one unwinds: the line is already out
        code = EXIT_SIGINT
    if _signalled:
        # End here: a stray KeyboardInterrupt during interpreter shutdown would turn the status into
        # "killed by SIGINT". Every command's cleanup (finally blocks) has already run.
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(EXIT_SIGTERM if _terminated else EXIT_SIGINT)
    sys.exit(code)


if __name__ == "__main__":
    main()
