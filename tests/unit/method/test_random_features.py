"""Random ReLU features before the joint head's solve (the RanPAC option, pnc_cli.method.random_features):
the projection is regenerated from its seed, the delta stores only the standardisation (counted), and a
clone with the option applies, runs and comes off byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pnc_cli.api import apply_delta, load_cloned, remove_delta
from pnc_cli.api.cloning import clone
from pnc_cli.core.config import CloneConfig
from pnc_cli.core.errors import ConfigError, DeltaFormatError
from pnc_cli.io.delta_file import DeltaFile, count_params, read_delta, validate_delta
from pnc_cli.method.random_features import RandomFeatures, projection

torch.set_num_threads(1)


def test_the_projection_is_a_function_of_its_seed() -> None:
    assert torch.equal(projection(3, 5, 7), projection(3, 5, 7))
    assert not torch.equal(projection(3, 5, 7), projection(4, 5, 7))
    rf = RandomFeatures(torch.zeros(5), torch.ones(5), features=7, seed=3)
    x = torch.randn(4, 5)
    out = rf(x)
    assert out.shape == (4, 12) and torch.equal(out[:, :5], x)
    assert torch.allclose(out[:, 5:], torch.relu(x @ projection(3, 5, 7)))
    assert set(rf.state_dict()) == {"mean", "scale"}  # the projection is never stored


def test_random_features_must_be_in_range() -> None:
    with pytest.raises(ConfigError, match="random_features"):
        CloneConfig(random_features=-1)
    with pytest.raises(ConfigError, match="joint head only"):
        CloneConfig(random_features=8, head="append")


def test_a_clone_with_random_features_applies_runs_and_comes_off(
    tiny_target: Path, tiny_source: Path, tmp_path: Path
) -> None:
    config = CloneConfig(seed=0, random_features=16, max_extra_ratio=0.3)
    d, merged = tmp_path / "d.safetensors", tmp_path / "m.safetensors"
    doc = clone(
        source=tiny_source,
        target=tiny_target,
        classes="5",
        output=d,
        merged=merged,
        config=config,
        device="cpu",
    )
    delta = read_delta(d)
    assert delta.spec.head.random_features == 16 and delta.spec.head.random_seed == 0
    width = delta.tensors["head.weight"].shape[1]
    assert delta.tensors["features.mean"].shape == (width - 16,)
    assert doc["extra_params"] == count_params(delta.tensors) <= 0.3 * 6109 + 1
    assert doc["tar_acc"] >= 0.7  # a sanity bound on the tiny nets (18 test images of "5")
    applied = tmp_path / "c.safetensors"
    apply_delta(target=tiny_target, deltas=[d], output=applied)
    x = torch.rand(5, 1, 16, 16)
    model, _, _ = load_cloned(applied)
    again, _, _ = load_cloned(merged)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    remove_delta(cloned=applied, output=tmp_path / "t.safetensors")
    assert (tmp_path / "t.safetensors").read_bytes() == Path(tiny_target).read_bytes()
    # the standardisation without its head info (or the reverse) is refused
    info = {**delta.info, "head": {"kind": "joint", "pool": delta.spec.head.pool}}
    with pytest.raises(DeltaFormatError, match="random features"):
        validate_delta(DeltaFile(delta.name, dict(delta.tensors), info))
