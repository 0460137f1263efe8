"""Cloning metrics (docs/method-spec.md §7; seed Tables 2-6): Ori/Tar/Avg Acc, locality, extra params.

Layer method (torch; uses the surrogate and ZEST alignment for the ZEST locality distance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..core.config import SurrogateConfig
from .surrogate import draw_masks, fit_surrogate
from .zest import zest_distance


def cloning_metrics(
    pred: torch.Tensor,
    labels: torch.Tensor,
    num_target_classes: int,
    *,
    target_pred: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics of a cloned model's predictions over C_t ∪ C_f.

    Args:
        pred: [N] argmax of the cloned model over C_t ∪ C_f.
        labels: [N] true labels in the same index space (target classes first).
        num_target_classes: |C_t|.
        target_pred: [N] the original target's predictions (indices into C_t), for locality.

    Returns:
        ori_acc (target-class samples), tar_acc (cloned-class samples), avg_acc (pooled, sample-weighted),
        mean_acc (unweighted mean of ori and tar), locality (share of target-class samples whose
        prediction equals the original target's), and the sample counts.
    """
    is_ori = labels < num_target_classes
    correct = (pred == labels).float()
    out = {
        "ori_acc": float(correct[is_ori].mean()) if is_ori.any() else float("nan"),
        "tar_acc": float(correct[~is_ori].mean()) if (~is_ori).any() else float("nan"),
        "avg_acc": float(correct.mean()) if len(labels) else float("nan"),
        "num_ori": int(is_ori.sum()),
        "num_tar": int((~is_ori).sum()),
    }
    out["mean_acc"] = (out["ori_acc"] + out["tar_acc"]) / 2
    if target_pred is not None and is_ori.any():
        out["locality"] = float((pred[is_ori] == target_pred[is_ori]).float().mean())
    return out


LOCALITY_SURROGATE = SurrogateConfig(samples=20, masks=50, grid=4)


def zest_locality(
    both: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    images: torch.Tensor,
    config: SurrogateConfig = LOCALITY_SURROGATE,
) -> float:
    """ZEST distance between target and cloned model on softmax outputs (docs/method-spec.md §6-7).

    ``both(x)`` returns ``(target logits, cloned logits)`` for a batch (from one pass where the
    cloned model can give both). Both local model sets are fitted on the same images (target-class
    samples) and the same masks — one fit over the two outputs side by side, which is the two fits
    (each output column is its own ridge problem over the shared design). Columns are aligned greedily,
    so the cloned model's extra classes are dropped. 0 = same local behaviour around those images.
    """
    images = images[: config.samples]
    grid = min(config.grid, int(images.shape[-1]), int(images.shape[-2]))
    cfg = replace(config, grid=grid, samples=len(images))
    masks = draw_masks(cfg.masks, grid, cfg.masking_rate, torch.Generator().manual_seed(cfg.seed))
    width: list[int] = []

    def side_by_side(x: torch.Tensor) -> torch.Tensor:
        z_t, z_c = both(x)
        width[:] = [z_t.shape[1]]
        return torch.cat([z_t.softmax(1), z_c.softmax(1)], 1)

    g = fit_surrogate(side_by_side, images, cfg, masks=masks)
    k = width[0]
    return zest_distance(g.theta[..., :k], g.theta[..., k:])
