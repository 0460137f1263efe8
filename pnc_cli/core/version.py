"""The package version, kept in a module of its own so that ``pnc --version`` and every writer that
records it need nothing else from the package."""

__version__ = "0.1.0"
