"""ZEST column alignment and similarity of local model sets (docs/method-spec.md §6, seed Eq. 6-8).

Layer method: pure torch + stdlib (+ ``pnc_cli.core.errors``). Must not import typer, rich or any
other pnc_cli module, must not print and must not touch files.

Two surrogate tensors ``theta [N, P, C]`` (N samples, P = H² patches, C output columns), computed on
the same samples and masks, are compared column by column. The side with fewer columns is ``A``
(``theta_a`` on equal counts); the cosine distance between every column of ``A`` and every column of
the other side (each flattened over ``N·P``) is computed in float64, and the closest unused pair is
matched greedily until every column of ``A`` is matched; ties go to the lowest (index in A, index in
B). Unmatched columns of the larger side are dropped. The score is the cosine similarity of the two
flattened, aligned ``Θ`` (columns in matched order).
"""

from __future__ import annotations

import torch

from pnc_cli.core.errors import DataError, IncompatibleError

_EPS = 1e-12


def _check(theta_a: torch.Tensor, theta_b: torch.Tensor) -> None:
    """Raise unless both are finite ``[N, P, C]`` tensors with equal N and P and C >= 1."""
    for name, t in (("theta_a", theta_a), ("theta_b", theta_b)):
        if t.dim() != 3 or t.shape[-1] == 0 or t.numel() == 0:
            raise IncompatibleError(
                f"{name} must have shape [N, P, C] with no empty dim, got {list(t.shape)}"
            )
        if not bool(torch.isfinite(t).all()):
            raise DataError(f"{name} contains NaN or inf; recompute the local model set")
    if theta_a.shape[:2] != theta_b.shape[:2]:
        raise IncompatibleError(
            f"local model sets have [N, P] = {list(theta_a.shape[:2])} and {list(theta_b.shape[:2])}: "
            "surrogates were computed on different samples or masks; recompute them on the same data"
        )


def _columns(theta: torch.Tensor) -> torch.Tensor:
    """``[N, P, C]`` -> unit-norm columns ``[N·P, C]`` in float64 (zero columns stay zero)."""
    cols = theta.detach().to(torch.float64).reshape(-1, theta.shape[-1])
    return cols / cols.norm(dim=0, keepdim=True).clamp_min(_EPS)


def _greedy_match(dist: torch.Tensor) -> list[tuple[int, int]]:
    """Greedy closest-unused-pair matching of rows to columns of ``dist`` (rows <= cols).

    A stable sort of the row-major flattened matrix orders equal distances by (row, col).
    """
    n_rows, n_cols = dist.shape
    order = torch.sort(dist.flatten(), stable=True).indices.tolist()
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for flat in order:
        r, c = divmod(flat, n_cols)
        if r in used_r or c in used_c:
            continue
        pairs.append((r, c))
        used_r.add(r)
        used_c.add(c)
        if len(pairs) == n_rows:
            break
    return pairs


def align_columns(theta_a: torch.Tensor, theta_b: torch.Tensor) -> list[tuple[int, int]]:
    """Match every column of the smaller side to a distinct column of the other (ZEST).

    Args:
        theta_a: ``[N, P, Ca]`` local model set of one model.
        theta_b: ``[N, P, Cb]`` of the other, on the same samples and masks.

    Returns:
        ``min(Ca, Cb)`` pairs ``(index in theta_a, index in theta_b)``, in the order they were matched
        (closest first).

    Raises:
        IncompatibleError: shapes are not ``[N, P, C]`` or N / P differ.
        DataError: a tensor holds NaN or inf.
    """
    _check(theta_a, theta_b)
    swap = theta_b.shape[-1] < theta_a.shape[-1]
    small, large = (theta_b, theta_a) if swap else (theta_a, theta_b)
    dist = 1.0 - _columns(small).T @ _columns(large)
    pairs = _greedy_match(dist)
    return [(j, i) for i, j in pairs] if swap else pairs


def aligned_similarity(theta_a: torch.Tensor, theta_b: torch.Tensor) -> float:
    """Cosine similarity of the flattened, column-aligned ``theta_a`` and ``theta_b`` (in [-1, 1]).

    Raises:
        IncompatibleError: shapes are not ``[N, P, C]`` or N / P differ.
        DataError: a tensor holds NaN or inf.
    """
    pairs = align_columns(theta_a, theta_b)
    idx_a = torch.tensor([a for a, _ in pairs], device=theta_a.device)
    idx_b = torch.tensor([b for _, b in pairs], device=theta_b.device)
    va = theta_a.detach().to(torch.float64).index_select(-1, idx_a).flatten()
    vb = theta_b.detach().to(torch.float64).index_select(-1, idx_b).flatten().to(va.device)
    cos = torch.dot(va, vb) / (va.norm() * vb.norm()).clamp_min(_EPS)
    return float(cos.clamp(-1.0, 1.0))


def zest_distance(theta_a: torch.Tensor, theta_b: torch.Tensor) -> float:
    """``1 - aligned_similarity(theta_a, theta_b)``, in [0, 2] (0 = identical up to column order)."""
    return 1.0 - aligned_similarity(theta_a, theta_b)
