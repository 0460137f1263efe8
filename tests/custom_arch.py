"""A custom architecture for tests and docs/architectures.md: ``--arch tests.custom_arch:build``.

The protocol: ``build(num_classes, in_channels, input_size, **kwargs) -> (model, blocks, classifier)``
where running ``blocks`` in order and then ``classifier`` equals ``model(x)``, and every parameter of
``model`` belongs to a block or to the classifier.
"""

from __future__ import annotations

import torch
from torch import nn


class TwoBlockNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.body(self.stem(x)), 1))


def build(num_classes: int, in_channels: int, input_size: int, width: int = 4):
    model = TwoBlockNet(num_classes, in_channels, width)
    # The flatten in forward() is glue: it goes into the last block so that blocks + classifier == model.
    return model, [model.stem, nn.Sequential(model.body, nn.Flatten(1))], model.fc


def not_a_builder(num_classes: int, in_channels: int, input_size: int):
    return "not a model"
