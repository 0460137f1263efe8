"""The surrogate file: a local model set G on disk (docs/surrogate.md lists the format).

Layer io (torch, safetensors via ``safetensors_io``, ``errors``). It names, validates, writes and reads the
tensors and metadata of ``pnc surrogate -o G.safetensors``; it does not import the algorithm
(``pnc_cli.method.surrogate``), so it returns raw tensors in a small dataclass.

Tensors: ``theta [N, P, C]``, ``intercept [N, C]``, ``masks [|B|, P]`` (``P = grid²``),
``weights [|B|]`` (float32) and ``sample_index [N]`` (int64, rows of the data source). Metadata:
``format``, ``pnc.kind`` = ``surrogate``, ``pnc.format_version``, ``pnc.writer``, ``pnc.sha256`` and
JSON strings ``pnc.surrogate.config`` / ``.model_sha256`` / ``.model_classes`` / ``.data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core.errors import CheckpointError, IncompatibleError
from ..core.version import __version__
from .safetensors_io import (
    check_hashes,
    check_kind,
    check_version,
    content_sha256,
    json_meta,
    loads_bounded,
    read_header,
    read_safetensors,
    seal,
    write_safetensors,
)

__all__ = [
    "KIND_SURROGATE",
    "SURROGATE_FORMAT_VERSION",
    "SurrogateFile",
    "check_comparable",
    "read_surrogate",
    "write_surrogate",
]

KIND_SURROGATE = "surrogate"
SURROGATE_FORMAT_VERSION = 2  # v2: pnc.seal covers the metadata too (v1 still reads)
SEALED_SINCE = 2

KEY_KIND = "pnc.kind"
KEY_VERSION = "pnc.format_version"
KEY_WRITER = "pnc.writer"
KEY_SHA = "pnc.sha256"
KEY_CONFIG = "pnc.surrogate.config"
KEY_MODEL_SHA = "pnc.surrogate.model_sha256"
KEY_MODEL_CLASSES = "pnc.surrogate.model_classes"
KEY_DATA = "pnc.surrogate.data"

TENSOR_NAMES = ("intercept", "masks", "sample_index", "theta", "weights")
_FLOAT_NAMES = ("intercept", "masks", "theta", "weights")


@dataclass
class SurrogateFile:
    """Everything a surrogate file holds.

    Attributes:
        theta: ``[N, P, C]`` float32 linear coefficients of each sample's surrogate.
        intercept: ``[N, C]`` float32 intercepts.
        masks: ``[|B|, P]`` float32 0/1 mask set B (row 0 is all ones), shared by all samples.
        weights: ``[|B|]`` float32 kernel weights Pi_b.
        sample_index: ``[N]`` int64 rows of the data source the samples were taken from.
        config: ``SurrogateConfig.to_dict()``.
        model_sha256: Content sha256 of the model the surrogates describe.
        model_classes: The model's class names (the columns of ``theta``).
        data: ``{"data", "classes", "split", "split_seed", "samples_sha256"}`` identity of the samples.
        pnc_version: Version of pnc that wrote (or will write) the file.
    """

    theta: Tensor
    intercept: Tensor
    masks: Tensor
    weights: Tensor
    sample_index: Tensor
    config: dict[str, Any]
    model_sha256: str
    model_classes: list[str]
    data: dict[str, Any]
    pnc_version: str = field(default=__version__)

    @property
    def num_samples(self) -> int:
        return int(self.theta.shape[0])

    @property
    def num_masks(self) -> int:
        return int(self.masks.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        """The tensors as stored: float32 / int64, contiguous, on the CPU."""
        out = {
            name: getattr(self, name).detach().to("cpu", torch.float32).contiguous() for name in _FLOAT_NAMES
        }
        out["sample_index"] = self.sample_index.detach().to("cpu", torch.int64).contiguous()
        return out

    @property
    def sha256(self) -> str:
        return content_sha256(self.tensors())


# ------------------------------------------------------------------------------------------ validation


def _shape_problem(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why the five tensors' shapes do not fit together, or None."""
    theta, masks = shapes["theta"], shapes["masks"]
    if len(theta) != 3:
        return f"theta must be [N, P, C], got {list(theta)}"
    n, p, c = theta
    if len(masks) != 2 or masks[0] < 1 or masks[1] != p:
        return f"masks must be [|B|, {p}] with |B| >= 1 to fit theta {list(theta)}, got {list(masks)}"
    expected = {"intercept": (n, c), "weights": (masks[0],), "sample_index": (n,)}
    for name, want in expected.items():
        if tuple(shapes[name]) != want:
            return f"{name} must be {list(want)} to fit theta {list(theta)}, got {list(shapes[name])}"
    return None


def _check(sf: SurrogateFile, where: object) -> None:
    shapes = {name: tuple(getattr(sf, name).shape) for name in TENSOR_NAMES}
    problem = _shape_problem(shapes)
    if problem:
        raise CheckpointError(f"{where}: {problem}")
    if not isinstance(sf.model_classes, list) or len(sf.model_classes) != shapes["theta"][2]:
        raise CheckpointError(
            f"{where}: {len(sf.model_classes)} model classes for {shapes['theta'][2]} output columns of theta"
        )


def _json(meta: Mapping[str, str], key: str, path: object, kind: type) -> Any:
    if key not in meta:
        raise CheckpointError(
            f"{path}: metadata key {key!r} is missing; the file is not a complete surrogate file"
        )
    value = loads_bounded(meta[key], key, path)
    if not isinstance(value, kind):
        raise CheckpointError(f"{path}: metadata key {key!r} must be a JSON {kind.__name__}")
    return value


# ------------------------------------------------------------------------------------------ write / read


def surrogate_metadata(sf: SurrogateFile) -> dict[str, str]:
    return seal(
        {
            "format": "pt",
            KEY_KIND: KIND_SURROGATE,
            KEY_VERSION: str(SURROGATE_FORMAT_VERSION),
            KEY_WRITER: f"pnc-cli {sf.pnc_version}",
            KEY_SHA: sf.sha256,
            KEY_CONFIG: json_meta(sf.config),
            KEY_MODEL_SHA: json_meta(sf.model_sha256),
            KEY_MODEL_CLASSES: json_meta([str(c) for c in sf.model_classes]),
            KEY_DATA: json_meta(sf.data),
        }
    )


def write_surrogate(path: str | Path, sf: SurrogateFile, *, force: bool = False) -> str:
    """Validate and write ``sf`` atomically with deterministic bytes; returns its content sha256.

    Raises:
        CheckpointError: tensors whose shapes do not fit together.
        OutputExistsError / UsageError: see ``safetensors_io.check_output``.
    """
    _check(sf, path)
    try:
        meta = surrogate_metadata(sf)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: surrogate metadata is not JSON-serialisable ({exc})") from None
    write_safetensors(path, sf.tensors(), meta, force=force)
    return meta[KEY_SHA]


def read_surrogate(path: str | Path) -> SurrogateFile:
    """Read and validate a surrogate file (header checked before tensors are loaded).

    Raises:
        CheckpointError: missing, garbage or truncated file, another kind of pnc file, a newer format
            version, missing metadata or tensors that do not fit together (exit 2).
        VerificationError: tensors differ from the recorded sha256 (exit 3).
    """
    header, meta = read_header(path)
    check_kind(meta, KIND_SURROGATE, path)
    version = check_version(meta, SURROGATE_FORMAT_VERSION, path)
    check_hashes(None, meta, path, sealed=version >= SEALED_SINCE)  # metadata first, tensors below
    missing = [n for n in TENSOR_NAMES if n not in header]
    if missing:
        raise CheckpointError(
            f"{path}: surrogate tensors {', '.join(missing)} are missing; re-create the file"
        )
    config = _json(meta, KEY_CONFIG, path, dict)
    model_sha = _json(meta, KEY_MODEL_SHA, path, str)
    classes = _json(meta, KEY_MODEL_CLASSES, path, list)
    data = _json(meta, KEY_DATA, path, dict)
    tensors, _ = read_safetensors(path)
    check_hashes(tensors, meta, path, sealed=False)
    writer = meta.get(KEY_WRITER, "")
    sf = SurrogateFile(
        theta=tensors["theta"],
        intercept=tensors["intercept"],
        masks=tensors["masks"],
        weights=tensors["weights"],
        sample_index=tensors["sample_index"],
        config=config,
        model_sha256=model_sha,
        model_classes=[str(c) for c in classes],
        data=data,
        pnc_version=writer.removeprefix("pnc-cli ") or "unknown",
    )
    _check(sf, path)
    return sf


# ------------------------------------------------------------------------------------------ comparison


def check_comparable(a: SurrogateFile, b: SurrogateFile, what_a: str = "", what_b: str = "") -> None:
    """Refuse two local model sets that were not computed on the same masks and the same samples.

    Masks must be equal (same grid, same |B|, same values); the samples must be the same rows of the
    data with the same content (``sample_index`` and ``data["samples_sha256"]``). The models may differ.

    Raises:
        IncompatibleError: naming which of masks / samples differ (exit 4).
    """
    na, nb = what_a or "the first surrogate", what_b or "the second surrogate"
    if tuple(a.masks.shape) != tuple(b.masks.shape) or not torch.equal(a.masks.cpu(), b.masks.cpu()):
        raise IncompatibleError(
            f"{na} and {nb} use different masks ({_describe_masks(a)} vs {_describe_masks(b)}); "
            "recompute them with the same seed, masks, grid and masking_rate",
            options=("seed", "masks", "grid", "masking_rate"),
        )
    ia, ib = a.sample_index.cpu().to(torch.int64), b.sample_index.cpu().to(torch.int64)
    ha, hb = a.data.get("samples_sha256"), b.data.get("samples_sha256")
    if tuple(ia.shape) != tuple(ib.shape) or not torch.equal(ia, ib) or ha != hb:
        raise IncompatibleError(
            f"{na} and {nb} were computed on different samples ({_describe_data(a)} vs {_describe_data(b)}); "
            "recompute them on the same data, classes, split, split_seed, samples and seed",
            options=("data", "classes", "split", "split_seed", "samples", "seed"),
        )


def _describe_masks(sf: SurrogateFile) -> str:
    grid = sf.config.get("grid", "?")
    return f"{sf.num_masks} masks, grid {grid}, seed {sf.config.get('seed', '?')}"


def _describe_data(sf: SurrogateFile) -> str:
    d = sf.data
    return f"{sf.num_samples} samples of {d.get('data', '?')}, {d.get('split', '?')} split"
