"""Orchestration of base-model commands: train, eval, predict, info, list-archs.

Layer api: reads files, calls the algorithms, writes files; returns plain JSON-able dicts that the CLI
renders. No typer, no rich, no printing.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.config import TrainConfig
from ..core.device import autocast, resolve_device, seed_everything
from ..core.errors import CheckpointError, DataError, UsageError
from ..core.progress import Progress
from ..core.provenance import data_fingerprint
from ..core.provenance import read as read_provenance
from ..core.trust import no_user_code, trusted_archs
from ..core.version import __version__
from ..io.data import (
    BUILTINS,
    ImageSet,
    Selection,
    conform,
    conform_set,
    load_data,
    parse_classes,
    select_data,
    source_names,
)
from ..io.delta_file import KIND_CLONED, file_kind
from ..io.foreign import read_foreign_checkpoint
from ..io.images import decode_image
from ..io.model_file import ModelSpec, build_from_spec, load_model, model_from_tensors, save_model
from ..io.safetensors_io import check_output, file_sha256, loads_bounded, read_header
from ..io.stream import ImageDataset
from ..method.cloned_model import ClonedModel
from ..nets.registry import get_architecture, list_architectures
from ..nets.training import (
    accuracy,
    fit_classifier,
    per_class_accuracy,
    predict_logits,
    recalibrate_batchnorm,
)
from .branches import load_cloned
from .evaluation import evaluate_cloned
from .streaming import PREDICT_BATCH, predict_labels

MIN_NATIVE_SIZE = 16
log = logging.getLogger(__name__)


def list_archs() -> list[dict[str, Any]]:
    return [
        {
            "name": a.name,
            "blocks": a.num_blocks,
            "default_input_size": a.default_input_size,
            "tiny": a.tiny,
            "description": a.description,
        }
        for a in list_architectures()
    ]


MAX_INPUT_SIZE = 4096


def _input_size(arch: str, data: ImageSet, requested: int | None) -> int:
    if requested is not None:
        if not 4 <= requested <= MAX_INPUT_SIZE:
            raise UsageError(
                f"input_size must be in 4..{MAX_INPUT_SIZE} pixels, got {requested}", options=("input_size",)
            )
        return requested
    native = int(data.images.shape[-1])
    return native if native >= MIN_NATIVE_SIZE else get_architecture(arch).default_input_size


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def train_model(
    *,
    arch: str,
    data: str,
    output: str | Path,
    classes: str | None = None,
    config: TrainConfig | None = None,
    fraction: float = 1.0,
    split_seed: int = 0,
    input_size: int | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    force: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a base classifier on the train split and save it; report test accuracy.

    ``arch`` may be a custom ``package.module:function``: naming it here is what trusts it.
    """
    config = config or TrainConfig()
    if input_size is not None and not 4 <= input_size <= MAX_INPUT_SIZE:  # before any data is read
        raise UsageError(
            f"input_size must be in 4..{MAX_INPUT_SIZE} pixels, got {input_size}", options=("input_size",)
        )
    out = check_output(output, force=force, inputs=[data])
    with trusted_archs(arch):
        return _train(
            arch,
            data,
            out,
            classes,
            config,
            fraction,
            split_seed,
            input_size,
            arch_kwargs,
            force,
            device,
            progress,
        )


def _train(
    arch: str,
    data: str,
    out: Path,
    classes: str | None,
    config: TrainConfig,
    fraction: float,
    split_seed: int,
    input_size: int | None,
    arch_kwargs: dict[str, Any] | None,
    force: bool,
    device: str,
    progress: Progress | None,
) -> dict[str, Any]:
    get_architecture(arch)
    dev = resolve_device(device)
    train = load_data(data, classes=classes, split="train", fraction=fraction, split_seed=split_seed)
    test = load_data(data, classes=train.classes, split="test", split_seed=split_seed)
    channels = int(train.images.shape[1])
    size = _input_size(arch, train, input_size)
    train, test = conform_set(train, channels, size), conform_set(test, channels, size)
    mean, std = _channel_stats(train.images)
    spec = ModelSpec(arch, tuple(train.classes), channels, size, dict(arch_kwargs or {}), mean, std)
    seed_everything(config.seed)
    net = build_from_spec(spec).to(dev)
    try:  # a size the architecture cannot take fails here, in one line, before training
        net.block_shapes(channels, size)
    except RuntimeError:
        raise UsageError(
            f"input_size {size} is too small for architecture {arch!r}; use a larger one",
            options=("input_size",),
        ) from None
    result = fit_classifier(net.model, net, train.images, train.labels, config, device=dev, progress=progress)
    recalibrate_batchnorm(net.model, net, train.images, batch_size=config.batch_size, device=dev)
    test_pred = predict_logits(net, test.images, device=dev).argmax(1)
    test_acc = accuracy(test_pred, test.labels)
    training = {
        "data": train.identity["data"],
        "classes": train.classes,
        "fraction": fraction,
        "split_seed": split_seed,
        "test_fraction": train.identity["test_fraction"],
        "config": config.to_dict(),
        "num_train": len(train),
        "test_accuracy": round(test_acc, 6),
    }
    spec = ModelSpec(arch, spec.classes, channels, size, spec.arch_kwargs, mean, std, training)
    net.to("cpu")
    options = {
        "arch": arch,
        "arch_kwargs": spec.arch_kwargs,
        "input_size": size,
        "fraction": fraction,
        "split_seed": split_seed,
        "config": config.to_dict(),
    }
    fingerprint = data_fingerprint(train.images, train.labels, train.identity)
    sha = save_model(out, net, spec, force=force, provenance={"options": options, "data": fingerprint})
    return {
        "output": str(out),
        "arch": arch,
        "classes": train.classes,
        "sha256": sha,
        "num_params": net.num_params(),
        "num_train": len(train),
        "num_test": len(test),
        "train_accuracy": result.train_accuracy,
        "test_accuracy": test_acc,
        "seed": config.seed,
    }


def eval_selection_for(
    spec: ModelSpec, data: str, classes: str | None, split: str, split_seed: int
) -> Selection:
    """The evaluation rows for a model: its own classes present in the data unless ``classes`` says
    otherwise, labelled by the model's class list (no pixels decoded)."""
    if classes is None:
        names = set(source_names(data))
        present = [c for c in spec.classes if c in names]
        if not present:
            raise DataError(
                f"{data}: none of the model's classes ({', '.join(spec.classes)}) occur in the data"
            )
        selected: str | list[str] = present
    else:
        selected = classes
    sel = select_data(data, classes=selected, split=split, split_seed=split_seed)
    foreign = [c for c in sel.classes if c not in spec.classes]
    if foreign:
        raise DataError(f"class {foreign[0]!r} is not one of the model's classes ({', '.join(spec.classes)})")
    return sel.relabel(list(spec.classes))


def eval_data_for(spec: ModelSpec, data: str, classes: str | None, split: str, split_seed: int) -> ImageSet:
    """``eval_selection_for``, decoded and conformed to the model's input (all in memory)."""
    sel = eval_selection_for(spec, data, classes, split, split_seed)
    return conform_set(sel.decode(), spec.in_channels, spec.input_size)


def evaluate_model(
    *,
    model: str | Path,
    data: str,
    classes: str | None = None,
    split: str = "test",
    split_seed: int = 0,
    device: str = "auto",
    load_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy overall and per class; on a cloned model also Ori/Tar/Avg Acc, locality, extra params."""
    if file_kind(model) == KIND_CLONED:
        return evaluate_cloned(
            model=model,
            data=data,
            classes=classes,
            split=split,
            split_seed=split_seed,
            device=device,
            eval_data=eval_selection_for,
        )
    loaded = load_model(model, **(load_overrides or {}))
    dev = resolve_device(device)
    sel = eval_selection_for(loaded.spec, data, classes, split, split_seed)
    ds = ImageDataset.of(sel, channels=loaded.spec.in_channels, size=loaded.spec.input_size)
    net = loaded.network.to(dev)
    (pred,) = predict_labels([net], ds, dev)
    return {
        "model": str(model),
        "data": data,
        "split": split,
        "num_samples": len(ds),
        "accuracy": accuracy(pred, sel.labels),
        "per_class": per_class_accuracy(pred, sel.labels, list(loaded.spec.classes)),
    }


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    if not path.exists():
        raise UsageError(f"image {path} not found")
    try:
        with Image.open(path) as img:
            img.load()
            arr = decode_image(img)  # [H, W, C] in [0, 1], 16-bit and float images by their real range
    except OSError:
        raise DataError(f"{path}: cannot read image; use PNG, JPEG or another format PIL reads") from None
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: image contains NaN or infinite values")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]


def predict_images(
    *, model: str | Path, images: list[str], top: int = 3, device: str = "auto"
) -> dict[str, Any]:
    if not images:
        raise UsageError("give at least one image file")
    if not 1 <= top <= 1_000_000:
        raise UsageError(f"top must be at least 1, got {top}", options=("top",))
    if len(images) > 100_000:
        raise UsageError(f"at most 100000 images per call, got {len(images)}")
    if file_kind(model) == KIND_CLONED:
        cloned, spec, _ = load_cloned(model)
        forward: Any = cloned
        classes = cloned.classes
    else:
        loaded = load_model(model)
        spec, forward, classes = loaded.spec, loaded.network, list(loaded.spec.classes)
    dev = resolve_device(device)
    if isinstance(forward, ClonedModel):
        forward.to_device(dev)
    else:
        forward.to(dev)
    chunks = []
    for i in range(0, len(images), PREDICT_BATCH):  # decoded one batch at a time
        batch = torch.cat(
            [
                conform(_read_image(Path(p)), spec.in_channels, spec.input_size)
                for p in images[i : i + PREDICT_BATCH]
            ]
        )
        with autocast(dev):
            chunks.append(predict_logits(forward, batch, device=dev).float().softmax(1))
    probs = torch.cat(chunks)
    k = min(top, len(classes))
    results = []
    for path, p in zip(images, probs, strict=True):
        vals, idx = p.topk(k)
        results.append(
            {
                "image": path,
                "prediction": classes[int(idx[0])],
                "top": [
                    {"class": classes[int(i)], "probability": float(v)}
                    for v, i in zip(vals, idx, strict=True)
                ],
            }
        )
    return {"model": str(model), "predictions": results}


def file_info(path: str | Path) -> dict[str, Any]:
    """Header-only summary of any pnc file (model, cloned model, delta, surrogate, search).

    Never imports user code: a custom architecture named in the file is reported, not built.
    """
    with no_user_code():
        return _file_info(path)


def _file_info(path: str | Path) -> dict[str, Any]:
    header, meta = read_header(path)
    num_values = sum(math.prod(e.get("shape", [])) for e in header.values())
    info: dict[str, Any] = {
        "path": str(path),
        "kind": meta.get("pnc.kind", "model" if "pnc.arch" in meta else "plain"),
        "format_version": meta.get("pnc.format_version"),
        "writer": meta.get("pnc.writer"),
        "sha256": meta.get("pnc.sha256"),
        "content_sha256": meta.get("pnc.sha256"),
        "file_sha256": file_sha256(path),
        "num_tensors": len(header),
        "num_params": _num_params(header, meta, path),
        "num_values": num_values,
        "file_bytes": Path(path).stat().st_size,
    }
    if "pnc.arch" in meta:
        spec = ModelSpec.from_metadata(meta, path)
        info.update(
            arch=spec.arch,
            arch_kwargs=spec.arch_kwargs,
            classes=list(spec.classes),
            input={"channels": spec.in_channels, "size": spec.input_size},
            normalization={"mean": list(spec.mean), "std": list(spec.std)},
            training=spec.training,
        )
    else:
        info.setdefault("arch", meta.get("pnc.arch"))
        info.setdefault("classes", None)
    info.update(_kind_summary(info["kind"], meta))
    info["provenance"] = read_provenance(meta)
    shown = {
        "pnc.arch",
        "pnc.arch_kwargs",
        "pnc.input",
        "pnc.normalization",
        "pnc.training",
        "pnc.kind",
        "pnc.classes",
        "pnc.format_version",
        "pnc.writer",
        "pnc.sha256",
        "pnc.deltas",
        "pnc.target_metadata",
        "pnc.provenance",
    }
    info["metadata"] = {
        k: v
        for k, v in meta.items()
        if k.startswith("pnc.") and k not in shown and not k.startswith(("pnc.delta.", "pnc.surrogate."))
    }
    return info


def _loads(meta: dict[str, str], key: str) -> Any:
    try:
        return loads_bounded(meta[key], key, "") if key in meta else None
    except CheckpointError:
        return None


def _delta_summary(info: dict[str, Any]) -> dict[str, Any]:
    pos = info.get("position") or {}
    head: dict[str, Any] = info["head"] if isinstance(info.get("head"), dict) else {}
    return {
        "name": info.get("name"),
        "classes": info.get("classes"),
        "mode": info.get("mode"),
        "head": head.get("kind", "append"),  # version 1 deltas have no head key: appended
        "position": pos.get("target"),
        "source_position": pos.get("source"),
        "source_end": pos.get("source_end", pos.get("source_blocks")),
        "pool": head.get("pool", 0),
        "reads": [r.get("name") for r in info.get("reads") or [] if isinstance(r, dict)],
        "target_sha256": (info.get("target") or {}).get("sha256"),
        "source": {k: (info.get("source") or {}).get(k) for k in ("arch", "sha256", "classes")},
        "extra_params": info.get("extra_params"),
        "metrics": info.get("metrics"),
        "seed": info.get("seed"),
    }


def _kind_summary(kind: str, meta: dict[str, str]) -> dict[str, Any]:
    """The few facts a reader wants from a delta, search, cloned or surrogate header."""
    if kind in ("delta", "search"):
        info = {k[len("pnc.delta.") :]: _loads(meta, k) for k in meta if k.startswith("pnc.delta.")}
        return {"delta": _delta_summary(info)}
    if kind == "cloned":
        deltas = _loads(meta, "pnc.deltas") or []
        return {
            "target_sha256": meta.get("pnc.target_sha256"),
            "deltas": [_delta_summary({**d.get("info", {}), "name": d.get("name")}) for d in deltas],
        }
    if kind == "surrogate":
        return {
            "surrogate": {
                k[len("pnc.surrogate.") :]: _loads(meta, k) for k in meta if k.startswith("pnc.surrogate.")
            }
        }
    return {}


_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _num_params(header: dict[str, Any], meta: dict[str, str], path: str | Path) -> int:
    """Learnable parameters (as ``train`` reports them): buffers such as BatchNorm statistics excluded.

    For a model file the architecture is built (random weights, nothing read from the file) to tell
    parameters from buffers; otherwise names ending in BatchNorm buffer names are left out.
    """
    names = set(header)
    if meta.get("pnc.kind", "model") == "model" and "pnc.arch" in meta and ":" not in meta["pnc.arch"]:
        try:
            net = build_from_spec(ModelSpec.from_metadata(meta, path))
            names = {n for n, _ in net.model.named_parameters()} & set(header)
        except Exception:  # an architecture that cannot be built here: fall back to names
            names = {n for n in header if not n.endswith(_BUFFER_SUFFIXES)}
    else:
        names = {n for n in header if not n.endswith(_BUFFER_SUFFIXES)}
    return sum(math.prod(header[n].get("shape", [])) for n in names)


def pnc_version() -> str:
    return __version__


def read_classes_file(path: str | Path) -> list[str]:
    """Class names from a text file, one a line in output order (blank lines and spaces around ignored)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"classes file {p}: cannot read it ({exc.__class__.__name__}); give a UTF-8 text file"
        ) from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise UsageError(f"classes file {p}: no class names; write one name a line")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise UsageError(f"classes file {p}: class {n!r} appears twice; names must be unique")
        seen.add(n)
    return names


def import_model(
    *,
    file: str | Path,
    arch: str,
    output: str | Path,
    classes: str | list[str] | None = None,
    classes_file: str | Path | None = None,
    key: str | None = None,
    strip_prefix: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    in_channels: int | None = None,
    input_size: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Convert a checkpoint from another tool into a pnc model file (exact key/shape match required).

    ``file`` is a ``.safetensors`` state dict or a pickle-based ``.pt/.pth/.bin`` checkpoint, read with
    PyTorch's restricted unpickler only (io/foreign.py): nothing in the file runs. ``key`` picks the
    state dict inside a training checkpoint (found automatically when only one entry holds one);
    ``strip_prefix`` removes a name prefix (``module.`` is removed when every name has it; ``""``
    removes nothing). ``classes`` (a spec such as ``0-9`` or a list) or ``classes_file`` (one name a
    line) name the outputs in order. ``mean``/``std`` are the per-channel normalisation the model was
    trained with (default 0 and 1: images in [0, 1] enter the model unchanged; a warning is logged).
    """
    if (classes is None) == (classes_file is None):
        raise UsageError("give the class names either as a spec (e.g. 0-9 or cat,dog) or as a file, not both")
    out = check_output(output, force=force, inputs=[file])
    if classes_file is not None:
        names = read_classes_file(classes_file)
    elif isinstance(classes, list):
        names = [str(c) for c in classes]
    else:
        names = parse_classes(classes) or []
    ckpt = read_foreign_checkpoint(file, key=key, strip_prefix=strip_prefix)
    with trusted_archs(arch):  # the user names the architecture of the file being imported
        loaded = model_from_tensors(
            Path(file),
            ckpt.tensors,
            ckpt.metadata,
            arch=arch,
            classes=names,
            arch_kwargs=arch_kwargs,
            in_channels=in_channels,
            input_size=input_size,
            mean=mean,
            std=std,
        )
    if mean is None and std is None and "pnc.arch" not in ckpt.metadata:
        log.warning(
            "%s: no normalisation given (mean 0, std 1): images in [0, 1] enter the model unchanged; "
            "if it was trained on normalised images (e.g. ImageNet mean/std), give its mean and std",
            file,
        )
    spec = loaded.spec
    source = {
        "path": str(file),
        "format": ckpt.format,
        "key": ckpt.key,
        "stripped_prefix": ckpt.stripped_prefix,
        "file_sha256": file_sha256(file),
    }
    options = {
        "arch": spec.arch,
        "arch_kwargs": spec.arch_kwargs,
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "input_size": spec.input_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
    }
    sha = save_model(
        out, loaded.network, spec, force=force, provenance={"options": options, "source": source}
    )
    return {
        "output": str(out),
        "arch": spec.arch,
        "arch_kwargs": spec.arch_kwargs,
        "classes": list(spec.classes),
        "input": {"channels": spec.in_channels, "size": spec.input_size},
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "source": source,
        "sha256": sha,
        "content_sha256": sha,
        "num_params": loaded.network.num_params(),
    }


def recorded_data(model: Any, role: str, *, required: bool = True) -> str | None:
    """The training data a model file records, when it is a built-in name or a path that still exists."""
    training = model.spec.training or {}
    name = training.get("data")
    if name and (name in BUILTINS or Path(name).exists()):
        log.info("using the %s's recorded training data: %s", role, name)
        return str(name)
    if required:
        why = f"its recorded data {name!r} is not available" if name else "it records no training data"
        raise UsageError(f"{role} {model.path}: {why}; pass data", options=("data",))
    return None  # the caller decides (clone refuses without target-domain data)
