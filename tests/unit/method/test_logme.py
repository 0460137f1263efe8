"""LogME (pnc_cli.method.logme) against a direct evaluation of the evidence formula on tiny data."""

from __future__ import annotations

import math

import pytest
import torch

from pnc_cli.method.logme import class_logme, log_evidence, log_evidences, logme, prepare, spectrum


def direct_log_evidence(f: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log N(y; 0, β⁻¹ I + α⁻¹ F Fᵀ), computed naively (dense covariance, logdet, solve)."""
    return float(grid_log_evidence(f, y, torch.tensor([alpha]), torch.tensor([beta]))[0])


def grid_log_evidence(
    f: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """The same formula for many (α, β) pairs at once (a batch of dense covariances)."""
    f, y = f.to(torch.float64), y.to(torch.float64)
    n = len(y)
    a, b = alpha.to(torch.float64)[:, None, None], beta.to(torch.float64)[:, None, None]
    cov = torch.eye(n, dtype=torch.float64) / b + (f @ f.T) / a
    quad = (y * torch.linalg.solve(cov, y.expand(len(a), n).unsqueeze(-1)).squeeze(-1)).sum(-1)
    return -0.5 * n * math.log(2 * math.pi) - 0.5 * torch.linalg.slogdet(cov)[1] - 0.5 * quad


def _data(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    y = f @ w * 0.5 + 0.7 * torch.randn(n, generator=g, dtype=torch.float64)
    return f, y


@pytest.mark.parametrize(("n", "d"), [(12, 3), (20, 30), (9, 9)])
def test_value_at_the_fixed_point_matches_the_direct_formula(n: int, d: int) -> None:
    f, y = _data(n, d, seed=n + d)
    ev = log_evidence(spectrum(f), y)
    assert ev.value * n == pytest.approx(direct_log_evidence(f, y, ev.alpha, ev.beta), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(("n", "d"), [(12, 3), (20, 30), (9, 9)])
def test_fixed_point_is_the_maximiser_of_a_brute_force_grid(n: int, d: int) -> None:
    f, y = _data(n, d, seed=n + d)
    ev = log_evidence(spectrum(f), y)
    axis = 10 ** (torch.arange(-80, 81, dtype=torch.float64) / 20)  # 1e-4 .. 1e4, 161 points per axis
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    values = grid_log_evidence(f, y, a.flatten(), b.flatten())
    best = int(values.argmax())
    ours = ev.value * n
    assert ours >= float(values[best]) - 1e-9  # no grid point beats the fixed point
    assert ours - float(values[best]) < 0.02  # and the grid's best is next to it
    step = 10 ** (1 / 20)  # the fixed point lies within a grid step of the grid's argmax
    assert float(a.flatten()[best]) / step <= ev.alpha <= float(a.flatten()[best]) * step
    assert float(b.flatten()[best]) / step <= ev.beta <= float(b.flatten()[best]) * step


def test_labels_in_the_span_of_the_features_stop_at_the_bound_with_the_formula_value() -> None:
    f, y = _data(6, 10, seed=16)  # N < D: y is fitted exactly, the evidence grows as β → ∞
    ev = log_evidence(spectrum(f), y)
    assert ev.beta == pytest.approx(1e10)
    assert ev.value * 6 == pytest.approx(direct_log_evidence(f, y, ev.alpha, ev.beta), rel=1e-9)


def test_rank_deficient_features_count_the_null_space_in_the_log_determinant() -> None:
    f, y = _data(10, 4, seed=1)
    f = torch.cat([f, f[:, :2] * 2.0], 1)  # rank 4, D = 6
    ev = log_evidence(spectrum(f), y)
    assert len(spectrum(f).s2) == 4
    assert ev.value * 10 == pytest.approx(direct_log_evidence(f, y, ev.alpha, ev.beta), rel=1e-9)


def test_informative_features_have_more_evidence_than_noise() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    good = torch.nn.functional.one_hot(labels, 3).double() + 0.3 * torch.randn(60, 3, generator=g)
    noise = torch.randn(60, 3, generator=g, dtype=torch.float64)
    assert logme(prepare(good), labels, 3) > logme(prepare(noise), labels, 3) + 0.5


def test_class_logme_skips_constant_columns_and_averages_the_rest() -> None:
    f, _ = _data(20, 5, seed=2)
    labels = torch.tensor([0, 2] * 10)  # class 1 has no sample
    per = class_logme(prepare(f), labels, 3)
    assert per[1] is None and per[0] is not None and per[2] is not None
    assert logme(prepare(f), labels, 3) == pytest.approx((per[0] + per[2]) / 2)
    with pytest.raises(ValueError, match="two classes"):
        logme(prepare(f), torch.zeros(20, dtype=torch.long), 1)


def test_prepare_standardises_and_drops_constant_columns() -> None:
    f = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]])
    p = prepare(f)
    assert p.shape == (3, 2)
    assert torch.allclose(p.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(p.std(0, unbiased=False), torch.ones(2, dtype=torch.float64))


def test_length_mismatch_and_zero_target_are_refused() -> None:
    f, y = _data(8, 3, seed=4)
    with pytest.raises(ValueError, match="targets"):
        log_evidence(spectrum(f), y[:5])
    with pytest.raises(ValueError, match="zero"):
        log_evidence(spectrum(f), torch.zeros(8))


def test_columns_iterated_together_equal_one_at_a_time() -> None:
    f, _ = _data(30, 8, seed=5)
    g = torch.Generator().manual_seed(5)
    y = torch.randn(30, 4, generator=g, dtype=torch.float64) + f[:, :4]
    spec = spectrum(f)
    together = log_evidences(spec, y)
    for j in range(4):
        alone = log_evidence(spec, y[:, j])
        assert together[j].value == pytest.approx(alone.value, rel=1e-12)
        assert together[j].alpha == pytest.approx(alone.alpha, rel=1e-12)


def test_centred_evidence_is_the_evidence_of_the_data_projected_off_the_ones_vector() -> None:
    f, y = _data(8, 12, seed=7)  # N < D: without the N − 1 the centred evidence would be unbounded
    fc, yc = prepare(f), y - y.mean()
    ev = log_evidence(spectrum(fc), yc, centered=True)
    q = torch.linalg.qr(
        torch.cat([torch.ones(8, 1, dtype=torch.float64), torch.eye(8, dtype=torch.float64)], 1)
    )[0]
    basis = q[:, 1:8]  # orthonormal basis of the complement of the ones vector
    direct = direct_log_evidence(basis.T @ fc, basis.T @ yc, ev.alpha, ev.beta)
    assert ev.value * 7 == pytest.approx(direct, rel=1e-8)
    assert math.isfinite(ev.value)
