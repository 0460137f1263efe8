"""Test helper: copies of pnc files with metadata edited (to build bad inputs)."""

from __future__ import annotations

from pathlib import Path

from pnc_cli.io.safetensors_io import KEY_SEAL, metadata_sha256, read_safetensors, write_safetensors


def edit_metadata(src: Path, dst: Path, *, reseal: bool, **changes: str | None) -> Path:
    """Copy ``src`` to ``dst`` with metadata keys changed (``__`` spells a dot; None removes the key);
    ``reseal`` recomputes ``pnc.seal`` so only the edited values are wrong, not the seal."""
    tensors, meta = read_safetensors(src)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    if reseal and KEY_SEAL in meta:
        meta[KEY_SEAL] = metadata_sha256(meta)
    write_safetensors(dst, tensors, meta, force=True)
    return dst
