"""LogME: the log maximum evidence of labels given features (You et al., ICML 2021; docs/ranking.md).

Layer: method (pure torch). For features ``F [N, D]`` and one target vector ``y [N]`` the model is
Bayesian linear regression, ``y = F w + ε`` with prior ``w ~ N(0, α⁻¹ I)`` and noise
``ε ~ N(0, β⁻¹ I)``; the evidence ``p(y | F, α, β) = N(y; 0, β⁻¹ I + α⁻¹ F Fᵀ)`` is maximised over
``α, β`` by MacKay's fixed-point iteration (the paper's Algorithm 1). With the eigen-decomposition of
``Fᵀ F`` (one per feature matrix, shared by every class), ``F = U diag(σ) Vᵀ`` and ``z = Uᵀ y``,
every quantity is a sum over the ``r`` non-zero singular values:

    γ       = Σ_i β σ_i² / (α + β σ_i²)                   (effective number of parameters)
    ‖m‖²    = Σ_i (β σ_i z_i / (α + β σ_i²))²             (m: posterior mean of w)
    ‖Fm−y‖² = Σ_i (α z_i / (α + β σ_i²))² + ‖y‖² − ‖z‖²
    α ← γ / ‖m‖²,   β ← (N − γ) / ‖Fm − y‖²               (until both change by < tol, relative)

(α and β are kept in [1e-10, 1e10]: with N ≤ D the labels can lie in the span of the features and the
evidence then grows without bound as β → ∞; the bound makes that case finite and comparable.)

and the log evidence at the fixed point is

    L = D/2 log α + N/2 log β − N/2 log 2π − α/2 ‖m‖² − β/2 ‖Fm − y‖²
        − 1/2 [Σ_i log(α + β σ_i²) + (D − r) log α]

LogME of a labelling with K classes is ``mean_k L(F, onehot_k) / N``. ``prepare`` gives the
features the clone's ridge head reads (standardised columns, as ``JointSettings.standardize``);
``class_logme`` centres the targets too, which stands for the head's intercept under a flat prior: the
data then live in the ``N − 1`` dimensions orthogonal to the ones vector, and ``N − 1`` replaces ``N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Evidence",
    "Spectrum",
    "class_logme",
    "log_evidence",
    "log_evidences",
    "logme",
    "prepare",
    "spectrum",
]


# α and β stay in [_LO, _HI]: when the labels lie in the span of the features (N ≤ D) the evidence can
# keep growing as β → ∞ (no noise); the bound stops the iteration there with a finite value.
_LO, _HI, _TINY = 1e-10, 1e10, 1e-300


@dataclass(frozen=True)
class Spectrum:
    """``F = U diag(σ) Vᵀ`` restricted to the non-zero singular values; shared by every target vector."""

    u: torch.Tensor  # [N, r]
    s2: torch.Tensor  # [r] squared singular values σ_i²
    n: int
    d: int


@dataclass(frozen=True)
class Evidence:
    """The maximised evidence of one target vector, per sample, and where it is reached."""

    value: float  # L / N
    alpha: float
    beta: float
    iterations: int


def spectrum(features: torch.Tensor, rtol: float = 1e-10) -> Spectrum:
    """One eigen-decomposition of the smaller Gram matrix of ``features [N, D]`` (float64)."""
    f = features.to(torch.float64)
    n, d = f.shape
    if d <= n:
        s2, v = torch.linalg.eigh(f.T @ f)
        keep = s2 > rtol * max(float(s2.max()), 0.0) if d else s2 > 0
        s2, v = s2[keep], v[:, keep]
        u = (f @ v) / s2.sqrt()
    else:
        s2, u = torch.linalg.eigh(f @ f.T)
        keep = s2 > rtol * max(float(s2.max()), 0.0)
        s2, u = s2[keep], u[:, keep]
    return Spectrum(u, s2.clamp_min(0.0), n, d)


def _terms(
    alpha: torch.Tensor, beta: torch.Tensor, s2: torch.Tensor, z2: torch.Tensor, residual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """γ, ‖m‖², ‖Fm − y‖² for every target column at once (``alpha, beta, residual [K]``, ``z2 [r, K]``)."""
    den = alpha + beta * s2[:, None]  # [r, K]
    gamma = (beta * s2[:, None] / den).sum(0)
    m2 = (beta**2 * s2[:, None] * z2 / den**2).sum(0)
    e2 = (alpha**2 * z2 / den**2).sum(0) + residual
    return gamma, m2, e2


def log_evidences(
    spec: Spectrum, y: torch.Tensor, *, tol: float = 1e-5, max_iter: int = 1000, centered: bool = False
) -> list[Evidence]:
    """``log_evidence`` of every column of ``y [N, K]``, iterated together (one shared spectrum).

    ``centered``: ``y`` and the columns of ``F`` have zero mean (an intercept under a flat prior); the data
    then live in the ``N − 1`` dimensions orthogonal to the ones vector and ``N − 1`` replaces ``N``
    (without it, the evidence would grow without bound along the ones direction as β → ∞).

    Raises:
        ValueError: a zero column (nothing to explain) or another number of rows than ``N``.
    """
    y = y.to(torch.float64).reshape(len(y), -1)
    if y.shape[0] != spec.n:
        raise ValueError(f"{y.shape[0]} targets for {spec.n} feature rows")
    yy = (y * y).sum(0)
    if bool((yy <= 0).any()):
        raise ValueError("a target vector is zero: no evidence to measure")
    z2 = (spec.u.T @ y) ** 2  # [r, K]
    residual = (yy - z2.sum(0)).clamp_min(0.0)
    n, d, s2 = spec.n - int(centered), spec.d, spec.s2
    k = y.shape[1]
    alpha = torch.ones(k, dtype=torch.float64)
    beta = torch.ones(k, dtype=torch.float64)
    active = torch.ones(k, dtype=torch.bool)
    iterations = torch.zeros(k, dtype=torch.int64)
    for _ in range(max_iter):
        gamma, m2, e2 = _terms(alpha, beta, s2, z2, residual)
        new_alpha = (gamma / m2.clamp_min(_TINY)).clamp(_LO, _HI)
        new_beta = ((n - gamma) / e2.clamp_min(_TINY)).clamp(_LO, _HI)
        done = ((new_alpha - alpha).abs() <= tol * alpha) & ((new_beta - beta).abs() <= tol * beta)
        alpha = torch.where(active, new_alpha, alpha)
        beta = torch.where(active, new_beta, beta)
        iterations += active.to(torch.int64)
        active &= ~done
        if not bool(active.any()):
            break
    _, m2, e2 = _terms(alpha, beta, s2, z2, residual)
    logdet = torch.log(alpha + beta * s2[:, None]).sum(0) + (d - len(s2)) * torch.log(alpha)
    value = (
        d / 2 * torch.log(alpha)
        + n / 2 * torch.log(beta)
        - n / 2 * math.log(2 * math.pi)
        - alpha / 2 * m2
        - beta / 2 * e2
        - logdet / 2
    ) / n
    return [Evidence(float(value[j]), float(alpha[j]), float(beta[j]), int(iterations[j])) for j in range(k)]


def log_evidence(
    spec: Spectrum, y: torch.Tensor, *, tol: float = 1e-5, max_iter: int = 1000, centered: bool = False
) -> Evidence:
    """Maximise the evidence of ``y [N]`` over ``α, β`` by the fixed-point iteration (module docstring).

    Raises:
        ValueError: ``y`` is constant zero (nothing to explain) or has another length than ``N``.
    """
    y = y.to(torch.float64).flatten()
    if y.numel() != spec.n:
        raise ValueError(f"{y.numel()} targets for {spec.n} feature rows")
    return log_evidences(spec, y[:, None], tol=tol, max_iter=max_iter, centered=centered)[0]


def prepare(features: torch.Tensor) -> torch.Tensor:
    """Columns standardised to zero mean and unit variance (constant columns dropped), float64: the
    features the ridge head is fitted on."""
    f = features.to(torch.float64)
    f = f - f.mean(0)
    sd = f.std(0, unbiased=False)
    keep = sd > 1e-12 * max(float(sd.max()), 1.0) if f.shape[1] else sd > 0
    return f[:, keep] / sd[keep]


def class_logme(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, center: bool = True
) -> list[float | None]:
    """LogME per class (``L / N`` of the one-hot column of each class); None for a class whose column is
    constant (no sample of it, or only samples of it). ``center`` subtracts each column's mean (the
    head's intercept; ``features`` must then have zero-mean columns, as ``prepare`` gives) and counts
    ``N − 1`` dimensions; otherwise ``features`` are used as given."""
    y = torch.nn.functional.one_hot(labels.to(torch.int64), num_classes).to(torch.float64)
    if center:
        y = y - y.mean(0)
    live = [k for k in range(num_classes) if float(y[:, k] @ y[:, k]) > 1e-12]
    out: list[float | None] = [None] * num_classes
    if live:
        evs = log_evidences(spectrum(features), y[:, live], centered=center)
        for k, ev in zip(live, evs, strict=True):
            out[k] = ev.value
    return out


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, center: bool = True) -> float:
    """LogME of integer ``labels [N]`` given ``features [N, D]``: the mean over classes of ``class_logme``.

    Raises:
        ValueError: no class has a non-constant one-hot column.
    """
    values = [v for v in class_logme(features, labels, num_classes, center=center) if v is not None]
    if not values:
        raise ValueError("LogME needs at least two classes among the labels")
    return sum(values) / len(values)
