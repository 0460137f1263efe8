"""Classifier checkpoints: safetensors state dict plus pnc metadata (docs/formats.md).

Layer io. A model file records the architecture and its keyword arguments, the ordered class names,
the input channels and size, the normalisation, the training data (when pnc trained it) and the
sha256 of its tensor contents. Plain state dicts written by other tools load when the caller supplies
the architecture and class names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..core.errors import (
    CheckpointError,
    IncompatibleError,
    UnknownArchitectureError,
    UsageError,
    VerificationError,  # noqa: F401  (documented in load_model's Raises)
)
from ..core.version import __version__
from ..nets.network import Network, build_network
from ..nets.registry import get_architecture
from .safetensors_io import (
    check_hashes,
    check_kind,
    check_version,
    content_sha256,
    json_meta,
    parse_json_meta,
    read_header,
    read_safetensors,
    seal,
    write_safetensors,
)

FORMAT_VERSION = 2  # v2: pnc.seal covers the metadata too; v1 files still load (with a note)
SEALED_SINCE = 2
log = logging.getLogger(__name__)
KIND_MODEL = "model"
KEY_KIND = "pnc.kind"
KEY_VERSION = "pnc.format_version"
KEY_SHA = "pnc.sha256"


def _no_metadata(path: str | Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: no pnc metadata (a plain state dict); import it first with pnc import, "
        "giving its arch and classes (docs/cli.md)",
        options=("arch", "classes"),
    )


@dataclass(frozen=True)
class ModelSpec:
    """What a model file says about its model (everything but the weights)."""

    arch: str
    classes: tuple[str, ...]
    in_channels: int
    input_size: int
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    training: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_metadata(self) -> dict[str, str]:
        meta = {
            "pnc.arch": self.arch,
            "pnc.arch_kwargs": json_meta(self.arch_kwargs),
            "pnc.classes": json_meta(list(self.classes)),
            "pnc.input": json_meta({"channels": self.in_channels, "size": self.input_size}),
            "pnc.normalization": json_meta({"mean": list(self.mean), "std": list(self.std)}),
        }
        if self.training is not None:
            meta["pnc.training"] = json_meta(self.training)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], path: str | Path) -> ModelSpec:
        """The spec from a header, every value type-checked and bounded (one-line CheckpointError naming
        the file and the key otherwise)."""
        if "pnc.arch" not in meta:
            raise CheckpointError(_no_metadata(path))

        def bad(key: str, what: str) -> CheckpointError:
            return CheckpointError(f"{path}: metadata key {key!r} must be {what}; the file is corrupt")

        arch = meta["pnc.arch"]
        if not 0 < len(arch) <= 200:
            raise bad("pnc.arch", "an architecture name of 1 to 200 characters")
        classes = parse_json_meta(meta, "pnc.classes", path)
        if (
            not isinstance(classes, list)
            or not 1 <= len(classes) <= MAX_CLASSES
            or not all(isinstance(c, str) and 0 < len(c) <= 1000 for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise bad("pnc.classes", f"a list of 1 to {MAX_CLASSES} distinct non-empty class names")
        inp = parse_json_meta(meta, "pnc.input", path)
        if not (
            isinstance(inp, dict)
            and _int_in(inp.get("channels"), 1, 64)
            and _int_in(inp.get("size"), 1, 4096)
        ):
            raise bad("pnc.input", '{"channels": 1..64, "size": 1..4096}')
        channels = int(inp["channels"])
        kwargs = parse_json_meta(meta, "pnc.arch_kwargs", path, {})
        if not isinstance(kwargs, dict):
            raise bad("pnc.arch_kwargs", "a JSON object")
        norm = parse_json_meta(meta, "pnc.normalization", path)
        ok = isinstance(norm, dict) and all(
            isinstance(norm.get(k), list)
            and len(norm[k]) in (1, channels)
            and all(_finite(v) for v in norm[k])
            for k in ("mean", "std")
        )
        if not ok or min(norm["std"]) <= 0:
            raise bad(
                "pnc.normalization",
                f'{{"mean": [...], "std": [...]}} with 1 or {channels} finite values, std > 0',
            )
        training = parse_json_meta(meta, "pnc.training", path, None)
        if training is not None and not isinstance(training, dict):
            raise bad("pnc.training", "a JSON object")
        return cls(
            arch=arch,
            classes=tuple(classes),
            in_channels=channels,
            input_size=int(inp["size"]),
            arch_kwargs=kwargs,
            mean=tuple(float(v) for v in norm["mean"]),
            std=tuple(float(v) for v in norm["std"]),
            training=training,
        )


MAX_CLASSES = 100_000


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class LoadedModel:
    path: Path
    network: Network
    spec: ModelSpec
    sha256: str
    metadata: dict[str, str]


def build_from_spec(spec: ModelSpec) -> Network:
    net = build_network(
        spec.arch,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        input_size=spec.input_size,
        arch_kwargs=spec.arch_kwargs,
    )
    net.mean = torch.tensor(spec.mean, dtype=torch.float32)
    net.std = torch.tensor(spec.std, dtype=torch.float32)
    return net


def model_metadata(
    spec: ModelSpec, tensors: Mapping[str, torch.Tensor], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    meta = {
        "format": "pt",
        KEY_KIND: KIND_MODEL,
        KEY_VERSION: str(FORMAT_VERSION),
        "pnc.writer": f"pnc-cli {__version__}",
        KEY_SHA: content_sha256(tensors),
    }
    meta.update(spec.to_metadata())
    meta.update(extra or {})
    return seal(meta)


def save_model(
    path: str | Path,
    network: Network,
    spec: ModelSpec,
    *,
    force: bool = False,
    extra: Mapping[str, str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """Write a model file atomically; returns the content sha256. ``provenance``: see core/provenance.py."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.model.state_dict().items()}
    meta = model_metadata(spec, tensors, extra)
    write_safetensors(path, tensors, meta, force=force, provenance=provenance)
    return meta[KEY_SHA]


def check_state_dict(network: Network, tensors: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Keys and shapes must match exactly; the error names the first mismatching tensors."""
    expected = {k: tuple(v.shape) for k, v in network.model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            parts.append(", ".join(f"{k} is {list(got[k])} not {list(expected[k])}" for k in wrong[:3]))
        raise IncompatibleError(
            f"{path}: state dict does not match architecture {network.arch!r}: {'; '.join(parts)}"
        )


def _plain_spec(tensors: Mapping[str, torch.Tensor], path: Path, overrides: Mapping[str, Any]) -> ModelSpec:
    if not overrides.get("arch") or not overrides.get("classes"):
        raise _no_metadata(path)
    arch, classes = overrides["arch"], tuple(overrides["classes"])
    size = overrides.get("input_size") or get_architecture(arch).default_input_size
    channels = overrides.get("in_channels")
    if channels is None:
        channels = _first_conv_channels(arch, len(classes), size, tensors, overrides.get("arch_kwargs"))
    mean = tuple(float(v) for v in overrides.get("mean") or (0.0,))
    std = tuple(float(v) for v in overrides.get("std") or (1.0,))
    if len(mean) not in (1, channels) or len(std) not in (1, channels) or min(std) <= 0:
        raise UsageError(
            f"mean and std need 1 or {channels} values and std > 0, got {list(mean)} / {list(std)}",
            options=("mean", "std"),
        )
    return ModelSpec(
        arch=arch,
        classes=classes,
        in_channels=channels,
        input_size=size,
        arch_kwargs=dict(overrides.get("arch_kwargs") or {}),
        mean=mean,
        std=std,
    )


def _first_conv_channels(
    arch: str,
    num_classes: int,
    size: int,
    tensors: Mapping[str, torch.Tensor],
    arch_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Input channels of a plain state dict: those of the architecture's first conv weight (1 if none)."""
    try:
        probe = build_network(
            arch, num_classes=num_classes, in_channels=1, input_size=size, arch_kwargs=dict(arch_kwargs or {})
        ).model.state_dict()
    except UsageError:
        return 1
    first = next((k for k, v in probe.items() if v.dim() == 4), None)
    t = tensors.get(first) if first else None
    return int(t.shape[1]) if t is not None and t.dim() == 4 else 1


def read_spec(path: str | Path) -> tuple[ModelSpec, dict[str, str]]:
    """Model spec from the header only (no tensors loaded)."""
    _, meta = read_header(path)
    return ModelSpec.from_metadata(meta, path), meta


def load_model(path: str | Path, *, verify: bool = True, **overrides: Any) -> LoadedModel:
    """Load a model file (or a plain state dict with ``arch``/``classes`` overrides) as a frozen Network.

    Raises:
        CheckpointError: unreadable file or missing metadata (exit 2).
        IncompatibleError: tensors that do not fit the architecture (exit 4).
        VerificationError: tensor contents differ from the recorded sha256 (exit 3).
    """
    p = Path(path)
    tensors, meta = read_safetensors(p)
    return model_from_tensors(p, tensors, meta, verify=verify, **overrides)


def model_from_tensors(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, str],
    *,
    verify: bool = True,
    **overrides: Any,
) -> LoadedModel:
    """``load_model`` on tensors already read (``path`` names them in errors); ``pnc import`` uses it."""
    p, meta = path, dict(meta)
    if KEY_KIND in meta:  # pnc files say what they are; a plain state dict says nothing
        check_kind(meta, KIND_MODEL, p)
    if KEY_KIND in meta or KEY_VERSION in meta or "pnc.arch" in meta:  # a pnc file, not a plain state dict
        version = check_version(meta, FORMAT_VERSION, p) if KEY_KIND in meta or KEY_VERSION in meta else 1
        if verify:
            check_hashes(tensors, meta, p, sealed=version >= SEALED_SINCE)
        if version < SEALED_SINCE:
            log.info(
                "%s: model format v%d: its metadata is not covered by a hash (rewrite it with pnc)",
                p,
                version,
            )
    if "pnc.arch" in meta:
        spec = ModelSpec.from_metadata(meta, p)
        if overrides.get("classes"):
            spec = replace(spec, classes=tuple(overrides["classes"]))
    else:
        spec = _plain_spec(tensors, p, overrides)
    sha = content_sha256(tensors)
    try:
        network = build_from_spec(spec)
    except UnknownArchitectureError as exc:  # unknown or untrusted: the user's to fix (exit 2)
        raise type(exc)(f"{p}: {exc}", options=exc.options) from None
    except UsageError as exc:
        raise IncompatibleError(f"{p}: {exc}", options=exc.options) from None
    check_state_dict(network, tensors, p)
    network.model.load_state_dict(dict(tensors), strict=True)
    network.freeze()
    return LoadedModel(p, network, spec, sha, meta)
