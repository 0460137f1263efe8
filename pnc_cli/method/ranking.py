"""Ranking candidate sources by the similarity of their local model sets (docs/method-spec.md §6, seed Eq.
6-8).

Layer method (algorithm): torch and ``pnc_cli.method.zest`` only; no file IO, no printing.

Every model's local model set ``Θ [N, P, C]`` is computed on the same samples ``D_t`` (the requested
classes) and the same masks B. The score of a source is Eq. 7 of the seed,
``Sim(M_s|D_t, M_t|D_t) = Θ_s·Θ_t / (‖Θ_s‖‖Θ_t‖)``, after the ZEST alignment of the output columns
(``zest.aligned_similarity``: the side with fewer columns is matched greedily, closest cosine pair
first, and the unmatched columns of the other side are dropped). Sources are ranked highest score
first; equal scores are ordered by name so the ranking is deterministic.

Column modes (which columns of a source take part):

- ``"all"`` (default, exactly the seed): every output column of the source against every column of
  the target.
- ``"cloned"``: only the source columns of the requested classes (the ones a clone would copy),
  aligned against the target's columns.

Score modes (``SCORE_MODES``):

- ``"similarity"`` (default): the seed's Eq. 7 above.
- ``"evidence"`` (not in the seed; docs/ranking.md, docs/benchmarks.md): how strongly the content of the
  samples of each requested class drives the source's own logit for that class,
  ``mean_c mean_{i of class c} sum_h Θ_s[i, h, col(c)]`` -- the logit of the full image minus that of
  the image with every patch replaced by its mean colour, as the local model explains it. It needs no
  target and is in logit units (comparable between sources, but their logit scales enter it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..core.errors import ConfigError
from .zest import aligned_similarity

__all__ = [
    "COLUMN_MODES",
    "SCORE_MODES",
    "class_evidence",
    "rank_scores",
    "restrict_columns",
    "score_sources",
]

COLUMN_MODES = ("all", "cloned")
SCORE_MODES = ("similarity", "evidence")


def restrict_columns(theta: torch.Tensor, columns: Sequence[int] | None) -> torch.Tensor:
    """``theta [N, P, C]`` limited to the given output columns (in that order); all of them for None.

    Raises:
        ConfigError: an index outside ``0..C-1`` or an empty selection.
    """
    if columns is None:
        return theta
    idx = [int(c) for c in columns]
    if not idx:
        raise ConfigError("no columns selected for the comparison")
    bad = [c for c in idx if not 0 <= c < theta.shape[-1]]
    if bad:
        raise ConfigError(
            f"column {bad[0]} is out of range for a local model set with {theta.shape[-1]} columns"
        )
    return theta.index_select(-1, torch.tensor(idx, dtype=torch.int64, device=theta.device))


def class_evidence(theta: torch.Tensor, columns: Sequence[int], labels: torch.Tensor | None = None) -> float:
    """Mean total patch attribution of each requested class's column on the samples of that class.

    Args:
        theta: ``[N, P, C]`` local model set of a source.
        columns: the source column of each requested class (``columns[k]`` for class ``k``).
        labels: ``[N]`` index ``k`` of each sample's class; None uses every sample for every column.

    Returns:
        ``mean_k mean_{i: labels[i] == k} sum_h theta[i, h, columns[k]]`` (classes without samples are
        left out of the mean).

    Raises:
        ConfigError: no columns, a column out of range, or no sample of any requested class.
    """
    picked = restrict_columns(theta, columns).to(torch.float64).sum(dim=1)  # [N, K]
    values = []
    for k in range(picked.shape[1]):
        rows = picked[:, k] if labels is None else picked[labels.to(picked.device) == k, k]
        if rows.numel():
            values.append(rows.mean())
    if not values:
        raise ConfigError("no sample of the requested classes to measure the evidence on")
    return float(torch.stack(values).mean())


def rank_scores(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(name, score)`` highest first, ties broken by name."""
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def score_sources(
    target_theta: torch.Tensor,
    source_thetas: Mapping[str, torch.Tensor],
    *,
    source_columns: Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, float]]:
    """Score every source against the target (Eq. 7) and rank them.

    Args:
        target_theta: ``[N, P, Ct]`` local model set of the target on ``D_t``.
        source_thetas: name -> ``[N, P, Cs]`` local model set of each source on the same samples and
            masks (same N and P).
        source_columns: optional name -> source column indices to keep before the alignment (the
            ``"cloned"`` mode); sources not in the mapping use all their columns.

    Returns:
        ``(name, score)`` pairs, highest score first, ties broken by name; score in ``[-1, 1]``.

    Raises:
        IncompatibleError: a local model set with another N or P than the target's.
        DataError: NaN or inf in a local model set.
    """
    columns = source_columns or {}
    return rank_scores(
        {
            name: aligned_similarity(target_theta, restrict_columns(theta, columns.get(name)))
            for name, theta in source_thetas.items()
        }
    )
