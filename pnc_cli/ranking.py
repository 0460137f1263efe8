"""Ranking candidate sources by the similarity of their local model sets (method spec §6, seed Eq. 6-8).

Layer L3 (algorithm): torch and ``pnc_cli.zest`` only; no file IO, no printing.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .errors import ConfigError
from .zest import aligned_similarity

__all__ = ["COLUMN_MODES", "restrict_columns", "score_sources"]

COLUMN_MODES = ("all", "cloned")


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
    scored = [
        (name, aligned_similarity(target_theta, restrict_columns(theta, columns.get(name))))
        for name, theta in source_thetas.items()
    ]
    return sorted(scored, key=lambda item: (-item[1], item[0]))
