"""Error hierarchy of pnc and the exit code each error maps to.

Layer core: stdlib only. Every error the user can cause is a ``PncError`` with a one-line message
that says what is wrong, which file, and what to do. The CLI edge maps ``exit_code`` to the process
exit status (docs/errors.md lists them).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_INCOMPATIBLE = 4
EXIT_INTERRUPTED = 130


class PncError(Exception):
    """Base class of every error pnc reports to the user.

    ``options`` names the parameters (config fields, API arguments) that the message mentions by
    name, e.g. ``ConfigError("epochs must be at least 1, got 0", options=("epochs",))``. Code below
    the CLI never writes a flag such as ``--epochs``; the CLI edge rewrites these names into its
    flags when it prints the message (cli/_flags.py).
    """

    exit_code = EXIT_RUNTIME

    def __init__(self, *args: object, options: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.options = options


class UsageError(PncError, ValueError):
    """Bad input from the user: options, data, files that cannot be read."""

    exit_code = EXIT_USAGE


class CheckpointError(UsageError):
    """A model, surrogate or delta file is missing, corrupt or lacks what pnc needs."""


class DeltaFormatError(CheckpointError):
    """A delta or cloned-model file that breaks docs/delta-format.md: newer version, missing keys, bad
    names."""


class DataError(UsageError):
    """Data that cannot be used: missing classes, empty selection, NaN pixels."""


class ConfigError(UsageError):
    """A configuration value out of range."""


class OutputExistsError(UsageError):
    """The output file exists and overwriting was not asked for (``force``)."""


class UnknownArchitectureError(UsageError, LookupError):
    """An architecture name the registry does not know."""


class UntrustedArchitectureError(UnknownArchitectureError):
    """A custom ``package.module:function`` architecture the user has not trusted (docs/security.md)."""


class IncompatibleError(PncError):
    """Files that do not belong together: a delta for another target, mismatched shapes or classes."""

    exit_code = EXIT_INCOMPATIBLE


class VerificationError(PncError):
    """A check that must hold did not (e.g. restored target hash differs from the recorded one)."""

    exit_code = EXIT_VERIFY


class RuntimeFailure(PncError, RuntimeError):
    """The work itself failed (diverged training, out of memory, ...)."""

    exit_code = EXIT_RUNTIME
