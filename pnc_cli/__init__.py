"""pnc: Partial Network Cloning of image classifiers (docs/api.md lists the public API).

``import pnc_cli`` stays light (no torch): ``load`` and ``PncModel`` are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.version import __version__

if TYPE_CHECKING:
    from .api.peft import PncModel, load

__all__ = ["__version__", "load", "PncModel"]


def __getattr__(name: str) -> Any:
    if name in ("load", "PncModel"):
        from .api import peft

        return getattr(peft, name)
    raise AttributeError(f"module 'pnc_cli' has no attribute {name!r}")
