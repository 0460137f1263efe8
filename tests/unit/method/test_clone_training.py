"""Branch training (docs/method-spec.md §4; pnc_cli.method.clone_training): frozen means frozen, binary
masks, baked masks, a falling loss, and determinism of a whole ``api.cloning.clone``.

Models: the session's tiny_cnn target (digits 0-4) and source (digits 5-9) from tests/conftest.py;
tiny_cnn has BatchNorm, so "frozen" covers running statistics and ``num_batches_tracked`` too.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from pnc_cli.api import cloning
from pnc_cli.core.config import CloneConfig, SurrogateConfig
from pnc_cli.io.data import conform_set, load_data
from pnc_cli.io.model_file import LoadedModel, load_model
from pnc_cli.method.clone_training import LocalTargets, train_branch
from pnc_cli.method.cloned_model import ClonedModel, new_branch
from pnc_cli.method.selector import ChannelSelector, bake_masks, maskable_layers
from pnc_cli.method.surrogate import fit_surrogate
from pnc_cli.nets import Network
from pnc_cli.nets.training import predict_logits

torch.set_num_threads(1)

FAST = CloneConfig(
    head="append",
    epochs=2,
    finetune_epochs=1,
    alpha=0.01,
    beta=0.01,
    loc_samples=4,
    loc_masks=4,
    seed=0,
    max_ori_drop=None,
)  # the appended head, every loss term on
SURROGATE = SurrogateConfig(samples=16, masks=16, seed=0)


def tensor_hashes(net: Network) -> dict[str, str]:
    """sha256 of every state-dict entry (parameters and buffers, BatchNorm statistics included)."""
    out = {}
    for k, v in net.model.state_dict().items():
        t = v.detach().cpu().contiguous().reshape(-1)
        out[k] = hashlib.sha256(
            str((t.dtype, tuple(t.shape))).encode() + t.view(torch.uint8).numpy().tobytes()
        ).hexdigest()
    return out


def assert_frozen(net: Network) -> None:
    assert not any(p.requires_grad for p in net.model.parameters())
    assert not any(m.training for m in net.model.modules())


@pytest.fixture(scope="module")
def setup(tiny_target: Path, tiny_source: Path) -> SimpleNamespace:
    """Loaded target/source, training tensors (class 5 + pseudo-labelled 0-4) and the local targets."""
    target, source = load_model(tiny_target), load_model(tiny_source)
    spec = target.spec
    new = conform_set(load_data("digits", classes=["5"], split="train", fraction=0.3), 1, spec.input_size)
    dom = conform_set(
        load_data("digits", classes=list(spec.classes), split="train", fraction=0.3), 1, spec.input_size
    )
    pseudo = predict_logits(target.network, dom.images).argmax(1)
    x = torch.cat([new.images, dom.images])
    y = torch.cat([new.labels + spec.num_classes, pseudo])
    g = fit_surrogate(source.network, new.images[: SURROGATE.samples], SURROGATE)
    local = LocalTargets(new.images[: SURROGATE.samples], g, [list(source.spec.classes).index("5")])
    return SimpleNamespace(target=target, source=source, x=x, y=y, local=local)


def _cloned(s: SimpleNamespace, position: int) -> ClonedModel:
    spec = s.target.spec
    branch = new_branch(
        s.target.network,
        s.source.network,
        position=position,
        class_index=[0],
        classes=["5"],
        in_channels=spec.in_channels,
        input_size=spec.input_size,
    )
    return ClonedModel(s.target.network, list(spec.classes), {"new": branch})


# ----------------------------------------------------------------------------- frozen means frozen
@pytest.mark.parametrize("position", [0, 2])
def test_train_branch_leaves_source_and_target_bit_identical(setup: SimpleNamespace, position: int) -> None:
    s = setup
    before_t, before_s = tensor_hashes(s.target.network), tensor_hashes(s.source.network)
    assert any(k.endswith("num_batches_tracked") for k in before_t)  # the arch does carry BatchNorm
    cloned = _cloned(s, position)
    copied = {k: v.clone() for k, v in cloned.branches["new"].module.state_dict().items()}
    result = train_branch(cloned, "new", s.source.network, s.x, s.y, s.local, FAST)
    assert result.components.keys() >= {"cls", "loc", "ins", "mask"}  # every loss term was exercised
    assert tensor_hashes(s.target.network) == before_t
    assert tensor_hashes(s.source.network) == before_s
    assert_frozen(s.target.network)
    assert_frozen(s.source.network)
    # the branch's own copy of the source blocks: no gradient, eval mode, BatchNorm buffers unmoved
    module = cloned.branches["new"].module
    assert not any(p.requires_grad for p in module.parameters())
    assert not any(m.training for m in module.modules())
    after = module.state_dict()
    for k, v in copied.items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(after[k], v), k


def test_whole_clone_leaves_the_loaded_models_bit_identical(
    tiny_target: Path, tiny_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Capture the networks ``clone`` loads and compare their tensors with a fresh load afterwards."""
    loaded: list[LoadedModel] = []

    def capture(path: Any, **kw: Any) -> LoadedModel:
        m = load_model(path, **kw)
        loaded.append(m)
        return m

    monkeypatch.setattr(cloning, "load_model", capture)
    files = {p: p.read_bytes() for p in (tiny_target, tiny_source)}
    cloning.clone(
        source=tiny_source,
        target=tiny_target,
        classes="5",
        output=tmp_path / "d.safetensors",
        position="auto",
        config=replace(FAST, epochs=1),
        surrogate_config=SURROGATE,
        device="cpu",
    )
    assert [m.path for m in loaded] == [tiny_source, tiny_target]
    for m in loaded:
        assert tensor_hashes(m.network) == tensor_hashes(load_model(m.path).network), m.path
        assert_frozen(m.network)
    assert {p: p.read_bytes() for p in files} == files


# ----------------------------------------------------------------------------- masks
def test_masks_are_binary_with_at_least_one_channel_per_layer(setup: SimpleNamespace) -> None:
    """Even under a crushing L1 pressure every layer keeps a filter, and the masks are 0/1."""
    cloned = _cloned(setup, 1)
    config = replace(FAST, gamma=50.0, mask_lr=0.5, init_score=0.0)
    result = train_branch(cloned, "new", setup.source.network, setup.x, setup.y, setup.local, config)
    layers = maskable_layers(cloned.branches["new"].module)
    assert set(result.masks) == set(layers)
    for name, m in result.masks.items():
        assert m.dtype == torch.bool and m.ndim == 1 and m.any(), name
        assert len(m) == (
            layers[name].out_channels if hasattr(layers[name], "out_channels") else layers[name].out_features
        )
    kept = sum(int(m.sum()) for m in result.masks.values()) / sum(m.numel() for m in result.masks.values())
    assert result.kept_fraction == pytest.approx(kept)
    assert kept < 1.0  # the pressure did drop filters


def test_baked_module_without_hooks_equals_the_hard_masked_one(setup: SimpleNamespace) -> None:
    module = torch.nn.ModuleList(copy.deepcopy(setup.source.network.blocks[1:])).eval()
    g = torch.Generator().manual_seed(0)
    masks = {}
    for name, layer in maskable_layers(module).items():
        n = layer.out_channels if isinstance(layer, torch.nn.Conv2d) else layer.out_features
        keep = torch.rand(n, generator=g) > 0.5
        keep[0] = True
        masks[name] = keep
    h = setup.source.network.features(setup.x[:16], 1)

    def run(m: torch.nn.ModuleList) -> torch.Tensor:
        out = h
        for block in m:
            out = block(out)
        return out

    with torch.no_grad():
        selector = ChannelSelector(module)
        selector.set_hard_masks(masks)
        hard = run(module)
        selector.remove()
        unmasked = run(module)
        baked = copy.deepcopy(module)
        bake_masks(baked, masks)
        assert not any(m._forward_hooks for m in baked.modules())
        assert torch.equal(run(baked), hard)
        assert not torch.equal(unmasked, hard)  # the masks did something


# ----------------------------------------------------------------------------- optimisation
def test_loss_decreases_over_epochs(setup: SimpleNamespace) -> None:
    cloned = _cloned(setup, 1)
    # a fixed objective: no switch to (budget-trimmed) hard masks part-way, which raises the loss by design
    config = replace(FAST, epochs=4, finetune_epochs=0, straight_through_epochs=0, max_extra_ratio=None)
    result = train_branch(cloned, "new", setup.source.network, setup.x, setup.y, setup.local, config)
    losses = result.epoch_losses
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert result.final_loss == losses[-1]


def test_only_adapter_head_and_calibration_change(setup: SimpleNamespace) -> None:
    cloned = _cloned(setup, 1)
    branch = cloned.branches["new"]
    before = {k: v.clone() for k, v in branch.named_parameters()}
    result = train_branch(
        cloned, "new", setup.source.network, setup.x, setup.y, setup.local, replace(FAST, epochs=1)
    )
    after = dict(branch.named_parameters())
    assert not torch.equal(after["calibration"], before["calibration"])
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("adapter."))
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("head."))
    # source filters: kept rows as copied, dropped rows zeroed (bake_masks), nothing else
    layers = maskable_layers(branch.module)
    for name, keep in result.masks.items():
        w0, w1 = before[f"module.{name}.weight"], after[f"module.{name}.weight"]
        assert torch.equal(w1[keep], w0[keep]) and not w1[~keep].any()
        assert layers[name].weight is after[f"module.{name}.weight"]


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_the_same_delta_bytes(tiny_target: Path, tiny_source: Path, tmp_path: Path) -> None:
    run: Callable[[str], Path] = lambda name: Path(  # noqa: E731
        cloning.clone(
            source=tiny_source,
            target=tiny_target,
            classes="5",
            output=tmp_path / name,
            position=1,
            config=replace(FAST, epochs=1),
            surrogate_config=SURROGATE,
            device="cpu",
        )["output"]
    )
    a, b = run("a.safetensors"), run("b.safetensors")
    assert a.read_bytes() == b.read_bytes()
