"""Orchestration of ``pnc rank-sources``: pick the best source before cloning (docs/method-spec.md §6, seed
Eq. 6-8).

Layer api: reads the models and the data, computes (or reuses) the local model sets, calls
``pnc_cli.method.ranking.score_sources`` and returns a plain JSON-able dict; ``rank_and_clone`` goes on to
``pnc_cli.api.cloning.clone`` with the winner. No typer, no rich, no printing.

Steps:

1. ``D_t``: the requested classes C of ``data`` (``split``, ``split_seed``); the first
   ``config.samples`` samples of the seeded stratified permutation of ``api.surrogates.select_samples``.
2. One mask set B, drawn once from ``config.seed`` (the same draw ``pnc surrogate`` makes).
3. G of the target and of every source on those samples (each converted to the model's own input
   size and channels: masks live on a patch grid, so models with different input sizes compare) and
   on B. With ``surrogates_dir`` a file per model is reused when its model sha256, samples, masks and
   settings match, and written otherwise (named ``<model sha>-<data hash>-<config hash>.safetensors``).
4. Score = ZEST-aligned cosine similarity of the target's and the source's Θ (``pnc_cli.method.ranking``);
   with ``score="evidence"`` the sources are ranked by ``ranking.class_evidence`` instead.

A source that cannot be read, lacks a requested class, or whose G cannot be computed is listed as
ineligible with the reason; the others are still ranked. ``failed`` counts the ineligible sources
(the CLI exits 1 when it is not zero).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.config import SurrogateConfig
from ..core.device import resolve_device
from ..core.errors import PncError, RuntimeFailure, UsageError
from ..core.progress import NullProgress, Progress
from ..io.data import ImageSet, conform, load_data
from ..io.model_file import LoadedModel, load_model
from ..io.safetensors_io import check_output
from ..io.surrogate_file import SurrogateFile, read_surrogate, write_surrogate
from ..method.ranking import COLUMN_MODES, SCORE_MODES, class_evidence, rank_scores, score_sources
from ..method.surrogate import draw_masks
from .cloning import clone
from .surrogates import samples_sha256, select_samples, surrogate_file_for, surrogate_for

log = logging.getLogger(__name__)

__all__ = ["rank_and_clone", "rank_sources"]

# Settings that change G (batch_size only changes how the forward passes are chunked).
_CACHE_KEYS = ("samples", "masks", "grid", "masking_rate", "sigma", "ridge", "seed")


@dataclass
class _Fitted:
    """The local model set of one model, and how it was obtained."""

    loaded: LoadedModel
    theta: Tensor
    seconds: float
    cached: bool
    path: Path | None


def _config_hash(config: SurrogateConfig) -> str:
    d = config.to_dict()
    return hashlib.sha256(json.dumps({k: d[k] for k in _CACHE_KEYS}, sort_keys=True).encode()).hexdigest()


def _cache_path(directory: Path, model_sha: str, data_hash: str, config: SurrogateConfig) -> Path:
    return directory / f"{model_sha[:16]}-{data_hash[:12]}-{_config_hash(config)[:12]}.safetensors"


def _reusable(
    sf: SurrogateFile, loaded: LoadedModel, index: Tensor, masks: Tensor, sha: str, config: SurrogateConfig
) -> str | None:
    """Why a cached file cannot stand for G of ``loaded`` on these samples and masks, or None."""
    if sf.model_sha256 != loaded.sha256:
        return "another model"
    if sf.model_classes != list(loaded.spec.classes):
        return "other class names"
    if tuple(sf.masks.shape) != tuple(masks.shape) or not torch.equal(sf.masks, masks):
        return "other masks"
    if (
        not torch.equal(sf.sample_index.to(torch.int64), index.to(torch.int64))
        or sf.data.get("samples_sha256") != sha
    ):
        return "other samples"
    recorded = {k: sf.config.get(k) for k in _CACHE_KEYS}
    wanted = {k: v for k, v in config.to_dict().items() if k in _CACHE_KEYS}
    if recorded != wanted:
        return "other settings"
    return None


def _fit_model(
    loaded: LoadedModel,
    chosen: ImageSet,
    identity: dict[str, Any],
    masks: Tensor,
    config: SurrogateConfig,
    cache_dir: Path | None,
    data_hash: str,
    device: torch.device,
    progress: Progress,
) -> _Fitted:
    """G of one model on the chosen samples and masks B, from the cache directory when it matches."""
    start = time.perf_counter()
    spec = loaded.spec
    images = conform(chosen.images, spec.in_channels, spec.input_size)
    sha = samples_sha256(chosen.index, images)
    path = _cache_path(cache_dir, loaded.sha256, data_hash, config) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            sf = read_surrogate(path)
            why = _reusable(sf, loaded, chosen.index, masks, sha, config)
        except PncError as exc:
            why = str(exc)
        if why is None:
            log.info("reusing %s for %s", path, loaded.path)
            return _Fitted(loaded, sf.theta, time.perf_counter() - start, True, path)
        log.warning("not reusing %s (%s); recomputing it", path, why)
    result = surrogate_for(loaded, images, config, masks=masks, device=device, progress=progress)
    if path is not None:
        sf = surrogate_file_for(loaded, result, chosen.index, {**identity, "samples_sha256": sha})
        write_surrogate(path, sf, force=True)
    return _Fitted(loaded, result.theta, time.perf_counter() - start, False, path)


def _row(
    source: str, fitted: _Fitted | None, loaded: LoadedModel | None, seconds: float, reason: str | None
) -> dict[str, Any]:
    model = fitted.loaded if fitted is not None else loaded
    return {
        "rank": None,
        "source": source,
        "score": None,
        "similarity": None,
        "evidence": None,
        "arch": model.spec.arch if model is not None else None,
        "params": model.network.num_params() if model is not None else None,
        "seconds": seconds,
        "eligible": reason is None,
        "reason": reason,
        "cached": fitted.cached if fitted is not None else False,
        "surrogate": str(fitted.path) if fitted is not None and fitted.path is not None else None,
        "classes": list(model.spec.classes) if model is not None else None,
    }


def _unique(name: str, taken: dict[str, Any]) -> str:
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


def rank_sources(
    *,
    target: str | Path,
    sources: list[str | Path],
    classes: str | list[str],
    data: str,
    split: str = "train",
    split_seed: int = 0,
    config: SurrogateConfig | None = None,
    surrogates_dir: str | Path | None = None,
    columns: str = "all",
    score: str = "similarity",
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rank candidate ``sources`` for cloning ``classes`` into ``target`` (seed Eq. 7).

    Args:
        target: The target model file.
        sources: Candidate source model files (any architecture, input size and class set).
        classes: The classes to clone, as the sources name them (``"5"``, ``"5-9"``, ``["cat"]``).
        data: Data that holds those classes (``D_t`` is taken from it).
        split, split_seed: Which split of ``data`` the samples come from.
        config: Samples, masks, grid, masking rate, sigma, ridge and seed of the local model sets.
        surrogates_dir: Directory of cached local model sets (created when missing).
        columns: ``"all"`` (the seed: every source column) or ``"cloned"`` (only the source columns
            of ``classes``) for the similarity.
        score: what ranks the sources: ``"similarity"`` (seed Eq. 7, default) or ``"evidence"``
            (``pnc_cli.method.ranking.class_evidence``); every row carries both.
        device: auto, cpu or cuda.
        progress: Receives one ``"surrogate"`` stage per model whose G is computed.

    Returns:
        ``{"ranking": [{"rank", "source", "score", "similarity", "evidence", "arch", "params", "seconds",
        "eligible", "reason", "cached", "surrogate", "classes"}], "target", "classes", "data", "samples",
        "masks", "grid", "columns", "score", "seed", "failed", "seconds"}``; eligible rows first, highest
        score first (ties by name), then the ineligible ones in the order given.

    Raises:
        UsageError: no sources, an unknown ``columns`` mode, or classes missing from ``data``.
        PncError: the target cannot be read or its G cannot be computed.
    """
    t0 = time.perf_counter()
    config = config or SurrogateConfig()
    progress = progress or NullProgress()
    if not sources:
        raise UsageError("give at least one source model to rank")
    if columns not in COLUMN_MODES:
        raise UsageError(
            f"columns must be one of {', '.join(COLUMN_MODES)}, got {columns!r}", options=("columns",)
        )
    if score not in SCORE_MODES:
        raise UsageError(f"score must be one of {', '.join(SCORE_MODES)}, got {score!r}", options=("score",))
    if not classes or (isinstance(classes, str) and not classes.strip(" ,")):
        raise UsageError("classes is empty; name what to clone, e.g. 5 or 5-9", options=("classes",))
    dev = resolve_device(device)
    cache_dir = Path(surrogates_dir) if surrogates_dir is not None else None
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise UsageError(f"surrogates_dir {cache_dir} is not a directory", options=("surrogates_dir",))
    ds = load_data(data, classes=classes, split=split, split_seed=split_seed)
    chosen_classes = list(ds.classes)
    pos = select_samples(ds.labels, config.samples, config.seed)
    if len(pos) < config.samples:
        log.info("only %d samples of classes %s; using all of them", len(pos), ",".join(ds.classes))
    chosen = ds.subset(pos)
    cfg = replace(config, samples=len(pos))
    identity = {
        "data": ds.identity["data"],
        "classes": list(ds.classes),
        "split": split,
        "split_seed": split_seed,
    }
    data_hash = samples_sha256(chosen.index, chosen.images)
    target_model = load_model(target)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    masks = draw_masks(cfg.masks, cfg.grid, cfg.masking_rate, torch.Generator().manual_seed(cfg.seed))

    tgt = _fit_model(target_model, chosen, identity, masks, cfg, cache_dir, data_hash, dev, progress)

    thetas: dict[str, Tensor] = {}
    wanted_columns: dict[str, list[int]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for src in sources:
        name = _unique(str(src), rows)
        start = time.perf_counter()
        loaded: LoadedModel | None = None
        try:
            loaded = load_model(src)
            missing = [c for c in chosen_classes if c not in loaded.spec.classes]
            if missing:
                raise UsageError(
                    f"lacks class{'es' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"(has {', '.join(loaded.spec.classes)})"
                )
            fitted = _fit_model(loaded, chosen, identity, masks, cfg, cache_dir, data_hash, dev, progress)
        except (PncError, RuntimeError, ValueError, OSError) as exc:
            reason = str(exc) if isinstance(exc, PncError) else f"{type(exc).__name__}: {exc}"
            # the error itself, not its text: the CLI writes the parameter names it declares as flags
            log.info("source %s is not eligible: %s", src, exc if isinstance(exc, PncError) else reason)
            rows[name] = _row(str(src), None, loaded, time.perf_counter() - start, reason)
            continue
        thetas[name] = fitted.theta
        wanted_columns[name] = [list(loaded.spec.classes).index(c) for c in chosen_classes]
        rows[name] = _row(str(src), fitted, None, fitted.seconds, None)

    scores: dict[str, float] = {}
    for name, theta in thetas.items():  # score one by one so one bad G does not sink the others
        try:
            cols = {name: wanted_columns[name]} if columns == "cloned" else None
            rows[name]["similarity"] = score_sources(tgt.theta, {name: theta}, source_columns=cols)[0][1]
            rows[name]["evidence"] = class_evidence(theta, wanted_columns[name], chosen.labels)
        except PncError as exc:
            rows[name].update(eligible=False, reason=str(exc))
            continue
        scores[name] = rows[name][score]
    ordered = []
    for rank, (name, value) in enumerate(rank_scores(scores), start=1):
        rows[name].update(rank=rank, score=value)
        ordered.append(rows[name])
    ordered += [r for r in rows.values() if not r["eligible"]]

    return {
        "ranking": ordered,
        "target": {
            "path": str(target),
            "arch": tgt.loaded.spec.arch,
            "params": tgt.loaded.network.num_params(),
            "classes": list(tgt.loaded.spec.classes),
            "seconds": tgt.seconds,
            "cached": tgt.cached,
        },
        "classes": list(ds.classes),
        "data": ds.identity["data"],
        "split": split,
        "samples": len(pos),
        "masks": int(masks.shape[0]),
        "grid": cfg.grid,
        "columns": columns,
        "score": score,
        "seed": cfg.seed,
        "surrogates_dir": str(cache_dir) if cache_dir is not None else None,
        "failed": sum(1 for r in ordered if not r["eligible"]),
        "seconds": time.perf_counter() - t0,
    }


def rank_and_clone(
    *,
    target: str | Path,
    sources: list[str | Path],
    classes: str | list[str],
    data: str,
    output: str | Path,
    clone_kwargs: dict[str, Any] | None = None,
    force: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    **rank_kwargs: Any,
) -> dict[str, Any]:
    """``rank_sources`` then ``clone`` from the best eligible source (seed Eq. 8).

    ``clone_kwargs`` go to ``pnc_cli.api.cloning.clone`` (e.g. ``config``, ``position``,
    ``target_data``); ``classes``, ``data``, ``output``, ``force``, ``device`` and ``progress`` are
    passed on unless given there. When the winner's G was stored in ``surrogates_dir`` from the train
    split, the clone reuses it (``clone(surrogate=...)``; it needs one only when its config has
    ``alpha`` or ``beta`` > 0). Returns the ranking document with a ``"clone"`` entry.

    Raises:
        RuntimeFailure: no source is eligible (nothing is written).
    """
    check_output(output, force=force, inputs=[target, *sources])
    doc = rank_sources(
        target=target,
        sources=sources,
        classes=classes,
        data=data,
        device=device,
        progress=progress,
        **rank_kwargs,
    )
    best = next((r for r in doc["ranking"] if r["eligible"]), None)
    if best is None:
        raise RuntimeFailure("no source is eligible for cloning; see the reasons with pnc rank-sources")
    kwargs: dict[str, Any] = {
        "classes": ",".join(doc["classes"]),
        "data": data,
        "output": output,
        "force": force,
        "device": device,
        "progress": progress,
        **(clone_kwargs or {}),
    }
    same_split = rank_kwargs.get("split", "train") == "train" and rank_kwargs.get(
        "split_seed", 0
    ) == kwargs.get("split_seed", 0)
    if best["surrogate"] and same_split:
        kwargs.setdefault("surrogate", best["surrogate"])
    log.info(
        "cloning %s from the best source %s (score %.4f)", kwargs["classes"], best["source"], best["score"]
    )
    doc["clone"] = {"source": best["source"], **clone(source=best["source"], target=target, **kwargs)}
    return doc
