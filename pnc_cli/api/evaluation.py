"""Evaluation and prediction for cloned models (target + deltas): docs/method-spec.md §7 metrics.

Layer api.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.device import resolve_device
from ..io.data import ImageSet
from ..method.metrics import cloning_metrics, zest_locality
from ..nets.training import accuracy, per_class_accuracy, predict_logits
from .branches import load_cloned


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

    ``eval_data(spec, data, classes, split, split_seed) -> ImageSet`` selects and conforms the data.
    """
    cloned, spec, cf = load_cloned(model)
    all_classes = cloned.classes
    ds: ImageSet = eval_data(replace(spec, classes=tuple(all_classes)), data, classes, split, split_seed)
    dev = resolve_device(device)
    cloned.to_device(dev)
    pred = predict_logits(cloned, ds.images, device=dev).argmax(1)
    target_pred = predict_logits(cloned.target, ds.images, device=dev).argmax(1)
    m = cloning_metrics(pred, ds.labels, spec.num_classes, target_pred=target_pred)
    ori = ds.images[ds.labels < spec.num_classes]
    zest = zest_locality(cloned.target, cloned, ori) if len(ori) else None
    is_ori = ds.labels < spec.num_classes
    # the target alone on the same target-class samples: what the cloned model is gated against
    target_ori = accuracy(target_pred[is_ori], ds.labels[is_ori]) if bool(is_ori.any()) else None
    extra = sum(d.num_params for d in cf.deltas)
    target_params = cloned.target.num_params()
    return {
        "model": str(model),
        "data": data,
        "split": split,
        "num_samples": len(ds),
        "kind": "cloned",
        "deltas": [d.name for d in cf.deltas],
        "classes": all_classes,
        "accuracy": accuracy(pred, ds.labels),
        "per_class": per_class_accuracy(pred, ds.labels, all_classes),
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
