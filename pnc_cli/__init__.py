"""pnc: Partial Network Cloning of image classifiers (docs/api.md lists the public API)."""

__version__ = "0.1.0"
