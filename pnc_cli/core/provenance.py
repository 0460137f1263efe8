"""Provenance: what made a file — command line, versions, options actually used, data fingerprint.

Layer L0 (stdlib + torch). Every file pnc writes carries one metadata key, ``pnc.provenance``, a JSON
object (docs/formats.md#provenance). ``io.safetensors_io.write_safetensors`` adds it to every kind of
file; callers that know more pass ``options`` (the settings that actually produced the tensors, e.g.
the search settings a delta was trained with, not those of a command that only finished it) and
``data`` (a fingerprint from ``data_fingerprint``). No timestamp and no host name: the same command on
the same inputs writes the same bytes.

Hashes are labelled everywhere: a **content sha256** hashes tensor names, dtypes, shapes and bytes
(``pnc.sha256``; unchanged by metadata edits), a **file sha256** hashes the file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
from collections.abc import Mapping
from typing import Any

import torch

from .version import __version__

KEY_PROVENANCE = "pnc.provenance"
PROVENANCE_VERSION = 1


def command_line(argv: list[str] | None = None) -> str:
    """The command line that is running, with the program shown as ``pnc`` when it is pnc itself."""
    args = list(sys.argv if argv is None else argv)
    if not args:
        return ""
    prog = os.path.basename(args[0])
    if prog in ("pnc", "__main__.py") or args[0].endswith(os.path.join("pnc_cli", "__main__.py")):
        prog = "pnc"
    return shlex.join([prog, *args[1:]])


def tensor_sha256(*tensors: torch.Tensor) -> str:
    """Content sha256 of tensors in order (dtype, shape, bytes): a data fingerprint, not a file hash."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_fingerprint(
    images: torch.Tensor, labels: torch.Tensor, identity: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Where data came from (name, classes, split, ...) and the content sha256 of exactly what was used."""
    return {
        **dict(identity or {}),
        "num_samples": int(images.shape[0]),
        "content_sha256": tensor_sha256(images, labels),
    }


def record(
    options: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance object: base facts (command, versions) plus what the caller knows."""
    doc: dict[str, Any] = {
        "version": PROVENANCE_VERSION,
        "command": command_line(),
        "pnc_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "python_version": platform.python_version(),
    }
    if options is not None:
        doc["options"] = dict(options)
    if data is not None:
        doc["data"] = dict(data)
    doc.update(extra)
    return doc


def to_json(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


def with_provenance(
    metadata: Mapping[str, str], provenance: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``metadata`` plus ``pnc.provenance`` on pnc files (those with ``pnc.*`` keys); one already there
    is kept as it is (copied files keep their own)."""
    out = dict(metadata)
    if KEY_PROVENANCE not in out and any(k.startswith("pnc.") for k in out):
        out[KEY_PROVENANCE] = to_json(record(**dict(provenance or {})))
    return out


def read(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The provenance of a header, or None (older files, or a value that is not a JSON object)."""
    raw = metadata.get(KEY_PROVENANCE)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # malformed or nested past the parser's depth: no provenance
        return None
    return doc if isinstance(doc, dict) else None
