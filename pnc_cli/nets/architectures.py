"""The built-in architectures and their block splits (docs/architectures.md).

Layer nets (torch, torchvision). Each builder follows the registry protocol
``build(num_classes, in_channels, input_size, **kwargs) -> (model, blocks, classifier)``.
torchvision models keep their own state-dict names, so a torchvision checkpoint saved elsewhere
loads with ``--arch``; small inputs (<= 64 px) get a small stem (3x3 stride-1 first conv, no max-pool).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models import mobilenet_v2 as tv_mobilenet_v2
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models import shufflenet_v2_x1_0 as tv_shufflenet_v2_x1_0
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.shufflenetv2 import ShuffleNetV2

from .registry import Built, register_architecture

SMALL_INPUT_MAX = 64


class BlockClassifier(nn.Module):
    """A network that is literally its blocks followed by its classifier."""

    def __init__(self, blocks: Sequence[nn.Module], classifier: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)


class GlobalMean(nn.Module):
    """``x.mean([2, 3])``, as in torchvision's ShuffleNetV2 forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


def _own(model: BlockClassifier) -> Built:
    return model, list(model.blocks), model.classifier


def _pool_flatten() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]


@register_architecture(
    "lenet5", num_blocks=3, description="LeNet-5 (conv6-conv16-fc120-fc84)", default_input_size=28
)
def lenet5(num_classes: int, in_channels: int, input_size: int) -> Built:
    if input_size < 16:
        raise TypeError(f"lenet5 needs inputs of at least 16 px, got {input_size}")
    side = ((input_size // 2) - 4) // 2
    blocks = [
        nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(
            nn.Flatten(1), nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU()
        ),
    ]
    return _own(BlockClassifier(blocks, nn.Linear(84, num_classes)))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


@register_architecture(
    "plaincnn", num_blocks=3, description="plain CNN: 3 conv-BN-ReLU blocks", default_input_size=28
)
def plaincnn(num_classes: int, in_channels: int, input_size: int, width: int = 32) -> Built:
    blocks = [
        nn.Sequential(*_conv_bn(in_channels, width), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn(width, 2 * width), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn(2 * width, 4 * width), *_pool_flatten()),
    ]
    return _own(BlockClassifier(blocks, nn.Linear(4 * width, num_classes)))


def _small(input_size: int, small_input: bool | None) -> bool:
    return input_size <= SMALL_INPUT_MAX if small_input is None else small_input


def _resnet(m: ResNet, in_channels: int, small: bool) -> Built:
    if small:
        m.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    blocks = [
        nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool),
        m.layer1,
        m.layer2,
        m.layer3,
        nn.Sequential(m.layer4, m.avgpool, nn.Flatten(1)),
    ]
    return m, blocks, m.fc


@register_architecture(
    "resnet18", num_blocks=5, description="torchvision ResNet-18 (small stem <= 64 px)", default_input_size=32
)
def resnet18(num_classes: int, in_channels: int, input_size: int, small_input: bool | None = None) -> Built:
    return _resnet(tv_resnet18(num_classes=num_classes), in_channels, _small(input_size, small_input))


@register_architecture(
    "resnet50", num_blocks=5, description="torchvision ResNet-50 (small stem <= 64 px)", default_input_size=32
)
def resnet50(num_classes: int, in_channels: int, input_size: int, small_input: bool | None = None) -> Built:
    return _resnet(tv_resnet50(num_classes=num_classes), in_channels, _small(input_size, small_input))


def _mobilenet(m: MobileNetV2, in_channels: int, small: bool, cuts: Sequence[int]) -> Built:
    stem = m.features[0]
    assert isinstance(stem, nn.Sequential) and isinstance(stem[0], nn.Conv2d)
    if small or in_channels != 3:
        stem[0] = nn.Conv2d(in_channels, stem[0].out_channels, 3, 1 if small else 2, 1, bias=False)
    f = list(m.features)
    a, b, c, d = cuts
    blocks = [
        nn.Sequential(*f[:a]),
        nn.Sequential(*f[a:b]),
        nn.Sequential(*f[b:c]),
        nn.Sequential(*f[c:d]),
        nn.Sequential(*f[d:], *_pool_flatten()),
    ]
    return m, blocks, m.classifier


@register_architecture(
    "mobilenet_v2",
    num_blocks=5,
    description="torchvision MobileNetV2 (blocks end at 16/24/32/96/1280 ch)",
    default_input_size=32,
)
def mobilenet_v2(
    num_classes: int,
    in_channels: int,
    input_size: int,
    small_input: bool | None = None,
    width_mult: float = 1.0,
) -> Built:
    model = tv_mobilenet_v2(num_classes=num_classes, width_mult=width_mult)
    return _mobilenet(model, in_channels, _small(input_size, small_input), (2, 4, 7, 14))


@register_architecture(
    "shufflenet_v2_x1_0",
    num_blocks=5,
    description="torchvision ShuffleNetV2 1.0x (stem/stage2/3/4/conv5)",
    default_input_size=32,
)
def shufflenet_v2_x1_0(
    num_classes: int, in_channels: int, input_size: int, small_input: bool | None = None
) -> Built:
    m: ShuffleNetV2 = tv_shufflenet_v2_x1_0(num_classes=num_classes)
    small = _small(input_size, small_input)
    stem = m.conv1
    assert isinstance(stem, nn.Sequential) and isinstance(stem[0], nn.Conv2d)
    if small or in_channels != 3:
        stem[0] = nn.Conv2d(in_channels, stem[0].out_channels, 3, 1 if small else 2, 1, bias=False)
    if small:
        m.maxpool = nn.Identity()
    blocks = [
        nn.Sequential(m.conv1, m.maxpool),
        m.stage2,
        m.stage3,
        m.stage4,
        nn.Sequential(m.conv5, GlobalMean()),
    ]
    return m, blocks, m.fc


# --- tiny variants, for tests and quick experiments -------------------------------------------------


def _basic(cin: int, cout: int, stride: int) -> BasicBlock:
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return BasicBlock(cin, cout, stride, down)


@register_architecture(
    "tiny_resnet",
    num_blocks=5,
    description="ResNet-like, 8-32 channels (tests)",
    default_input_size=16,
    tiny=True,
)
def tiny_resnet(num_classes: int, in_channels: int, input_size: int, width: int = 8) -> Built:
    w = width
    blocks = [
        nn.Sequential(*_conv_bn(in_channels, w)),
        _basic(w, w, 1),
        _basic(w, 2 * w, 2),
        _basic(2 * w, 4 * w, 2),
        nn.Sequential(_basic(4 * w, 4 * w, 2), *_pool_flatten()),
    ]
    return _own(BlockClassifier(blocks, nn.Linear(4 * w, num_classes)))


@register_architecture(
    "tiny_mobilenet",
    num_blocks=5,
    description="MobileNetV2 with 5 tiny stages (tests)",
    default_input_size=16,
    tiny=True,
)
def tiny_mobilenet(num_classes: int, in_channels: int, input_size: int) -> Built:
    setting = [[1, 8, 1, 1], [4, 12, 1, 2], [4, 16, 1, 2], [4, 24, 1, 2], [4, 32, 1, 1]]
    model = MobileNetV2(num_classes=num_classes, inverted_residual_setting=setting)
    return _mobilenet(model, in_channels, True, (2, 3, 4, 5))


@register_architecture(
    "tiny_cnn",
    num_blocks=3,
    description="plain CNN with 8 channels (tests)",
    default_input_size=16,
    tiny=True,
)
def tiny_cnn(num_classes: int, in_channels: int, input_size: int) -> Built:
    return plaincnn(num_classes, in_channels, input_size, width=8)
