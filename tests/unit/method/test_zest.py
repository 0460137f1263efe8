"""Tests of pnc_cli.method.zest: ZEST column alignment and aligned similarity (docs/method-spec.md §6)."""

from __future__ import annotations

import pytest
import torch

from pnc_cli.core.errors import IncompatibleError
from pnc_cli.method.zest import align_columns, aligned_similarity, zest_distance


def _theta(n: int = 6, p: int = 16, c: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, p, c, generator=torch.Generator().manual_seed(seed))


def test_alignment_recovers_permutation() -> None:
    theta = _theta(c=10)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    pairs = align_columns(theta, theta[:, :, perm])
    assert sorted(pairs) == sorted((int(perm[j]), j) for j in range(10))


def test_self_and_permuted_copy_score_one() -> None:
    theta = _theta(c=7)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(2))
    assert aligned_similarity(theta, theta) == pytest.approx(1.0, abs=1e-12)
    assert aligned_similarity(theta, theta[:, :, perm]) == pytest.approx(1.0, abs=1e-12)
    assert zest_distance(theta, theta[:, :, perm]) == pytest.approx(0.0, abs=1e-12)


def test_role_swap_same_score_and_mirrored_pairs() -> None:
    a, b = _theta(c=5, seed=3), _theta(c=8, seed=4)
    assert aligned_similarity(a, b) == pytest.approx(aligned_similarity(b, a), abs=1e-12)
    assert align_columns(b, a) == [(j, i) for i, j in align_columns(a, b)]
    c = _theta(c=5, seed=5)
    assert aligned_similarity(a, c) == pytest.approx(aligned_similarity(c, a), abs=1e-12)


@pytest.mark.parametrize("fewer_on", ["a", "b"])
def test_fewer_columns_either_side_drops_unmatched(fewer_on: str) -> None:
    big = _theta(c=9, seed=6)
    keep = [7, 2, 4]
    small = big[:, :, keep]
    a, b = (small, big) if fewer_on == "a" else (big, small)
    pairs = align_columns(a, b)
    assert len(pairs) == 3
    expected = [(i, k) for i, k in enumerate(keep)]
    if fewer_on == "b":
        expected = [(k, i) for i, k in expected]
    assert sorted(pairs) == sorted(expected)
    assert aligned_similarity(a, b) == pytest.approx(1.0, abs=1e-12)


def test_unrelated_scores_lower_than_related() -> None:
    a = _theta(c=6, seed=7)
    noisy = a + 0.3 * _theta(c=6, seed=8)
    unrelated = _theta(c=6, seed=9)
    assert aligned_similarity(a, noisy) > aligned_similarity(a, unrelated)
    assert 0.0 < zest_distance(a, noisy) < zest_distance(a, unrelated)


def test_greedy_picks_closest_pair_first() -> None:
    # column 0 of A is closest to column 1 of B, column 1 of A is also closest to B1 but less so
    b = torch.eye(3).view(1, 3, 3)
    a = torch.tensor([[0.0, 1.0, 0.0], [0.1, 1.0, 0.0]]).T.reshape(1, 3, 2)
    pairs = align_columns(a, b)
    assert pairs[0] == (0, 1)
    assert pairs[1] == (1, 0)


@pytest.mark.parametrize("shape_b", [(5, 16, 4), (6, 9, 4)])
def test_mismatched_n_or_p_raises(shape_b: tuple[int, int, int]) -> None:
    with pytest.raises(IncompatibleError, match="different samples or masks"):
        aligned_similarity(_theta(c=4), torch.randn(*shape_b))


def test_bad_rank_raises() -> None:
    with pytest.raises(IncompatibleError):
        align_columns(torch.randn(4, 5), torch.randn(4, 5))


def test_deterministic_including_ties() -> None:
    theta = torch.ones(2, 3, 4)  # every column identical: all distances tie
    first = align_columns(theta, torch.ones(2, 3, 6))
    assert first == [(0, 0), (1, 1), (2, 2), (3, 3)]
    a, b = _theta(c=6, seed=10), _theta(c=9, seed=11)
    assert align_columns(a, b) == align_columns(a.clone(), b.clone())
    assert aligned_similarity(a, b) == aligned_similarity(a, b)
