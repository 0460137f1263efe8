"""Supervised training and evaluation of a classifier (``pnc train`` / ``pnc eval``).

Layer nets (torch only; no file IO, no CLI). Works on any ``nn.Module`` plus the callable that maps
images in [0, 1] to logits, so the same loop serves plain networks and cloned models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import TrainConfig
from ..core.errors import RuntimeFailure
from ..core.progress import NullProgress, Progress

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    final_loss: float
    train_accuracy: float


def fit_classifier(
    module: nn.Module,
    forward: Forward,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train all parameters of ``module`` with Adam and cross-entropy, seeded and deterministic."""
    progress = progress or NullProgress()
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(labels)
    steps = (n + config.batch_size - 1) // config.batch_size
    progress.start("train", total=config.epochs * steps)
    module.train()
    loss_sum, correct = 0.0, 0
    for _ in range(config.epochs):
        loss_sum, correct = 0.0, 0
        for idx in torch.randperm(n, generator=g).split(config.batch_size):
            x, y = images[idx].to(device), labels[idx].to(device)
            logits = forward(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise RuntimeFailure("training diverged (non-finite loss); lower lr", options=("lr",))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            progress.advance(1, loss=loss.item())
    module.eval()
    progress.finish()
    return TrainResult(config.epochs, loss_sum / n, correct / n)


@torch.no_grad()
def recalibrate_batchnorm(
    module: nn.Module,
    forward: Forward,
    images: torch.Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | None = None,
) -> None:
    """Re-estimate BatchNorm running statistics with the final weights (one pass, cumulative average).

    During a short training run the running statistics trail weights that are still moving, so a
    model that is right in train mode can predict one class in eval mode. Only for a network being
    trained from scratch: never call it on a frozen target.
    """
    bns = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not bns:
        return
    device = device or torch.device("cpu")
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the pass
    module.train()
    try:
        for chunk in images.split(batch_size):
            forward(chunk.to(device))
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        module.eval()


@torch.no_grad()
def predict_logits(
    forward: Forward, images: torch.Tensor, *, batch_size: int = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Logits for all images, in batches, without gradients (caller sets eval mode)."""
    device = device or torch.device("cpu")
    outs = [forward(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean()) if len(labels) else float("nan")


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, float]:
    out = {}
    for i, name in enumerate(classes):
        sel = labels == i
        if sel.any():
            out[name] = float((pred[sel] == i).float().mean())
    return out
