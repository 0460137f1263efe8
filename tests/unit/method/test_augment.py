"""Shifted copies of the training images for the joint head's statistics (pnc_cli.method.augment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pnc_cli.api.cloning import clone
from pnc_cli.core.config import CloneConfig
from pnc_cli.core.errors import ConfigError
from pnc_cli.io.delta_file import read_delta
from pnc_cli.method.augment import (
    MAX_SHIFTS,
    STEPS,
    auto_shifts,
    forward_macs,
    shift,
    shift_step,
    with_shifts,
)
from pnc_cli.method.cloned_model import ClonedModel
from pnc_cli.method.joint import JointSettings, batches, default_shifts, fit_joint
from pnc_cli.nets import build_network
from tests.data.make_golden import TARGET_CLASSES
from tests.unit.method.test_joint import _nets, _planted

torch.set_num_threads(1)


def test_a_shift_moves_every_pixel_and_repeats_the_edges() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    right = shift(x, 1, 0)
    assert torch.equal(right[..., :, 1:], x[..., :, :3])  # moved one column right
    assert torch.equal(right[..., :, 0], x[..., :, 0])  # the new column repeats the edge
    down = shift(x, 0, 2)
    assert torch.equal(down[..., 2:, :], x[..., :2, :])
    assert torch.equal(down[..., 0, :], x[..., 0, :]) and torch.equal(down[..., 1, :], x[..., 0, :])
    assert torch.equal(shift(x, -1, -1)[..., :3, :3], x[..., 1:, 1:])
    assert shift(x, 0, 0) is x and shift(x, 1, 1).shape == x.shape


def test_the_step_grows_with_the_image_side() -> None:
    assert [shift_step(s) for s in (8, 28, 32, 42, 64, 224)] == [1, 1, 1, 2, 2, 8]


def test_each_batch_is_followed_by_its_shifted_copies_with_the_same_labels() -> None:
    x, y = torch.rand(10, 1, 8, 8), torch.arange(10)
    train = batches(x, y, 4)
    assert with_shifts(train, 0) is train  # no copies: the training batches themselves
    plain = list(train())
    out = list(with_shifts(batches(x, y, 4), 3)())
    assert len(out) == 4 * len(plain)  # three batches, each followed by three copies
    for i, (xb, yb) in enumerate(plain):
        group = out[4 * i : 4 * i + 4]
        assert torch.equal(group[0][0], xb)
        assert all(torch.equal(g[1], yb) for g in group)
        for (dx, dy), (xs, _) in zip(STEPS[:3], group[1:], strict=True):
            assert torch.equal(xs, shift(xb, dx, dy))
    assert len(list(with_shifts(batches(x, y, 4), MAX_SHIFTS)())) == 9 * len(plain)


@pytest.mark.parametrize("count", [-1, MAX_SHIFTS + 1])
def test_a_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="shifts"):
        with_shifts(batches(torch.rand(2, 1, 4, 4), torch.zeros(2), 2), count)
    with pytest.raises(ConfigError, match="shifts"):
        CloneConfig(shifts=count)


def test_the_head_fitted_with_shifts_equals_the_head_fitted_on_the_augmented_set() -> None:
    """The statistics sum over the copies: fitting with ``shifts`` is fitting on the explicitly shifted
    training set (same candidates, same validation, same head up to float rounding)."""
    target, source = _nets()
    x, y = _planted(128, 0)
    val = _planted(64, 1)
    base = ClonedModel(target, TARGET_CLASSES).eval()

    def fit(train_x: torch.Tensor, train_y: torch.Tensor, shifts: int) -> torch.Tensor:
        out = fit_joint(
            base=base,
            source=source,
            new_classes=["3"],
            image_shape=(1, 16, 16),
            train=batches(train_x, train_y, 128),
            val=val,
            settings=JointSettings(shifts=shifts),
        )
        return torch.cat([out.branch.head.weight.flatten(), out.branch.head.bias])

    explicit = torch.cat([x] + [shift(x, dx, dy) for dx, dy in STEPS[:4]])
    with_copies = fit(x, y, 4)
    assert torch.allclose(with_copies, fit(explicit, y.repeat(5), 0), atol=1e-4)
    assert not torch.allclose(with_copies, fit(x, y, 0), atol=1e-4)  # the copies did change the head


def test_multiply_accumulates_are_counted_per_layer_call() -> None:
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    lin = torch.nn.Linear(3 * 4 * 4, 5)
    net = torch.nn.Sequential(conv, torch.nn.Flatten(), lin)
    macs = forward_macs([net], lambda: net(torch.zeros(1, 2, 4, 4)))
    assert macs == 3 * 4 * 4 * (2 * 3 * 3) + 5 * 48
    assert forward_macs([net], lambda: net(torch.zeros(2, 2, 4, 4))) == 2 * macs  # per image
    assert not net._forward_hooks and not conv._forward_hooks  # the probe leaves no hook behind


def test_the_default_count_fits_the_extra_work_in_the_budget() -> None:
    assert auto_shifts(10**6, 1000, budget=8 * 10**9) == 8
    assert auto_shifts(10**6, 1000, budget=3 * 10**9 + 1) == 3
    assert auto_shifts(10**6, 1000, budget=10**9 - 1) == 0
    assert auto_shifts(0, 0) == MAX_SHIFTS
    assert auto_shifts(10**6, 1000) == MAX_SHIFTS  # lenet5-sized pairs on a few thousand images: all 8
    assert auto_shifts(10**9, 1000) == 0  # resnet18-sized pairs: none


def test_the_default_is_all_eight_for_small_nets_and_none_for_a_resnet() -> None:
    target, source = _nets()
    base = ClonedModel(target, TARGET_CLASSES).eval()
    assert default_shifts(base, source, (1, 16, 16), 1000, 1024) == MAX_SHIFTS
    big_t = build_network("resnet18", num_classes=3, in_channels=3, input_size=32).freeze()
    big_s = build_network("resnet18", num_classes=4, in_channels=3, input_size=32).freeze()
    assert default_shifts(ClonedModel(big_t, TARGET_CLASSES).eval(), big_s, (3, 32, 32), 1000, 1024) == 0


def test_a_clone_records_the_copies_it_used(tiny_target: Path, tiny_source: Path, tmp_path: Path) -> None:
    common = {"source": tiny_source, "target": tiny_target, "classes": "5", "device": "cpu"}
    auto = clone(output=tmp_path / "auto.safetensors", config=CloneConfig(seed=0), **common)
    none = clone(output=tmp_path / "none.safetensors", config=CloneConfig(seed=0, shifts=0), **common)
    assert auto["shifts"] == MAX_SHIFTS and none["shifts"] == 0
    for name, n in (("auto", MAX_SHIFTS), ("none", 0)):
        assert read_delta(tmp_path / f"{name}.safetensors").info["config"]["clone"]["shifts"] == n
    with pytest.raises(ConfigError, match="joint head only"):
        CloneConfig(head="append", shifts=2)
