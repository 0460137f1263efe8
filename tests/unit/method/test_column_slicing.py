"""Cutting weight columns that only ever see zeros (selector.zero_inputs), the parameter-weighted mask
penalty, and the ZEST locality distance."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from pnc_cli.method.metrics import LOCALITY_SURROGATE, zest_locality
from pnc_cli.method.selector import (
    ChannelSelector,
    bake_masks,
    count_kept_params,
    maskable_layers,
    slice_state,
    unslice_state,
    zero_inputs,
)
from pnc_cli.method.surrogate import draw_masks, fit_surrogate
from pnc_cli.method.zest import zest_distance
from pnc_cli.nets import build_network

torch.set_num_threads(1)


def _module(arch: str, start: int, size: int) -> tuple[nn.ModuleList, tuple[int, ...]]:
    torch.manual_seed(0)
    net = build_network(arch, num_classes=4, in_channels=1, input_size=size).eval()
    return copy.deepcopy(nn.ModuleList(net.blocks[start:])), net.block_shapes(1, size)[start]


def _run(module: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for block in module:
        x = block(x)
    return x


def test_dropped_conv_channels_cut_the_linear_columns_behind_them() -> None:
    module, shape = _module("lenet5", 1, 28)  # conv2 -> relu -> pool -> flatten -> fc1 -> relu -> fc2
    masks = {n: torch.ones(m.weight.shape[0], dtype=torch.bool) for n, m in maskable_layers(module).items()}
    masks["0.0"][[1, 4, 7]] = False  # three conv2 filters
    masks["1.1"][:60] = False  # half of fc1
    bake_masks(module, masks)
    keep_in = zero_inputs(module, masks, shape)
    assert set(keep_in) == {"1.1", "1.3"}
    assert int((~keep_in["1.1"]).sum()) == 3 * 25  # 5x5 positions per dropped channel
    assert int((~keep_in["1.3"]).sum()) == 60
    sliced = slice_state(module, masks, shape)
    assert sliced["1.1.weight"].shape == (60, 400 - 75) and sliced["1.3.weight"].shape == (84, 60)
    rebuilt = copy.deepcopy(module)
    rebuilt.load_state_dict(unslice_state(sliced, masks, module, shape))
    x = torch.randn(5, *shape)
    with torch.no_grad():
        assert torch.equal(_run(rebuilt, x), _run(module, x))
    assert count_kept_params(module, masks, shape) < count_kept_params(module, masks)


def test_batchnorm_after_a_dropped_filter_keeps_the_columns() -> None:
    module, shape = _module("tiny_cnn", 1, 16)  # conv -> BN -> ReLU: BN(0) is a constant, not zero
    masks = {n: torch.ones(m.weight.shape[0], dtype=torch.bool) for n, m in maskable_layers(module).items()}
    masks["0.0"][:3] = False
    assert zero_inputs(module, masks, shape) == {}


def test_params_penalty_is_the_kept_fraction_of_maskable_parameters() -> None:
    module, _ = _module("lenet5", 1, 28)
    sel = ChannelSelector(module, temperature=1e-3)
    with torch.no_grad():
        for name in sel.names:
            sel.score(name).fill_(1.0)
        sel.score("1.1")[:60] = -1.0  # half of fc1 off
    layers = maskable_layers(module)
    total = sum(m.weight.numel() + m.bias.numel() for m in layers.values())
    fc1 = layers["1.1"]
    expected = (total - 60 * (fc1.weight.shape[1] + 1)) / total
    assert abs(sel.penalty("params").item() - expected) < 1e-5
    assert (
        abs(sel.penalty("channels").item() - (1 - 60 / sum(sel.score(n).numel() for n in sel.names))) < 1e-5
    )
    sel.remove()


def test_zest_locality_is_zero_for_the_same_model_and_positive_for_another() -> None:
    torch.manual_seed(0)
    a = build_network("tiny_cnn", num_classes=4, in_channels=1, input_size=16).eval()
    torch.manual_seed(1)
    b = build_network("tiny_cnn", num_classes=4, in_channels=1, input_size=16).eval()
    x = torch.rand(6, 1, 16, 16)
    assert zest_locality(lambda v: (a(v), a(v)), x) < 1e-6
    assert zest_locality(lambda v: (a(v), b(v)), x) > 1e-3


def test_zest_locality_side_by_side_fit_equals_two_fits() -> None:
    """One fit over [target ; cloned] outputs is the two separate fits (each column its own ridge)."""
    torch.manual_seed(0)
    a = build_network("tiny_cnn", num_classes=4, in_channels=1, input_size=16).eval()
    torch.manual_seed(1)
    b = build_network("tiny_cnn", num_classes=6, in_channels=1, input_size=16).eval()
    x = torch.rand(6, 1, 16, 16)
    cfg = replace(LOCALITY_SURROGATE, samples=len(x))
    masks = draw_masks(cfg.masks, cfg.grid, cfg.masking_rate, torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        g_a = fit_surrogate(lambda v: a(v).softmax(1), x, cfg, masks=masks)
        g_b = fit_surrogate(lambda v: b(v).softmax(1), x, cfg, masks=masks)
        expected = zest_distance(g_a.theta, g_b.theta)
        got = zest_locality(lambda v: (a(v), b(v)), x)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
