"""The error edge that maps exceptions to exit codes, and the one-line usage errors of the group.

The shared options themselves are declared in options.py.

Layer cli.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from ..core.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, PncError
from . import _console as console
from ._flags import cli_message

F = TypeVar("F", bound=Callable[..., Any])

# Click's exception classes as Typer raises them (recent Typer vendors its own copy of Click, so
# ``import click`` would name different classes); found through a public Typer class.
ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
_NoArgsIsHelp: Any = getattr(sys.modules[ClickException.__module__], "NoArgsIsHelpError", ())


def handle_errors(fn: F) -> F:
    """Run a command body: PncError → one line on stderr + its exit code; Ctrl-C → 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PncError as exc:
            if console.debug_enabled():
                traceback.print_exc()
            console.error(cli_message(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.error("interrupted; nothing was written")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except Exception as exc:  # unexpected: a bug or an environment problem
            if console.debug_enabled():
                traceback.print_exc()
            console.error(
                f"{type(exc).__name__}: {exc} (rerun with --debug or PNC_DEBUG=1 for the traceback)"
            )
            raise typer.Exit(EXIT_RUNTIME) from None

    return wrapper  # type: ignore[return-value]


class OneLineErrorGroup(TyperGroup):
    """Typer's command group, except that a usage error (unknown option, missing option, bad value)
    is one line on stderr, like every other pnc error, instead of a usage box. Exit code 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        forward = (args, prog_name, complete_var, False, windows_expand_args)
        if not standalone_mode:
            return super().main(*forward, **extra)
        try:
            rv = super().main(*forward, **extra)
        except _NoArgsIsHelp as exc:  # plain `pnc`: the help text
            exc.show()
            sys.exit(exc.exit_code)
        except ClickException as exc:
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                message += f" (see {ctx.command_path} --help)"
            console.error(message)
            sys.exit(exc.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            console.error("interrupted; nothing was written")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)
