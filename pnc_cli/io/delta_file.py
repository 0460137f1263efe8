"""The delta file and the cloned-model file (docs/delta-format.md is normative).

Layer io (torch, safetensors via ``safetensors_io``, ``errors``). No ``nn.Module`` logic: this module
only names, validates, writes and reads tensors and metadata. A *delta* holds one cloned branch of
docs/method-spec.md §3 (adapter ``A``, selector mask ``M``, head ``F_c``, calibration and, offline, the
kept source filters); a *cloned* file holds a target's tensors unchanged plus one or more deltas under
``pnc_delta.<name>.``, and the target's original metadata verbatim, so removing every delta gives back the
original bytes.

Checks happen on the header before any tensor is loaded: kind, format version, required info keys and
tensor names (``DeltaFormatError``, exit 2); after loading, recorded sha256 vs content
(``VerificationError``, exit 3).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, DeltaFormatError, VerificationError
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
    serialize,
    write_safetensors,
)

LOG = logging.getLogger(__name__)

# 2: joint head, source span end, pooling, features.keep, reads; 3: pnc.seal; 4: features.read (the
# joint head's read index) and random features (docs/delta-format.md)
DELTA_FORMAT_VERSION = 4
SEALED_SINCE = 3  # delta and cloned files of this version on carry pnc.seal (their metadata is covered)
KIND_DELTA = "delta"
KIND_CLONED = "cloned"
TENSOR_PREFIXES = ("adapter.", "source.", "mask.", "head.", "calibration.", "features.")
CLONED_PREFIX = "pnc_delta."
# fmt: off
REQUIRED_INFO = (
    "name", "target", "source", "classes", "source_class_index", "position", "adapter", "mode", "config",
    "seed",
)
# fmt: on
OPTIONAL_INFO = ("metrics", "extra_params", "search", "head", "reads")
HEAD_KINDS = ("joint", "append")
FEATURE_TENSORS = ("keep", "read", "mean", "scale")
MAX_DIM = 1 << 16  # bound on any recorded shape entry
MAX_ELEMENTS = 1 << 28  # bound on any recorded shape's element count
MODES = ("offline", "online")
POSITION_KEYS = ("target", "source", "target_blocks", "source_blocks")
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_+-]+")

# metadata keys (the first four are shared with model files, see checkpoint.py)
KEY_KIND = "pnc.kind"
KEY_VERSION = "pnc.format_version"
KEY_WRITER = "pnc.writer"
KEY_SHA = "pnc.sha256"
INFO_KEY_PREFIX = "pnc.delta."
KEY_TARGET_METADATA = "pnc.target_metadata"
KEY_TARGET_SHA = "pnc.target_sha256"
KEY_TARGET_FILE_SHA = "pnc.target_file_sha256"
KEY_DELTAS = "pnc.deltas"
MODEL_VIEW_KEYS = ("pnc.arch", "pnc.arch_kwargs", "pnc.input", "pnc.normalization")


def count_params(tensors: Mapping[str, torch.Tensor]) -> int:
    """Elements of float tensors that are not BatchNorm statistics (``BUFFER_SUFFIXES``): the "params"
    of docs/method-spec.md §7 "Extra params", for deltas and targets alike."""
    return sum(
        t.numel() for k, t in tensors.items() if t.is_floating_point() and not k.endswith(BUFFER_SUFFIXES)
    )


@dataclass
class DeltaFile:
    """One cloned branch: tensors under ``TENSOR_PREFIXES`` plus its ``info`` (docs/delta-format.md)."""

    name: str
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]

    def __post_init__(self) -> None:
        self.info = {"name": self.name, **self.info}

    @property
    def sha256(self) -> str:
        return content_sha256(self.tensors)

    @property
    def num_params(self) -> int:
        """Parameters the delta adds (see :func:`count_params`; uint8 masks do not count)."""
        return count_params(self.tensors)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.info["classes"]]

    @property
    def mode(self) -> str:
        return str(self.info["mode"])

    @property
    def spec(self) -> DeltaSpec:
        """The typed, validated structural info."""
        return DeltaSpec.from_info(self.info, self.name)

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix`` (e.g. ``"source."``) with the prefix stripped."""
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def masks(self) -> dict[str, torch.Tensor]:
        """Selector masks as bool tensors, keyed by layer name inside ``source blocks [R_s:]``."""
        return {k: v.to(torch.bool) for k, v in self.group("mask.").items()}


@dataclass
class ClonedFile:
    """A target's tensors and original metadata, plus the deltas stacked on it (in order)."""

    target_tensors: dict[str, torch.Tensor]
    target_metadata: dict[str, str]
    target_file_sha256: str | None = None
    deltas: list[DeltaFile] = field(default_factory=list)

    @property
    def target_sha256(self) -> str:
        return content_sha256(self.target_tensors)

    @property
    def target_classes(self) -> list[str]:
        if "pnc.classes" in self.target_metadata:
            return [str(c) for c in json.loads(self.target_metadata["pnc.classes"])]
        if self.deltas:
            return [str(c) for c in self.deltas[0].info["target"].get("classes", [])]
        return []

    @property
    def classes(self) -> list[str]:
        """Target classes followed by each delta's classes: the cloned model's output order."""
        return self.target_classes + [c for d in self.deltas for c in d.classes]

    def delta(self, name: str) -> DeltaFile:
        for d in self.deltas:
            if d.name == name:
                return d
        raise KeyError(name)


# ------------------------------------------------------------------------------------- typed info
@dataclass(frozen=True)
class Position:
    """Where a branch sits: target block R, source span [R_s:E_s] of L_s blocks."""

    target: int
    source: int
    source_end: int
    target_blocks: int
    source_blocks: int


@dataclass(frozen=True)
class HeadInfo:
    """``joint``: one head over every feature below it (v2); ``append``: logits appended (v1 and v2)."""

    kind: str = "append"
    pool: int = 0
    random_features: int = 0  # joint head, version 3: random ReLU features regenerated from random_seed
    random_seed: int = 0


@dataclass(frozen=True)
class DeltaSpec:
    """The structural part of a delta's info, validated and typed (version 1 files get v1 defaults)."""

    name: str
    classes: tuple[str, ...]
    source_class_index: tuple[int, ...]
    position: Position
    adapter: dict[str, Any]
    head: HeadInfo
    mode: str
    reads: tuple[dict[str, str], ...]  # joint head: the deltas below it, {name, sha256}, in order
    target_sha256: str
    source_sha256: str

    @classmethod
    def from_info(cls, info: Mapping[str, Any], where: object) -> DeltaSpec:
        """Validate ``info`` (already checked for its required keys) and return the typed view."""
        problem = next(_info_problems(info), None)
        if problem:
            raise _fail(where, problem)
        pos, head = info["position"], info.get("head") or {}
        return cls(
            name=str(info["name"]),
            classes=tuple(info["classes"]),
            source_class_index=tuple(info["source_class_index"]),
            position=Position(
                pos["target"],
                pos["source"],
                pos.get("source_end", pos["source_blocks"]),
                pos["target_blocks"],
                pos["source_blocks"],
            ),
            adapter=dict(info["adapter"]),
            head=HeadInfo(
                head.get("kind", "append"),
                head.get("pool", 0),
                head.get("random_features", 0),
                head.get("random_seed", 0),
            ),
            mode=info["mode"],
            reads=tuple(dict(r) for r in info.get("reads") or ()),
            target_sha256=info["target"]["sha256"],
            source_sha256=info["source"]["sha256"],
        )


def _is_int(v: Any, lo: int = 0, hi: int = MAX_DIM) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _shape_ok(v: Any) -> bool:
    if not (isinstance(v, list) and len(v) in (1, 3) and all(_is_int(s, 1) for s in v)):
        return False
    n = 1
    for s in v:
        n *= s
    return n <= MAX_ELEMENTS


def _adapter_problem(adapter: Any) -> str | None:
    if not isinstance(adapter, dict):
        return "info.adapter must be a JSON object"
    if adapter.get("kind") == "renorm":
        ok = _shape_ok(adapter.get("shape")) and len(adapter["shape"]) == 3
        return None if ok else "info.adapter.shape must be [C, H, W] of positive integers"
    if not (_shape_ok(adapter.get("in_shape")) and _shape_ok(adapter.get("out_shape"))):
        return "info.adapter needs in_shape and out_shape, each [C, H, W] or [D] of positive integers"
    return None


def _info_problems(info: Mapping[str, Any]) -> Iterator[str]:
    """Problems of an info mapping with the required keys present, first one first."""
    pos, classes, index = info["position"], info["classes"], info["source_class_index"]
    if info["mode"] not in MODES:
        yield f"mode {info['mode']!r} must be one of {', '.join(MODES)}"
    for side in ("target", "source"):
        if not (isinstance(info[side], dict) and isinstance(info[side].get("sha256"), str)):
            yield f"info.{side} needs a sha256"
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        yield "info.classes must be a non-empty list of class names"
    elif len(set(classes)) != len(classes):
        yield "info.classes has duplicates"
    if not (
        isinstance(index, list) and len(index) == len(classes) and all(_is_int(i, 0, 1 << 31) for i in index)
    ):
        yield "info.source_class_index must list one integer per class"
    if not (isinstance(pos, dict) and all(_is_int(pos.get(k)) for k in POSITION_KEYS)):
        yield f"info.position needs integers {', '.join(POSITION_KEYS)}"
        return
    end = pos.get("source_end", pos["source_blocks"])
    if not (
        _is_int(end)
        and pos["source"] <= end <= pos["source_blocks"]
        and pos["target"] < max(1, pos["target_blocks"])
    ):
        yield (
            "info.position is inconsistent "
            "(need source <= source_end <= source_blocks, target < target_blocks)"
        )
    problem = _adapter_problem(info["adapter"])
    if problem:
        yield problem
    head = info.get("head")
    if head is not None and not (
        isinstance(head, dict)
        and head.get("kind") in HEAD_KINDS
        and _is_int(head.get("pool", 0))
        and _is_int(head.get("random_features", 0))
        and _is_int(head.get("random_seed", 0), 0, (1 << 63) - 1)
    ):
        yield (
            f"info.head must be {{kind: {'|'.join(HEAD_KINDS)}, pool: integer, optional random_features "
            "and random_seed: integers}"
        )
    reads = info.get("reads")
    if reads is not None and not (
        isinstance(reads, list)
        and all(
            isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("sha256"), str)
            for r in reads
        )
    ):
        yield "info.reads must list {name, sha256} objects"


# ------------------------------------------------------------------------------------- validation
def _fail(where: object, what: str) -> DeltaFormatError:
    return DeltaFormatError(f"{where}: {what}; see docs/delta-format.md")


def check_tensor_names(names: Iterable[str], where: object) -> None:
    bad = sorted(n for n in names if not any(n.startswith(p) and len(n) > len(p) for p in TENSOR_PREFIXES))
    if bad:
        raise _fail(
            where,
            f"unknown delta tensor names {', '.join(bad[:5])} (allowed prefixes: "
            f"{', '.join(TENSOR_PREFIXES)})",
        )


def check_info_keys(info: Mapping[str, Any], where: object, *, strict: bool) -> None:
    missing = [k for k in REQUIRED_INFO if k not in info]
    if missing:
        raise _fail(where, f"delta info lacks required keys {', '.join(missing)}")
    unknown = sorted(set(info) - set(REQUIRED_INFO) - set(OPTIONAL_INFO))
    if unknown and strict:
        raise _fail(where, f"delta info has unknown keys {', '.join(unknown)}")


def _require(cond: bool, where: object, what: str) -> None:
    if not cond:
        raise _fail(where, what)


def _schema_problems(delta: DeltaFile) -> Iterator[str]:
    """Problems of a delta with valid info keys, first one first (later checks rely on earlier ones)."""
    info = delta.info
    if info["name"] != delta.name:
        yield f"info name {info['name']!r} differs from delta name {delta.name!r}"
    problem = next(_info_problems(info), None)
    if problem:
        yield problem
        return
    spec = DeltaSpec.from_info(info, delta.name)
    if not delta.group("head."):
        yield "a delta needs head.* tensors"
    for name, t in delta.group("mask.").items():
        if t.dtype != torch.uint8 or not bool(((t == 0) | (t == 1)).all()):
            yield f"mask tensor mask.{name} must be uint8 with values 0/1"
    feats = delta.group("features.")
    for key, index in feats.items():
        if key not in FEATURE_TENSORS:
            yield f"unknown tensor features.{key} (defined: {', '.join(FEATURE_TENSORS)})"
        elif key in ("keep", "read") and (
            index.dtype != torch.int64 or index.dim() != 1 or bool((index < 0).any())
        ):
            yield f"features.{key} must be a 1-D int64 tensor of non-negative indices"
        elif key != "keep" and spec.head.kind != "joint":
            yield f"features.{key} belongs to a joint head (info.head.kind joint)"
    rf = spec.head.random_features
    mean, scale = feats.get("mean"), feats.get("scale")
    if (mean is not None or scale is not None or rf) and not (
        rf
        and mean is not None
        and scale is not None
        and mean.is_floating_point()
        and mean.dim() == 1
        and mean.shape == scale.shape
        and bool((scale > 0).all())
    ):
        yield (
            "random features need info.head.random_features > 0 and 1-D float features.mean and "
            "features.scale (positive) of one length"
        )
    has_source = bool(delta.group("source."))
    if spec.mode == "online" and has_source:
        yield "an online delta must not carry source.* tensors"
    if spec.mode == "offline" and spec.position.source < spec.position.source_end and not has_source:
        yield "an offline delta needs the kept source filters (source.* tensors)"


def validate_delta(delta: DeltaFile, where: object = "delta", *, strict: bool = True) -> None:
    """Raise DeltaFormatError when ``delta`` breaks the format (name, info schema, tensor names, masks,
    mode)."""
    if not NAME_PATTERN.fullmatch(delta.name or ""):
        raise _fail(where, f"delta name {delta.name!r} must match [A-Za-z0-9_+-]+ (no dots)")
    check_info_keys(delta.info, where, strict=strict)
    check_tensor_names(delta.tensors, where)
    problem = next(_schema_problems(delta), None)
    if problem:
        raise _fail(where, problem)


def _json(meta: Mapping[str, str], key: str, path: object) -> Any:
    if key not in meta:
        raise _fail(path, f"metadata key {key!r} is missing")
    try:
        return loads_bounded(meta[key], key, path)  # size and depth limits (safetensors_io)
    except CheckpointError:
        raise _fail(path, f"metadata key {key!r} is not valid JSON or too large or deep") from None


# ------------------------------------------------------------------------------------------ delta
def _base_metadata(kind: str, sha: str) -> dict[str, str]:
    version, writer = str(DELTA_FORMAT_VERSION), f"pnc-cli {__version__}"
    return {"format": "pt", KEY_KIND: kind, KEY_VERSION: version, KEY_WRITER: writer, KEY_SHA: sha}


def delta_metadata(delta: DeltaFile) -> dict[str, str]:
    meta = _base_metadata(KIND_DELTA, delta.sha256)
    try:
        meta.update({INFO_KEY_PREFIX + k: json_meta(v) for k, v in delta.info.items()})
    except (TypeError, ValueError) as exc:
        raise _fail(delta.name, f"info is not JSON-serialisable ({exc})") from None
    return meta


def _cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def write_delta(path: str | Path, delta: DeltaFile, *, force: bool = False) -> str:
    """Validate and write ``delta`` (deterministic bytes, atomic); returns its content sha256."""
    delta = DeltaFile(delta.name, _cpu(delta.tensors), delta.info)
    validate_delta(delta, delta.name)
    write_safetensors(path, delta.tensors, seal(delta_metadata(delta)), force=force)
    return delta.sha256


def _info_from_meta(meta: Mapping[str, str], path: object) -> dict[str, Any]:
    info = {k[len(INFO_KEY_PREFIX) :]: v for k, v in meta.items() if k.startswith(INFO_KEY_PREFIX)}
    check_info_keys(info, path, strict=False)
    ignored = sorted(set(info) - set(REQUIRED_INFO) - set(OPTIONAL_INFO))
    if ignored:
        LOG.debug("%s: ignoring unknown delta info keys %s", path, ", ".join(ignored))
    return {k: _json(meta, INFO_KEY_PREFIX + k, path) for k in info if k not in ignored}


def _verify(recorded: str | None, actual: str, path: object, what: str, key: str = KEY_SHA) -> None:
    if recorded is None:
        raise _fail(path, f"metadata key {key!r} is missing")
    if recorded != actual:
        raise VerificationError(
            f"{path}: {what} do not match the recorded sha256; the file was modified or is corrupt"
        )


def _check_seal(meta: Mapping[str, str], path: object) -> int:
    """Format version, then ``pnc.sha256`` present and, from version ``SEALED_SINCE`` on, ``pnc.seal``
    present (exit 2) and matching the metadata (exit 3), all from the header; older files get a note."""
    version = check_version(meta, DELTA_FORMAT_VERSION, path, error=DeltaFormatError)
    check_hashes(None, meta, path, sealed=version >= SEALED_SINCE)
    if version < SEALED_SINCE:
        LOG.info(
            "%s: %s format v%d: its metadata is not covered by a hash (files this pnc writes are sealed)",
            path,
            meta.get(KEY_KIND),
            version,
        )
    return version


def read_delta(path: str | Path) -> DeltaFile:
    """Read and validate a delta file (header checked before tensors are loaded).

    Raises:
        CheckpointError: unreadable file, or not a delta (exit 2).
        DeltaFormatError: newer version, missing info keys, unknown tensor names (exit 2).
        CheckpointError: ``pnc.sha256`` missing, or ``pnc.seal`` missing in a sealed version (exit 2).
        VerificationError: metadata differs from ``pnc.seal``, or tensors from the recorded sha256 (exit 3).
    """
    header, meta = read_header(path)
    check_kind(meta, KIND_DELTA, path)
    _check_seal(meta, path)
    info = _info_from_meta(meta, path)
    check_tensor_names(header, path)
    tensors, _ = read_safetensors(path)
    delta = DeltaFile(str(info["name"]), tensors, info)
    validate_delta(delta, path, strict=False)
    _verify(meta.get(KEY_SHA), delta.sha256, path, "delta tensors")
    return delta


# ----------------------------------------------------------------------------------------- cloned
def _model_view(cloned: ClonedFile) -> dict[str, str]:
    """pnc.arch/arch_kwargs/input/normalization for readers of model headers (``pnc info``)."""
    meta = {k: cloned.target_metadata[k] for k in MODEL_VIEW_KEYS if k in cloned.target_metadata}
    target = cloned.deltas[0].info["target"]
    meta.setdefault("pnc.arch", str(target.get("arch", "")))
    meta.setdefault("pnc.arch_kwargs", json_meta(target.get("arch_kwargs", {})))
    if "input" in target:
        meta.setdefault("pnc.input", json_meta(target["input"]))
    if "normalization" in target:
        meta.setdefault("pnc.normalization", json_meta(target["normalization"]))
    meta["pnc.classes"] = json_meta(cloned.classes)
    return meta


def cloned_tensors(cloned: ClonedFile) -> dict[str, torch.Tensor]:
    """All tensors of the cloned file: the target's under their names, deltas under ``pnc_delta.<name>.``."""
    tensors = _cpu(cloned.target_tensors)
    for d in cloned.deltas:
        tensors.update({f"{CLONED_PREFIX}{d.name}.{k}": v for k, v in _cpu(d.tensors).items()})
    return tensors


def write_cloned(path: str | Path, cloned: ClonedFile, *, force: bool = False) -> str:
    """Write a cloned model (target + deltas); returns the content sha256 of all its tensors."""
    _require(bool(cloned.deltas), path, "a cloned file needs at least one delta")
    names = [d.name for d in cloned.deltas]
    _require(len(set(names)) == len(names), path, f"delta names must be unique, got {', '.join(names)}")
    clash = sorted(k for k in cloned.target_tensors if k.startswith(CLONED_PREFIX))
    _require(
        not clash,
        path,
        f"target tensor names use the reserved prefix {CLONED_PREFIX}: {', '.join(clash[:3])}",
    )
    for d in cloned.deltas:
        validate_delta(d, d.name)
    tensors = cloned_tensors(cloned)
    meta = _base_metadata(KIND_CLONED, content_sha256(tensors))
    meta |= {
        KEY_TARGET_METADATA: json_meta(cloned.target_metadata),
        KEY_TARGET_SHA: cloned.target_sha256,
        KEY_DELTAS: json_meta([{"name": d.name, "sha256": d.sha256, "info": d.info} for d in cloned.deltas]),
    }
    if cloned.target_file_sha256:
        meta[KEY_TARGET_FILE_SHA] = cloned.target_file_sha256
    meta.update(_model_view(cloned))
    write_safetensors(path, tensors, seal(meta), force=force)
    return meta[KEY_SHA]


def _split(
    tensors: Mapping[str, Any], names: list[str], path: object
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    target: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, t in tensors.items():
        if not key.startswith(CLONED_PREFIX):
            target[key] = t
            continue
        name, _, rest = key[len(CLONED_PREFIX) :].partition(".")
        _require(
            name in parts and bool(rest), path, f"tensor {key} belongs to no delta listed in {KEY_DELTAS}"
        )
        parts[name][rest] = t
    return target, parts


def read_cloned(path: str | Path) -> ClonedFile:
    """Read and verify a cloned model: kind, version, every delta's schema and every recorded sha256."""
    header, meta = read_header(path)
    check_kind(meta, KIND_CLONED, path)
    _check_seal(meta, path)
    entries = _json(meta, KEY_DELTAS, path)
    target_meta = _json(meta, KEY_TARGET_METADATA, path)
    _require(
        isinstance(entries, list)
        and bool(entries)
        and all(isinstance(e, dict) and {"name", "sha256", "info"} <= set(e) for e in entries),
        path,
        f"{KEY_DELTAS} must list {{name, sha256, info}} for each delta",
    )
    _require(isinstance(target_meta, dict), path, f"{KEY_TARGET_METADATA} must be a JSON object")
    names = [str(e["name"]) for e in entries]
    _, named = _split(dict.fromkeys(header), names, path)  # names checked before loading tensors
    for e in entries:
        check_info_keys(e["info"], f"{path} (delta {e['name']})", strict=False)
        check_tensor_names(named[str(e["name"])], f"{path} (delta {e['name']})")
    tensors, _ = read_safetensors(path)
    _verify(meta.get(KEY_SHA), content_sha256(tensors), path, "tensors")
    target, parts = _split(tensors, names, path)
    _verify(meta.get(KEY_TARGET_SHA), content_sha256(target), path, "target tensors", KEY_TARGET_SHA)
    deltas = []
    for e in entries:
        info = {k: v for k, v in e["info"].items() if k in REQUIRED_INFO or k in OPTIONAL_INFO}
        d = DeltaFile(str(e["name"]), parts[str(e["name"])], info)
        validate_delta(d, f"{path} (delta {d.name})", strict=False)
        _verify(e["sha256"], d.sha256, f"{path} (delta {d.name})", "delta tensors")
        deltas.append(d)
    return ClonedFile(
        target, {str(k): str(v) for k, v in target_meta.items()}, meta.get(KEY_TARGET_FILE_SHA), deltas
    )


def target_bytes(cloned: ClonedFile) -> bytes:
    """The target file as pnc writes it: byte-identical to the original when pnc wrote the original."""
    return serialize(_cpu(cloned.target_tensors), cloned.target_metadata)


def file_kind(path: str | Path) -> str:
    """``pnc.kind`` from the header: model (also pnc models without the key), cloned, delta, ... or plain."""
    _, meta = read_header(path)
    return meta.get(KEY_KIND, "model" if "pnc.arch" in meta else "plain")
