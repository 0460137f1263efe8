"""The ``pnc`` command line (Typer). The only layer that imports typer or rich.

Exit codes: 0 ok, 1 runtime failure, 2 usage/bad input, 3 verification or gate failed, 4 incompatible
checkpoint, 130 interrupted (docs/errors.md). Importing this package imports no torch: the command
modules import the api inside their functions, so ``pnc --version``, ``--help`` and completion are fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..core.version import __version__
from . import _console, clone, deltas, export, models, rank, surrogate
from ._common import OneLineErrorGroup

app = typer.Typer(
    name="pnc",
    help=(
        "Partial Network Cloning: add a source classifier's classes to a frozen target as a removable delta."
    ),
    no_args_is_help=True,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    cls=OneLineErrorGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pnc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set PNC_DEBUG=1).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _console.set_debug(debug)


models.register(app)
surrogate.register(app)
clone.register(app)
deltas.register(app)
rank.register(app)
export.register(app)


def main() -> None:
    app()
