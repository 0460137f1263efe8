"""pnc: Partial Network Cloning of image classifiers (docs/api.md lists the public API)."""

from .core.version import __version__

__all__ = ["__version__"]
