"""Closed-form ridge regression from sufficient statistics (docs/method-spec.md §3, joint head).

Layer: method (pure torch). The joint head ``F_c`` is a linear map fitted to one-hot labels by ridge
regression. Everything it needs from the data are three sums over samples, accumulated in float64 in
one streaming pass — ``Σx``, ``Σ xxᵀ``, ``Σ x yᵀ``, ``Σy`` and the count — so memory does not grow with
the data, the order of the samples does not matter, and shards computed by several processes add up
(``RidgeStats.reduce_`` takes the all-reduce) to exactly the single-process statistics.

With feature means ``μ`` and standard deviations ``σ`` (optional standardisation, ``D = diag(σ)``), the
centred, scaled covariance is ``S = D⁻¹ (Σxxᵀ/n − μμᵀ) D⁻¹`` and the cross term ``B = D⁻¹ (Σxyᵀ/n − μȳᵀ)``.
For a ridge term λ (per sample, on standardised features) the weights are ``W_z = (S + λI)⁻¹ B``; in the
original units ``W = D⁻¹ W_z`` and the bias ``b = ȳ − Wᵀμ``. One eigendecomposition ``S = V diag(e) Vᵀ``
gives the whole path ``W_z(λ) = V diag(1 / (e + λ)) Vᵀ B`` for every λ of a grid at the cost of one solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

DEFAULT_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MIN_STD = 1e-8  # features whose std is below this are constant: left unscaled (their weight ends up ~0)


@dataclass
class RidgeStats:
    """Sufficient statistics of ``x ∈ R^d`` and one-hot ``y ∈ R^K`` (float64, summed over samples)."""

    sx: torch.Tensor  # [d]
    sxx: torch.Tensor  # [d, d]
    sxy: torch.Tensor  # [d, K]
    sy: torch.Tensor  # [K]
    n: torch.Tensor  # [] (float64, so one all-reduce sums everything)

    @classmethod
    def zeros(cls, dim: int, classes: int, device: torch.device | str = "cpu") -> RidgeStats:
        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return cls(z(dim), z(dim, dim), z(dim, classes), z(classes), z())

    @property
    def dim(self) -> int:
        return int(self.sx.shape[0])

    @property
    def classes(self) -> int:
        return int(self.sy.shape[0])

    def add(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Accumulate a batch: features ``x [N, d]`` and integer labels ``[N]`` (one-hot implied)."""
        x = x.detach().to(self.sx.device, torch.float64).flatten(1)
        y = torch.nn.functional.one_hot(labels.to(self.sx.device).long(), self.classes).to(torch.float64)
        self.sx += x.sum(0)
        self.sxx += x.T @ x
        self.sxy += x.T @ y
        self.sy += y.sum(0)
        self.n += x.shape[0]

    def __add__(self, other: RidgeStats) -> RidgeStats:
        return RidgeStats(
            self.sx + other.sx,
            self.sxx + other.sxx,
            self.sxy + other.sxy,
            self.sy + other.sy,
            self.n + other.n,
        )

    def select(self, columns: torch.Tensor) -> RidgeStats:
        """The statistics of the features restricted to ``columns`` (exact: a sub-block)."""
        c = columns.to(self.sx.device)
        return RidgeStats(self.sx[c], self.sxx[c][:, c], self.sxy[c], self.sy.clone(), self.n.clone())

    def reduce_(self, all_reduce: Callable[[torch.Tensor], object]) -> RidgeStats:
        """Sum the statistics across processes in place (``all_reduce`` sums a tensor in place)."""
        for t in (self.sx, self.sxx, self.sxy, self.sy, self.n):
            all_reduce(t)
        return self


@dataclass(frozen=True)
class RidgePath:
    """The eigen-solution of one set of statistics: solves for any λ cheaply."""

    mean: torch.Tensor  # μ [d]
    scale: torch.Tensor  # σ [d] (ones without standardisation)
    ybar: torch.Tensor  # [K]
    eigvals: torch.Tensor  # [d]
    eigvecs: torch.Tensor  # [d, d]
    proj: torch.Tensor  # Vᵀ B [d, K]

    def solve(self, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [K, d], bias [K])`` of the head ``z = x Wᵀ + b`` (float64)."""
        wz = self.eigvecs @ (self.proj / (self.eigvals.clamp_min(0) + lam)[:, None])
        w = wz / self.scale[:, None]
        b = self.ybar - self.mean @ w
        return w.T.contiguous(), b

    def standardised_weights(self, lam: float) -> torch.Tensor:
        """``W_z [d, K]``: weights on standardised features (their size says how much a column is used)."""
        return self.eigvecs @ (self.proj / (self.eigvals.clamp_min(0) + lam)[:, None])


@dataclass(frozen=True)
class Centred:
    """The statistics centred (and scaled): what every solve starts from (see the module docstring)."""

    mean: torch.Tensor  # μ [d]
    scale: torch.Tensor  # σ [d] (ones without standardisation; constant columns stay unscaled)
    ybar: torch.Tensor  # [K]
    s: torch.Tensor  # S [d, d], symmetric
    b: torch.Tensor  # B [d, K]


def centre(stats: RidgeStats, *, standardize: bool = True) -> Centred:
    """``μ``, ``σ``, ``ȳ``, ``S = D⁻¹ (Σxxᵀ/n − μμᵀ) D⁻¹`` and ``B = D⁻¹ (Σxyᵀ/n − μȳᵀ)``."""
    if float(stats.n) < 1:
        raise ValueError("ridge regression needs at least one sample")
    n = stats.n
    mean, ybar = stats.sx / n, stats.sy / n
    cov = stats.sxx / n - torch.outer(mean, mean)
    cross = stats.sxy / n - torch.outer(mean, ybar)
    if standardize:
        scale = cov.diagonal().clamp_min(0).sqrt()
        scale = torch.where(scale > MIN_STD, scale, torch.ones_like(scale))
    else:
        scale = torch.ones_like(mean)
    s = cov / torch.outer(scale, scale)
    return Centred(mean, scale, ybar, (s + s.T) / 2, cross / scale[:, None])


def ridge_path(stats: RidgeStats, *, standardize: bool = True) -> RidgePath:
    """Centre (and scale) the statistics and diagonalise them (see the module docstring)."""
    c = centre(stats, standardize=standardize)
    eigvals, eigvecs = torch.linalg.eigh(c.s)
    return RidgePath(c.mean, c.scale, c.ybar, eigvals, eigvecs, eigvecs.T @ c.b)


def ridge_inverse(
    stats: RidgeStats, lam: float, *, standardize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_z [d, K], P [d, d])`` for one λ: the weights on standardised features (equal to
    ``ridge_path(stats).standardised_weights(lam)``) and ``P = (S + λI)⁻¹``, by one Cholesky
    factorisation (cheaper than :func:`ridge_path`'s eigendecomposition when one λ is enough)."""
    c = centre(stats, standardize=standardize)
    s = c.s + lam * torch.eye(len(c.mean), dtype=c.s.dtype, device=c.s.device)
    factor, info = torch.linalg.cholesky_ex(s)
    inv = torch.cholesky_inverse(factor) if int(info) == 0 else torch.linalg.pinv(s, hermitian=True)
    return inv @ c.b, inv


def removal_costs(wz: torch.Tensor, inv: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """For each group of columns (``groups [G, m]``, indices), how much the ridge objective rises when
    the group is removed and the rest refitted: ``tr(W_Gᵀ (P_GG)⁻¹ W_G)`` with ``P = (S + λI)⁻¹`` (the
    least-squares identity behind "optimal brain surgeon"; exact for one group at a time)."""
    if groups.numel() == 0:
        return torch.zeros(len(groups), dtype=wz.dtype)
    pgg = inv[groups[:, :, None], groups[:, None, :]]
    wg = wz[groups]
    return (wg * torch.linalg.solve(pgg, wg)).sum((1, 2))


def accuracy(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of the linear head on features ``x`` with labels ``y``."""
    if len(y) == 0:
        return float("nan")
    pred = (x.to(torch.float64) @ weight.T + bias).argmax(1)
    return float((pred == y.to(pred.device)).double().mean())


def choose_lambda(
    path: RidgePath,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    grid: Sequence[float] = DEFAULT_GRID,
    score: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> tuple[float, float]:
    """The λ of ``grid`` with the best validation score (ties: the larger λ, the smoother head) and that
    score. ``score(weight, bias)`` defaults to accuracy on ``val``; without validation data the middle
    of the grid is returned with a NaN score."""
    if val is None or len(val[1]) == 0:
        return float(sorted(grid)[len(grid) // 2]), float("nan")
    x, y = val
    best: tuple[float, float] | None = None
    for lam in sorted(grid):
        w, b = path.solve(lam)
        s = score(w, b) if score is not None else accuracy(w, b, x, y)
        if best is None or s >= best[1]:
            best = (lam, s)
    assert best is not None
    return best
