"""Random features for the joint head: a fixed, seeded random projection with ReLU (RanPAC option).

Layer: method (pure torch). RanPAC (McDonnell et al., NeurIPS 2023) fits a ridge head on
``ReLU(x P)``, a fixed random projection ``P`` of frozen features. pnc offers it as an option of the joint
head (``CloneConfig.random_features``, ``--random-features N``): the head reads ``[x ; ReLU(z P)]``, where
``x`` are the columns it reads anyway (its read index and its span's kept columns), ``z`` those
columns standardised with the training mean and standard deviation, and ``P [d, N]`` is drawn from a
CPU ``torch.Generator`` seeded with the stored seed, scaled by ``1/sqrt(d)``. The delta stores the
mean and the scale (``features.mean``, ``features.scale``: ``2·d`` parameters, counted) and the seed
and ``N`` (``info.head``); ``P`` is regenerated at load, so it costs no bytes. The head itself grows
by ``N·K`` weights, which the size budget counts.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def projection(seed: int, d: int, n: int) -> torch.Tensor:
    """``P [d, n]``: standard normal entries from a CPU generator seeded with ``seed``, over ``sqrt(d)``
    (the same on every machine for a given torch: CPU generation is deterministic)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(d, n, generator=g, dtype=torch.float32) / math.sqrt(max(1, d))


class RandomFeatures(nn.Module):
    """``x ↦ [x ; ReLU(((x − mean) / scale) P)]`` with ``P`` regenerated from ``seed`` (not stored)."""

    mean: torch.Tensor
    scale: torch.Tensor
    proj: torch.Tensor

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, *, features: int, seed: int) -> None:
        super().__init__()
        if mean.dim() != 1 or mean.shape != scale.shape:
            raise ValueError("random features need a 1-D mean and scale of the same length")
        if features < 1:
            raise ValueError(f"random features must be >= 1, got {features}")
        self.features = int(features)
        self.seed = int(seed)
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("scale", scale.detach().float().clone())
        self.register_buffer("proj", projection(seed, len(mean), features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)
        return torch.cat([x, torch.relu(z @ self.proj.to(x.dtype))], dim=1)

    def config(self) -> dict[str, int]:
        return {"random_features": self.features, "random_seed": self.seed}
