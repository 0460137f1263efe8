"""The clone's validation split is stratified, seeded and capped (its images are held in memory)."""

from __future__ import annotations

import pytest
import torch

from pnc_cli.api.cloning import _stratified_val
from pnc_cli.core.config import CloneConfig
from pnc_cli.core.errors import ConfigError


def _labels() -> torch.Tensor:
    return torch.cat([torch.full((n,), c) for c, n in enumerate((1000, 500, 100))])


def test_uncapped_split_takes_the_fraction_of_every_class() -> None:
    val = _stratified_val(_labels(), 0.2, seed=0)
    counts = torch.bincount(_labels()[val], minlength=3).tolist()
    assert counts == [200, 100, 20]


def test_cap_bounds_the_split_and_keeps_the_class_shares() -> None:
    labels = _labels()
    val = _stratified_val(labels, 0.2, seed=0, cap=64)
    counts = torch.bincount(labels[val], minlength=3).tolist()
    assert sum(counts) <= 64
    assert counts == [int(200 * 64 / 320), int(100 * 64 / 320), int(20 * 64 / 320)]  # 40, 20, 4
    # the capped split is a subset of the uncapped one: the rest of it goes back to training
    full = _stratified_val(labels, 0.2, seed=0)
    assert bool((val & ~full).sum() == 0)
    assert torch.equal(val, _stratified_val(labels, 0.2, seed=0, cap=64))  # seeded


def test_a_cap_above_the_split_changes_nothing() -> None:
    labels = _labels()
    assert torch.equal(_stratified_val(labels, 0.2, 1, cap=10_000), _stratified_val(labels, 0.2, 1))


def test_cap_is_validated() -> None:
    assert CloneConfig().max_val_samples == 2048
    with pytest.raises(ConfigError, match="max_val_samples"):
        CloneConfig(max_val_samples=0)
