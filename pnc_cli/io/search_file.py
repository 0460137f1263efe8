"""The ``pnc search`` output file: the per-position curves plus the trained branch of R*.

Layer io (IO). Tensors: the delta tensors of the R* branch (docs/delta-format.md) and ``search.<field>``
curves ([num_positions] each, search order). Metadata: the delta's own metadata with
``pnc.kind = "search"`` and ``pnc.search.inputs`` (hashes of source, target, classes and data) so
``pnc clone --search`` can refuse a file made for other inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, IncompatibleError
from .delta_file import (
    DELTA_FORMAT_VERSION,
    INFO_KEY_PREFIX,
    KEY_KIND,
    DeltaFile,
    delta_metadata,
    validate_delta,
)
from .safetensors_io import (
    check_hashes,
    check_kind,
    check_version,
    content_sha256,
    json_meta,
    loads_bounded,
    read_safetensors,
    seal,
    write_safetensors,
)

KIND_SEARCH = "search"
CURVE_PREFIX = "search."
CURVE_FIELDS = (
    "position",
    "source_position",
    "loss",
    "val_ori_acc",
    "val_tar_acc",
    "val_avg_acc",
    "kept_fraction",
    "seconds",
)
KEY_INPUTS = "pnc.search.inputs"
SEALED_SINCE = 2  # search files of delta format v2 carry pnc.seal (metadata covered)


@dataclass
class SearchFile:
    delta: DeltaFile
    curves: dict[str, torch.Tensor]
    inputs: dict[str, Any]


def write_search(path: str | Path, sf: SearchFile, *, force: bool = False) -> str:
    validate_delta(sf.delta, sf.delta.name)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sf.delta.tensors.items()}
    tensors.update({CURVE_PREFIX + k: v.to(torch.float64) for k, v in sf.curves.items()})
    meta = delta_metadata(sf.delta)
    meta[KEY_KIND] = KIND_SEARCH
    meta["pnc.sha256"] = content_sha256(tensors)
    meta[KEY_INPUTS] = json_meta(sf.inputs)
    write_safetensors(path, tensors, seal(meta), force=force)
    return meta["pnc.sha256"]


def read_search(path: str | Path) -> SearchFile:
    tensors, meta = read_safetensors(path)
    check_kind(meta, KIND_SEARCH, path)
    version = check_version(meta, DELTA_FORMAT_VERSION, path)
    check_hashes(tensors, meta, path, sealed=version >= SEALED_SINCE)
    if KEY_INPUTS not in meta or "pnc.delta.name" not in meta:
        raise CheckpointError(f"{path}: search metadata is missing; run pnc search again")
    info = {
        k[len(INFO_KEY_PREFIX) :]: loads_bounded(v, k, path)
        for k, v in meta.items()
        if k.startswith(INFO_KEY_PREFIX)
    }
    inputs = loads_bounded(meta[KEY_INPUTS], KEY_INPUTS, path)
    if not isinstance(inputs, dict) or not isinstance(info.get("name"), str):
        raise CheckpointError(f"{path}: search metadata is corrupt (inputs must be an object, name a string)")
    curves = {k[len(CURVE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(CURVE_PREFIX)}
    delta = DeltaFile(
        str(info.pop("name")), {k: v for k, v in tensors.items() if not k.startswith(CURVE_PREFIX)}, info
    )
    validate_delta(delta, path, strict=False)
    return SearchFile(delta, curves, inputs)


def check_inputs(sf: SearchFile, inputs: dict[str, Any], path: str | Path) -> None:
    """Refuse a search file whose source, target, classes or data differ from this run's."""
    for key in sorted(inputs):
        if sf.inputs.get(key) != inputs[key]:
            raise IncompatibleError(
                f"{path}: search was run with another {key} ({sf.inputs.get(key)!r}, now {inputs[key]!r}); "
                "run pnc search again"
            )
