"""Orchestration of ``pnc rank-sources``: pick the best source before cloning (docs/method-spec.md §6, seed
Eq. 6-8).

Layer api: reads the models and the data, scores every source and returns a plain JSON-able dict;
``rank_and_clone`` goes on to ``pnc_cli.api.cloning.clone`` with the winner. No typer, no rich, no printing.

``score="logme"`` (default): LogME of the clone's own labels given the joint head's features
(``api.ranking_logme``, docs/ranking.md). ``score="similarity"`` / ``"evidence"`` (the seed's Eq. 7 and
its label-based variant) use the local model sets, in these steps:

1. ``D_t``: the requested classes C of ``data`` (``split``, ``split_seed``); the first
   ``config.samples`` samples of the seeded stratified permutation of ``api.surrogates.select_samples``.
2. One mask set B, drawn once from ``config.seed`` (the same draw ``pnc surrogate`` makes).
3. G of the target and of every source on those samples (each converted to the model's own input
   size and channels: masks live on a patch grid, so models with different input sizes compare) and
   on B. With ``surrogates_dir`` a file per model is reused when its model sha256, samples, masks and
   settings match, and written otherwise (named ``<model sha>-<data hash>-<config hash>.safetensors``).
4. Score = ZEST-aligned cosine similarity of the target's and the source's Θ (``pnc_cli.method.ranking``);
   with ``score="evidence"`` the sources are ranked by ``ranking.class_evidence`` instead.

A source that cannot be read (whatever is wrong with the file), lacks a requested class, or cannot be
scored is listed as ineligible with the reason; the others are still ranked. ``failed`` counts the
ineligible sources, ``eligible`` the ranked ones.
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

from ..core.config import CloneConfig, SurrogateConfig
from ..core.device import is_main_process, resolve_device
from ..core.errors import PncError, RuntimeFailure, UsageError
from ..core.progress import NullProgress, Progress
from ..io.data import ImageSet, conform, load_data
from ..io.model_file import LoadedModel, load_model
from ..io.safetensors_io import check_output
from ..io.surrogate_file import SurrogateFile, read_surrogate, write_surrogate
from ..method.ranking import COLUMN_MODES, SCORE_MODES, class_evidence, rank_scores, score_sources
from ..method.surrogate import draw_masks
from .cloning import CloneInputs, clone
from .ranking_logme import inputs_for, logme_scores, reason
from .surrogates import samples_sha256, select_samples, surrogate_file_for, surrogate_for

log = logging.getLogger(__name__)

__all__ = ["SCORES", "rank_and_clone", "rank_sources"]

SCORES = ("logme", *SCORE_MODES)

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
    if path is not None and is_main_process():  # under torchrun only rank 0 writes
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
        "logme": None,
        "logme_cloned": None,
        "span": None,
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
    score: str = "logme",
    clone_config: CloneConfig | None = None,
    target_data: str | None = None,
    logme_samples: int = 500,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rank candidate ``sources`` for cloning ``classes`` into ``target``.

    Args:
        target: The target model file (a cloned model too, with ``score="logme"``).
        sources: Candidate source model files (any architecture and class set; with ``"logme"`` they must
            take the target's input size, as ``pnc clone`` needs).
        classes: The classes to clone, as the sources name them (``"5"``, ``"5-9"``, ``["cat"]``).
        data: Data that holds those classes.
        split, split_seed: Which split of ``data`` the samples come from (``"logme"`` uses the clone's
            own training rows: ``split`` does not apply).
        config: ``"similarity"``/``"evidence"``: samples, masks, grid, masking rate, sigma, ridge and seed
            of the local model sets (its ``seed`` also seeds the LogME sample draw when no
            ``clone_config`` is given).
        surrogates_dir: Directory of cached local model sets (created when missing; not used by logme).
        columns: ``"all"`` (the seed: every source column) or ``"cloned"`` for the similarity.
        score: what ranks the sources: ``"logme"`` (default; docs/ranking.md), ``"similarity"`` (seed
            Eq. 7) or ``"evidence"`` (``pnc_cli.method.ranking.class_evidence``).
        clone_config: ``"logme"``: the clone settings the labels and features follow (fraction,
            val_fraction, max_features, seed); default ``CloneConfig(seed=config.seed)``.
        target_data: ``"logme"``: target-domain data, as ``pnc clone --target-data`` (default: the
            target's recorded training data).
        logme_samples: ``"logme"``: at most this many rows of the clone's training data (0: all).
        device: auto, cpu or cuda.
        progress: Receives one stage per model (``"surrogate"``) or one ``"logme"`` stage.

    Returns:
        ``{"ranking": [{"rank", "source", "score", "logme", "logme_cloned", "span", "similarity",
        "evidence", "arch", "params", "seconds", "eligible", "reason", "cached", "surrogate", "classes"}],
        "target", "classes", "data", "samples", "masks", "grid", "columns", "score", "seed", "eligible",
        "failed", "seconds"}``; eligible rows first, highest score first (ties by name), then the
        ineligible ones in the order given.

    Raises:
        UsageError: no sources, an unknown ``score``/``columns``, or classes missing from ``data``.
        PncError: the target or the data cannot be read (never because of one source).
    """
    return _rank(
        target=target,
        sources=sources,
        classes=classes,
        data=data,
        split=split,
        split_seed=split_seed,
        config=config,
        surrogates_dir=surrogates_dir,
        columns=columns,
        score=score,
        clone_config=clone_config,
        target_data=target_data,
        logme_samples=logme_samples,
        device=device,
        progress=progress,
    )[0]


def _check_args(sources: list[str | Path], columns: str, score: str, classes: str | list[str]) -> None:
    if not sources:
        raise UsageError("give at least one source model to rank")
    if columns not in COLUMN_MODES:
        raise UsageError(
            f"columns must be one of {', '.join(COLUMN_MODES)}, got {columns!r}", options=("columns",)
        )
    if score not in SCORES:
        raise UsageError(f"score must be one of {', '.join(SCORES)}, got {score!r}", options=("score",))
    if not classes or (isinstance(classes, str) and not classes.strip(" ,")):
        raise UsageError("classes is empty; name what to clone, e.g. 5 or 5-9", options=("classes",))


def _order(rows: dict[str, dict[str, Any]], scores: dict[str, float]) -> list[dict[str, Any]]:
    ordered = []
    for rank, (name, value) in enumerate(rank_scores(scores), start=1):
        rows[name].update(rank=rank, score=value)
        ordered.append(rows[name])
    return ordered + [r for r in rows.values() if not r["eligible"]]


def _rank(
    *,
    target: str | Path,
    sources: list[str | Path],
    classes: str | list[str],
    data: str,
    split: str,
    split_seed: int,
    config: SurrogateConfig | None,
    surrogates_dir: str | Path | None,
    columns: str,
    score: str,
    clone_config: CloneConfig | None,
    target_data: str | None,
    logme_samples: int,
    device: str,
    progress: Progress | None,
) -> tuple[dict[str, Any], CloneInputs | None]:
    _check_args(sources, columns, score, classes)
    if score != "logme":
        return (
            _rank_similarity(
                target=target,
                sources=sources,
                classes=classes,
                data=data,
                split=split,
                split_seed=split_seed,
                config=config,
                surrogates_dir=surrogates_dir,
                columns=columns,
                score=score,
                device=device,
                progress=progress,
            ),
            None,
        )
    t0 = time.perf_counter()
    if logme_samples < 0:
        raise UsageError(
            f"logme_samples must be 0 (all) or positive, got {logme_samples}", options=("logme_samples",)
        )
    seed = (config or SurrogateConfig()).seed
    cconfig = clone_config or CloneConfig(seed=seed)
    progress = progress or NullProgress()
    dev = resolve_device(device)
    rows: dict[str, dict[str, Any]] = {}
    loaded: dict[str, LoadedModel] = {}
    for src in sources:
        name = _unique(str(src), rows)
        start = time.perf_counter()
        try:
            loaded[name] = load_model(src)
        except Exception as exc:  # whatever is wrong with one file, the others are still ranked
            log.info("source %s is not eligible: %s", src, exc if isinstance(exc, PncError) else reason(exc))
            rows[name] = _row(str(src), None, None, time.perf_counter() - start, reason(exc))
            continue
        rows[name] = _row(str(src), None, loaded[name], 0.0, None)
    found, failed, run = logme_scores(
        target=target,
        loaded=loaded,
        classes=classes,
        data=data,
        target_data=target_data,
        config=cconfig,
        samples=logme_samples,
        split_seed=split_seed,
        device=dev,
        progress=progress,
    )
    for name, err in failed.items():
        log.info(
            "source %s is not eligible: %s",
            rows[name]["source"],
            err if isinstance(err, PncError) else reason(err),
        )
        rows[name].update(eligible=False, reason=reason(err))
    for name, found_row in found.items():
        rows[name].update(found_row)
    ordered = _order(rows, {name: r["logme"] for name, r in found.items()})
    inp = run.inputs
    doc = {
        "ranking": ordered,
        "target": {
            "path": str(target),
            "arch": inp.target.spec.arch if inp else None,
            "params": inp.target.network.num_params() if inp else None,
            "classes": (
                list(inp.target.spec.classes) + [c for b in inp.existing.values() for c in b.classes]
                if inp
                else None
            ),
            "seconds": None,
            "cached": False,
        },
        "classes": run.classes,
        "data": inp.data if inp else data,
        "target_data": inp.target_data if inp else target_data,
        "split": "train",
        "samples": run.samples,
        "masks": None,
        "grid": None,
        "columns": None,
        "score": score,
        "seed": cconfig.seed,
        "surrogates_dir": None,
        "eligible": len(found),
        "failed": sum(1 for r in ordered if not r["eligible"]),
        "seconds": time.perf_counter() - t0,
    }
    return doc, inp


def _rank_similarity(
    *,
    target: str | Path,
    sources: list[str | Path],
    classes: str | list[str],
    data: str,
    split: str,
    split_seed: int,
    config: SurrogateConfig | None,
    surrogates_dir: str | Path | None,
    columns: str,
    score: str,
    device: str,
    progress: Progress | None,
) -> dict[str, Any]:
    """Seed Eq. 7 (``"similarity"``) or ``"evidence"`` from the local model sets (module docstring)."""
    t0 = time.perf_counter()
    config = config or SurrogateConfig()
    progress = progress or NullProgress()
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
        except Exception as exc:  # whatever is wrong with one file, the others are still ranked
            why = reason(exc)
            # the error itself, not its text: the CLI writes the parameter names it declares as flags
            log.info("source %s is not eligible: %s", src, exc if isinstance(exc, PncError) else why)
            rows[name] = _row(str(src), None, loaded, time.perf_counter() - start, why)
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
        except Exception as exc:
            rows[name].update(eligible=False, reason=reason(exc))
            continue
        scores[name] = rows[name][score]
    ordered = _order(rows, scores)

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
        "eligible": len(scores),
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
    strict: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    **rank_kwargs: Any,
) -> dict[str, Any]:
    """``rank_sources`` then ``clone`` from the best eligible source (seed Eq. 8).

    ``clone_kwargs`` go to ``pnc_cli.api.cloning.clone`` (e.g. ``config``, ``position``,
    ``target_data``); ``classes``, ``data``, ``output``, ``force``, ``device`` and ``progress`` are
    passed on unless given there. With ``score="logme"`` the ranking follows ``clone_kwargs["config"]``
    and the clone reuses the data it gathered (``clone(inputs=...)``: no second read, no second labelling
    by the target). With the local-model-set scores, the winner's G stored in ``surrogates_dir`` from the
    train split is handed to the clone (it needs one only when its config has ``alpha`` or ``beta`` > 0).
    ``strict``: nothing is cloned when any source is ineligible (the document has no ``"clone"`` entry).
    Returns the ranking document with a ``"clone"`` entry.

    Raises:
        RuntimeFailure: no source is eligible (nothing is written).
    """
    check_output(output, force=force, inputs=[target, *sources])
    clone_kwargs = dict(clone_kwargs or {})
    score = rank_kwargs.pop("score", "logme")
    if score == "logme":
        rank_kwargs.setdefault("clone_config", clone_kwargs.get("config"))
        rank_kwargs.setdefault("target_data", clone_kwargs.get("target_data"))
        rank_kwargs.setdefault("split_seed", clone_kwargs.get("split_seed", 0))
    defaults: dict[str, Any] = {
        "split": "train",
        "split_seed": 0,
        "config": None,
        "surrogates_dir": None,
        "columns": "all",
        "clone_config": None,
        "target_data": None,
        "logme_samples": 500,
    }
    doc, inp = _rank(
        target=target,
        sources=sources,
        classes=classes,
        data=data,
        score=score,
        device=device,
        progress=progress,
        **{**defaults, **rank_kwargs},
    )
    best = next((r for r in doc["ranking"] if r["eligible"]), None)
    if best is None:
        raise RuntimeFailure("no source is eligible for cloning; see the reasons with pnc rank-sources")
    if strict and doc["failed"]:
        log.info("not cloning: %d source(s) ineligible and strict is set", doc["failed"])
        return doc
    kwargs: dict[str, Any] = {
        "classes": ",".join(doc["classes"]),
        "data": data,
        "output": output,
        "force": force,
        "device": device,
        "progress": progress,
        **clone_kwargs,
    }
    if inp is not None and not kwargs.get("rename"):
        kwargs["inputs"] = inputs_for(inp, load_model(best["source"]))
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
