"""Tests of pnc_cli.method.selector: the channel selector M and slicing of kept filters
(docs/method-spec.md §3)."""

from __future__ import annotations

import copy
import gc
import hashlib

import pytest
import torch
from torch import nn

from pnc_cli.core.errors import ConfigError, IncompatibleError
from pnc_cli.method.selector import ChannelSelector, count_kept_params, slice_state, unslice_state


class Block(nn.Module):
    """Residual block with a projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


def resnet_like() -> nn.Module:
    return nn.Sequential(
        Block(3, 8),
        Block(8, 12, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 10),
        nn.BatchNorm1d(10),
        nn.ReLU(),
        nn.Linear(10, 4),
    )


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    )


def randomize_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial running stats and affine params, then freeze in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval().requires_grad_(False)


def random_scores(selector: ChannelSelector, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in selector.scores.values():
            p.copy_(torch.randn(p.shape, generator=g))


def state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def assert_hard_equals_unsliced(module: nn.Module, x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Hard-mask forward of ``module`` == hook-free forward of ``module`` loaded with unsliced state."""
    plain = copy.deepcopy(module)  # copied before hooks are attached
    with ChannelSelector(module) as selector:
        random_scores(selector, seed)
        masks = selector.binarize()
        assert any(not bool(m.all()) for m in masks.values()), "test needs dropped channels"
        with torch.no_grad():
            hooked = module(x)
    plain.load_state_dict(unslice_state(slice_state(module, masks), masks, module))
    with torch.no_grad():
        unhooked = plain(x)
        assert not torch.equal(module(x), unhooked)  # hooks removed: the full module differs
    assert torch.equal(hooked, unhooked)
    return masks


def test_layers_found_in_named_modules_order() -> None:
    net = resnet_like()
    selector = ChannelSelector(net)
    expected = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert selector.names == expected
    assert "1__short__0" in selector.scores
    assert selector.score("1.short.0").shape == (12,)
    assert [p.numel() for p in selector.parameters()] == [8, 8, 8, 12, 12, 12, 10, 4]


def test_scores_are_the_only_parameters() -> None:
    net = small_net()
    selector = ChannelSelector(net)
    assert set(selector.state_dict()) == {f"scores.{k}" for k in selector.scores}


def test_soft_mask_gradients_reach_scores() -> None:
    net = randomize_bn(small_net())
    selector = ChannelSelector(net, temperature=2.0)
    net(torch.randn(4, 3, 4, 4)).square().sum().backward()
    for key, p in selector.scores.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, key


def test_soft_mask_scales_outputs() -> None:
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    plain = layer(x)
    selector = ChannelSelector(layer, init_score=0.0)
    assert torch.allclose(layer(x), plain * 0.5)
    selector.remove()
    assert torch.equal(layer(x), plain)


def test_penalty_decreases_when_scores_go_down() -> None:
    selector = ChannelSelector(small_net())
    before = selector.penalty().detach()
    assert before.shape == () and 0 < float(before) < 1
    with torch.no_grad():
        for p in selector.scores.values():
            p.sub_(1.0)
    assert float(selector.penalty().detach()) < float(before)


def test_penalty_step_lowers_penalty() -> None:
    selector = ChannelSelector(small_net())
    opt = torch.optim.SGD(selector.parameters(), lr=10.0)
    before = float(selector.penalty().detach())
    selector.penalty().backward()
    opt.step()
    assert float(selector.penalty().detach()) < before


def test_binarize_gives_binary_masks_and_keeps_one_per_layer() -> None:
    net = randomize_bn(small_net())
    selector = ChannelSelector(net)
    random_scores(selector, 1)
    with torch.no_grad():
        selector.score("3").fill_(-5.0)
        selector.score("3")[2] = -1.0  # top score of an all-dropped layer
    masks = selector.binarize()
    assert selector.is_hard
    for name in selector.names:
        assert masks[name].dtype == torch.bool
        assert bool(masks[name].any()), name
        if name != "3":
            assert torch.equal(masks[name], selector.score(name).detach() >= 0), name
        values = selector.mask(name)
        assert bool(((values == 0) | (values == 1)).all())
    assert masks["3"].tolist() == [False, False, True, False, False]
    kept = sum(int(m.sum()) for m in masks.values())
    assert selector.kept_fraction() == pytest.approx(kept / sum(m.numel() for m in masks.values()))


def test_hard_mask_zeroes_dropped_channels() -> None:
    conv = nn.Conv2d(2, 4, 1)
    selector = ChannelSelector(conv)
    with torch.no_grad():
        selector.score("").copy_(torch.tensor([1.0, -1.0, 2.0, -3.0]))
    selector.binarize()
    out = conv(torch.randn(3, 2, 5, 5))
    assert bool((out[:, [1, 3]] == 0).all()) and bool((out[:, [0, 2]] != 0).any())


def test_hard_masks_preview_does_not_switch_mode() -> None:
    selector = ChannelSelector(small_net())
    random_scores(selector, 2)
    preview = selector.hard_masks()
    assert not selector.is_hard
    assert {k: v.tolist() for k, v in preview.items()} == {
        k: v.tolist() for k, v in selector.binarize().items()
    }
    selector.soften()
    assert not selector.is_hard


def test_set_hard_masks_validates() -> None:
    selector = ChannelSelector(small_net())
    masks = selector.hard_masks()
    selector.set_hard_masks(masks)
    assert selector.is_hard
    with pytest.raises(IncompatibleError):
        selector.set_hard_masks({**masks, "0": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(IncompatibleError):
        selector.set_hard_masks({"0": masks["0"]})


def test_bad_config_raises() -> None:
    with pytest.raises(ConfigError):
        ChannelSelector(small_net(), temperature=0.0)
    with pytest.raises(ConfigError):
        ChannelSelector(nn.Sequential(nn.ReLU()))
    with pytest.raises(ConfigError):
        ChannelSelector(small_net()).binarize(threshold=1.0)


def test_frozen_module_bit_identical_after_training_step() -> None:
    net = randomize_bn(resnet_like())
    before = state_hash(net)
    selector = ChannelSelector(net)
    opt = torch.optim.Adam(selector.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss = net(torch.randn(4, 3, 8, 8)).square().mean() + selector.penalty()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in net.parameters())
    assert state_hash(net) == before
    assert any(float(p.detach().sub(3.0).abs().max()) > 0 for p in selector.scores.values())


def test_remove_is_idempotent_and_del_removes_hooks() -> None:
    net = small_net()
    x = torch.randn(2, 3, 4, 4)
    plain = net(x)
    selector = ChannelSelector(net, init_score=-1.0)
    assert not torch.equal(net(x), plain)
    selector.remove()
    selector.remove()
    assert torch.equal(net(x), plain)
    ChannelSelector(net, init_score=-1.0)  # dropped at once
    gc.collect()
    assert torch.equal(net(x), plain)
    assert all(not m._forward_hooks for m in net.modules())


def test_small_net_slice_unslice_equivalence() -> None:
    net = randomize_bn(small_net())
    assert_hard_equals_unsliced(net, torch.randn(5, 3, 4, 4))


def test_resnet_like_slice_unslice_equivalence() -> None:
    net = randomize_bn(resnet_like())
    for seed in range(3):
        assert_hard_equals_unsliced(net, torch.randn(4, 3, 8, 8), seed=seed)


def test_mobilenet_v2_features_slice_unslice_equivalence() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    features = torchvision.models.mobilenet_v2(weights=None, width_mult=0.25).features[2:6]
    features = randomize_bn(features)
    assert any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in features.modules())
    assert_hard_equals_unsliced(features, torch.randn(2, 8, 12, 12))


def test_sliced_state_is_smaller_and_shapes() -> None:
    net = randomize_bn(resnet_like())
    selector = ChannelSelector(net)
    random_scores(selector, 4)
    masks = selector.binarize()
    selector.remove()
    full = net.state_dict()
    sliced = slice_state(net, masks)
    assert set(sliced) == set(full)
    for name, keep in masks.items():
        assert sliced[f"{name}.weight"].shape[0] == int(keep.sum())
        assert torch.equal(sliced[f"{name}.weight"], full[f"{name}.weight"][keep])
    assert torch.equal(sliced["4.bias"], full["4.bias"][masks["4"]])
    assert sum(v.numel() for v in sliced.values()) < sum(v.numel() for v in full.values())
    unsliced = unslice_state(sliced, masks, net)
    for name, keep in masks.items():
        assert bool((unsliced[f"{name}.weight"][~keep] == 0).all())
    n_params = sum(p.numel() for p in net.parameters())
    kept = selector.num_kept_params(net)
    assert kept == count_kept_params(net, masks) < n_params
    param_names = {n for n, _ in net.named_parameters()}
    assert kept == sum(v.numel() for k, v in sliced.items() if k in param_names)


def test_all_kept_slice_is_identity() -> None:
    net = small_net()
    masks = ChannelSelector(net).binarize()
    assert all(bool(m.all()) for m in masks.values())
    sliced = slice_state(net, masks)
    for k, v in net.state_dict().items():
        assert torch.equal(sliced[k], v)
    assert count_kept_params(net, masks) == sum(p.numel() for p in net.parameters())


def test_slice_validation() -> None:
    net = small_net()
    masks = ChannelSelector(net).binarize()
    with pytest.raises(IncompatibleError):
        slice_state(net, {"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(IncompatibleError):
        slice_state(net, {"0": torch.ones(5, dtype=torch.bool)})
    sliced = slice_state(net, masks)
    bad = dict(masks)
    bad["0"] = masks["0"].clone()
    bad["0"][0] = False
    with pytest.raises(IncompatibleError, match="sliced tensor"):
        unslice_state(sliced, bad, net)
