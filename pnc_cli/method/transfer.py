"""How well a source will clone, before cloning it: LogME on the joint head's own features (docs/ranking.md).

Layer: method (pure torch). The default clone fits one ridge head over ``[F_base ; f_m]`` for every
candidate span ``M_s^[0:E]`` (``pnc_cli.method.joint``) and keeps the best. This module scores a source by
the LogME evidence (``pnc_cli.method.logme``) of the cloning labels given those same features, for each
candidate span, and takes the best candidate, as the clone's search would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..nets.network import Network
from .cloned_model import ClonedModel
from .joint import Candidate, candidates, joint_features
from .logme import class_logme, prepare

__all__ = ["SpanScore", "span_scores"]


@dataclass(frozen=True)
class SpanScore:
    """LogME of the cloning labels given the joint features of one candidate span."""

    end: int
    pool: int
    features: int  # width of [F_base ; f_m] after dropping constant columns
    logme: float  # mean over classes
    logme_cloned: float  # mean over the cloned classes only

    def to_dict(self) -> dict[str, float | int]:
        return {
            "end": self.end,
            "pool": self.pool,
            "features": self.features,
            "logme": self.logme,
            "logme_cloned": self.logme_cloned,
        }


@torch.no_grad()
def span_scores(
    base: ClonedModel,
    source: Network,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_known: int,
    num_classes: int,
    image_shape: tuple[int, ...],
    max_features: int,
    batch_size: int = 512,
) -> list[SpanScore]:
    """LogME of ``labels`` (``0..num_known-1`` the base's classes, then the cloned ones) given each
    candidate's standardised ``[F_base ; f_m]`` on images ``x`` in [0, 1] (one pass of each network over
    ``x``).

    Raises:
        ValueError: the source has no candidate span, or fewer than two classes occur in ``labels``.
    """
    cands: list[Candidate] = candidates(source, image_shape, max_features)
    if not cands:
        raise ValueError("the source has no candidate span for the joint head")
    parts: list[list[torch.Tensor]] = [[] for _ in cands]
    for i in range(0, len(x), batch_size):
        for j, f in enumerate(joint_features(base, source, x[i : i + batch_size], cands, image_shape)):
            parts[j].append(f.cpu())
    out = []
    for cand, chunks in zip(cands, parts, strict=True):
        f = prepare(torch.cat(chunks))
        per = class_logme(f, labels.cpu(), num_classes)
        known = [v for v in per if v is not None]
        cloned = [v for v in per[num_known:] if v is not None]
        if not known:
            raise ValueError("LogME needs at least two classes among the labels")
        out.append(
            SpanScore(
                cand.end,
                cand.pool,
                int(f.shape[1]),
                sum(known) / len(known),
                sum(cloned) / len(cloned) if cloned else float("nan"),
            )
        )
    return out
