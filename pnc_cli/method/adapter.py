"""Adapter ``A`` of the cloned model (docs/method-spec.md §3).

Layer method: pure torch + stdlib (+ ``pnc_cli.core.errors``). Must not import typer, rich or any
other pnc_cli module, must not print and must not touch files.

``A`` maps the target's features after block ``R`` (shape ``in_shape``, batch excluded) to the shape
the source's block ``R_s`` expects (``out_shape``). Shapes are ``(C, H, W)`` for feature maps and
``(D,)`` for flat features. Four kinds:

- conv -> conv: 1x1 convolution (with bias). When ``C_in == C_out`` it is initialised to the identity
  and has no BatchNorm, so equal shapes give an exact identity at init; otherwise Kaiming init followed
  by ``BatchNorm2d(C_out)``. Where spatial sizes differ, a bilinear resize is applied *before* the
  convolution when the input is larger (fewer pixels to convolve) and *after* it otherwise. A 1x1
  convolution and a bilinear resize commute exactly (both are linear, the resize weights sum to 1), so
  the placement only changes the cost, never the function.
- flat -> flat: ``Linear(D_in, D_out)``, identity-initialised when ``D_in == D_out``.
- conv -> flat: flatten, then ``Linear(C*H*W, D_out)``.
- flat -> conv: ``Linear(D_in, C*H*W)``, then reshape to ``(C, H, W)``.

``Adapter.config()`` gives the JSON-able arguments that rebuild the same structure with
``build_adapter(**config)`` before ``load_state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pnc_cli.core.errors import ConfigError, IncompatibleError

Shape = tuple[int, ...]


def _as_shape(shape: Sequence[int], what: str) -> Shape:
    """Validate a feature shape without batch dim: ``(C, H, W)`` or ``(D,)`` of positive ints."""
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"adapter {what} must be a sequence of ints, got {shape!r}") from exc
    if len(out) not in (1, 3) or any(s <= 0 for s in out):
        raise ConfigError(f"adapter {what} must be (C, H, W) or (D,) with positive sizes, got {list(out)}")
    return out


def _identity_linear(linear: nn.Linear) -> None:
    """Set a square Linear layer to the identity map."""
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.out_features))
        linear.bias.zero_()


class Adapter(nn.Module):
    """Learnable map from target features of ``in_shape`` to source features of ``out_shape``.

    Build it with :func:`build_adapter`; the constructor takes the same arguments.
    """

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int]) -> None:
        """Create the layers for the shape kind (see the module docstring)."""
        super().__init__()
        self.in_shape: Shape = _as_shape(in_shape, "in_shape")
        self.out_shape: Shape = _as_shape(out_shape, "out_shape")
        self.kind = f"{'conv' if len(self.in_shape) == 3 else 'flat'}->" + (
            "conv" if len(self.out_shape) == 3 else "flat"
        )
        self.conv: nn.Conv2d | None = None
        self.bn: nn.BatchNorm2d | None = None
        self.linear: nn.Linear | None = None
        self.resize_first = False
        if self.kind == "conv->conv":
            self._build_conv()
        else:
            self._build_linear()

    def _build_conv(self) -> None:
        c_in, h_in, w_in = self.in_shape
        c_out, h_out, w_out = self.out_shape
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=True)
        if c_in == c_out:
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(c_in).view(c_in, c_in, 1, 1))
                nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]
        else:
            nn.init.kaiming_normal_(self.conv.weight, nonlinearity="linear")
            nn.init.zeros_(self.conv.bias)  # type: ignore[arg-type]
            self.bn = nn.BatchNorm2d(c_out)
        self.resize_first = h_in * w_in > h_out * w_out

    def _build_linear(self) -> None:
        d_in = math.prod(self.in_shape)
        d_out = math.prod(self.out_shape)
        self.linear = nn.Linear(d_in, d_out)
        if self.kind == "flat->flat" and d_in == d_out:
            _identity_linear(self.linear)

    def config(self) -> dict[str, Any]:
        """JSON-able arguments of :func:`build_adapter` that rebuild this structure."""
        return {"in_shape": list(self.in_shape), "out_shape": list(self.out_shape)}

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.out_shape[1:]
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape ``[N, *in_shape]`` to ``[N, *out_shape]``."""
        if tuple(x.shape[1:]) != self.in_shape:
            raise IncompatibleError(
                f"adapter expects features of shape {list(self.in_shape)}, got {list(x.shape[1:])}"
            )
        if self.conv is not None:
            if self.resize_first:
                x = self._resize(x)
            x = self.conv(x)
            if not self.resize_first:
                x = self._resize(x)
            return self.bn(x) if self.bn is not None else x
        assert self.linear is not None
        y = self.linear(x.flatten(1))
        return y.view(x.shape[0], *self.out_shape)

    def extra_repr(self) -> str:
        return f"in_shape={list(self.in_shape)}, out_shape={list(self.out_shape)}, kind={self.kind}"


class Renorm(nn.Module):
    """The adapter of a branch that reads the input image (R = 0): the source sees the image
    normalised its own way, ``x_s = x_t · scale + shift`` per channel, where ``x_t`` is the image as the
    target normalised it. Fixed (buffers, never trained); ``shape`` is the image shape ``(C, H, W)``."""

    kind = "renorm"
    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape: Shape = _as_shape(shape, "shape")
        self.out_shape: Shape = self.in_shape
        if len(self.in_shape) != 3:
            raise ConfigError(f"a renorm adapter reads images (C, H, W), got {list(self.in_shape)}")
        channels = self.in_shape[0]
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    @classmethod
    def between(
        cls,
        shape: Sequence[int],
        target_norm: tuple[torch.Tensor, torch.Tensor],
        source_norm: tuple[torch.Tensor, torch.Tensor],
    ) -> Renorm:
        """The map from the target's normalisation ``(mean, std)`` (per channel, or one value) to the
        source's."""
        r = cls(shape)
        c = r.in_shape[0]

        def per_channel(t: torch.Tensor) -> torch.Tensor:
            return t.detach().double().reshape(-1).cpu().expand(c)

        (tm, ts), (sm, ss) = (tuple(per_channel(t) for t in pair) for pair in (target_norm, source_norm))
        with torch.no_grad():
            r.scale.copy_(ts / ss)
            r.shift.copy_((tm - sm) / ss)
        return r

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.in_shape)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1, 1, 1)
        return x * self.scale.to(x.dtype).view(view) + self.shift.to(x.dtype).view(view)


def adapter_from_config(config: dict[str, Any]) -> Adapter | Renorm:
    """Rebuild an adapter's structure from its ``config()`` (then ``load_state_dict``)."""
    if config.get("kind") == Renorm.kind:
        return Renorm(config["shape"])
    return build_adapter(config["in_shape"], config["out_shape"])


def build_adapter(in_shape: Sequence[int], out_shape: Sequence[int]) -> Adapter:
    """Build the adapter for the given feature shapes (batch dim excluded).

    Args:
        in_shape: target feature shape after block ``R``: ``(C, H, W)`` or ``(D,)``.
        out_shape: feature shape the source block ``R_s`` expects, same convention.

    Returns:
        A freshly initialised :class:`Adapter`; identity at init when the shapes are equal.

    Raises:
        ConfigError: a shape is not ``(C, H, W)`` or ``(D,)`` of positive ints.
    """
    return Adapter(in_shape, out_shape)
