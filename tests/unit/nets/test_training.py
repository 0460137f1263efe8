"""Base-classifier training (pnc_cli.nets.training): progress, determinism, BatchNorm recalibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pnc_cli.core.config import TrainConfig
from pnc_cli.core.errors import ConfigError, RuntimeFailure
from pnc_cli.core.progress import RecordingProgress
from pnc_cli.nets import build_network
from pnc_cli.nets.training import (
    accuracy,
    fit_classifier,
    per_class_accuracy,
    predict_logits,
    recalibrate_batchnorm,
)


def _data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 16, 16, generator=g) * 0.5 + labels.view(-1, 1, 1, 1) * 0.5
    return images, labels


def _train(seed: int = 0, progress: RecordingProgress | None = None):
    torch.manual_seed(0)
    net = build_network("tiny_cnn", num_classes=2, in_channels=1, input_size=16)
    images, labels = _data()
    result = fit_classifier(
        net.model,
        net,
        images,
        labels,
        TrainConfig(epochs=2, lr=1e-2, batch_size=16, seed=seed),
        progress=progress,
    )
    return net, result


def test_fit_reports_progress_and_is_deterministic() -> None:
    progress = RecordingProgress()
    net, result = _train(progress=progress)
    assert progress.stages == [("train", 2 * 3)] and progress.advanced["train"] == 6
    assert all("loss" in m for m in progress.metrics)
    assert result.epochs == 2 and 0.0 <= result.train_accuracy <= 1.0
    assert not net.model.training
    again, _ = _train()
    for k, v in net.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v)
    other, _ = _train(seed=1)  # the seed orders the batches
    assert not torch.equal(
        other.model.state_dict()["classifier.weight"], net.model.state_dict()["classifier.weight"]
    )


def test_divergence_is_a_runtime_failure() -> None:
    net = build_network("tiny_cnn", num_classes=2, in_channels=1, input_size=16)
    images, labels = _data()
    images[0] = float("nan")
    with pytest.raises(RuntimeFailure, match="non-finite loss") as err:
        fit_classifier(net.model, net, images, labels, TrainConfig(epochs=1, batch_size=64))
    assert err.value.exit_code == 1


def test_recalibrate_batchnorm_uses_the_data_statistics() -> None:
    bn = nn.BatchNorm2d(1)
    model = nn.Sequential(bn)
    images = torch.rand(32, 1, 4, 4) * 3 + 2
    recalibrate_batchnorm(model, model, images, batch_size=32)
    assert torch.allclose(bn.running_mean, images.mean().view(1), atol=1e-5)
    assert torch.allclose(bn.running_var, images.var().view(1), atol=1e-4)  # unbiased, as BatchNorm keeps it
    assert bn.momentum == 0.1 and not model.training


def test_bad_train_config() -> None:
    for kwargs in ({"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            TrainConfig(**kwargs)


def test_metrics() -> None:
    pred, labels = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    assert accuracy(pred, labels) == 0.75
    assert per_class_accuracy(pred, labels, ["a", "b", "c", "d"]) == {"a": 1.0, "b": 1.0, "c": 0.5}
    net = build_network("tiny_cnn", num_classes=2, in_channels=1, input_size=16).eval()
    images, _ = _data(10)
    assert torch.allclose(predict_logits(net, images, batch_size=3), predict_logits(net, images), atol=1e-6)
