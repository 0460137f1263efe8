"""A branch as delta tensors and back: the one place that knows how a ``Branch`` is stored.

Layer: method (pure torch; no files). ``branch_tensors`` gives the tensors a delta stores and
``branch_info`` the structural part of its info; ``branch_from_state`` rebuilds a working branch from
them and a template of the source's blocks (a freshly built network of the recorded architecture: the
weights come from the tensors). The names are fixed by docs/delta-format.md:

``adapter.*`` (the adapter A), ``mask.<layer>`` (uint8 0/1 per output channel), ``head.weight``/
``head.bias``, ``calibration.scale``/``calibration.bias`` (append head only), ``features.keep`` (int64,
the feature columns a pruned span exposes), ``features.read`` (int64, the joint head's read index into
the features below it), ``features.mean``/``features.scale`` (random features: the standardisation of
what the head reads) — both since format 4 — and, offline, ``source.*`` (the kept source filters,
sliced).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .adapter import adapter_from_config
from .cloned_model import Branch
from .random_features import RandomFeatures
from .selector import count_kept_params, slice_state, unslice_state


def adapter_out_shape(config: Mapping[str, Any]) -> list[int]:
    """The input shape of the source span for an adapter config (what zero-column cutting needs)."""
    return list(config["shape"] if config.get("kind") == "renorm" else config["out_shape"])


def branch_extra_params(branch: Branch, masks: Mapping[str, torch.Tensor], *, online: bool = False) -> int:
    """Parameters the branch's delta stores: adapter, head, calibration (append) and, offline, the kept
    source filters; equal to ``count_params`` of :func:`branch_tensors` (tested)."""
    return sum(t.numel() for k, t in branch_tensors(branch, masks, online=online).items() if _counts(k, t))


def _counts(name: str, t: torch.Tensor) -> bool:
    return t.is_floating_point() and not name.endswith(("running_mean", "running_var", "num_batches_tracked"))


def branch_tensors(
    branch: Branch, masks: Mapping[str, torch.Tensor], *, online: bool
) -> dict[str, torch.Tensor]:
    """Delta tensors of a trained branch (see the module docstring)."""
    t: dict[str, torch.Tensor] = {}
    t.update({f"adapter.{k}": v for k, v in branch.adapter.state_dict().items()})
    t.update({f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()})
    t.update({f"head.{k}": v for k, v in branch.head.state_dict().items()})
    if branch.head_kind == "append":
        t["calibration.scale"] = branch.calibration.detach()[:1]
        t["calibration.bias"] = branch.calibration.detach()[1:]
    if branch.keep is not None:
        t["features.keep"] = branch.keep
    if branch.read is not None:
        t["features.read"] = branch.read
    if branch.random is not None:
        t["features.mean"] = branch.random.mean
        t["features.scale"] = branch.random.scale
    if not online:
        in_shape = adapter_out_shape(branch.adapter.config())
        t.update({f"source.{k}": v for k, v in slice_state(branch.module, masks, in_shape).items()})
    return {k: v.detach().cpu().contiguous().clone() for k, v in t.items()}


def branch_info(branch: Branch) -> dict[str, Any]:
    """The structural info of a branch that :func:`branch_from_state` needs besides the tensors."""
    return {
        "adapter": branch.adapter.config(),
        "head": {
            "kind": branch.head_kind,
            "pool": branch.pool,
            **(branch.random.config() if branch.random is not None else {}),
        },
        "position": {
            "target": branch.position,
            "source": branch.source_position,
            "source_end": branch.source_end,
        },
    }


def _strip(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def source_span(blocks: Sequence[nn.Module], start: int, end: int) -> nn.ModuleList:
    """A private copy of source blocks ``[start:end]``."""
    return copy.deepcopy(nn.ModuleList(blocks[start:end]))


def branch_from_state(
    tensors: Mapping[str, torch.Tensor],
    *,
    adapter: Mapping[str, Any],
    head_kind: str,
    pool: int,
    position: int,
    source_position: int,
    source_end: int,
    classes: list[str],
    template_blocks: Sequence[nn.Module],
    random_features: int = 0,
    random_seed: int = 0,
) -> Branch:
    """Rebuild a branch from its delta tensors (offline: ``source.*`` present).

    Raises:
        KeyError, RuntimeError, IndexError, ValueError: tensors that do not fit the structure
        (the io layer turns them into a format error naming the file).
    """
    module = source_span(template_blocks, source_position, source_end)
    masks = {k: v.bool() for k, v in _strip(tensors, "mask.").items()}
    module.load_state_dict(
        unslice_state(_strip(tensors, "source."), masks, module, adapter_out_shape(adapter))
    )
    head_t = _strip(tensors, "head.")
    head = nn.Linear(head_t["weight"].shape[1], head_t["weight"].shape[0])
    head.load_state_dict(head_t)
    adapter_module = adapter_from_config(dict(adapter))
    adapter_module.load_state_dict(_strip(tensors, "adapter."))
    branch = Branch(
        adapter=adapter_module,
        module=module,
        head=head,
        position=position,
        source_position=source_position,
        source_end=source_end,
        classes=classes,
        head_kind=head_kind,
        pool=pool,
        keep=tensors.get("features.keep"),
        read=tensors.get("features.read"),
        random=RandomFeatures(
            tensors["features.mean"], tensors["features.scale"], features=random_features, seed=random_seed
        )
        if random_features
        else None,
    )
    with torch.no_grad():  # absent calibration (optional in the format) means scale 1, bias 0
        if "calibration.scale" in tensors:
            branch.calibration[:1].copy_(tensors["calibration.scale"].reshape(1))
        if "calibration.bias" in tensors:
            branch.calibration[1:].copy_(tensors["calibration.bias"].reshape(1))
    for p in branch.parameters():
        p.requires_grad_(False)
    return branch.eval()


__all__ = [
    "adapter_out_shape",
    "branch_extra_params",
    "branch_from_state",
    "branch_info",
    "branch_tensors",
    "count_kept_params",
    "source_span",
]
