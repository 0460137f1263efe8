"""The cloned model M_c (docs/method-spec.md §3): target logits untouched, branch construction, R_s formula,
and the branch ↔ delta-tensor round trip (pnc_cli.method.cloned_model, pnc_cli.api.branches).

Random-weight tiny networks only (no training): these are structural properties.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pnc_cli.api.branches import branch_from_delta
from pnc_cli.core.errors import DeltaFormatError
from pnc_cli.io.delta_file import DeltaFile, read_delta, write_delta
from pnc_cli.method.branch_state import branch_tensors
from pnc_cli.method.cloned_model import Branch, ClonedModel, last_linear, new_branch, source_position
from pnc_cli.method.selector import bake_masks, maskable_layers
from pnc_cli.nets import Network, build_network

torch.set_num_threads(1)

SIZE, CHANNELS = 16, 1
TARGET_CLASSES = ["0", "1", "2", "3", "4"]
SOURCE_CLASSES = ["5", "6", "7", "8", "9"]


def _net(arch: str, classes: list[str], seed: int) -> Network:
    """A frozen random network with non-trivial BatchNorm statistics and normalisation."""
    torch.manual_seed(seed)
    net = build_network(arch, num_classes=len(classes), in_channels=CHANNELS, input_size=SIZE)
    with torch.no_grad():
        for name, buf in net.model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.copy_(torch.rand_like(buf) + 0.5)
    net.mean, net.std = torch.tensor([0.3]), torch.tensor([0.4])
    return net.freeze()


def _branch(target: Network, source: Network, position: int, class_index: list[int], seed: int = 0) -> Branch:
    """A branch at ``position`` whose trainable parts are perturbed away from their initial values."""
    branch = new_branch(
        target,
        source,
        position=position,
        class_index=class_index,
        classes=[SOURCE_CLASSES[i] for i in class_index],
        in_channels=CHANNELS,
        input_size=SIZE,
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in branch.named_parameters():
            if not name.startswith("module."):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return branch.eval()


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the cloned model
def test_one_branch_keeps_target_logits_exactly() -> None:
    target, source = _net("tiny_cnn", TARGET_CLASSES, 0), _net("tiny_cnn", SOURCE_CLASSES, 1)
    x = _images()
    expected = target(x)
    cloned = ClonedModel(target, TARGET_CLASSES, {"clone-5": _branch(target, source, 1, [0])}).eval()
    with torch.no_grad():
        out = cloned(x)
    assert out.shape == (len(x), 6)
    assert torch.equal(out[:, :5], expected)
    assert cloned.classes == [*TARGET_CLASSES, "5"]
    # the target is a real child (state_dict, .to, tracing see it), frozen; the trainable
    # parameters are the branch's own
    target_ids = {id(p) for p in target.model.parameters()}
    assert target_ids <= {id(p) for p in cloned.parameters()}
    trainable = {id(p) for p in cloned.parameters() if p.requires_grad}
    assert not target_ids & trainable and trainable
    assert all(k in cloned.state_dict() for k in (f"target_model.{n}" for n in target.model.state_dict()))


def test_two_branches_at_different_positions() -> None:
    """Target logits are bit-identical, and each branch reads the target's features after its own R."""
    target = _net("tiny_cnn", TARGET_CLASSES, 0)
    same, mixed = _net("tiny_cnn", SOURCE_CLASSES, 1), _net("tiny_resnet", SOURCE_CLASSES, 2)
    b1 = _branch(target, same, 2, [0])  # class 5 at R=2
    b2 = _branch(target, mixed, 1, [2, 3], seed=1)  # classes 7, 8 at R=1 from a 5-block source
    assert b2.source_position == math.ceil(1 * 5 / 3) == 2
    cloned = ClonedModel(target, TARGET_CLASSES, {"clone-5": b1, "clone-7+8": b2}).eval()
    x = _images()
    with torch.no_grad():
        out = cloned(x)
        assert torch.equal(out[:, :5], target(x))
        assert torch.equal(out[:, 5:6], b1(target.features(x, 2)))
        assert torch.equal(out[:, 6:8], b2(target.features(x, 1)))
    assert cloned.classes == [*TARGET_CLASSES, "5", "7", "8"]
    # detaching one branch leaves the other's logits as they were
    del cloned.branches["clone-5"]
    with torch.no_grad():
        left = cloned(x)
    assert cloned.classes == [*TARGET_CLASSES, "7", "8"]
    assert torch.equal(left, torch.cat([out[:, :5], out[:, 6:8]], dim=1))


def test_stage_logits_give_every_model_of_the_stack_in_one_pass() -> None:
    """``stage_logits``: the target alone, then after each branch; the last is ``forward``."""
    target = _net("tiny_cnn", TARGET_CLASSES, 0)
    b1 = _branch(target, _net("tiny_cnn", SOURCE_CLASSES, 1), 2, [0])
    b2 = _branch(target, _net("tiny_resnet", SOURCE_CLASSES, 2), 1, [2, 3], seed=1)
    cloned = ClonedModel(target, TARGET_CLASSES, {"a": b1, "b": b2}).eval()
    below = ClonedModel(target, TARGET_CLASSES, {"a": b1}).eval()
    x = _images()
    with torch.no_grad():
        z0, z1, z2 = cloned.stage_logits(x)
        assert torch.equal(z0, target(x))
        assert torch.equal(z1, below(x))
        assert torch.equal(z2, cloned(x))


def test_training_mode_never_reaches_frozen_parts() -> None:
    target, source = _net("tiny_cnn", TARGET_CLASSES, 0), _net("tiny_cnn", SOURCE_CLASSES, 1)
    cloned = ClonedModel(target, TARGET_CLASSES, {"b": _branch(target, source, 0, [0])})
    cloned.train()
    assert not target.model.training
    assert not any(m.training for m in cloned.branches["b"].module.modules())
    assert cloned.branches["b"].adapter.training
    assert not any(p.requires_grad for p in cloned.branches["b"].module.parameters())


# ----------------------------------------------------------------------------- R_s (seed §3.2)
@pytest.mark.parametrize(
    ("target_blocks", "source_blocks", "expected"),
    [
        (3, 3, [0, 1, 2]),
        (5, 5, [0, 1, 2, 3, 4]),
        (3, 5, [0, 2, 4]),  # ceil(R·5/3): 0, ceil(5/3)=2, ceil(10/3)=4
        (5, 3, [0, 1, 2, 2, 2]),  # ceil(R·3/5): 0, 1, 2, 2, ceil(12/5)=3 → clipped to L_s-1 = 2
    ],
)
def test_source_position_formula(target_blocks: int, source_blocks: int, expected: list[int]) -> None:
    got = [source_position(r, target_blocks, source_blocks) for r in range(target_blocks)]
    assert got == expected
    for r, rs in enumerate(got):
        assert rs == min(math.ceil(r * source_blocks / target_blocks), source_blocks - 1)


@pytest.mark.parametrize(
    ("target_arch", "source_arch"), [("tiny_cnn", "tiny_resnet"), ("tiny_resnet", "tiny_cnn")]
)
def test_heterogeneous_branch_uses_the_ceil_cut(target_arch: str, source_arch: str) -> None:
    """3 vs 5 blocks: the branch copies source blocks [R_s:] and maps the shapes with its adapter."""
    target, source = _net(target_arch, TARGET_CLASSES, 0), _net(source_arch, SOURCE_CLASSES, 1)
    t_shapes = target.block_shapes(CHANNELS, SIZE)
    s_shapes = source.block_shapes(CHANNELS, SIZE)
    x = _images(3)
    for r in range(target.num_blocks):
        branch = _branch(target, source, r, [1, 4])
        rs = math.ceil(r * source.num_blocks / target.num_blocks)
        rs = min(rs, source.num_blocks - 1)
        assert (branch.position, branch.source_position) == (r, rs)
        assert len(branch.module) == source.num_blocks - rs
        assert branch.adapter.in_shape == t_shapes[r] and branch.adapter.out_shape == s_shapes[rs]
        with torch.no_grad():
            assert branch(target.features(x, r)).shape == (3, 2)


# ----------------------------------------------------------------------------- initialisation
def test_new_branch_head_is_initialised_from_source_rows() -> None:
    target, source = _net("tiny_cnn", TARGET_CLASSES, 0), _net("tiny_cnn", SOURCE_CLASSES, 1)
    branch = new_branch(
        target,
        source,
        position=1,
        class_index=[3, 1],
        classes=["8", "6"],
        in_channels=CHANNELS,
        input_size=SIZE,
    )
    src = last_linear(source.classifier)
    assert torch.equal(branch.head.weight, src.weight[[3, 1]])
    assert torch.equal(branch.head.bias, src.bias[[3, 1]])
    assert branch.classes == ["8", "6"]
    assert torch.equal(branch.calibration.detach(), torch.tensor([1.0, 0.0]))
    # the branch owns a copy: the source's tensors are not shared
    assert branch.module[0][0].weight.data_ptr() != source.blocks[1][0].weight.data_ptr()


@pytest.mark.parametrize("arch", ["tiny_cnn", "tiny_resnet", "lenet5"])
def test_adapter_is_identity_at_init_for_same_arch(arch: str) -> None:
    """Same architecture: the fresh branch computes the source's own head on the target's features."""
    target, source = _net(arch, TARGET_CLASSES, 0), _net(arch, SOURCE_CLASSES, 1)
    x = _images()
    for r in range(target.num_blocks):
        branch = new_branch(
            target,
            source,
            position=r,
            class_index=[0, 2],
            classes=["5", "7"],
            in_channels=CHANNELS,
            input_size=SIZE,
        ).eval()
        h = target.features(x, r)
        with torch.no_grad():
            assert torch.equal(branch.adapter(h), h), f"{arch} R={r}"
            want = source.head_from(h, r)[:, [0, 2]]
            torch.testing.assert_close(branch(h), want, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- delta round trip
def _random_masks(branch: Branch, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, layer in maskable_layers(branch.module).items():
        n = layer.out_channels if isinstance(layer, torch.nn.Conv2d) else layer.out_features
        keep = torch.rand(n, generator=g) > 0.4
        keep[int(torch.randint(n, (1,), generator=g))] = True
        masks[name] = keep
    return masks


def _delta(branch: Branch, masks: dict[str, torch.Tensor], target: Network, source: Network) -> DeltaFile:
    io = {"channels": CHANNELS, "size": SIZE}
    info = {
        "target": {"sha256": "0" * 64, "arch": target.arch, "classes": TARGET_CLASSES, "input": io},
        "source": {
            "sha256": "1" * 64,
            "arch": source.arch,
            "arch_kwargs": {},
            "classes": SOURCE_CLASSES,
            "input": io,
            "normalization": {"mean": [0.3], "std": [0.4]},
            "num_blocks": source.num_blocks,
        },
        "classes": branch.classes,
        "source_class_index": [SOURCE_CLASSES.index(c) for c in branch.classes],
        "position": {
            "target": branch.position,
            "source": branch.source_position,
            "target_blocks": target.num_blocks,
            "source_blocks": source.num_blocks,
        },
        "adapter": branch.adapter.config(),
        "mode": "offline",
        "config": {},
        "seed": 0,
    }
    return DeltaFile("clone-test", branch_tensors(branch, masks, online=False), info)


@pytest.mark.parametrize(
    ("target_arch", "source_arch", "position"),
    [
        ("tiny_cnn", "tiny_cnn", 1),
        ("lenet5", "lenet5", 1),  # dropped conv filters feed zeros to a Linear layer: columns are cut too
        ("lenet5", "tiny_cnn", 1),
        ("tiny_mobilenet", "tiny_resnet", 2),
        ("tiny_cnn", "tiny_resnet", 2),
    ],
)
def test_branch_from_delta_reproduces_the_branch(
    tmp_path: Path, target_arch: str, source_arch: str, position: int
) -> None:
    """Offline: the delta file alone (no source model) rebuilds a branch with bit-identical outputs."""
    target, source = _net(target_arch, TARGET_CLASSES, 0), _net(source_arch, SOURCE_CLASSES, 1)
    branch = _branch(target, source, position, [0, 3])
    masks = _random_masks(branch, seed=3)
    bake_masks(branch.module, masks)  # as train_branch leaves it: dropped filters zeroed
    path = tmp_path / "d.safetensors"
    write_delta(path, _delta(branch, masks, target, source))
    delta = read_delta(path)
    assert delta.mode == "offline" and any(k.startswith("source.") for k in delta.tensors)
    assert {k.split(".")[0] for k in delta.tensors} <= {"adapter", "source", "mask", "head", "calibration"}
    del source  # nothing below may need it
    rebuilt = branch_from_delta(delta)
    assert (rebuilt.position, rebuilt.source_position, rebuilt.classes) == (
        position,
        branch.source_position,
        ["5", "8"],
    )
    x = _images(5)
    h = target.features(x, position)
    with torch.no_grad():
        assert torch.equal(rebuilt(h), branch(h))
    assert torch.equal(rebuilt.calibration, branch.calibration)
    cloned_a = ClonedModel(target, TARGET_CLASSES, {"a": branch}).eval()
    cloned_b = ClonedModel(target, TARGET_CLASSES, {"a": rebuilt}).eval()
    with torch.no_grad():
        assert torch.equal(cloned_a(x), cloned_b(x))


def test_online_delta_tensors_hold_no_source_weights() -> None:
    target, source = _net("tiny_cnn", TARGET_CLASSES, 0), _net("tiny_cnn", SOURCE_CLASSES, 1)
    branch = _branch(target, source, 1, [0])
    masks = _random_masks(branch, seed=0)
    online = branch_tensors(branch, masks, online=True)
    assert not any(k.startswith("source.") for k in online)
    assert {"calibration.scale", "calibration.bias"} <= set(online)  # names of docs/delta-format.md
    assert all(online[k].dtype == torch.uint8 for k in online if k.startswith("mask."))
    offline = branch_tensors(branch, masks, online=False)
    assert set(offline) - set(online) == {k for k in offline if k.startswith("source.")}


def test_delta_tensors_that_do_not_fit_are_a_format_error() -> None:
    """A delta whose adapter tensors do not match its recorded adapter is refused cleanly (exit 2)."""
    target, source = _net("tiny_cnn", TARGET_CLASSES, 0), _net("tiny_cnn", SOURCE_CLASSES, 1)
    branch = _branch(target, source, 1, [0])
    delta = _delta(branch, _random_masks(branch, seed=0), target, source)
    delta.tensors = {k.replace("adapter.conv.", "adapter."): v for k, v in delta.tensors.items()}
    with pytest.raises(DeltaFormatError, match="do not fit the recorded source and adapter"):
        branch_from_delta(delta)
