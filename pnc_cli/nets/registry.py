"""Architecture registry: builders and their split into blocks.

Layer L1 (torch). An architecture is a function ``build(num_classes, in_channels, input_size, **kwargs)``
returning ``(model, blocks, classifier)``: ``model`` is the ordinary ``nn.Module`` whose state dict is
stored, ``blocks`` are L of its submodules (or ``nn.Sequential`` views over them, glue such as pooling
and flattening included) and ``classifier`` is the final layer. Running the blocks in order, then the
classifier, must equal ``model(x)`` exactly. Custom architectures use the same protocol and are named
``package.module:function`` (docs/architectures.md).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import UnknownArchitectureError, UntrustedArchitectureError, UsageError
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
    if ":" in name:
        return _custom_architecture(name)
    known = ", ".join(sorted(_REGISTRY))
    raise UnknownArchitectureError(
        f"unknown architecture {name!r}; known: {known} (or package.module:function)"
    )


_CUSTOM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def is_custom(name: str) -> bool:
    """Whether ``name`` is a custom ``package.module:function`` (not a registered architecture)."""
    return name not in _REGISTRY and ":" in name


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
            f"pass --trust-arch {name} or set {ENV_TRUST}={name} if you trust it (docs/security.md)"
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


def _check_built(arch: str, built: Any) -> Built:
    """The builder protocol: ``(model, blocks, classifier)``, all ``nn.Module``, at least one block."""
    ok = isinstance(built, tuple | list) and len(built) == 3
    if ok:
        model, blocks, classifier = built
        ok = (
            isinstance(model, nn.Module)
            and isinstance(classifier, nn.Module)
            and isinstance(blocks, Sequence | nn.ModuleList)
            and all(isinstance(b, nn.Module) for b in blocks)
        )
    if not ok:
        raise UsageError(
            f"architecture {arch!r} must return (model, blocks, classifier) as nn.Modules; see docs/architectures.md"
        )
    return built[0], list(built[1]), built[2]


@dataclass
class Network:
    """A classifier with its block split; ``model`` owns the parameters.

    Images enter in [0, 1]; ``normalize`` applies the model's mean/std before block 0.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    model: nn.Module
    blocks: list[nn.Module]
    classifier: nn.Module
    mean: torch.Tensor = field(default_factory=lambda: torch.zeros(1))
    std: torch.Tensor = field(default_factory=lambda: torch.ones(1))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.device, x.dtype).view(1, -1, 1, 1)
        std = self.std.to(x.device, x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def features(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """Output of blocks ``[0:stop]`` for images ``x`` in [0, 1] (stop=0: normalised images)."""
        h = self.normalize(x)
        for block in self.blocks[:stop]:
            h = block(h)
        return h

    def run_blocks(self, h: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        for block in self.blocks[start:stop]:
            h = block(h)
        return h

    def head_from(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from features after block ``start``."""
        return self.classifier(self.run_blocks(h, start))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_from(self.normalize(x), 0)

    def to(self, device: torch.device | str) -> Network:
        self.model.to(device)
        self.mean = self.mean.to(device)
        self.std = self.std.to(device)
        return self

    def eval(self) -> Network:
        self.model.eval()
        return self

    def freeze(self) -> Network:
        """Eval mode and no gradients: frozen means frozen (BatchNorm buffers do not move)."""
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def block_shapes(self, in_channels: int, input_size: int) -> list[tuple[int, ...]]:
        """Shapes (without batch) of the input of each block, then of the classifier input (L+1 entries)."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        h = torch.zeros(1, in_channels, input_size, input_size, device=device)
        shapes = [tuple(h.shape[1:])]
        for block in self.blocks:
            h = block(h)
            shapes.append(tuple(h.shape[1:]))
        self.model.train(was_training)
        return shapes


def build_network(
    arch: str,
    *,
    num_classes: int,
    in_channels: int = 1,
    input_size: int | None = None,
    arch_kwargs: dict[str, Any] | None = None,
) -> Network:
    """Build an architecture and its block split (random weights)."""
    info = get_architecture(arch)
    kwargs = dict(arch_kwargs or {})
    size = input_size or info.default_input_size
    try:
        built = info.builder(num_classes, in_channels, size, **kwargs)
    except TypeError as exc:
        raise UsageError(f"cannot build architecture {arch!r} with options {kwargs}: {exc}") from None
    model, blocks, classifier = _check_built(arch, built)
    if info.num_blocks > 0 and len(blocks) != info.num_blocks:
        raise AssertionError(f"{arch} returned {len(blocks)} blocks, registered {info.num_blocks}")
    if not blocks:
        raise UsageError(f"architecture {arch!r} returned no blocks; see docs/architectures.md")
    return Network(arch, kwargs, model, list(blocks), classifier)
