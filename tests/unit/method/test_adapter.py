"""Tests of pnc_cli.method.adapter: the adapter A of the cloned model (docs/method-spec.md §3)."""

from __future__ import annotations

import json

import pytest
import torch

from pnc_cli.core.errors import ConfigError, IncompatibleError
from pnc_cli.method.adapter import Adapter, build_adapter


@pytest.mark.parametrize("shape", [(8, 5, 5), (12,)])
def test_equal_shapes_exact_identity_at_init(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    adapter = build_adapter(shape, shape)
    x = torch.randn(4, *shape)
    for mode in ("train", "eval"):
        getattr(adapter, mode)()
        assert torch.equal(adapter(x), x)


def test_same_channels_identity_conv_then_resize() -> None:
    # same channels, different spatial size: identity conv, only the resize changes values
    adapter = build_adapter((4, 8, 8), (4, 4, 4)).eval()
    x = torch.randn(2, 4, 8, 8)
    expected = torch.nn.functional.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(adapter(x), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("in_shape", "out_shape", "kind"),
    [
        ((6, 8, 8), (10, 4, 4), "conv->conv"),
        ((6, 4, 4), (3, 9, 7), "conv->conv"),
        ((6, 4, 4), (6, 4, 4), "conv->conv"),
        ((20,), (7,), "flat->flat"),
        ((3, 4, 4), (11,), "conv->flat"),
        ((15,), (2, 3, 5), "flat->conv"),
    ],
)
def test_output_shape_and_gradients(in_shape: tuple[int, ...], out_shape: tuple[int, ...], kind: str) -> None:
    torch.manual_seed(0)
    adapter = build_adapter(in_shape, out_shape)
    assert adapter.kind == kind
    x = torch.randn(3, *in_shape, requires_grad=True)
    y = adapter(x)
    assert y.shape == (3, *out_shape)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in adapter.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_channel_change_uses_batchnorm_and_resize_placement() -> None:
    down = build_adapter((6, 8, 8), (10, 4, 4))
    up = build_adapter((6, 4, 4), (10, 8, 8))
    assert down.bn is not None and down.resize_first
    assert up.bn is not None and not up.resize_first
    assert build_adapter((6, 4, 4), (6, 4, 4)).bn is None


def test_resize_commutes_with_conv() -> None:
    # placement of the resize is a cost choice only: conv(resize(x)) == resize(conv(x))
    torch.manual_seed(0)
    adapter = build_adapter((5, 4, 4), (7, 9, 9)).eval()
    assert not adapter.resize_first
    x = torch.randn(2, 5, 4, 4)
    resized = torch.nn.functional.interpolate(x, size=(9, 9), mode="bilinear", align_corners=False)
    other = adapter.bn(adapter.conv(resized))
    assert torch.allclose(adapter(x), other, atol=1e-5)


@pytest.mark.parametrize(
    ("in_shape", "out_shape"),
    [((6, 8, 8), (10, 4, 4)), ((20,), (7,)), ((3, 4, 4), (11,)), ((15,), (2, 3, 5))],
)
def test_config_roundtrip(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    adapter = build_adapter(in_shape, out_shape)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p))
    config = json.loads(json.dumps(adapter.config()))
    assert config == {"in_shape": list(in_shape), "out_shape": list(out_shape)}
    rebuilt = build_adapter(**config)
    rebuilt.load_state_dict(adapter.state_dict())
    x = torch.randn(2, *in_shape)
    assert torch.equal(rebuilt.eval()(x), adapter.eval()(x))


@pytest.mark.parametrize("bad", [(), (3, 4), (3, 0, 4), (1, 2, 3, 4), ("a",), None])
def test_bad_shapes_raise_config_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        build_adapter(bad, (4,))  # type: ignore[arg-type]


def test_wrong_input_shape_raises() -> None:
    adapter = build_adapter((4, 5, 5), (4, 5, 5))
    with pytest.raises(IncompatibleError, match="expects features"):
        adapter(torch.randn(2, 3, 5, 5))


def test_is_module() -> None:
    assert isinstance(build_adapter((3,), (3,)), Adapter)
