"""``pnc rank-sources --score logme`` (the default): rank sources by the evidence of the clone's own labels.

Layer L4. Steps (docs/ranking.md "LogME"):

1. Every source is loaded and checked as ``pnc clone`` would check it (readable, has the requested
   classes, takes the target's input size and channels); a source that fails is listed as ineligible.
2. The cloning data is gathered once, with the first eligible source, exactly as ``pnc clone`` gathers
   it (``api.cloning.gather_inputs``: the cloned-class training samples with their labels, the
   target-domain samples labelled by the target; its training and validation rows). The labels do not
   depend on the source. At most ``samples`` of those rows are used (a seeded class-balanced draw).
3. Per source, one forward pass over those rows gives the joint head's features ``[F_base ; f_m]`` of
   every candidate span (``method.joint.joint_features``); LogME of the labels given each candidate's
   standardised features (``method.transfer.span_scores``); the source's score is the best candidate's,
   as the clone keeps its best candidate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..core.config import CloneConfig
from ..core.errors import DataError, IncompatibleError, PncError, UsageError
from ..core.progress import Progress
from ..io.data import parse_classes
from ..io.model_file import LoadedModel
from ..method.cloned_model import ClonedModel
from ..method.transfer import span_scores
from .cloning import CloneInputs, gather_inputs, load_target
from .surrogates import select_samples

log = logging.getLogger(__name__)

__all__ = ["LogmeRun", "check_source", "inputs_for", "logme_scores", "reason", "scoring_rows"]


@dataclass
class LogmeRun:
    """What the LogME ranking computed, kept so ``--clone-best`` can reuse it."""

    inputs: CloneInputs | None  # the cloning data (gathered with the first eligible source)
    samples: int  # rows the evidence was computed on
    classes: list[str]
    seconds: float


def check_source(loaded: LoadedModel, target: LoadedModel, classes: str | list[str]) -> list[str]:
    """The requested classes as the source names them; raises when ``pnc clone`` would refuse the pair.

    Raises:
        PncError: the source lacks a class, or takes other inputs than the target.
    """
    have = list(loaded.spec.classes)
    try:
        chosen = parse_classes(classes, have) or []
    except DataError as exc:
        try:
            missing = [c for c in parse_classes(classes) or [] if c not in have]
        except DataError:
            raise exc from None
        raise UsageError(
            f"lacks class{'es' if len(missing) > 1 else ''} {', '.join(missing)} (has {', '.join(have)})"
        ) from None
    s, t = loaded.spec, target.spec
    if (s.in_channels, s.input_size) != (t.in_channels, t.input_size):
        raise IncompatibleError(
            f"takes {s.in_channels}x{s.input_size}px inputs, the target {t.in_channels}x{t.input_size}px: "
            "pnc clone cannot pair them"
        )
    return chosen


def logme_scores(
    *,
    target: str | Path,
    loaded: dict[str, LoadedModel],
    classes: str | list[str],
    data: str | None,
    target_data: str | None,
    config: CloneConfig,
    samples: int,
    split_seed: int,
    device: torch.device,
    progress: Progress,
) -> tuple[dict[str, dict[str, Any]], dict[str, Exception], LogmeRun]:
    """LogME rows (``{"logme", "logme_cloned", "span", "seconds"}``) of every eligible source in ``loaded``
    (name → model), and the errors of those that failed.

    Raises:
        PncError: the target or the data cannot supply the cloning labels (not a per-source problem).
    """
    t0 = time.perf_counter()
    tgt, _, _ = load_target(target)
    failed: dict[str, Exception] = {}
    chosen: dict[str, list[str]] = {}
    for name, model in loaded.items():
        try:
            chosen[name] = check_source(model, tgt, classes)
        except Exception as exc:  # one bad candidate never sinks the ranking
            failed[name] = exc
    if not chosen:
        return {}, failed, LogmeRun(None, 0, [], time.perf_counter() - t0)
    first = next(iter(chosen))
    inp = gather_inputs(
        source=loaded[first].path,
        target=target,
        classes=",".join(chosen[first]),
        data=data,
        target_data=target_data,
        rename=None,
        config=config,
        split_seed=split_seed,
        device=device,
    )
    x, y = scoring_rows(inp, samples, config.seed)
    spec = inp.target.spec
    image_shape = (spec.in_channels, spec.input_size, spec.input_size)
    base = ClonedModel(inp.target.network, list(spec.classes), inp.existing).to_device(device).eval()
    num_known = len(base.classes)
    rows: dict[str, dict[str, Any]] = {}
    progress.start("logme", total=len(chosen))
    for name in chosen:
        start = time.perf_counter()
        try:
            if chosen[name] != chosen[first]:
                raise UsageError(f"names the classes {chosen[name]} where the others name {chosen[first]}")
            scores = span_scores(
                base,
                loaded[name].network.to(device).eval(),
                x.to(device),
                y,
                num_known=num_known,
                num_classes=num_known + len(chosen[name]),
                image_shape=image_shape,
                max_features=config.max_features,
            )
        except Exception as exc:
            failed[name] = exc
            progress.advance(1)
            continue
        best = max(scores, key=lambda s: (s.logme, -s.features))
        rows[name] = {
            "logme": best.logme,
            "logme_cloned": best.logme_cloned,
            "span": best.to_dict(),
            "spans": [s.to_dict() for s in scores],
            "seconds": time.perf_counter() - start,
        }
        progress.advance(1)
    progress.finish()
    run = LogmeRun(inp, len(y), list(inp.source_classes), time.perf_counter() - t0)
    return rows, failed, run


def scoring_rows(inp: CloneInputs, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows the evidence is computed on: the clone's training and validation rows, at most ``samples``
    of them (0: all) in a seeded class-balanced draw (``api.surrogates.select_samples``)."""
    x = torch.cat([inp.train[0]] + ([inp.val[0]] if inp.val is not None else []))
    y = torch.cat([inp.train[1]] + ([inp.val[1]] if inp.val is not None else []))
    if samples and len(y) > samples:
        pos = select_samples(y, samples, seed)
        x, y = x[pos], y[pos]
    return x, y


def inputs_for(inp: CloneInputs, source: LoadedModel) -> CloneInputs:
    """The cloning data gathered for one source, for another source that names the same classes (the
    labels and images do not depend on the source; only the source and its class indices do)."""
    have = list(source.spec.classes)
    return replace(inp, source=source, class_index=[have.index(c) for c in inp.source_classes])


def reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PncError) else f"{type(exc).__name__}: {exc}"
