"""``pnc_cli.load``: a target plus deltas as one ``torch.nn.Module``, used the way PEFT models are.

Layer L4. ``load(path)`` takes a model file, a cloned-model file, or a target with delta files, and
returns a ``PncModel``: an ``nn.Module`` whose target network is a registered child (so
``state_dict()``, ``.to()``, ``.double()``, ``.half()``, ``torch.jit.trace``, ``torch.export`` and
``torch.compile`` see all of it) and whose deltas can be added and removed in memory:

    model = pnc_cli.load("target.safetensors", deltas=["delta.safetensors"])
    model.add_delta("delta6.safetensors"); model.delete_delta("clone-5")
    target = model.unload()            # every delta removed: exactly the target again
    model.save("cloned.safetensors")   # a cloned file (or the target file, byte for byte, when no delta)

Inputs are images in [0, 1], ``[N, C, S, S]`` with the model's channels and size; the model applies its
own normalisation. The module is frozen (eval mode, no gradients): it is for inference and export;
``save`` writes the tensors read from the files, never in-memory edits (a ``.half()`` model still saves
float32). Built on ``method.cloned_model.ClonedModel`` and the delta/cloned file readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UsageError
from ..io.delta_file import DeltaFile, read_delta, target_bytes, write_cloned
from ..io.model_file import ModelSpec
from ..io.safetensors_io import atomic_write_bytes, check_output
from ..method.cloned_model import ClonedModel
from .branches import branch_from_delta, cloned_from_file
from .deltas import _check_fits, _check_lifo, _check_reads, _find_source, load_base, materialize


class PncModel(nn.Module):
    """A frozen target with zero or more deltas; logits over ``classes`` (target's, then each delta's)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self._file = load_base(path)
        self._path = str(path)
        cloned, spec = cloned_from_file(self._file, path)
        self.cloned: ClonedModel = cloned  # holds the target network as a child (``cloned.target_model``)
        self.spec: ModelSpec = spec
        self._freeze()

    # --- nn.Module -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x`` in [0, 1], ``[N, C, S, S]``."""
        return self.cloned(x)

    def train(self, mode: bool = True) -> PncModel:
        """Always eval: the target and the deltas are frozen (BatchNorm statistics never move)."""
        return super().train(False)

    def _freeze(self) -> None:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    # --- what it is ------------------------------------------------------------------------------

    @property
    def target(self) -> nn.Module:
        """The target network (a registered child: ``state_dict``, ``.to``, ``.double`` include it)."""
        return self.cloned.target_model

    @property
    def classes(self) -> list[str]:
        return list(self.cloned.classes)

    @property
    def target_classes(self) -> list[str]:
        return list(self.cloned.target_classes)

    @property
    def deltas(self) -> list[str]:
        """Names of the deltas, in output order."""
        return [d.name for d in self._file.deltas]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.spec.in_channels, self.spec.input_size, self.spec.input_size)

    @property
    def target_sha256(self) -> str:
        """Content sha256 of the target's tensors (what every delta records as its target)."""
        return self._file.target_sha256

    # --- deltas ----------------------------------------------------------------------------------

    def add_delta(self, delta: str | Path | DeltaFile, *, source: str | Path | None = None) -> str:
        """Add a delta (a file or a ``DeltaFile``) after the existing ones; returns its name.

        An online delta needs its ``source`` model file. Raises ``IncompatibleError`` for a delta made
        for another target, a name or class already present (exit 4 on the command line).
        """
        where = str(delta) if not isinstance(delta, DeltaFile) else f"delta {delta.name}"
        d = delta if isinstance(delta, DeltaFile) else read_delta(delta)
        _check_fits(d, where, self.target_sha256, self._path, set(self.deltas), self.classes)
        _check_reads(d, where, self._file.deltas)
        if d.mode == "online":
            found = _find_source(str(d.info["source"]["sha256"]), [source] if source else [], {})
            if found is None:
                raise UsageError(
                    f"online delta {d.name} needs its source model file: add_delta(..., source=PATH)"
                )
            d = materialize(d, found)
        branch = branch_from_delta(d)
        ref = next(self.target.parameters(), None)
        if ref is not None:
            branch.to(device=ref.device, dtype=ref.dtype)
        for p in branch.parameters():
            p.requires_grad_(False)
        self.cloned.branches[d.name] = branch.eval()
        self._file = replace(self._file, deltas=[*self._file.deltas, d])
        return d.name

    def delete_delta(self, name: str) -> None:
        """Remove the delta ``name`` (a joint-head delta above it must go first: ``IncompatibleError``)."""
        if name not in self.deltas:
            raise UsageError(f"no delta named {name!r}; this model has: {', '.join(self.deltas) or 'none'}")
        _check_lifo(self._file.deltas, [name], self._path)
        del self.cloned.branches[name]
        self._file = replace(self._file, deltas=[d for d in self._file.deltas if d.name != name])

    def unload(self) -> PncModel:
        """Remove every delta and return this model, now exactly the target (same logits, same tensors)."""
        for name in reversed(self.deltas):  # last in, first out (joint heads read the deltas below)
            self.delete_delta(name)
        return self

    # --- files -----------------------------------------------------------------------------------

    def save(self, path: str | Path, *, force: bool = False) -> dict[str, Any]:
        """Write a cloned-model file, or, without deltas, the target's model file (the original bytes
        when pnc wrote it). Returns ``{"output", "kind", "deltas", "sha256"}`` (content sha256)."""
        out = check_output(path, force=force, inputs=[self._path])
        if self._file.deltas:
            sha = write_cloned(out, self._file, force=force)
            return {"output": str(out), "kind": "cloned", "deltas": self.deltas, "sha256": sha}
        atomic_write_bytes(out, target_bytes(self._file), force=force)
        return {"output": str(out), "kind": "model", "deltas": [], "sha256": self.target_sha256}

    def extra_repr(self) -> str:
        return f"classes={len(self.classes)}, deltas={self.deltas}, input={list(self.input_shape)}"


def load(
    path: str | Path, deltas: Sequence[str | Path] = (), *, sources: Sequence[str | Path] = ()
) -> PncModel:
    """A model, a cloned model, or a target plus ``deltas`` as one frozen ``nn.Module`` (a ``PncModel``).

    ``sources`` are the source model files of online deltas. Images enter in [0, 1]; normalisation is
    inside. Raises the errors of ``pnc apply`` (``CheckpointError``, ``IncompatibleError``, ...).
    """
    model = PncModel(path)
    for d in deltas:
        src = next((s for s in sources if _matches_source(d, s)), None)
        model.add_delta(d, source=src)
    return model


def _matches_source(delta: str | Path, source: str | Path) -> bool:
    try:
        want = read_delta(delta).info["source"]["sha256"]
    except Exception:
        return False
    return _find_source(str(want), [source], {}) is not None
