"""Shared pieces of the cloning benchmarks (bench_clone.py; reused by the issue-6 benchmarks).

- ``train_base``: a base classifier trained through ``pnc_cli.api.train_model`` and loaded back frozen.
- ``load_splits``: the data every method of a comparison sees — the cloned-class samples (a fraction of
  their train split), the target-domain samples (the same fraction of the target's train split), the
  full train split of all classes (joint retraining only) and the test split of all classes. Labels:
  target classes first, then the cloned classes (the cloned model's order).
- ``eval_metrics``: docs/method-spec.md §7 on the test split (Ori/Tar/Avg/Mean Acc, locality vs the target).
- Baselines on the same data: ``naive_finetune``, ``lwf``, ``lora_adapter`` (``joint`` retraining is
  ``train_base`` on all classes). Each returns a ``Trained`` (a forward over target + new classes, the
  parameters it adds to the target, its training time).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pnc_cli.api import train_model
from pnc_cli.core.config import TrainConfig
from pnc_cli.core.device import seed_everything
from pnc_cli.io.data import conform_set, load_data
from pnc_cli.io.model_file import build_from_spec, load_model
from pnc_cli.method.augment import STEPS, shift, shift_step
from pnc_cli.method.cloned_model import last_linear
from pnc_cli.method.metrics import cloning_metrics
from pnc_cli.nets import Network
from pnc_cli.nets.training import fit_classifier, predict_logits, recalibrate_batchnorm

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Base:
    path: Path
    network: Network
    seconds: float
    test_accuracy: float

    @property
    def num_params(self) -> int:
        return self.network.num_params()


@dataclass
class Splits:
    new: tuple[torch.Tensor, torch.Tensor]  # cloned-class samples, labels n_t..
    domain: tuple[
        torch.Tensor, torch.Tensor
    ]  # target-domain samples, true labels (use pseudo-labels in methods)
    joint: tuple[torch.Tensor, torch.Tensor]  # full train split of all classes (joint retraining)
    test: tuple[torch.Tensor, torch.Tensor]
    num_target: int


@dataclass
class Trained:
    forward: Forward
    extra_params: int
    seconds: float


def train_base(
    *, arch: str, data: str, classes: str, seed: int, epochs: int, out_dir: Path, name: str
) -> Base:
    """Train a base classifier with ``pnc_cli.api.train_model`` (split seed 0) and load it back frozen."""
    start = time.perf_counter()
    r = train_model(
        arch=arch,
        data=data,
        classes=classes,
        config=TrainConfig(epochs=epochs, seed=seed),
        output=out_dir / f"{name}.safetensors",
        force=True,
        device="cpu",
    )
    seconds = time.perf_counter() - start
    return Base(Path(r["output"]), load_model(r["output"]).network, seconds, float(r["test_accuracy"]))


def load_splits(
    *,
    data: str,
    target_classes: list[str],
    new_classes: list[str],
    fraction: float,
    channels: int,
    size: int,
    split_seed: int = 0,
) -> Splits:
    """The same samples ``pnc_cli.api.cloning.clone`` draws for ``fraction`` (before its validation split)."""
    order = target_classes + new_classes

    def load(classes: list[str], split: str, frac: float) -> tuple[torch.Tensor, torch.Tensor]:
        ds = load_data(data, classes=classes, split=split, fraction=frac, split_seed=split_seed).relabel(
            order
        )
        ds = conform_set(ds, channels, size)
        return ds.images, ds.labels

    return Splits(
        load(new_classes, "train", fraction),
        load(target_classes, "train", fraction),
        load(order, "train", 1.0),
        load(order, "test", 1.0),
        len(target_classes),
    )


def eval_metrics(forward: Forward, splits: Splits, target_pred: torch.Tensor) -> dict[str, float]:
    """Ori/Tar/Avg/Mean Acc and locality on the test split (docs/method-spec.md §7)."""
    x, y = splits.test
    pred = predict_logits(forward, x).argmax(1)
    m = cloning_metrics(pred, y, splits.num_target, target_pred=target_pred)
    return {k: m[k] for k in ("ori_acc", "tar_acc", "avg_acc", "mean_acc", "locality")}


class Extended(nn.Module):
    """A copy of the target with one more head row per new class, reading the classifier's input."""

    def __init__(self, target: Network, num_new: int) -> None:
        super().__init__()
        self.net = copy.deepcopy(target)
        self.model = self.net.model  # registers the copied parameters
        lin = last_linear(self.net.classifier)
        self.new = nn.Linear(lin.in_features, num_new)
        self._feats: list[torch.Tensor] = []
        lin.register_forward_pre_hook(lambda _m, inp: self._feats.append(inp[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._feats.clear()
        old = self.net.model(self.net.normalize(x))
        return torch.cat([old, self.new(self._feats[-1])], dim=1)


def _fit(
    model: nn.Module,
    params: list[nn.Parameter],
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 64,
) -> None:
    """Adam over ``params``; ``loss_fn(logits, row_indices)`` sees the batch's row indices into ``x``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            loss = loss_fn(model(x[idx]), idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def train_shifted(
    like: Base, data: tuple[torch.Tensor, torch.Tensor], *, epochs: int, seed: int, shifts: int
) -> Network:
    """A fresh network of ``like``'s spec trained as ``pnc train`` trains (``fit_classifier``, same
    epochs and seed) on ``data`` plus ``shifts`` shifted copies of every image (``method.augment``, the
    copies a clone's joint-head statistics see): joint retraining given the same augmentation."""
    x, y = data
    step = shift_step(min(x.shape[-2:]))
    xs = torch.cat([x, *(shift(x, dx * step, dy * step) for dx, dy in STEPS[:shifts])])
    seed_everything(seed)
    net = build_from_spec(load_model(like.path).spec)
    fit_classifier(net.model, net, xs, y.repeat(1 + shifts), TrainConfig(epochs=epochs, seed=seed))
    recalibrate_batchnorm(net.model, net, xs)
    return net.freeze()


def pseudo_labels(target: Network, images: torch.Tensor) -> torch.Tensor:
    return predict_logits(target, images).argmax(1)


def naive_finetune(target: Network, splits: Splits, *, epochs: int, lr: float, seed: int) -> Trained:
    """Every weight of the target plus a new head row, cross-entropy on the cloned-class samples only."""
    start = time.perf_counter()
    model = Extended(target, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    x, y = splits.new
    _fit(
        model,
        list(model.parameters()),
        x,
        lambda z, i: F.cross_entropy(z, y[i]),
        epochs=epochs,
        lr=lr,
        seed=seed,
    )
    return Trained(model, sum(p.numel() for p in model.parameters()), time.perf_counter() - start)


def lwf(
    target: Network,
    splits: Splits,
    *,
    epochs: int,
    lr: float,
    seed: int,
    temperature: float = 2.0,
    weight: float = 1.0,
) -> Trained:
    """Learning without Forgetting (Li & Hoiem 2016) with the extended head, on the data PNC sees.

    Loss: cross-entropy over all classes (cloned samples: their label; target-domain samples: the
    target's pseudo-label) + ``weight``·T²·KL(target's softened old outputs ‖ the model's) on every sample.
    """
    start = time.perf_counter()
    model = Extended(target, 1)
    for p in model.parameters():
        p.requires_grad_(True)
    x = torch.cat([splits.new[0], splits.domain[0]])
    y = torch.cat([splits.new[1], pseudo_labels(target, splits.domain[0])])
    old = predict_logits(target, x)
    n_t, t = splits.num_target, temperature

    def loss(z: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        kd = (
            F.kl_div(F.log_softmax(z[:, :n_t] / t, 1), F.softmax(old[i] / t, 1), reduction="batchmean")
            * t
            * t
        )
        return F.cross_entropy(z, y[i]) + weight * kd

    _fit(model, list(model.parameters()), x, loss, epochs=epochs, lr=lr, seed=seed)
    return Trained(model, sum(p.numel() for p in model.parameters()), time.perf_counter() - start)


def lora_adapter(
    target: Network, splits: Splits, *, epochs: int, lr: float, seed: int, rank: int = 4
) -> Trained:
    """PEFT LoRA (rank ``rank``) on every Conv2d/Linear of the target but its classifier, plus a new head
    row; the target's weights and head rows stay frozen. Trained like PNC: cloned samples with their
    label, target-domain samples with the target's pseudo-label."""
    from peft import LoraConfig, inject_adapter_in_model

    start = time.perf_counter()
    model = Extended(target, 1)
    head = last_linear(model.net.classifier)
    names = [
        n for n, m in model.model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not head
    ]
    torch.manual_seed(seed)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=names), model.model)
    trainable = [p for n, p in model.named_parameters() if "lora_" in n or n.startswith("new.")]
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n or n.startswith("new."))
    x = torch.cat([splits.new[0], splits.domain[0]])
    y = torch.cat([splits.new[1], pseudo_labels(target, splits.domain[0])])
    _fit(model, trainable, x, lambda z, i: F.cross_entropy(z, y[i]), epochs=epochs, lr=lr, seed=seed)
    return Trained(model, sum(p.numel() for p in trainable), time.perf_counter() - start)


def mean_std(values: list[float]) -> tuple[float, float]:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False)) if len(values) > 1 else 0.0


def summarize(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[str, float]]:
    """Mean and (population) std of each key over the rows."""
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if r.get(k) is not None]
        if vals:
            m, s = mean_std(vals)
            out[k] = {"mean": m, "std": s}
    return out
