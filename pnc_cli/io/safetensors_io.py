"""Safetensors reading and writing: deterministic bytes, atomic writes, content hashes, clear errors.

Layer io (torch, safetensors). Every file pnc writes goes through ``write_safetensors``: tensors are
laid out in sorted-name order, the header JSON has sorted keys and metadata values are strings, so the
same tensors and metadata always give the same bytes. Writes go to a temporary file in the output's
directory and are moved into place with ``os.replace``. Nothing here uses pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load

from ..core.errors import CheckpointError, OutputExistsError, UsageError, VerificationError
from ..core.provenance import KEY_PROVENANCE, with_provenance

_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a tensor (contiguous, on the CPU)."""
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def content_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Canonical hash of tensor contents: sorted names, then dtype, shape and bytes of each tensor."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(_dtype_name(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


KEY_SHA = "pnc.sha256"
KEY_SEAL = "pnc.seal"


def metadata_sha256(metadata: Mapping[str, str]) -> str:
    """sha256 of the canonical metadata (sorted keys, compact JSON) without ``pnc.seal`` itself.

    The metadata holds ``pnc.sha256`` (the tensor content hash), so the seal covers the tensors and
    every metadata value: architecture options, class names, delta info.
    """
    body = {k: v for k, v in metadata.items() if k != KEY_SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(metadata: Mapping[str, str]) -> dict[str, str]:
    """The metadata plus ``pnc.seal``; call it last, on the complete metadata (``pnc.sha256`` included)."""
    if KEY_SHA not in metadata:
        raise ValueError("seal() needs pnc.sha256 in the metadata first")
    out = dict(metadata)
    out[KEY_SEAL] = metadata_sha256(out)
    return out


def check_hashes(
    tensors: Mapping[str, torch.Tensor] | None,
    metadata: Mapping[str, str],
    path: str | Path | object,
    *,
    sealed: bool,
) -> None:
    """One order of integrity checks for every pnc file kind (docs/errors.md).

    1. ``pnc.sha256`` must be present (a pnc file without its content hash is refused: exit 2);
    2. when ``sealed`` (the format version records a seal), ``pnc.seal`` must be present (exit 2) and
       match the canonical metadata (exit 3);
    3. when ``tensors`` are given, their content hash must match ``pnc.sha256`` (exit 3).
    ``sealed`` comes from the file's format version, never from the presence of the key, so deleting
    ``pnc.seal`` does not downgrade the check.
    """
    if KEY_SHA not in metadata:
        raise CheckpointError(
            f"{path}: metadata key {KEY_SHA!r} is missing; a pnc file without its content hash is refused "
            "(bring third-party weights in with pnc import)"
        )
    if sealed:
        if KEY_SEAL not in metadata:
            raise CheckpointError(
                f"{path}: metadata key {KEY_SEAL!r} is missing; the file was modified or not written by pnc"
            )
        if metadata[KEY_SEAL] != metadata_sha256(metadata):
            raise VerificationError(
                f"{path}: metadata does not match the recorded {KEY_SEAL}; the file was modified"
            )
    if tensors is not None and metadata[KEY_SHA] != content_sha256(tensors):
        raise VerificationError(
            f"{path}: tensor contents do not match the recorded sha256; the file was modified"
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise UsageError(f"tensor dtype {dtype} cannot be stored; use float32") from None


def serialize(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Deterministic safetensors bytes (sorted names, sorted header keys, 8-byte aligned header)."""
    header: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata value for {key!r} must be a string, got {type(value).__name__}")
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        data = tensor_bytes(t)
        header[name] = {
            "dtype": _dtype_name(t.dtype),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(chunks)


def _replaceable(out: Path) -> Path:
    """The path to replace for output ``out``: ``out`` itself, or the regular file a symlink points to.

    Only regular files are ever replaced: a directory, device, FIFO or socket (or a symlink to one, or
    a dangling symlink) is refused, with or without --force.
    """
    try:
        lst = os.lstat(out)
    except (FileNotFoundError, NotADirectoryError):  # the parent checks of check_output say why
        return out
    except OSError as exc:
        raise UsageError(
            f"output {out} cannot be inspected ({exc.strerror}); choose another output", options=("output",)
        ) from None
    if stat.S_ISLNK(lst.st_mode):
        try:
            st = os.stat(out)
        except OSError:
            raise UsageError(
                f"output {out} is a symbolic link to nothing; pnc only replaces regular files, "
                "choose another output",
                options=("output",),
            ) from None
    else:
        st = lst
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {out} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        raise UsageError(
            f"output {out} is {what}; pnc only replaces regular files (use - for stdout), "
            "choose another output",
            options=("output",),
        )
    return Path(os.path.realpath(out)) if stat.S_ISLNK(lst.st_mode) else out


def check_output(path: str | Path, *, force: bool, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse an existing output without ``force``, an output that is one of the command's ``inputs``
    (same path, symlink or hard link: inputs are never modified, even with ``force``), an output that
    is not a regular file (directory, device, FIFO, socket, or a link to one), and an output directory
    that is missing or not writable. Returns the path to write (a symlink's regular target)."""
    out = Path(path)
    real = _replaceable(out)
    if os.path.lexists(out):
        for inp in inputs:
            if inp is None or str(inp) == "":
                continue
            try:
                same = os.path.samefile(real, inp)
            except OSError:  # input missing (a built-in data name) or unreadable: not the output
                same = False
            if same:
                raise UsageError(
                    f"output {out} is also an input ({inp}); inputs are never modified, "
                    "choose another output",
                    options=("output",),
                )
        if not force:
            raise OutputExistsError(f"output {out} exists; pass force to overwrite it", options=("force",))
    parent = real.parent if str(real.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(
            f"output directory {parent} is not a directory; choose another output", options=("output",)
        )
    if not parent.is_dir():
        raise UsageError(f"output directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise UsageError(
            f"output directory {parent} is not writable; choose another output", options=("output",)
        )
    return real


def _default_mode() -> int:
    """Permissions of a newly created file under the current umask (mkstemp would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(
    path: str | Path,
    data: bytes,
    *,
    force: bool = False,
    inputs: Iterable[str | Path | None] = (),
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place (never half-written).

    ``verify(tmp)`` runs on the complete temporary file before it replaces anything: when it raises,
    an existing output is left untouched. The temporary file lives in the output's directory (same file
    system, so ``os.replace`` is atomic) and is removed on every failure path, Ctrl-C included.
    """
    out = check_output(path, force=force, inputs=inputs)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        if verify is not None:
            verify(Path(tmp))
        check_output(out, force=force, inputs=inputs)  # still a regular file (or absent) right before
        os.replace(tmp, out)
        tmp = None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return out


def write_safetensors(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    force: bool = False,
    inputs: Iterable[str | Path | None] = (),
    verify: Callable[[Path], None] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write tensors and string metadata atomically and deterministically (see ``atomic_write_bytes``).

    Every pnc file (metadata with ``pnc.*`` keys) gets ``pnc.provenance`` (core/provenance.py): the
    command line and versions, plus ``provenance`` (``{"options": ..., "data": ...}``) from callers
    that know them; a ``pnc.provenance`` already in ``metadata`` is kept as it is. When ``metadata``
    is sealed (``pnc.seal``) and the provenance is added here, the seal is recomputed so that it
    covers ``pnc.provenance`` too.
    """
    meta = with_provenance(metadata, provenance)
    if KEY_SEAL in metadata and KEY_PROVENANCE not in metadata:
        meta = seal(meta)
    data = serialize(tensors, meta)
    return atomic_write_bytes(path, data, force=force, inputs=inputs, verify=verify)


# Bytes per element of every safetensors dtype this reader accepts (sub-byte float types excluded).
_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "C64": 8,
}


def _check_entry(p: Path, name: str, entry: Any) -> int:
    """Validate one header entry (dtype, shape, offsets); return its end offset."""
    try:
        start, stop = entry["data_offsets"]
        shape, dtype = entry["shape"], entry["dtype"]
        ok = (
            dtype in _ITEMSIZE
            and isinstance(shape, list)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(start, int)
            and isinstance(stop, int)
            and 0 <= start <= stop
            and stop - start == math.prod(shape) * _ITEMSIZE[dtype]
        )
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{p}: corrupt safetensors entry for tensor {name!r}; re-create the file")
    return stop


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a safetensors header without loading tensors; returns (tensor entries, metadata).

    Raises CheckpointError for a missing, empty, truncated or non-safetensors file.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: file not found; check the path")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, expected a .safetensors file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(
                f"{p}: not a safetensors file (only {size} bytes); re-create or re-download it"
            )
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(
                f"{p}: not a safetensors file (bad header length); re-create or re-download it"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{p}: not a safetensors file (header is not JSON); re-create it") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: not a safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{p}: corrupt safetensors metadata (must map strings to strings)")
    data_len = size - 8 - n
    end = 0
    for name, entry in header.items():
        end = max(end, _check_entry(p, name, entry))
    if end > data_len:
        raise CheckpointError(
            f"{p}: truncated file ({data_len} data bytes, header needs {end}); re-create it"
        )
    return header, dict(metadata)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load all tensors and the metadata of a safetensors file (validated header first)."""
    _, metadata = read_header(path)
    try:
        tensors = st_load(Path(path).read_bytes())
    except Exception as exc:  # the safetensors library raises its own error types
        raise CheckpointError(f"{path}: cannot read tensors ({exc}); the file is corrupt") from None
    return tensors, metadata


def json_meta(value: Any) -> str:
    """Encode a metadata value as canonical JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


MAX_JSON_CHARS = 1 << 20
MAX_JSON_DEPTH = 32


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > MAX_JSON_DEPTH:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def loads_bounded(text: str, key: str, path: str | Path | object) -> Any:
    """JSON from a metadata value, with size and nesting limits; any failure is a CheckpointError."""
    if len(text) > MAX_JSON_CHARS:
        raise CheckpointError(
            f"{path}: metadata key {key!r} is {len(text)} characters; at most {MAX_JSON_CHARS}"
        )
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # bad JSON, 5000-digit numbers, deep nesting
        raise CheckpointError(
            f"{path}: metadata key {key!r} is not valid JSON; the file is corrupt"
        ) from None
    if not _depth_ok(value):
        raise CheckpointError(f"{path}: metadata key {key!r} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def parse_json_meta(metadata: Mapping[str, str], key: str, path: str | Path, default: Any = ...) -> Any:
    if key not in metadata:
        if default is not ...:
            return default
        raise CheckpointError(f"{path}: metadata key {key!r} is missing; the file was not written by pnc")
    return loads_bounded(metadata[key], key, path)


KIND_HINTS = {
    "model": "a model file (from `pnc train`; deltas come from `pnc clone`, cloned models from `pnc apply`)",
    "delta": "a delta file (from `pnc clone`); apply it to its target with `pnc apply --target T --delta D`",
    "cloned": "a cloned model (target + deltas); `pnc remove` strips its deltas",
    "surrogate": "a surrogate file (from `pnc surrogate`)",
    "search": "a search file (from `pnc search`); finish it with `pnc clone --search`",
    "plain": "a safetensors file without pnc metadata",
}


def file_kind_of(meta: Mapping[str, str]) -> str:
    """The kind a header declares: model, delta, cloned, surrogate, search, or plain (no pnc metadata)."""
    return meta.get("pnc.kind", "model" if "pnc.arch" in meta else "plain")


def check_kind(meta: Mapping[str, str], expected: str, path: str | Path | object) -> None:
    """Refuse a file of another kind with a hint on what it is and what to do with it."""
    kind = file_kind_of(meta)
    if kind != expected:
        raise CheckpointError(f"{path}: is {KIND_HINTS.get(kind, f'a {kind} file')}, not a {expected} file")


def check_version(
    meta: Mapping[str, str],
    supported: int,
    path: str | Path | object,
    *,
    error: type[CheckpointError] = CheckpointError,
) -> int:
    """The file's format version; refuses a missing, malformed or newer one (``upgrade pnc``)."""
    raw = meta.get("pnc.format_version")
    try:
        version = int(raw) if raw is not None else None
    except ValueError:
        version = None
    kind = file_kind_of(meta)
    if version is None or version < 1:
        raise error(f"{path}: {kind} format version {raw!r} is not a positive integer; see docs/formats.md")
    if version > supported:
        raise error(
            f"{path}: {kind} format version {version} is newer than supported {supported}; upgrade pnc"
        )
    return version
