"""Orchestration of ``pnc surrogate``: the local model set G of a model on a sample of data.

Layer api: reads the model and the data, picks the samples, calls ``pnc_cli.method.surrogate.fit_surrogate``
and writes the file (``pnc_cli.io.surrogate_file``); returns plain JSON-able dicts. ``surrogate_for`` and
``load_or_compute`` are the file-less entry points that ``search``, ``clone`` and ``rank-sources`` use.

Samples: the first ``config.samples`` samples of a seeded, stratified permutation of the selected data
(classes take turns, so any prefix is balanced), kept in source-row order and recorded as
``sample_index``. Their identity is ``samples_sha256``: a hash of those rows and of the images exactly
as the model sees them (after conversion to the model's input size).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.config import SurrogateConfig
from ..core.device import autocast, is_main_process, resolve_device
from ..core.distributed import all_reduce_sum, is_distributed, rank, world_size
from ..core.errors import ConfigError, IncompatibleError
from ..core.progress import NullProgress, Progress
from ..core.version import __version__
from ..io.data import ImageSet, conform, select_data
from ..io.model_file import LoadedModel, load_model
from ..io.safetensors_io import check_output
from ..io.surrogate_file import SurrogateFile, read_surrogate, write_surrogate
from ..method.surrogate import SurrogateResult, fidelity, fit_surrogate

log = logging.getLogger(__name__)

__all__ = [
    "compute_surrogate",
    "load_or_compute",
    "samples_sha256",
    "select_samples",
    "surrogate_for",
    "surrogate_file_for",
]


# ------------------------------------------------------------------------------------------ samples


def select_samples(labels: Tensor, count: int, seed: int) -> Tensor:
    """Positions of the first ``count`` samples of a seeded stratified permutation, sorted.

    The data is permuted with ``torch.Generator().manual_seed(seed)``; then the classes take turns
    (first sample of each class, then the second, ...), so any prefix is as balanced as the classes
    allow. Returns int64 positions into ``labels`` in increasing order.
    """
    n = int(labels.numel())
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    lab = labels.to(torch.int64)[perm]
    rank = torch.empty(n, dtype=torch.int64)
    for c in torch.unique(lab).tolist():
        where = (lab == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    num_classes = int(lab.max()) + 1 if n else 1
    order = torch.argsort(rank * num_classes + lab, stable=True)
    return perm[order[:count]].sort().values


def samples_sha256(sample_index: Tensor, images: Tensor) -> str:
    """Identity of the samples: their source rows and the images as the model sees them."""
    h = hashlib.sha256()
    h.update(sample_index.to("cpu", torch.int64).contiguous().numpy().tobytes())
    h.update(repr(tuple(images.shape)).encode())
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _model_images(loaded: LoadedModel, images: Tensor, what: str) -> Tensor:
    """Images resized to the model's input; a channel count that differs is refused (no colour conversion)."""
    spec = loaded.spec
    if int(images.shape[1]) != spec.in_channels:
        raise IncompatibleError(
            f"{what} has {images.shape[1]}-channel images but model {loaded.path} expects "
            f"{spec.in_channels} channel(s); pnc surrogate does not convert colour, give data with "
            f"{spec.in_channels}-channel images"
        )
    return conform(images, spec.in_channels, spec.input_size)


def _check_grid(loaded: LoadedModel, config: SurrogateConfig) -> None:
    size = loaded.spec.input_size
    if config.grid > size:
        raise ConfigError(
            f"grid {config.grid} is finer than the model's {size}x{size} input; use grid <= {size}",
            options=("grid",),
        )


# ------------------------------------------------------------------------------------------ fitting


class _Recorder:
    """Wraps a model and keeps its outputs in call order (``fit_surrogate`` calls it sample-major)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.outputs: list[Tensor] = []

    def __call__(self, x: Tensor) -> Tensor:
        y = self.model(x)
        self.outputs.append(y.reshape(y.shape[0], -1).clone())
        return y

    def stacked(self, n: int, m: int) -> Tensor | None:
        flat = torch.cat(self.outputs).cpu() if self.outputs else None
        if flat is None or flat.shape[0] != n * m:
            return None
        return flat.reshape(n, m, -1)


class _Autocast:
    """A frozen network run under ``--precision`` autocast, returning float32 outputs."""

    def __init__(self, net: Any, device: torch.device) -> None:
        self.net, self.device = net, device

    def __call__(self, x: Tensor) -> Tensor:
        with autocast(self.device):
            return self.net(x).float()


def _fit(
    loaded: LoadedModel,
    images: Tensor,
    config: SurrogateConfig,
    *,
    masks: Tensor | None,
    device: torch.device | None,
    progress: Progress | None,
    record: bool,
) -> tuple[SurrogateResult, Tensor | None]:
    """G on ``images``. Under torchrun each process fits the samples ``rank, rank + W, …`` (every g_i
    is its own ridge fit) and one all-reduce assembles the whole set on every process."""
    dev = device or images.device
    net = _Autocast(loaded.network.to(dev).eval(), dev)
    n = images.shape[0]
    sharded = is_distributed() and n >= world_size()
    mine = torch.arange(rank(), n, world_size()) if sharded else torch.arange(n)
    model: Any = _Recorder(net) if record else net
    result = fit_surrogate(
        model, images[mine], config, masks=masks, device=dev, progress=progress or NullProgress()
    )
    outputs = model.stacked(len(mine), result.masks.shape[0]) if record else None
    if not sharded:
        return result, outputs
    parts = [result.theta, result.intercept] + ([outputs] if outputs is not None else [])
    full = [
        all_reduce_sum(torch.zeros(n, *t.shape[1:], dtype=t.dtype).index_copy_(0, mine, t)) for t in parts
    ]
    result = replace(result, theta=full[0], intercept=full[1])
    return result, (full[2] if outputs is not None else None)


def surrogate_for(
    loaded: LoadedModel,
    images: Tensor,
    config: SurrogateConfig,
    *,
    masks: Tensor | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> SurrogateResult:
    """G of a loaded model around ``images`` (already in the model's input format), without files.

    The model runs in eval mode without gradients; its parameters are not touched. ``masks`` reuses a
    mask set (e.g. another model's, so two results are comparable); otherwise B is drawn from
    ``config.seed``.
    """
    return _fit(loaded, images, config, masks=masks, device=device, progress=progress, record=False)[0]


def surrogate_file_for(
    loaded: LoadedModel, result: SurrogateResult, sample_index: Tensor, data: dict[str, Any]
) -> SurrogateFile:
    """The file contents of a fitted G (``data`` holds the identity of the samples)."""
    return SurrogateFile(
        theta=result.theta,
        intercept=result.intercept,
        masks=result.masks,
        weights=result.weights,
        sample_index=sample_index.to(torch.int64),
        config=result.config.to_dict(),
        model_sha256=loaded.sha256,
        model_classes=list(loaded.spec.classes),
        data=data,
        pnc_version=__version__,
    )


# ------------------------------------------------------------------------------------------ command


def compute_surrogate(
    *,
    model: str | Path,
    data: str,
    classes: str | list[str] | None = None,
    split: str = "train",
    split_seed: int = 0,
    config: SurrogateConfig | None = None,
    output: str | Path | None = None,
    force: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``pnc surrogate``: fit G of ``model`` on ``config.samples`` samples of ``data``; write it to
    ``output``.

    Classes default to all classes of the data (the model's own classes are not required: G describes
    the model's behaviour on any images). Nothing is written unless the whole computation succeeds.

    Raises:
        ConfigError: grid finer than the model's input (exit 2).
        IncompatibleError: data channels differ from the model's (exit 4).
        DataError / CheckpointError / OutputExistsError: see ``load_data``, ``load_model``, ``check_output``.
    """
    config = config or SurrogateConfig()
    out = check_output(output, force=force, inputs=[model, data]) if output is not None else None
    dev = resolve_device(device)
    loaded = load_model(model)
    _check_grid(loaded, config)
    sel = select_data(data, classes=classes, split=split, split_seed=split_seed)
    pos = select_samples(sel.labels, config.samples, config.seed)
    if len(pos) < config.samples:
        log.info(
            "only %d samples in the selected data; using all of them (asked for %d)", len(pos), config.samples
        )
    chosen = sel.subset(pos).decode()  # only the chosen samples are decoded
    images = _model_images(loaded, chosen.images, f"data {sel.identity['data']}")
    cfg = replace(config, samples=len(pos))
    start = time.perf_counter()
    result, outputs = _fit(loaded, images, cfg, masks=None, device=dev, progress=progress, record=True)
    seconds = time.perf_counter() - start
    identity = {
        "data": sel.identity["data"],
        "classes": list(sel.classes),
        "split": split,
        "split_seed": split_seed,
        "samples_sha256": samples_sha256(chosen.index, images),
    }
    sf = surrogate_file_for(loaded, result, chosen.index, identity)
    # under torchrun every process holds the same G; only rank 0 writes it
    sha = write_surrogate(out, sf, force=force) if out is not None and is_main_process() else sf.sha256
    n, m = len(pos), result.masks.shape[0]
    return {
        "output": str(out) if out is not None else None,
        "model": str(model),
        "data": sel.identity["data"],
        "classes": list(sel.classes),
        "split": split,
        "samples": n,
        "masks": m,
        "grid": cfg.grid,
        "num_classes": int(result.theta.shape[2]),
        "fidelity": fidelity(result, outputs) if outputs is not None else None,
        "seconds": seconds,
        "images_per_second": n * m / seconds if seconds > 0 else None,
        "seed": cfg.seed,
        "sha256": sha,
    }


# ------------------------------------------------------------------------------------------ reuse


def load_or_compute(
    loaded: LoadedModel,
    data_set: ImageSet,
    config: SurrogateConfig,
    path: str | Path | None = None,
    *,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> tuple[SurrogateResult, Tensor]:
    """G of ``loaded`` on samples of ``data_set``: read from ``path`` when given, else computed.

    With a file: it must describe this model (``model_sha256``) and its samples must be rows of
    ``data_set`` with the same content (``sample_index`` and ``samples_sha256``); its own
    configuration is used. Without one: the samples are chosen as ``compute_surrogate`` chooses them.

    Returns:
        ``(result, images)``: the local model set and its samples' images in the model's input format.

    Raises:
        IncompatibleError: a file for another model or other samples, or data whose channels differ
            from the model's (exit 4).
        CheckpointError / VerificationError: an unreadable or modified file.
    """
    what = f"data {data_set.identity.get('data', '')}".strip()
    if path is None:
        _check_grid(loaded, config)
        pos = select_samples(data_set.labels, config.samples, config.seed)
        images = _model_images(loaded, data_set.images[pos], what)
        cfg = replace(config, samples=len(pos))
        return surrogate_for(loaded, images, cfg, device=device, progress=progress), images
    sf = read_surrogate(path)
    if sf.model_sha256 != loaded.sha256:
        raise IncompatibleError(
            f"{path} was computed for another model (sha256 {sf.model_sha256[:12]}…), not {loaded.path} "
            f"({loaded.sha256[:12]}…); recompute it for this model with pnc surrogate"
        )
    images = _file_images(sf, loaded, data_set, path, what)
    file_config = SurrogateConfig.from_dict(sf.config, strict=False)
    if file_config != replace(config, samples=file_config.samples):
        log.info("using the surrogate settings recorded in %s: %s", path, file_config.to_dict())
    result = SurrogateResult(sf.theta, sf.intercept, sf.masks, sf.weights, file_config)
    return result, images


def _file_images(
    sf: SurrogateFile, loaded: LoadedModel, data_set: ImageSet, path: str | Path, what: str
) -> Tensor:
    rows = data_set.index.to(torch.int64)
    wanted = sf.sample_index.to(torch.int64)
    order = torch.argsort(rows)
    found = torch.searchsorted(rows[order], wanted).clamp_max(max(len(rows) - 1, 0))
    hit = rows[order][found] == wanted if len(rows) else torch.zeros_like(wanted, dtype=torch.bool)
    recorded = (
        f"{sf.data.get('data', '?')}, {sf.data.get('split', '?')} split, "
        f"split seed {sf.data.get('split_seed', '?')}"
    )
    if not bool(hit.all()):
        missing = int((~hit).sum())
        raise IncompatibleError(
            f"{path}: {missing} of its {len(wanted)} samples are not in the given {what} (it was computed on "
            f"{recorded}); recompute it with pnc surrogate on the same data, classes and split"
        )
    pos = order[found]
    images = _model_images(loaded, data_set.images[pos], what)
    if samples_sha256(wanted, images) != sf.data.get("samples_sha256"):
        raise IncompatibleError(
            f"{path}: its samples differ from rows of the given {what} (it was computed on {recorded}); "
            "recompute it with pnc surrogate on this data"
        )
    return images
