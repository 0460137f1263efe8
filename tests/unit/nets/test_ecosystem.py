"""``torchvision:<name>`` and ``timm:<name>`` architectures: block splits, stems, names, no downloads.

Same contract as the built-ins (tests/unit/test_architectures.py): running the blocks in order and then
the classifier equals ``model(x)``. Small inputs (32 px), three classes, one batch: the cost is the
building of each model.
"""

from __future__ import annotations

import pytest
import torch

from pnc_cli.core.errors import UnknownArchitectureError, UsageError
from pnc_cli.nets import build_network, get_architecture
from pnc_cli.nets.ecosystem import timm_available

TORCHVISION = [
    ("torchvision:resnet18", False, 5),
    ("torchvision:resnet18", True, 5),
    ("torchvision:mobilenet_v2", True, 5),
    ("torchvision:mobilenet_v3_small", False, 5),
    ("torchvision:shufflenet_v2_x0_5", True, 5),
    ("torchvision:efficientnet_b0", False, 5),
    ("torchvision:convnext_tiny", False, 4),
    ("torchvision:vit_b_16", False, 5),
    ("torchvision:regnet_x_400mf", False, 5),
]
TIMM = [
    ("timm:resnet18", True, 5),
    ("timm:efficientnet_b0", False, 5),
    ("timm:mobilenetv3_small_050", False, 5),
    ("timm:convnext_atto", True, 4),
]
needs_timm = pytest.mark.skipif(not timm_available(), reason="timm is not installed (optional extra)")


def _check_split(name: str, small: bool, num_blocks: int, in_channels: int = 3) -> None:
    torch.manual_seed(0)
    kwargs = {"small_input": True} if small else {}
    net = build_network(name, num_classes=3, in_channels=in_channels, input_size=32, arch_kwargs=kwargs)
    assert net.num_blocks == num_blocks
    net.model.eval()
    x = torch.rand(2, in_channels, 32, 32)
    with torch.no_grad():
        h = x
        for block in net.blocks:
            h = block(h)
        assert h.dim() == 2, "the last block ends with flat features"
        assert torch.equal(net.classifier(h), net.model(x))
    # every block parameter is one of the model's own (the blocks are views, not copies)
    own = {id(p) for p in net.model.parameters()}
    assert all(id(p) in own for b in net.blocks for p in b.parameters())
    assert isinstance(net.classifier, torch.nn.Linear)


@pytest.mark.parametrize(("name", "small", "num_blocks"), TORCHVISION)
def test_torchvision_blocks_then_classifier_equal_forward(name: str, small: bool, num_blocks: int) -> None:
    _check_split(name, small, num_blocks)


@needs_timm
@pytest.mark.parametrize(("name", "small", "num_blocks"), TIMM)
def test_timm_blocks_then_classifier_equal_forward(name: str, small: bool, num_blocks: int) -> None:
    _check_split(name, small, num_blocks)


def test_state_dict_names_are_torchvisions_own() -> None:
    """A checkpoint saved from torchvision's resnet18 loads by name: same keys and shapes (standard stem)."""
    from torchvision.models import resnet18

    ours = build_network(
        "torchvision:resnet18", num_classes=7, in_channels=3, input_size=32
    ).model.state_dict()
    theirs = resnet18(num_classes=7).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_stem_choice_is_explicit_and_changes_shapes() -> None:
    std = build_network("torchvision:resnet18", num_classes=3, in_channels=3, input_size=32)
    small = build_network(
        "torchvision:resnet18", num_classes=3, in_channels=3, input_size=32, arch_kwargs={"small_input": True}
    )
    assert std.model.conv1.weight.shape[-1] == 7 and small.model.conv1.weight.shape[-1] == 3
    assert std.block_shapes(3, 32)[1] == (64, 8, 8) and small.block_shapes(3, 32)[1] == (64, 32, 32)
    gray = build_network("torchvision:resnet18", num_classes=3, in_channels=1, input_size=32)
    assert gray.model.conv1.weight.shape == (64, 1, 7, 7)


@pytest.mark.parametrize("bad", ["weights", "pretrained", "checkpoint_path"])
def test_weights_are_never_fetched(bad: str) -> None:
    with pytest.raises(UsageError, match="never downloads"):
        build_network(
            "torchvision:resnet18", num_classes=3, in_channels=3, input_size=32, arch_kwargs={bad: "DEFAULT"}
        )


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("torchvision:resnet19", "did you mean"),
        ("torchvision:os.system", "not a torchvision classification model"),
        ("torchvision:", "not a torchvision classification model"),
        ("torchvision.models:resnet18", "write it torchvision:resnet18"),
    ],
)
def test_unknown_names(name: str, needle: str) -> None:
    with pytest.raises(UnknownArchitectureError, match=needle):
        get_architecture(name)


def test_unsupported_family_says_so() -> None:
    with pytest.raises(UsageError, match="no automatic block split for SqueezeNet"):
        build_network("torchvision:squeezenet1_1", num_classes=3, in_channels=3, input_size=32)


@needs_timm
def test_timm_names_are_checked() -> None:
    with pytest.raises(UnknownArchitectureError, match="not a timm model name"):
        get_architecture("timm:hf-hub:someone/model")
    assert get_architecture("timm:resnet18").description == "timm resnet18"
