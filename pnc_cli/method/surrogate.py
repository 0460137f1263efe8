"""Local model set G: LIME-style linear surrogates of a model around each sample.

Layer method (algorithm). Implements docs/method-spec.md §2 (seed Eq. 1-4): for each sample ``x_i`` the
image is cut into a ``grid x grid`` patch grid, ``|B|`` binary masks ``b`` switch patches off
(``b^h = 0`` -> the patch is replaced by its per-channel mean, Eq. 2), each mask gets the kernel
weight ``Pi_b = exp(-sqrt(1 - cos(b, 1)) / sigma)`` (Eq. 3), and ``g_i(b) = theta_i^T b + c_i`` is
fitted to the model's logits by weighted ridge least squares (Eq. 1, closed form Eq. 4). The design
matrix and weights are shared by all samples, so all ``N`` fits are one linear system with ``N * C``
right-hand sides.

Imports only torch, the stdlib and ``pnc_cli.core.config`` / ``errors`` / ``progress``: no CLI
framework, no printing, no file IO, no numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.config import SurrogateConfig
from ..core.errors import ConfigError, DataError
from ..core.progress import NullProgress, Progress

__all__ = [
    "SurrogateResult",
    "draw_masks",
    "fidelity",
    "fit_surrogate",
    "kernel_weights",
    "patch_index_map",
    "perturb",
    "solve_weighted_ridge",
]

# A Cholesky pivot below this fraction of the largest diagonal entry counts as singular (condition
# number ~1e12 or worse); the solve then falls back to the pseudo-inverse.
_PIVOT_RTOL = 1e-12


# --------------------------------------------------------------------------- masks and weights


def draw_masks(num_masks: int, grid: int, masking_rate: float, generator: torch.Generator) -> Tensor:
    """Draw the shared mask set B.

    Args:
        num_masks: Number of masks ``|B|`` (at least 1).
        grid: Patches per side; each mask has ``grid * grid`` entries.
        masking_rate: Probability that a patch is switched off, in ``[0, 1]``.
        generator: CPU generator; a seeded one makes the draw reproducible.

    Returns:
        float32 tensor ``[num_masks, grid * grid]`` of 0/1. Row 0 is all ones (the unperturbed image);
        in the other rows each patch is 0 independently with probability ``masking_rate``.

    Raises:
        ConfigError: If a count is below 1 or the rate is outside ``[0, 1]``.
    """
    if num_masks < 1:
        raise ConfigError(f"masks must be at least 1, got {num_masks}", options=("masks",))
    if grid < 1:
        raise ConfigError(f"grid must be at least 1, got {grid}", options=("grid",))
    if not 0.0 <= masking_rate <= 1.0:
        raise ConfigError(f"masking_rate must be in [0, 1], got {masking_rate}", options=("masking_rate",))
    draws = torch.rand(num_masks - 1, grid * grid, generator=generator)
    rest = (draws >= masking_rate).to(torch.float32)
    return torch.cat([torch.ones(1, grid * grid), rest], dim=0)


def kernel_weights(masks: Tensor, sigma: float) -> Tensor:
    """Kernel weight of each mask, Eq. 3: ``Pi_b = exp(-sqrt(d_b) / sigma)``, ``d_b = 1 - cos(b, 1)``.

    Computed in float64: ``cos(b, 1) = sum(b) / sqrt(sum(b^2) * P)``, so the all-ones mask gets
    exactly 1.0; an all-zero mask has cosine 0 by definition (``d = 1``).

    Args:
        masks: ``[m, P]`` masks.
        sigma: Kernel width (positive).

    Returns:
        float32 ``[m]`` weights in ``(0, 1]``.
    """
    if sigma <= 0:
        raise ConfigError(f"sigma must be positive, got {sigma}", options=("sigma",))
    b = masks.to(torch.float64)
    sq = (b * b).sum(dim=1) * b.shape[1]
    cos = torch.where(sq > 0, b.sum(dim=1) / sq.clamp_min(1e-300).sqrt(), torch.zeros_like(sq))
    dist = (1.0 - cos).clamp_min(0.0)
    return torch.exp(-dist.sqrt() / sigma).to(torch.float32)


# --------------------------------------------------------------------------- perturbation (Eq. 2)


def patch_index_map(height: int, width: int, grid: int) -> Tensor:
    """Map every pixel to its patch index ``row_cell * grid + col_cell``.

    Rows are cut at ``floor(k * height / grid)`` for ``k = 0..grid`` (columns likewise), so parts
    differ by at most one pixel and any ``height, width >= grid`` works (e.g. 32 / 3 -> 10, 11, 11).

    Returns:
        int64 ``[height, width]`` with values in ``[0, grid * grid)``.

    Raises:
        ConfigError: If the grid is finer than the image.
    """
    if grid < 1:
        raise ConfigError(f"grid must be at least 1, got {grid}", options=("grid",))
    if grid > height or grid > width:
        raise ConfigError(
            f"grid {grid} is finer than the {height}x{width} image; use grid <= {min(height, width)}",
            options=("grid",),
        )
    rows = _cell_of(height, grid)
    cols = _cell_of(width, grid)
    return rows[:, None] * grid + cols[None, :]


def _cell_of(size: int, grid: int) -> Tensor:
    inner = torch.tensor([(k * size) // grid for k in range(1, grid)], dtype=torch.int64)
    return torch.bucketize(torch.arange(size), inner, right=True)


def _patch_means(images: Tensor, cells: Tensor, num_cells: int) -> Tensor:
    """Per-sample, per-channel patch means broadcast back to pixels: ``[n, C, H, W]``."""
    n, c, h, w = images.shape
    flat_cells = cells.reshape(-1).to(images.device)
    sums = images.new_zeros(n, c, num_cells).index_add_(2, flat_cells, images.reshape(n, c, h * w))
    counts = torch.bincount(flat_cells, minlength=num_cells).to(images.dtype)
    means = sums / counts
    return means[:, :, flat_cells].reshape(n, c, h, w)


def _pixel_masks(masks: Tensor, cells: Tensor) -> Tensor:
    """Masks broadcast to pixels as booleans: ``[m, 1, H, W]`` (True = patch kept)."""
    return (masks[:, cells.to(masks.device)] > 0.5).unsqueeze(1)


def perturb(images: Tensor, masks: Tensor, grid: int) -> Tensor:
    """Apply every mask to every image, Eq. 2: switched-off patches take their per-channel mean.

    Kept pixels are copied exactly (no arithmetic), so the all-ones mask returns the image itself.

    Args:
        images: ``[n, C, H, W]``.
        masks: ``[m, grid * grid]`` of 0/1.
        grid: Patches per side.

    Returns:
        ``[n, m, C, H, W]`` perturbed images (holds all ``n * m`` images; ``fit_surrogate`` batches).

    Raises:
        ConfigError: If the grid is finer than the image or the masks have the wrong width.
    """
    _check_images_shape(images)
    _check_masks(masks, grid)
    cells = patch_index_map(images.shape[2], images.shape[3], grid)
    fills = _patch_means(images, cells, grid * grid)
    keep = _pixel_masks(masks.to(images.device), cells)
    return torch.where(keep.unsqueeze(0), images.unsqueeze(1), fills.unsqueeze(1))


# --------------------------------------------------------------------------- weighted ridge (Eq. 4)


def solve_weighted_ridge(
    masks: Tensor, weights: Tensor, outputs: Tensor, ridge: float
) -> tuple[Tensor, Tensor]:
    """Fit ``g_i(b) = theta_i^T b + c_i`` for all samples at once (Eq. 1 / Eq. 4).

    Minimises ``sum_b Pi_b ||y_ib - theta_i^T b - c_i||^2 + ridge * ||theta_i||^2`` for every ``i``
    (the intercept is not regularised). With ``X = [masks, 1]`` and ``W = diag(weights)`` the normal
    matrix ``A = X^T W X + ridge * diag(1, .., 1, 0)`` is shared by all samples and classes, so it is
    one Cholesky factorisation and one solve with ``N * C`` right-hand sides, in float64.

    If ``A`` is singular or numerically so (e.g. ``ridge = 0`` with fewer than ``P + 1`` distinct
    masks, or a patch never switched off), the minimum-norm least-squares solution is returned
    instead, via the Hermitian pseudo-inverse of ``A``.

    Args:
        masks: ``[m, P]`` design (shared by all samples).
        weights: ``[m]`` kernel weights.
        outputs: ``[N, m, C]`` model outputs ``y_ib``.
        ridge: ``lambda >= 0``.

    Returns:
        ``(theta [N, P, C], intercept [N, C])`` as float32 on the device of ``outputs``.
    """
    n, m, c = outputs.shape
    p = masks.shape[1]
    if masks.shape[0] != m or weights.shape != (m,):
        raise ConfigError(f"{masks.shape[0]} masks and {weights.shape[0]} weights for {m} outputs per sample")
    dev = outputs.device
    design = torch.cat([masks.to(dev, torch.float64), torch.ones(m, 1, dtype=torch.float64, device=dev)], 1)
    weighted = design * weights.to(dev, torch.float64)[:, None]
    penalty = torch.full((p + 1,), float(ridge), dtype=torch.float64, device=dev)
    penalty[p] = 0.0
    normal = weighted.T @ design + torch.diag(penalty)
    rhs = weighted.T @ outputs.to(torch.float64).permute(1, 0, 2).reshape(m, n * c)
    sol = _solve_spd(normal, rhs)
    theta = sol[:p].reshape(p, n, c).permute(1, 0, 2)
    intercept = sol[p].reshape(n, c)
    return theta.to(torch.float32).contiguous(), intercept.to(torch.float32)


def _solve_spd(normal: Tensor, rhs: Tensor) -> Tensor:
    """Solve ``normal @ x = rhs`` by Cholesky; minimum-norm pseudo-inverse if it is (near) singular."""
    chol, info = torch.linalg.cholesky_ex(normal)
    scale = normal.diagonal().abs().max().clamp_min(1e-300)
    if int(info) == 0 and bool(chol.diagonal().square().min() > _PIVOT_RTOL * scale):
        return torch.cholesky_solve(rhs, chol)
    return torch.linalg.pinv(normal, hermitian=True) @ rhs


# --------------------------------------------------------------------------- result and fit


@dataclass(frozen=True, eq=False)
class SurrogateResult:
    """The local model set G of one model on one set of samples.

    Attributes:
        theta: ``[N, P, C]`` linear coefficients (float32, CPU).
        intercept: ``[N, C]`` intercepts.
        masks: ``[m, P]`` the shared mask set B.
        weights: ``[m]`` kernel weights ``Pi_b``.
        config: The configuration used.
    """

    theta: Tensor
    intercept: Tensor
    masks: Tensor
    weights: Tensor
    config: SurrogateConfig

    def predict(self, masks: Tensor) -> Tensor:
        """Evaluate every ``g_i`` on the given masks: ``[N, m', C]`` (differentiable in theta)."""
        _check_masks(masks, self.config.grid)
        b = masks.to(self.theta.device, self.theta.dtype)
        return torch.einsum("mp,npc->nmc", b, self.theta) + self.intercept[:, None, :]


def fit_surrogate(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    config: SurrogateConfig,
    *,
    masks: Tensor | None = None,
    device: torch.device | None = None,
    progress: Progress = NullProgress(),
) -> SurrogateResult:
    """Fit the local model set G of ``model`` around each image (docs/method-spec.md §2).

    The perturbed images ``b * x_i`` are built on the fly in chunks of ``config.batch_size``
    (sample, mask) pairs, sample-major; the model is called under ``torch.inference_mode()`` and its
    mode and parameters are left alone (the caller puts it in eval). All fits are then one batched
    weighted ridge solve. ``config.samples`` is not used here: ``images`` are the chosen samples.

    Args:
        model: Maps ``[batch, C_in, H, W]`` images in ``[0, 1]`` to logits ``[batch, C]`` (outputs
            with more dimensions are flattened per image).
        images: ``[N, C_in, H, W]`` floating images in ``[0, 1]``.
        config: Grid, mask count, masking rate, sigma, ridge, batch size and seed.
        masks: Optional ``[m, grid * grid]`` mask set to reuse (so two models share the same B);
            drawn with ``torch.Generator().manual_seed(config.seed)`` when omitted.
        device: Where the model runs; defaults to the device of ``images``.
        progress: Receives stage ``"surrogate"`` with ``total=N`` and advances per finished sample.

    Returns:
        A ``SurrogateResult`` with all tensors on the CPU.

    Raises:
        DataError: Empty images, wrong rank, non-floating dtype, NaN or inf pixels.
        ConfigError: Grid finer than the images, or masks of the wrong width.
    """
    _check_images(images)
    if masks is None:
        masks = draw_masks(
            config.masks, config.grid, config.masking_rate, torch.Generator().manual_seed(config.seed)
        )
    _check_masks(masks, config.grid)
    masks = masks.detach().to("cpu", torch.float32)
    outputs = _model_outputs(model, images, masks, config, device or images.device, progress)
    weights = kernel_weights(masks, config.sigma)
    theta, intercept = solve_weighted_ridge(masks, weights, outputs, config.ridge)
    return SurrogateResult(theta=theta, intercept=intercept, masks=masks, weights=weights, config=config)


def _model_outputs(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    masks: Tensor,
    config: SurrogateConfig,
    device: torch.device,
    progress: Progress,
) -> Tensor:
    """Model outputs on all (sample, mask) pairs, ``[N, m, C]`` on the CPU, computed in chunks."""
    n, m = images.shape[0], masks.shape[0]
    x = images.detach().to(device)
    cells = patch_index_map(x.shape[2], x.shape[3], config.grid)
    fills = _patch_means(x, cells, config.grid**2)
    keep = _pixel_masks(masks.to(device), cells)
    flat: Tensor | None = None
    progress.start("surrogate", total=n)
    done = 0
    for start in range(0, n * m, config.batch_size):
        pairs = torch.arange(start, min(start + config.batch_size, n * m), device=device)
        sample, mask = pairs // m, pairs % m
        with torch.inference_mode():
            logits = model(torch.where(keep[mask], x[sample], fills[sample])).reshape(len(pairs), -1)
        if flat is None:
            flat = torch.empty(n * m, logits.shape[1], dtype=logits.dtype, device=device)
        flat[start : start + len(pairs)] = logits
        finished = (start + len(pairs)) // m
        if finished > done:
            progress.advance(finished - done)
            done = finished
    progress.finish()
    assert flat is not None  # n * m >= 1, checked above
    return flat.cpu().reshape(n, m, -1)


def fidelity(result: SurrogateResult, outputs: Tensor) -> float:
    """Kernel-weighted R^2 of the surrogates on the outputs they were fitted to.

    ``1 - sum Pi_b (y - g(b))^2 / sum Pi_b (y - ybar)^2`` over all samples, masks and classes, where
    ``ybar`` is each sample's and class's weighted mean over masks. 1.0 is a perfect fit.

    Args:
        result: A fitted local model set.
        outputs: ``[N, m, C]`` model outputs on ``result.masks``.
    """
    y = outputs.to(torch.float64)
    w = result.weights.to(torch.float64)[None, :, None]
    pred = result.predict(result.masks).to(torch.float64)
    ybar = (w * y).sum(dim=1, keepdim=True) / w.sum()
    resid = float((w * (y - pred).square()).sum())
    total = float((w * (y - ybar).square()).sum())
    return 1.0 - resid / total if total > 0 else 1.0


# --------------------------------------------------------------------------- validation


def _check_images_shape(images: Tensor) -> None:
    if images.dim() != 4:
        raise DataError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")


def _check_images(images: Tensor) -> None:
    _check_images_shape(images)
    if images.shape[0] == 0:
        raise DataError("no images to fit the surrogate on (0 samples selected)")
    if not images.is_floating_point():
        raise DataError(f"images must be floating point in [0, 1], got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise DataError("images contain NaN or inf pixels")


def _check_masks(masks: Tensor, grid: int) -> None:
    if masks.dim() != 2 or masks.shape[1] != grid * grid or masks.shape[0] < 1:
        raise ConfigError(
            f"masks must be [m, {grid * grid}] for grid {grid}, got shape {tuple(masks.shape)}; "
            "were they drawn with another grid?"
        )
