"""Conversion between a trained ``Branch`` and the tensors/info of a delta file; loading cloned models.

Layer L4. The delta format itself (names, metadata, validation) lives in ``pnc_cli.io.delta_file``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import CheckpointError, DeltaFormatError
from ..io.delta_file import ClonedFile, DeltaFile, read_cloned
from ..io.model_file import LoadedModel, ModelSpec, build_from_spec
from ..method.adapter import build_adapter
from ..method.cloned_model import Branch, ClonedModel
from ..method.selector import slice_state, unslice_state


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


def branch_tensors(
    branch: Branch, masks: dict[str, torch.Tensor], *, online: bool
) -> dict[str, torch.Tensor]:
    """Delta tensors of a trained branch: adapter, masks, head, calibration and (offline) kept source filters."""
    t: dict[str, torch.Tensor] = {}
    t.update({f"adapter.{k}": v for k, v in branch.adapter.state_dict().items()})
    t.update({f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()})
    t.update({f"head.{k}": v for k, v in branch.head.state_dict().items()})
    t["calibration.scale"] = branch.calibration.detach()[:1]  # names as docs/delta-format.md fixes them
    t["calibration.bias"] = branch.calibration.detach()[1:]
    if not online:
        t.update(
            {f"source.{k}": v for k, v in slice_state(branch.module, masks, branch.adapter.out_shape).items()}
        )
    return {k: v.detach().cpu().contiguous().clone() for k, v in t.items()}


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def branch_from_delta(delta: DeltaFile) -> Branch:
    """Rebuild a working branch from an (offline) delta: source blocks come from the delta alone."""
    info, t = delta.info, delta.tensors
    src = info["source"]
    if not any(k.startswith("source.") for k in t):
        raise CheckpointError(
            f"delta {delta.name!r} is online (no source weights); apply it with --source first"
        )
    spec = ModelSpec(
        src["arch"], tuple(src["classes"]), src["input"]["channels"], src["input"]["size"], src["arch_kwargs"]
    )
    template = build_from_spec(spec)
    rs = int(info["position"]["source"])
    module = copy.deepcopy(nn.ModuleList(template.blocks[rs:]))
    masks = {k: v.bool() for k, v in _strip(t, "mask.").items()}
    try:  # tensors that do not fit the recorded architecture and adapter: a format error, not a crash
        module.load_state_dict(
            unslice_state(_strip(t, "source."), masks, module, info["adapter"]["out_shape"])
        )
        head_t = _strip(t, "head.")
        head = nn.Linear(head_t["weight"].shape[1], head_t["weight"].shape[0])
        head.load_state_dict(head_t)
        adapter = build_adapter(**info["adapter"])
        adapter.load_state_dict(_strip(t, "adapter."))
    except (RuntimeError, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeltaFormatError(
            f"delta {delta.name!r}: its tensors do not fit the recorded source and adapter ({first}); "
            "see docs/delta-format.md"
        ) from None
    branch = Branch(
        adapter=adapter,
        module=module,
        head=head,
        position=int(info["position"]["target"]),
        source_position=rs,
        classes=list(info["classes"]),
    )
    with torch.no_grad():  # absent calibration (optional in the format) means scale 1, bias 0
        if "calibration.scale" in t:
            branch.calibration[:1].copy_(t["calibration.scale"].reshape(1))
        if "calibration.bias" in t:
            branch.calibration[1:].copy_(t["calibration.bias"].reshape(1))
    return branch.eval()


def cloned_from_file(cloned: ClonedFile, path: str | Path) -> tuple[ClonedModel, ModelSpec]:
    spec = ModelSpec.from_metadata(cloned.target_metadata, path)
    target = build_from_spec(spec)
    target.model.load_state_dict(cloned.target_tensors)
    target.freeze()
    branches = {d.name: branch_from_delta(d) for d in cloned.deltas}
    model = ClonedModel(target, list(spec.classes), branches).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, spec


def load_cloned(path: str | Path) -> tuple[ClonedModel, ModelSpec, ClonedFile]:
    """A cloned model file as a runnable ``ClonedModel`` (target spec, and the file's contents)."""
    cf = read_cloned(path)
    model, spec = cloned_from_file(cf, path)
    return model, spec, cf


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "branch_from_delta",
    "branch_tensors",
    "cloned_from_file",
    "load_cloned",
    "source_info",
    "target_info",
]
