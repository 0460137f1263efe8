"""Unit tests of the local model set G (pnc_cli.method.surrogate, docs/method-spec.md §2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pnc_cli.core.config import SurrogateConfig
from pnc_cli.core.errors import ConfigError, DataError
from pnc_cli.core.progress import RecordingProgress
from pnc_cli.method.surrogate import (
    SurrogateResult,
    draw_masks,
    fidelity,
    fit_surrogate,
    kernel_weights,
    patch_index_map,
    perturb,
    solve_weighted_ridge,
)


def _images(n: int, c: int = 2, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


class LinearPixels(nn.Module):
    """``model(x) = W x + bias``: linear in pixels, hence exactly linear in the patch mask."""

    def __init__(self, in_features: int, classes: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, in_features, generator=g) * 0.1)
        self.bias = nn.Parameter(torch.randn(classes, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Flatten(),
            nn.Linear(4 * 8 * 8, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _planted(model: LinearPixels, images: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-computed theta/intercept: ``b.x = fill + b * (x - fill)`` per patch, so with model ``Wx + c``
    theta_h = sum over patch h of ``W (x - patch mean)`` and intercept = ``W fill + c``."""
    n, ch, h, w = images.shape
    rows = [(k * h) // grid for k in range(grid + 1)]
    cols = [(k * w) // grid for k in range(grid + 1)]
    weight = model.weight.detach().reshape(-1, ch, h, w).double()
    x = images.double()
    theta = torch.zeros(n, grid * grid, weight.shape[0], dtype=torch.float64)
    fill = torch.zeros_like(x)
    for r in range(grid):
        for c in range(grid):
            sl = (slice(None), slice(None), slice(rows[r], rows[r + 1]), slice(cols[c], cols[c + 1]))
            mean = x[sl].mean(dim=(2, 3), keepdim=True)
            fill[sl] = mean
            theta[:, r * grid + c] = torch.einsum("nkij,okij->no", x[sl] - mean, weight[sl])
    intercept = torch.einsum("nkij,okij->no", fill, weight) + model.bias.detach().double()
    return theta, intercept


# --------------------------------------------------------------------------- known answer


@pytest.mark.parametrize(("size", "grid"), [((8, 8), 4), ((7, 10), 3)])
def test_fit_recovers_planted_linear_surrogate(size: tuple[int, int], grid: int) -> None:
    images = _images(5, 2, *size)
    model = LinearPixels(2 * size[0] * size[1], classes=3).eval()
    config = SurrogateConfig(masks=60, grid=grid, ridge=0.0, batch_size=64, seed=1)
    result = fit_surrogate(model, images, config)
    theta, intercept = _planted(model, images, grid)
    assert result.theta.shape == (5, grid * grid, 3)
    assert result.intercept.shape == (5, 3)
    torch.testing.assert_close(result.theta.double(), theta, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.intercept.double(), intercept, atol=1e-5, rtol=0)


def test_predict_and_fidelity_of_exact_fit() -> None:
    images = _images(4)
    model = LinearPixels(2 * 8 * 8, classes=2).eval()
    result = fit_surrogate(model, images, SurrogateConfig(masks=40, ridge=0.0))
    outputs = model(perturb(images, result.masks, 4).flatten(0, 1)).detach().reshape(4, 40, 2)
    torch.testing.assert_close(result.predict(result.masks), outputs, atol=1e-5, rtol=0)
    assert fidelity(result, outputs) == pytest.approx(1.0, abs=1e-9)
    fresh = draw_masks(7, 4, 0.5, torch.Generator().manual_seed(9))
    assert result.predict(fresh).shape == (4, 7, 2)


def test_solve_weighted_ridge_shrinks_theta_not_intercept() -> None:
    masks = draw_masks(50, 2, 0.3, torch.Generator().manual_seed(0))
    weights = kernel_weights(masks, 0.25)
    outputs = torch.full((3, 50, 2), 5.0)  # constant: theta 0, intercept 5 for any ridge
    theta, intercept = solve_weighted_ridge(masks, weights, outputs, ridge=10.0)
    torch.testing.assert_close(theta, torch.zeros(3, 4, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(intercept, torch.full((3, 2), 5.0), atol=1e-5, rtol=0)
    signal = outputs + masks[None, :, :1] * 3.0  # theta_0 = 3
    small, _ = solve_weighted_ridge(masks, weights, signal, ridge=0.0)
    big, _ = solve_weighted_ridge(masks, weights, signal, ridge=100.0)
    assert small[:, 0].allclose(torch.tensor(3.0), atol=1e-5)
    assert (big[:, 0].abs() < small[:, 0].abs()).all()


def test_singular_system_falls_back_to_min_norm_solution() -> None:
    images = _images(3)
    model = SmallConvNet().eval()
    config = SurrogateConfig(masks=3, ridge=0.0)  # 3 masks for 17 unknowns
    result = fit_surrogate(model, images, config)
    assert torch.isfinite(result.theta).all() and torch.isfinite(result.intercept).all()
    with torch.no_grad():
        outputs = model(perturb(images, result.masks, 4).flatten(0, 1)).reshape(3, 3, 3)
    torch.testing.assert_close(result.predict(result.masks), outputs, atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- kernel weights


def test_kernel_weights_ones_is_one_and_decreasing_with_masked_patches() -> None:
    p = 16
    masks = torch.ones(p + 1, p)
    for k in range(1, p + 1):
        masks[k, :k] = 0.0  # k patches off; last row all zero
    weights = kernel_weights(masks, sigma=0.25)
    assert weights[0].item() == 1.0
    assert (weights[1:] < weights[:-1]).all()
    assert weights[-1].item() == pytest.approx(torch.exp(torch.tensor(-4.0)).item())


def test_kernel_weights_rejects_bad_sigma() -> None:
    with pytest.raises(ConfigError):
        kernel_weights(torch.ones(1, 4), sigma=0.0)


# --------------------------------------------------------------------------- perturbation (Eq. 2)


def test_perturb_fills_switched_off_patches_with_channel_mean() -> None:
    image = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    image[0, 1] *= -2.0
    masks = torch.tensor([[1.0, 1, 1, 1], [0, 1, 1, 0]])
    out = perturb(image, masks, grid=2)
    assert out.shape == (1, 2, 2, 4, 4)
    assert torch.equal(out[0, 0], image[0])
    expected = image[0].clone()
    for ch in range(2):
        top_left = image[0, ch, :2, :2].mean()
        bottom_right = image[0, ch, 2:, 2:].mean()
        expected[ch, :2, :2] = top_left
        expected[ch, 2:, 2:] = bottom_right
    assert expected[0, 0, 0] == 2.5 and expected[1, 0, 0] == -37.0  # (16+17+20+21)/4 * -2
    torch.testing.assert_close(out[0, 1], expected)


def test_patch_map_non_divisible_size() -> None:
    cells = patch_index_map(5, 5, 2)  # rows/cols cut at floor(5/2) = 2: parts of 2 and 3
    expected_rows = torch.tensor([0, 0, 1, 1, 1])
    torch.testing.assert_close(cells, expected_rows[:, None] * 2 + expected_rows[None, :])
    image = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    out = perturb(image, torch.tensor([[1.0, 1, 1, 0]]), grid=2)
    assert torch.equal(out[0, 0, 0, 2:, 2:], torch.full((3, 3), image[0, 0, 2:, 2:].mean().item()))
    assert torch.equal(out[0, 0, 0, :2], image[0, 0, :2])
    assert torch.equal((patch_index_map(32, 32, 3)[:, 0] // 3).bincount(), torch.tensor([10, 11, 11]))


# --------------------------------------------------------------------------- masks


def test_draw_masks_deterministic_and_rate() -> None:
    a = draw_masks(2000, 4, 0.3, torch.Generator().manual_seed(5))
    b = draw_masks(2000, 4, 0.3, torch.Generator().manual_seed(5))
    c = draw_masks(2000, 4, 0.3, torch.Generator().manual_seed(6))
    assert a.dtype == torch.float32 and a.shape == (2000, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], torch.ones(16))
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert (1.0 - a[1:].mean()).item() == pytest.approx(0.3, abs=0.01)


# --------------------------------------------------------------------------- batching, side effects


def test_batch_size_does_not_change_result_and_model_untouched() -> None:
    images = _images(6)
    model = SmallConvNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = fit_surrogate(model, images, SurrogateConfig(masks=10, batch_size=7))
    big = fit_surrogate(model, images, SurrogateConfig(masks=10, batch_size=10_000))
    torch.testing.assert_close(small.theta, big.theta, atol=1e-5, rtol=0)
    torch.testing.assert_close(small.intercept, big.intercept, atol=1e-5, rtol=0)
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_training_flag_left_alone_and_progress_counts_samples() -> None:
    model = LinearPixels(2 * 8 * 8, classes=2).train()
    progress = RecordingProgress()
    fit_surrogate(model, _images(5), SurrogateConfig(masks=10, batch_size=7), progress=progress)
    assert model.training
    assert progress.stages == [("surrogate", 5)]
    assert progress.advanced["surrogate"] == 5


def test_given_masks_are_shared() -> None:
    masks = draw_masks(12, 4, 0.5, torch.Generator().manual_seed(3))
    model = LinearPixels(2 * 8 * 8, classes=2).eval()
    result = fit_surrogate(model, _images(2), SurrogateConfig(seed=99), masks=masks)
    assert isinstance(result, SurrogateResult)
    assert torch.equal(result.masks, masks)
    assert result.weights.shape == (12,)


# --------------------------------------------------------------------------- bad input


def test_grid_finer_than_image_is_config_error() -> None:
    model = LinearPixels(2 * 8 * 8, classes=2).eval()
    with pytest.raises(ConfigError, match="grid 9 is finer than the 8x8 image; use grid <= 8"):
        fit_surrogate(model, _images(2), SurrogateConfig(grid=9))


def test_nan_and_empty_images_are_data_errors() -> None:
    model = LinearPixels(2 * 8 * 8, classes=2).eval()
    bad = _images(2)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        fit_surrogate(model, bad, SurrogateConfig())
    with pytest.raises(DataError):
        fit_surrogate(model, torch.empty(0, 2, 8, 8), SurrogateConfig())


def test_masks_of_wrong_width_are_config_error() -> None:
    model = LinearPixels(2 * 8 * 8, classes=2).eval()
    with pytest.raises(ConfigError, match=r"\[m, 16\]"):
        fit_surrogate(model, _images(2), SurrogateConfig(grid=4), masks=torch.ones(5, 9))
