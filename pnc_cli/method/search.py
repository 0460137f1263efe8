"""Insertion-position search (docs/method-spec.md §5, seed Alg. 1 lines 9-22).

Layer method. For R = L-1 … 0: build a fresh branch at R, train it for the configured epochs, record the
converged loss (mean total loss of the last epoch) and the held-out Ori/Tar/Avg accuracy on a
validation split of the training data; R* = argmin loss (or argmax validation Avg Acc with
``select_by="val_acc"``). The trained branch of R* is kept, so nothing is trained twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from ..core.config import CloneConfig
from ..core.progress import NullProgress, Progress
from ..nets.network import Network
from ..nets.training import predict_logits
from .clone_training import BranchTrainResult, LocalTargets, train_branch
from .cloned_model import Branch, ClonedModel
from .metrics import cloning_metrics


@dataclass(frozen=True)
class PositionScore:
    position: int
    source_position: int
    loss: float
    val_ori_acc: float
    val_tar_acc: float
    val_avg_acc: float
    kept_fraction: float
    seconds: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class SearchOutcome:
    scores: list[PositionScore]
    best: int  # index into scores
    branch: Branch
    result: BranchTrainResult


def choose(scores: list[PositionScore], select_by: str) -> int:
    """Index of R*: lowest loss, or highest validation Avg Acc (ties: the later block, i.e. a smaller
    branch)."""
    if select_by == "val_acc":
        return max(range(len(scores)), key=lambda i: (scores[i].val_avg_acc, scores[i].position))
    return min(range(len(scores)), key=lambda i: (scores[i].loss, -scores[i].position))


def search_positions(
    *,
    target: Network,
    target_classes: list[str],
    source: Network,
    positions: list[int],
    make_branch: Callable[[int], Branch],
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    local: LocalTargets | None,
    config: CloneConfig,
    name: str = "pnc_new",
    existing: dict[str, Branch] | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> SearchOutcome:
    """Train one branch per position (given in search order) and pick R*.

    ``existing`` are frozen branches already stacked on the target (a cloned model as target): the new
    branch is trained and validated against the target together with them.
    """
    progress = progress or NullProgress()
    device = device or torch.device("cpu")
    scores: list[PositionScore] = []
    kept: dict[int, tuple[Branch, BranchTrainResult]] = {}
    for pos in positions:
        start = time.perf_counter()
        branch = make_branch(pos).to(device)
        cloned = ClonedModel(target, target_classes, {**(existing or {}), name: branch})
        result = train_branch(
            cloned, name, source, train[0], train[1], local, config, device=device, progress=progress
        )
        m = {"ori_acc": float("nan"), "tar_acc": float("nan"), "avg_acc": float("nan")}
        if val is not None and len(val[1]):
            pred = predict_logits(cloned, val[0], device=device).argmax(1)
            m.update(cloning_metrics(pred, val[1], len(cloned.classes) - len(branch.classes)))
        scores.append(
            PositionScore(
                pos,
                branch.source_position,
                result.final_loss,
                m["ori_acc"],
                m["tar_acc"],
                m["avg_acc"],
                result.kept_fraction,
                time.perf_counter() - start,
            )
        )
        best = choose(scores, config.select_by)
        kept = {scores[best].position: (branch, result)} if scores[best].position == pos else kept
    best = choose(scores, config.select_by)
    branch, result = kept[scores[best].position]
    return SearchOutcome(scores, best, branch, result)
