"""``Network``: a classifier with its block split, and ``build_network`` (the builder protocol).

An architecture is a function ``build(num_classes, in_channels, input_size, **kwargs)`` returning
``(model, blocks, classifier)``: ``model`` is the ordinary ``nn.Module`` whose state dict is
stored, ``blocks`` are L of its submodules (or ``nn.Sequential`` views over them, glue such as pooling
and flattening included) and ``classifier`` is the final layer. Running the blocks in order, then the
classifier, must equal ``model(x)`` exactly. Custom architectures use the same protocol and are named
``package.module:function`` (docs/architectures.md). The builders are found in nets/registry.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.errors import UsageError
from .registry import Built, get_architecture


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
            f"architecture {arch!r} must return (model, blocks, classifier) as nn.Modules; see "
            "docs/architectures.md"
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
