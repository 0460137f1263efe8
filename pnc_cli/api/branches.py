"""Deltas and cloned files as runnable modules: the glue between ``io.delta_file`` and
``method.branch_state``.

Layer: api. The format is ``io.delta_file``'s; how a branch is stored is ``method.branch_state``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, DeltaFormatError
from ..io.delta_file import ClonedFile, DeltaFile, read_cloned
from ..io.model_file import LoadedModel, ModelSpec, build_from_spec
from ..method.branch_state import branch_from_state
from ..method.cloned_model import Branch, ClonedModel


def source_info(src: LoadedModel) -> dict[str, Any]:
    s = src.spec
    return {
        "sha256": src.sha256,
        "arch": s.arch,
        "arch_kwargs": s.arch_kwargs,
        "classes": list(s.classes),
        "input": {"channels": s.in_channels, "size": s.input_size},
        "normalization": {"mean": list(s.mean), "std": list(s.std)},
        "num_blocks": src.network.num_blocks,
    }


def target_info(tgt: LoadedModel) -> dict[str, Any]:
    s = tgt.spec
    return {
        "sha256": tgt.sha256,
        "arch": s.arch,
        "classes": list(s.classes),
        "input": {"channels": s.in_channels, "size": s.input_size},
    }


def branch_from_delta(delta: DeltaFile) -> Branch:
    """Rebuild a working branch from an (offline) delta: source blocks come from the delta alone."""
    spec, t = delta.spec, delta.tensors
    src = delta.info["source"]
    if spec.position.source < spec.position.source_end and not any(k.startswith("source.") for k in t):
        raise CheckpointError(
            f"delta {delta.name!r} is online (no source weights); apply it with source first",
            options=("source",),
        )
    model_spec = ModelSpec(
        src["arch"], tuple(src["classes"]), src["input"]["channels"], src["input"]["size"], src["arch_kwargs"]
    )
    template = build_from_spec(model_spec)
    try:  # tensors that do not fit the recorded source and adapter: a format error, not a crash
        return branch_from_state(
            t,
            adapter=spec.adapter,
            head_kind=spec.head.kind,
            pool=spec.head.pool,
            position=spec.position.target,
            source_position=spec.position.source,
            source_end=spec.position.source_end,
            classes=list(spec.classes),
            template_blocks=template.blocks,
            random_features=spec.head.random_features,
            random_seed=spec.head.random_seed,
        )
    except (RuntimeError, KeyError, IndexError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeltaFormatError(
            f"delta {delta.name!r}: its tensors do not fit the recorded source and adapter ({first}); "
            "see docs/delta-format.md"
        ) from None


def cloned_from_file(cloned: ClonedFile, path: str | Path) -> tuple[ClonedModel, ModelSpec]:
    spec = ModelSpec.from_metadata(cloned.target_metadata, path)
    target = build_from_spec(spec)
    target.model.load_state_dict(cloned.target_tensors)
    target.freeze()
    branches = {d.name: branch_from_delta(d) for d in cloned.deltas}
    model = ClonedModel(target, list(spec.classes), branches).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:  # a joint head must read exactly the features of the stack below it
        with torch.no_grad():
            model(torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size))
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeltaFormatError(
            f"{path}: its deltas do not fit together ({first}); see docs/delta-format.md"
        ) from None
    return model, spec


def load_cloned(path: str | Path) -> tuple[ClonedModel, ModelSpec, ClonedFile]:
    """A cloned model file as a runnable ``ClonedModel`` (target spec, and the file's contents)."""
    cf = read_cloned(path)
    model, spec = cloned_from_file(cf, path)
    return model, spec, cf


__all__ = [
    "branch_from_delta",
    "cloned_from_file",
    "load_cloned",
    "source_info",
    "target_info",
]
