"""The architecture registry: registry state only (register, look up, list), as timm's ``_registry``.

An architecture is a builder ``build(num_classes, in_channels, input_size, **kwargs)`` returning
``(model, blocks, classifier)`` (the protocol: nets/network.py, docs/architectures.md). This module
only records builders by name; ``pnc_cli.nets`` (the package ``__init__``) fills it by importing
nets/architectures.py, so importing any ``pnc_cli.nets`` module gives the full registry. Custom
architectures are looked up as ``package.module:function``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from ..core.errors import UnknownArchitectureError, UntrustedArchitectureError
from ..core.trust import ENV_TRUST, is_trusted, user_code_blocked

Built = tuple[nn.Module, Sequence[nn.Module], nn.Module]
Builder = Callable[..., Built]


@dataclass(frozen=True)
class ArchInfo:
    name: str
    builder: Builder
    num_blocks: int
    description: str
    default_input_size: int = 28
    tiny: bool = False


_REGISTRY: dict[str, ArchInfo] = {}
_NAMESPACES: dict[str, Callable[[str], ArchInfo]] = {}


def register_namespace(prefix: str, resolver: Callable[[str], ArchInfo]) -> None:
    """Names ``prefix:NAME`` are resolved by ``resolver`` (nets/ecosystem.py: ``torchvision:``, ``timm:``),
    never imported as a custom ``package.module:function``."""
    _NAMESPACES[prefix] = resolver


def register_architecture(
    name: str, *, num_blocks: int, description: str, default_input_size: int = 28, tiny: bool = False
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name``."""

    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = ArchInfo(name, fn, num_blocks, description, default_input_size, tiny)
        return fn

    return deco


def list_architectures() -> list[ArchInfo]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_architecture(name: str) -> ArchInfo:
    """Look up a registered name, or import a custom ``package.module:function``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in _NAMESPACES:
        return _NAMESPACES[prefix](name)
    library = prefix.split(".")[0]
    if sep and library in _NAMESPACES:  # torchvision.models:resnet18 is not a pnc builder
        raise UnknownArchitectureError(
            f"architecture {name!r}: write it {library}:{rest} (docs/architectures.md)"
        )
    if ":" in name:
        return _custom_architecture(name)
    known = ", ".join(sorted(_REGISTRY))
    raise UnknownArchitectureError(
        f"unknown architecture {name!r}; known: {known} (or package.module:function)"
    )


_CUSTOM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def is_custom(name: str) -> bool:
    """Whether ``name`` is a custom ``package.module:function`` (not a registered architecture)."""
    return name not in _REGISTRY and ":" in name and name.partition(":")[0] not in _NAMESPACES


def _custom_architecture(name: str) -> ArchInfo:
    """Import ``package.module:function`` from PYTHONPATH or the current directory, if trusted.

    Importing runs the module's code, so nothing is imported unless the user trusts ``name``
    (core/trust.py): a file's metadata naming a module is never enough.
    """
    if len(name) > 200 or not _CUSTOM_NAME.match(name):
        raise UnknownArchitectureError(
            f"custom architecture {name[:80]!r} must be written package.module:function"
        )
    if not is_trusted(name):
        if user_code_blocked():
            raise UntrustedArchitectureError(
                f"architecture {name!r} is user code; this command reads headers only and never imports it"
            )
        raise UntrustedArchitectureError(
            f"architecture {name!r} is user code (a custom package.module:function) and is not trusted; "
            f"pass trust_arch {name} or set {ENV_TRUST}={name} if you trust it (docs/security.md)",
            options=("trust_arch",),
        )
    module_name, _, fn_name = name.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after site-packages: a local file never shadows an installed package
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise UnknownArchitectureError(
            f"custom architecture {name!r} cannot be imported ({exc}); check PYTHONPATH"
        ) from None
    if not callable(fn):
        raise UnknownArchitectureError(f"custom architecture {name!r} is not a function")
    return ArchInfo(name, fn, -1, f"custom architecture {name}")
