"""Orchestration of ``pnc apply`` and ``pnc remove``: stack deltas on a target, strip them again.

Layer api: reads files, checks that they belong together, writes files; returns plain JSON-able dicts.
``apply`` keeps the target's tensors and metadata untouched inside the cloned file (docs/method-spec.md §1, §3
"Several deltas may be stacked"); ``remove`` with every delta gone writes the target back and proves it
(§7 "Recoverable": content sha256, and the file's sha256 when the original was written by pnc).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from ..core.errors import CheckpointError, IncompatibleError, UsageError, VerificationError
from ..io.delta_file import (
    KIND_CLONED,
    KIND_DELTA,
    ClonedFile,
    DeltaFile,
    count_params,
    file_kind,
    read_cloned,
    read_delta,
    target_bytes,
    write_cloned,
)
from ..io.model_file import FORMAT_VERSION as MODEL_FORMAT_VERSION
from ..io.model_file import SEALED_SINCE as MODEL_SEALED_SINCE
from ..io.model_file import LoadedModel, load_model
from ..io.safetensors_io import (
    atomic_write_bytes,
    check_hashes,
    check_output,
    check_version,
    content_sha256,
    file_sha256,
    read_header,
    read_safetensors,
    serialize,
)
from ..method.branch_state import adapter_out_shape
from ..method.selector import slice_state

LOG = logging.getLogger(__name__)


def load_base(target: str | Path) -> ClonedFile:
    """A model file as a ClonedFile without deltas, or a cloned file with its deltas (to stack onto)."""
    kind = file_kind(target)
    if kind == KIND_CLONED:
        return read_cloned(target)
    if kind not in ("model", "plain"):
        raise CheckpointError(
            f"{target}: is a {kind} file; target takes a model or a cloned model", options=("target",)
        )
    tensors, meta = read_safetensors(target)
    sha = content_sha256(tensors)
    if "pnc.kind" in meta or "pnc.format_version" in meta:  # a pnc model: checked as load_model does
        version = check_version(meta, MODEL_FORMAT_VERSION, target)
        check_hashes(tensors, meta, target, sealed=version >= MODEL_SEALED_SINCE)
    elif "pnc.sha256" in meta and meta["pnc.sha256"] != sha:
        raise VerificationError(
            f"{target}: tensor contents do not match the recorded sha256; the file was modified"
        )
    on_disk = file_sha256(target)
    reproducible = hashlib.sha256(serialize(tensors, meta)).hexdigest() == on_disk
    if not reproducible:
        LOG.info(
            "%s was not written by pnc: remove will restore its tensors and metadata, not its exact bytes",
            target,
        )
    return ClonedFile(tensors, meta, on_disk if reproducible else None, [])


def _check_fits(
    delta: DeltaFile,
    path: str | Path,
    target_sha: str,
    target: str | Path,
    names: set[str],
    classes: list[str],
) -> None:
    made_for = str(delta.info["target"]["sha256"])
    if made_for != target_sha:
        raise IncompatibleError(
            f"delta {delta.name} ({path}) was made for target {made_for[:12]}, not {target_sha[:12]} "
            f"({target})"
        )
    if delta.name in names:
        raise IncompatibleError(
            f"delta name {delta.name!r} ({path}) is already used in this cloned model; "
            "rename one of the deltas"
        )
    clash = [c for c in delta.classes if c in classes]
    if clash:
        raise IncompatibleError(
            f"delta {delta.name} ({path}) adds classes {', '.join(clash)}, which the model already predicts"
        )


def _find_source(
    sha: str, sources: Sequence[str | Path], cache: dict[str, LoadedModel]
) -> LoadedModel | None:
    for path in sources:
        _, meta = read_header(path)
        if meta.get("pnc.sha256", sha) != sha:
            continue
        key = str(Path(path).resolve())
        if key not in cache:
            cache[key] = load_model(path)
        if cache[key].sha256 == sha:
            return cache[key]
    return None


def materialize(delta: DeltaFile, source: LoadedModel) -> DeltaFile:
    """Online → offline: slice the kept filters of source blocks ``[R_s:E_s]`` into ``source.*`` tensors."""
    pos = delta.spec.position
    r_s, e_s = pos.source, pos.source_end
    blocks = source.network.blocks
    arch = delta.info["source"].get("arch")
    if arch and arch != source.spec.arch:
        raise IncompatibleError(
            f"delta {delta.name}: source is a {arch}, the file given is a {source.spec.arch}"
        )
    if not 0 <= r_s <= e_s <= len(blocks):
        raise IncompatibleError(f"delta {delta.name}: source span {r_s}..{e_s} is outside 0..{len(blocks)}")
    in_shape = adapter_out_shape(delta.spec.adapter)
    sliced = slice_state(nn.ModuleList(blocks[r_s:e_s]), delta.masks(), in_shape)
    tensors = dict(delta.tensors)
    tensors.update({f"source.{k}": v.detach().cpu().clone().contiguous() for k, v in sliced.items()})
    info = {**delta.info, "mode": "offline"}
    if "extra_params" in info:
        info["extra_params"] = count_params(tensors)
    return DeltaFile(delta.name, tensors, info)


def assemble(
    target: str | Path,
    deltas: Sequence[str | Path],
    sources: Sequence[str | Path],
    output: str | Path,
    force: bool,
) -> tuple[Path, ClonedFile, str, list[DeltaFile]]:
    """Everything ``apply_delta`` checks and builds, without writing: (output, cloned, target sha, added)."""
    if not deltas:
        raise UsageError("give at least one file to apply (delta)", options=("delta",))
    out = check_output(output, force=force, inputs=[target, *deltas, *sources])
    base = load_base(target)
    target_sha = base.target_sha256
    names = {d.name for d in base.deltas}
    classes = base.classes
    cache: dict[str, LoadedModel] = {}
    added: list[DeltaFile] = []
    for path in deltas:
        delta = read_delta(path)
        _check_fits(delta, path, target_sha, target, names, classes)
        _check_reads(delta, path, [*base.deltas, *added])
        if delta.mode == "online":
            want = str(delta.info["source"]["sha256"])
            source = _find_source(want, sources, cache)
            if source is None:
                raise UsageError(
                    f"online delta {delta.name} needs its source file (sha {want[:12]}); pass source",
                    options=("source",),
                )
            delta = materialize(delta, source)
        added.append(delta)
        names.add(delta.name)
        classes += delta.classes
    cloned = replace(base, deltas=[*base.deltas, *added])
    return out, cloned, target_sha, added


def apply_delta(
    *,
    target: str | Path,
    deltas: Sequence[str | Path],
    sources: Sequence[str | Path] = (),
    output: str | Path,
    force: bool = False,
) -> dict[str, Any]:
    """Write a cloned model: the target (or a cloned model) plus the given deltas, in order.

    Raises:
        IncompatibleError: a delta made for another target, a reused delta name or class (exit 4).
        UsageError: an online delta without its ``sources`` file; an unreadable file (exit 2).
    """
    out, cloned, target_sha, added = assemble(target, deltas, sources, output, force)
    sha = write_cloned(out, cloned, force=force)
    extra = sum(d.num_params for d in cloned.deltas)
    return {
        "output": str(out),
        "sha256": sha,
        "target_sha256": target_sha,
        "deltas": [d.name for d in cloned.deltas],
        "added": [d.name for d in added],
        "classes": cloned.classes,
        "extra_params": extra,
        "extra_params_ratio": extra / max(1, count_params(cloned.target_tensors)),
    }


def _restore(cloned: ClonedFile, out: Path, force: bool) -> dict[str, Any]:
    """Write the original target back; both hashes are checked on the temporary file, before it
    replaces anything, so a failed check leaves an existing output untouched."""
    want = cloned.target_sha256
    found: dict[str, str] = {}

    def verify(tmp: Path) -> None:
        tensors, _ = read_safetensors(tmp)
        sha = content_sha256(tensors)
        if sha != want:
            raise VerificationError(
                f"{out}: restored tensors hash to {sha[:12]}, the original to {want[:12]}; nothing written"
            )
        on_disk = file_sha256(tmp)
        if cloned.target_file_sha256 and on_disk != cloned.target_file_sha256:
            raise VerificationError(
                f"{out}: restored file hashes to {on_disk[:12]}, the original to "
                f"{cloned.target_file_sha256[:12]}; nothing written"
            )
        found.update(sha=sha, file=on_disk)

    atomic_write_bytes(out, target_bytes(cloned), force=force, verify=verify)
    return {
        "sha256": found["sha"],
        "file_sha256": found["file"],
        "identical_to_original": cloned.target_file_sha256 == found["file"],
        "tensors_identical": True,
    }


def _check_lifo(stack: Sequence[DeltaFile], drop: Sequence[str], path: str | Path) -> None:
    """A joint-head delta reads every delta below it: none of those may go while it stays (exit 4)."""
    for i, d in enumerate(stack):
        if d.name in drop or d.spec.head.kind != "joint":
            continue
        below = [b.name for b in stack[:i] if b.name in drop]
        if below:
            raise IncompatibleError(
                f"{path}: delta {d.name} (joint head) reads delta {below[0]}; remove {d.name} first "
                "(joint-head deltas come off last-in-first-out), or remove all",
                options=("all",),
            )


def _check_reads(delta: DeltaFile, path: str | Path, stack: Sequence[DeltaFile]) -> None:
    """A joint-head delta applies only on top of exactly the stack it was fitted on (exit 4)."""
    if delta.spec.head.kind != "joint":
        return
    want = [(r["name"], r["sha256"]) for r in delta.spec.reads]
    have = [(d.name, d.sha256) for d in stack]
    if want != have:

        def names(pairs: Sequence[tuple[str, str]]) -> str:
            return ", ".join(n for n, _ in pairs) or "none"

        raise IncompatibleError(
            f"delta {delta.name} ({path}) has a joint head fitted on top of deltas [{names(want)}], "
            f"but the model has [{names(have)}]; apply it to the model it was cloned on"
        )


def select_removal(
    cloned: str | Path,
    output: str | Path,
    names: Sequence[str] | None,
    all: bool,
    force: bool,  # noqa: A002
) -> tuple[Path, ClonedFile, list[str], list[DeltaFile]]:
    """What ``remove_delta`` would do, checked, without writing: (output, model, removed names, kept)."""
    if names and all:
        raise UsageError("give delta NAME or all, not both", options=("delta", "all"))
    out = check_output(output, force=force, inputs=[cloned])
    kind = file_kind(cloned)
    if kind != KIND_CLONED:
        what = "a delta file" if kind == KIND_DELTA else f"a {kind} file"
        raise UsageError(
            f"{cloned}: file carries no delta ({what}); remove takes a cloned model from `pnc apply`"
        )
    model = read_cloned(cloned)
    present = [d.name for d in model.deltas]
    drop = list(dict.fromkeys(names)) if names else present
    unknown = [n for n in drop if n not in present]
    if unknown:
        raise UsageError(f"{cloned}: no delta named {', '.join(unknown)}; it has {', '.join(present)}")
    _check_lifo(model.deltas, drop, cloned)
    keep = [d for d in model.deltas if d.name not in drop]
    return out, model, drop, keep


def check_verifiable(model: ClonedFile, keep: Sequence[DeltaFile], cloned: str | Path) -> None:
    """Byte-identity of the restored target can be proven: no delta stays and the original file's
    sha256 is recorded (the target was written by pnc). VerificationError (exit 3) otherwise."""
    if keep:
        raise VerificationError(
            f"{cloned}: {len(keep)} delta(s) would remain ({', '.join(d.name for d in keep)}); "
            "the result would not be the original target; nothing written"
        )
    if not model.target_file_sha256:
        raise VerificationError(
            f"{cloned}: the original target file's sha256 is not recorded (it was not written by pnc), "
            "so byte identity cannot be verified; nothing written"
        )


def remove_delta(
    *,
    cloned: str | Path,
    output: str | Path,
    names: Sequence[str] | None = None,
    all: bool = False,  # noqa: A002  (mirrors --all)
    force: bool = False,
    verify: bool = False,
) -> dict[str, Any]:
    """Strip deltas from a cloned model; with none left, write the original target back and verify it.

    ``verify``: refuse (VerificationError, nothing written) unless the result will be byte-identical
    to the original target file (every delta removed and the original's file sha256 recorded).

    Without ``names`` every delta is removed. Raises UsageError for a file without deltas or an unknown
    name (exit 2) and VerificationError when the restored target differs from the recorded hashes (exit 3).
    """
    out, model, drop, keep = select_removal(cloned, output, names, all, force)
    if verify:
        check_verifiable(model, keep, cloned)
    doc: dict[str, Any] = {"output": str(out), "removed": drop, "remaining": [d.name for d in keep]}
    if keep:
        rest = replace(model, deltas=keep)
        sha = write_cloned(out, rest, force=force)
        return {**doc, "restored": False, "sha256": sha, "classes": rest.classes}
    result = _restore(model, out, force)
    return {**doc, "restored": True, "classes": model.target_classes, **result}


def read_delta_info(path: str | Path) -> dict[str, Any]:
    """A delta file's info plus its sha256, size in parameters and tensor names (reads the tensors)."""
    delta = read_delta(path)
    return {
        "path": str(path),
        "kind": KIND_DELTA,
        "sha256": delta.sha256,
        "num_params": delta.num_params,
        "tensors": sorted(delta.tensors),
        **delta.info,
    }
