"""Evaluation and prediction for cloned models (target + deltas): docs/method-spec.md §7 metrics.

Layer api.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..core.device import resolve_device
from ..io.data import Selection
from ..io.stream import ImageDataset
from ..method.metrics import LOCALITY_SURROGATE, cloning_metrics, zest_locality
from ..nets.training import accuracy, per_class_accuracy
from .branches import load_cloned
from .streaming import StagePair, predict_labels


def evaluate_cloned(
    *,
    model: str | Path,
    data: str,
    classes: str | None,
    split: str,
    split_seed: int,
    device: str,
    eval_data: Any,
) -> dict[str, Any]:
    """Accuracy per class plus Ori/Tar/Avg Acc, locality and the extra-params ratio of a cloned model,
    and the target alone on the same target-class samples (``target_ori_acc``; ``ori_drop`` = target
    alone minus cloned Ori Acc, positive when cloning cost accuracy on the target's classes).

    ``eval_data(spec, data, classes, split, split_seed) -> Selection`` selects the rows; the images are
    streamed (``io.stream``), one batch at a time.
    """
    cloned, spec, cf = load_cloned(model)
    all_classes = cloned.classes
    sel: Selection = eval_data(replace(spec, classes=tuple(all_classes)), data, classes, split, split_seed)
    ds = ImageDataset.of(sel, channels=spec.in_channels, size=spec.input_size)
    dev = resolve_device(device)
    cloned.to_device(dev)
    pair = StagePair(cloned, -1, 0)  # the cloned model and the target alone, from one pass
    pred, target_pred = predict_labels([pair.first, pair.second], ds, dev)
    m = cloning_metrics(pred, sel.labels, spec.num_classes, target_pred=target_pred)
    ori_rows = torch.nonzero(sel.labels < spec.num_classes).flatten()[: LOCALITY_SURROGATE.samples]
    ori = ds.images(ori_rows.numpy()).to(dev)
    zest = zest_locality(lambda x: (pair.second(x), pair.first(x)), ori) if len(ori) else None
    is_ori = ds.labels < spec.num_classes
    # the target alone on the same target-class samples: what the cloned model is gated against
    target_ori = accuracy(target_pred[is_ori], ds.labels[is_ori]) if bool(is_ori.any()) else None
    extra = sum(d.num_params for d in cf.deltas)
    target_params = cloned.target.num_params()
    return {
        "model": str(model),
        "data": data,
        "split": split,
        "num_samples": len(sel),
        "kind": "cloned",
        "deltas": [d.name for d in cf.deltas],
        "classes": all_classes,
        "accuracy": accuracy(pred, sel.labels),
        "per_class": per_class_accuracy(pred, sel.labels, all_classes),
        "ori_acc": m["ori_acc"],
        "tar_acc": m["tar_acc"],
        "avg_acc": m["avg_acc"],
        "mean_acc": m["mean_acc"],
        "target_ori_acc": target_ori,
        "ori_drop": None if target_ori is None else target_ori - m["ori_acc"],
        "locality": m.get("locality"),
        "zest_distance": zest,
        "extra_params": extra,
        "extra_params_ratio": extra / target_params,
    }
