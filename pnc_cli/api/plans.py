"""``--dry-run``: what clone / apply / remove / rank-sources would read, train and write, without doing it.

Layer api. Each ``plan_*`` resolves and checks its inputs with the same helpers as the command it
plans (so a dry run fails exactly where the real run would, with the same error and exit code) and
returns a plain dict; nothing is trained and nothing is written. Sizes are those of the tensors that
would be written (parameters, and bytes before the safetensors header).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.config import CloneConfig, SurrogateConfig
from ..core.device import resolve_device
from ..core.errors import UsageError
from ..io.data import load_data
from ..io.delta_file import count_params
from ..io.model_file import load_model
from ..io.safetensors_io import check_output, read_header
from ..method.joint import candidates
from .cloning import gather_inputs, positions_for
from .deltas import assemble, check_verifiable, select_removal


def _bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _output(path: str | Path, force: bool) -> dict[str, Any]:
    out = Path(path)
    return {"path": str(out), "exists": out.exists(), "overwrite": out.exists() and force}


def plan_clone(
    *,
    source: str | Path,
    target: str | Path,
    classes: str,
    output: str | Path,
    data: str | None = None,
    target_data: str | None = None,
    position: str | int = "auto",
    config: CloneConfig | None = None,
    surrogate: str | Path | None = None,
    search: str | Path | None = None,
    rename: list[str] | None = None,
    merged: str | Path | None = None,
    split_seed: int = 0,
    force: bool = False,
    device: str = "auto",
    command: str = "clone",
) -> dict[str, Any]:
    """The resolved data, sample counts, positions to search, outputs and the delta's size bound."""
    config = config or CloneConfig()
    inputs = [i for i in (source, target, surrogate, search, data, target_data) if i is not None]
    outputs = [o for o in (output, merged) if o is not None]
    if len({Path(o).resolve() for o in outputs}) < len(outputs):
        raise UsageError(f"the output files must differ: {', '.join(map(str, outputs))}")
    for o in outputs:
        check_output(o, force=force, inputs=inputs)
    dev = resolve_device(device)
    inp = gather_inputs(
        source=source,
        target=target,
        classes=classes,
        data=data,
        target_data=target_data,
        rename=rename,
        config=config,
        split_seed=split_seed,
        device=dev,
        position=position,
    )
    target_params = inp.target.network.num_params()
    joint = config.head == "joint" and search is None
    spec = inp.target.spec
    if search is not None:
        positions: list[int] = []
    elif joint:
        positions = [0]  # the joint head reads the source from the input
    else:
        positions = positions_for(position, inp.target.network.num_blocks)
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    spans = (
        [
            {"source_end": c.end, "pool": c.pool, "features": c.dim}
            for c in candidates(inp.source.network, shape, config.max_features)
        ]
        if joint
        else []
    )
    bound = config.max_extra_ratio * target_params if config.max_extra_ratio else None
    return {
        "command": command,
        "dry_run": True,
        "source": str(source),
        "target": str(target),
        "classes": inp.source_classes,
        "new_classes": inp.new_classes,
        "data": inp.data,
        "target_data": inp.target_data,
        "train_samples": len(inp.train_set),
        "val_samples": 0 if inp.val is None else len(inp.val[1]),
        "test_samples": len(inp.test_set),
        "head": config.head,
        "positions": positions,
        "spans": spans,
        "finish_from_search": str(search) if search is not None else None,
        "surrogate": str(surrogate) if surrogate is not None else None,
        "epochs_per_position": None if joint else config.epochs,
        "outputs": [_output(o, force) for o in outputs],
        "target_params": target_params,
        "source_params": inp.source.network.num_params(),
        "max_delta_params": int(bound) if bound is not None else inp.source.network.num_params(),
        "max_delta_params_reason": "size budget (max_extra_ratio × target params)"
        if bound is not None
        else "no budget: at most the whole source",
        "device": str(dev),
        "seed": config.seed,
    }


def plan_apply(
    *,
    target: str | Path,
    deltas: Sequence[str | Path],
    sources: Sequence[str | Path] = (),
    output: str | Path,
    force: bool = False,
) -> dict[str, Any]:
    """Every check of ``apply_delta``; the cloned model's classes and size, not written."""
    out, cloned, target_sha, added = assemble(target, deltas, sources, output, force)
    extra = sum(d.num_params for d in cloned.deltas)
    return {
        "command": "apply",
        "dry_run": True,
        "target": str(target),
        "target_sha256": target_sha,
        "deltas": [d.name for d in cloned.deltas],
        "added": [d.name for d in added],
        "classes": cloned.classes,
        "outputs": [_output(out, force)],
        "extra_params": extra,
        "extra_params_ratio": extra / max(1, count_params(cloned.target_tensors)),
        "tensor_bytes": _bytes(cloned.target_tensors) + sum(_bytes(d.tensors) for d in cloned.deltas),
    }


def plan_remove(
    *,
    cloned: str | Path,
    output: str | Path,
    names: Sequence[str] | None = None,
    all: bool = False,  # noqa: A002  (mirrors --all)
    force: bool = False,
    verify: bool = False,
) -> dict[str, Any]:
    """Which deltas go and stay, and whether the original target comes back; nothing written."""
    out, model, drop, keep = select_removal(cloned, output, names, all, force)
    if verify:
        check_verifiable(model, keep, cloned)
    restored = not keep
    tensors = dict(model.target_tensors)
    return {
        "command": "remove",
        "dry_run": True,
        "cloned": str(cloned),
        "removed": drop,
        "remaining": [d.name for d in keep],
        "restores_target": restored,
        "byte_identity_checkable": restored and bool(model.target_file_sha256),
        "target_sha256": model.target_sha256,
        "outputs": [_output(out, force)],
        "tensor_bytes": _bytes(tensors) + sum(_bytes(d.tensors) for d in keep),
    }


def plan_rank(
    *,
    target: str | Path,
    sources: list[str | Path],
    classes: str,
    data: str,
    split: str = "train",
    split_seed: int = 0,
    config: SurrogateConfig | None = None,
    surrogates_dir: str | Path | None = None,
    output: str | Path | None = None,
    force: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """The samples drawn, the candidates as their headers describe them, and the --clone-best output."""
    config = config or SurrogateConfig()
    if not sources:
        raise UsageError("give at least one source model to rank")
    if output is not None:
        check_output(output, force=force, inputs=[target, *sources])
    dev = resolve_device(device)
    ds = load_data(data, classes=classes, split=split, split_seed=split_seed)
    tgt = load_model(target)
    candidates = []
    for src in sources:
        try:
            _, meta = read_header(src)
            kind = meta.get("pnc.kind", "model")
            candidates.append({"source": str(src), "kind": kind, "arch": meta.get("pnc.arch")})
        except UsageError as exc:
            candidates.append({"source": str(src), "kind": None, "arch": None, "reason": str(exc)})
    return {
        "command": "rank-sources",
        "dry_run": True,
        "target": str(target),
        "target_arch": tgt.spec.arch,
        "classes": list(ds.classes),
        "data": ds.identity["data"],
        "split": split,
        "samples": min(config.samples, len(ds)),
        "masks": config.masks,
        "grid": config.grid,
        "candidates": candidates,
        "surrogates_dir": str(surrogates_dir) if surrogates_dir is not None else None,
        "outputs": [] if output is None else [_output(output, force)],
        "device": str(dev),
        "seed": config.seed,
    }
