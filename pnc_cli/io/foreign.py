"""Checkpoints written by other tools: ``.safetensors`` and PyTorch's ``.pt/.pth/.bin`` (``pnc import``).

Layer L1 (torch). This is the only module of pnc that calls ``torch.load``, and it always passes
``weights_only=True``: PyTorch's restricted unpickler, which builds tensors, dicts, lists and numbers
and refuses every other Python global *before* anything runs (a pickle whose ``__reduce__`` calls
``os.system`` is refused, not executed). A file that needs more than that (a whole pickled
``nn.Module``, a custom class, a NumPy array) is refused with one line that says why and how to
re-save it. tests/unit/test_layering.py keeps ``torch.load`` here and only in this form.

A checkpoint is a state dict (names → tensors), possibly nested one level in a training checkpoint
(``{"epoch": 3, "state_dict": {...}, "optimizer": {...}}``): ``key`` picks the entry, or the one entry
that holds a state dict is found when there is exactly one. ``strip_prefix`` removes a key prefix
(``module.`` from ``nn.DataParallel``/DDP and ``_orig_mod.`` from ``torch.compile`` are removed by
default when every key has it).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, UsageError
from .safetensors_io import read_safetensors

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
AUTO_PREFIXES = ("module.", "_orig_mod.")
MAX_CHECKPOINT_BYTES = 8 * 1024**3


@dataclass(frozen=True)
class ForeignCheckpoint:
    """The tensors of a checkpoint and how they were found (recorded in the imported model's provenance)."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    format: str  # "safetensors" or "pytorch-pickle"
    key: str | None  # the top-level entry the state dict came from (None: the file is the state dict)
    stripped_prefix: str | None


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _refusal(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line."""
    text = " ".join(str(exc).split())
    match = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
    if match:
        name = match.group(1)
        return (
            f"{path}: refused: loading it would run Python code outside plain tensors (it needs {name}); "
            "pnc reads only weights. Re-save the state dict: torch.save(model.state_dict(), 'weights.pth') "
            "or safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
        )
    return (
        f"{path}: refused: not a plain PyTorch weights file ({text.split('. ')[0][:160]}); "
        "re-save the state dict with "
        "torch.save(model.state_dict(), 'weights.pth')"
    )


def _load_pickle(path: Path) -> Any:
    """``torch.load`` with the restricted unpickler, on the CPU; refusals become one-line errors."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...: never run anything
        raise CheckpointError(_refusal(path, exc)) from None


def _select(obj: Any, path: Path, key: str | None) -> tuple[dict[str, torch.Tensor], str | None]:
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = ", ".join(sorted(str(k) for k in obj)[:8]) if isinstance(obj, Mapping) else "none"
            raise UsageError(
                f"{path}: has no entry {key!r} (top-level entries: {keys}); fix key", options=("key",)
            )
        if not _is_state_dict(obj[key]):
            raise CheckpointError(
                f"{path}: entry {key!r} is not a state dict (names → tensors); fix key", options=("key",)
            )
        return dict(obj[key]), key
    if _is_state_dict(obj):
        return dict(obj), None
    if isinstance(obj, Mapping):
        found = sorted(str(k) for k, v in obj.items() if _is_state_dict(v))
        if len(found) == 1:
            return dict(obj[found[0]]), found[0]
        if len(found) > 1:
            raise UsageError(
                f"{path}: several entries hold state dicts ({', '.join(found)}); choose one with key",
                options=("key",),
            )
        keys = ", ".join(sorted(str(k) for k in obj)[:8])
        raise CheckpointError(
            f"{path}: no state dict found (top-level entries: {keys}); pass key or re-save "
            "torch.save(model.state_dict(), 'weights.pth')",
            options=("key",),
        )
    raise CheckpointError(
        f"{path}: holds a {type(obj).__name__}, not a state dict; "
        "re-save torch.save(model.state_dict(), 'weights.pth')"
    )


def _strip(
    tensors: dict[str, torch.Tensor], path: Path, prefix: str | None
) -> tuple[dict[str, torch.Tensor], str | None]:
    if prefix is None:
        for auto in AUTO_PREFIXES:
            if all(k.startswith(auto) for k in tensors):
                prefix = auto
                break
        else:
            return tensors, None
    if prefix == "":
        return tensors, None
    if not any(k.startswith(prefix) for k in tensors):
        raise UsageError(
            f"{path}: no tensor name starts with {prefix!r}; fix strip_prefix", options=("strip_prefix",)
        )
    out = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    if len(out) != len(tensors):
        raise UsageError(
            f"{path}: stripping {prefix!r} makes two tensor names equal; fix strip_prefix",
            options=("strip_prefix",),
        )
    return out, prefix


def read_foreign_checkpoint(
    path: str | Path, *, key: str | None = None, strip_prefix: str | None = None
) -> ForeignCheckpoint:
    """The state dict in a ``.safetensors`` or pickle-based PyTorch checkpoint, without running code.

    ``strip_prefix=None`` strips ``module.``/``_orig_mod.`` when every name has it; ``""`` strips nothing.

    Raises:
        CheckpointError: missing, unreadable or refused file, or no state dict in it (exit 2).
        UsageError: a ``key`` or ``strip_prefix`` that does not fit the file (exit 2).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found; check the path")
    if p.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(
            f"{p}: larger than {MAX_CHECKPOINT_BYTES >> 30} GiB; not a classifier checkpoint"
        )
    with open(p, "rb") as f:
        head = f.read(8)
    is_pickle = p.suffix.lower() in PICKLE_SUFFIXES or zipfile.is_zipfile(p) or head[:1] == b"\x80"
    if not is_pickle:
        tensors, meta = read_safetensors(p)
        if key is not None:
            raise UsageError(
                f"{p}: key applies to .pt/.pth/.bin checkpoints; a safetensors file is one state dict",
                options=("key",),
            )
        if not tensors:
            raise CheckpointError(f"{p}: holds no tensors")
        tensors, stripped = _strip(tensors, p, strip_prefix)
        return ForeignCheckpoint(tensors, meta, "safetensors", None, stripped)
    obj = _load_pickle(p)
    tensors, found = _select(obj, p, key)
    tensors, stripped = _strip(tensors, p, strip_prefix)
    return ForeignCheckpoint(tensors, {}, "pytorch-pickle", found, stripped)
