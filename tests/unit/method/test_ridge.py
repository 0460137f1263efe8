"""Closed-form ridge from sufficient statistics (pnc_cli.method.ridge; docs/method-spec.md §3, joint head).

Known answers: the solution from streamed statistics equals a direct solve on the whole data; shards add
up to the whole (the torchrun all-reduce property); λ is chosen by validation accuracy; the cost of
removing a group of columns equals the rise of the ridge objective when the rest is refitted.
"""

from __future__ import annotations

import torch

from pnc_cli.method.ridge import (
    RidgeStats,
    accuracy,
    choose_lambda,
    removal_costs,
    ridge_inverse,
    ridge_path,
)


def _data(n: int = 200, d: int = 7, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3, d, dtype=torch.float64)
    w = torch.randn(d, k, generator=g, dtype=torch.float64)
    y = (x @ w + 0.3 * torch.randn(n, k, generator=g, dtype=torch.float64)).argmax(1)
    return x + 2.0, y


def _direct(
    x: torch.Tensor, y: torch.Tensor, lam: float, standardize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge on centred (and scaled) features with an unpenalised bias, solved directly."""
    n, k = len(y), int(y.max()) + 1
    onehot = torch.nn.functional.one_hot(y, k).double()
    mu, ybar = x.mean(0), onehot.mean(0)
    sd = x.std(0, unbiased=False) if standardize else torch.ones(x.shape[1], dtype=torch.float64)
    z = (x - mu) / sd
    wz = torch.linalg.solve(
        z.T @ z / n + lam * torch.eye(x.shape[1], dtype=torch.float64), z.T @ (onehot - ybar) / n
    )
    w = wz / sd[:, None]
    return w.T, ybar - mu @ w


def test_streamed_statistics_give_the_direct_solution() -> None:
    x, y = _data()
    stats = RidgeStats.zeros(x.shape[1], 3)
    for i in range(0, len(y), 33):  # uneven batches
        stats.add(x[i : i + 33], y[i : i + 33])
    for standardize in (True, False):
        path = ridge_path(stats, standardize=standardize)
        for lam in (1e-4, 0.1, 3.0):
            w, b = path.solve(lam)
            w0, b0 = _direct(x, y, lam, standardize)
            assert torch.allclose(w, w0, atol=1e-9) and torch.allclose(b, b0, atol=1e-9)


def test_shards_sum_to_the_whole_like_an_all_reduce() -> None:
    """Two processes' shards, summed in place by ``reduce_`` (here: add the other shard's tensor, which
    is what ``torch.distributed.all_reduce(SUM)`` does with two ranks), give the single-process solve."""
    x, y = _data()
    whole, a, b = (RidgeStats.zeros(x.shape[1], 3) for _ in range(3))
    whole.add(x, y)
    a.add(x[:77], y[:77])
    b.add(x[77:], y[77:])
    other = iter([b.sx, b.sxx, b.sxy, b.sy, b.n])
    assert a.reduce_(lambda t: t.add_(next(other))) is a
    assert torch.allclose(a.sxx, whole.sxx) and torch.equal(a.n, whole.n) and torch.equal(a.sy, whole.sy)
    w1, b1 = ridge_path(a).solve(0.01)
    w2, b2 = ridge_path(whole).solve(0.01)
    assert torch.allclose(w1, w2, atol=1e-10) and torch.allclose(b1, b2, atol=1e-10)


def test_select_is_the_statistics_of_the_columns() -> None:
    x, y = _data()
    stats, sub = RidgeStats.zeros(7, 3), RidgeStats.zeros(3, 3)
    stats.add(x, y)
    cols = torch.tensor([0, 4, 6])
    sub.add(x[:, cols], y)
    picked = stats.select(cols)
    assert torch.allclose(picked.sxx, sub.sxx) and torch.allclose(picked.sxy, sub.sxy)


def test_lambda_is_chosen_on_validation_accuracy() -> None:
    x, y = _data(n=60, d=40, seed=1)  # few samples, many features: a tiny λ overfits
    xv, yv = _data(n=400, d=40, seed=1)
    stats = RidgeStats.zeros(40, 3)
    stats.add(x, y)
    path = ridge_path(stats)
    grid = (1e-6, 1e-2, 1.0)
    lam, score = choose_lambda(path, (xv, yv), grid)
    scores = {g: accuracy(*path.solve(g), xv, yv) for g in grid}
    assert score == max(scores.values()) and scores[lam] == score
    assert max(g for g, s in scores.items() if s == score) == lam  # ties: the larger λ
    assert choose_lambda(path, None, grid)[0] == 1e-2  # no validation data: the middle of the grid


def test_constant_features_do_not_break_the_solve() -> None:
    x, y = _data()
    x[:, 2] = 5.0
    stats = RidgeStats.zeros(7, 3)
    stats.add(x, y)
    w, b = ridge_path(stats).solve(1e-3)
    assert torch.isfinite(w).all() and torch.isfinite(b).all()


def _objective(x: torch.Tensor, y: torch.Tensor, cols: torch.Tensor, lam: float) -> float:
    """The minimum of the ridge objective on standardised columns ``cols`` (scales of the full data)."""
    n, k = len(y), int(y.max()) + 1
    onehot = torch.nn.functional.one_hot(y, k).double()
    z = ((x - x.mean(0)) / x.std(0, unbiased=False))[:, cols]
    t = onehot - onehot.mean(0)
    a = z.T @ z / n + lam * torch.eye(len(cols), dtype=torch.float64)
    w = torch.linalg.solve(a, z.T @ t / n)
    return float((t - z @ w).pow(2).sum() / n + lam * w.pow(2).sum())


def test_ridge_inverse_matches_the_path_and_removal_costs_are_refit_losses() -> None:
    x, y = _data(d=6)
    stats = RidgeStats.zeros(6, 3)
    stats.add(x, y)
    wz, inv = ridge_inverse(stats, 0.1)
    assert torch.allclose(wz, ridge_path(stats).standardised_weights(0.1), atol=1e-10)
    groups = torch.tensor([[0, 1], [2, 5], [3, 4]])
    costs = removal_costs(wz, inv, groups)
    full = _objective(x, y, torch.arange(6), 0.1)
    for g, cost in zip(groups, costs, strict=True):
        rest = torch.tensor([c for c in range(6) if c not in g.tolist()])
        assert abs(_objective(x, y, rest, 0.1) - full - float(cost)) < 1e-9
    singles = removal_costs(wz, inv, torch.arange(6)[:, None])
    assert (singles > 0).all() and singles.shape == (6,)
