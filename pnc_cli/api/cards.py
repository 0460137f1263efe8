"""Model cards: a markdown summary of a model, delta or cloned-model file (``pnc info --card``).

Layer L4. Reads the header only (no tensors) plus the file's bytes for its file sha256. Every hash is
labelled: *content sha256* hashes the tensors (names, dtypes, shapes, bytes; ``pnc.sha256``), *file
sha256* hashes the file's bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.provenance import read as read_provenance
from ..io.safetensors_io import file_sha256, read_header
from .models import file_info


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return "`" + json.dumps(value, sort_keys=True, separators=(", ", ": ")) + "`"
    return str(value)


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f} %" if isinstance(value, int | float) else "-"


def _classes(names: list[str] | None) -> str:
    if not names:
        return "-"
    shown = ", ".join(names[:20])
    return f"{len(names)}: {shown}{' …' if len(names) > 20 else ''}"


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {k} | {_fmt(v).replace('|', '/')} |" for k, v in rows if v is not None]
    return out


def _provenance(meta: dict[str, str]) -> list[str]:
    prov = read_provenance(meta)
    if prov is None:
        return ["## Provenance", "", "Not recorded (written by an older pnc or another tool)."]
    lines = ["## Provenance", ""]
    lines.append(f"- command: `{prov.get('command', '?')}`")
    lines.append(
        f"- pnc {prov.get('pnc_version', '?')}, torch {prov.get('torch_version', '?')}, "
        f"python {prov.get('python_version', '?')}"
    )
    if "options" in prov:
        lines.append(f"- options used: {_fmt(prov['options'])}")
    data = prov.get("data")
    if data:
        sha = data.get("content_sha256")
        rest = {k: v for k, v in data.items() if k != "content_sha256"}
        lines.append(f"- data: {_fmt(rest)}" + (f"; data content sha256 `{sha}`" if sha else ""))
    src = prov.get("source")
    if src:
        lines.append(
            f"- imported from `{src.get('path')}` ({src.get('format')}"
            + (f", entry `{src['key']}`" if src.get("key") else "")
            + (f", prefix `{src['stripped_prefix']}` stripped" if src.get("stripped_prefix") else "")
            + f"); input file sha256 `{src.get('file_sha256')}`"
        )
    for key in sorted(
        set(prov)
        - {
            "command",
            "pnc_version",
            "torch_version",
            "python_version",
            "options",
            "data",
            "source",
            "version",
        }
    ):
        lines.append(f"- {key}: {_fmt(prov[key])}")
    return lines


def _model_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    inp, norm = info.get("input") or {}, info.get("normalization") or {}
    arch = info.get("arch")
    if info.get("arch_kwargs"):
        arch = f"{arch} {_fmt(info['arch_kwargs'])}"
    return [
        ("architecture", arch),
        ("classes", _classes(info.get("classes"))),
        (
            "input",
            f"{inp.get('channels')}×{inp.get('size')}×{inp.get('size')} images in [0, 1]; normalised inside "
            f"(mean {norm.get('mean')}, std {norm.get('std')})"
            if inp
            else None,
        ),
        ("parameters", f"{info.get('num_params'):,}" if info.get("num_params") is not None else None),
    ]


def _delta_lines(d: dict[str, Any], full: dict[str, Any] | None = None) -> list[str]:
    m = d.get("metrics") or {}
    src = d.get("source") or {}
    rows: list[tuple[str, Any]] = [
        ("classes", _classes(d.get("classes"))),
        ("inserted after target block", d.get("position")),
        ("source", f"{src.get('arch')} (content sha256 `{src.get('sha256')}`)"),
        ("source block", d.get("source_position")),
        ("target content sha256", f"`{d.get('target_sha256')}`"),
        ("extra parameters", d.get("extra_params")),
        (
            "Ori Acc / Tar Acc / Avg Acc",
            f"{_pct(m.get('ori_acc'))} / {_pct(m.get('tar_acc'))} / {_pct(m.get('avg_acc'))}",
        ),
        ("locality (same prediction as the target)", _pct(m.get("locality"))),
        ("seed", d.get("seed")),
    ]
    if full and full.get("config") is not None:
        rows.append(("settings that trained it", full["config"]))
    return _table(rows)


def model_card(path: str | Path) -> str:
    """A markdown card for a model, delta or cloned-model file (other kinds get the common part)."""
    p = Path(path)
    info = file_info(p)
    _, meta = read_header(p)
    kind = info["kind"]
    lines = [f"# {p.name}", "", f"A pnc **{kind}** file (format version {info.get('format_version')})."]
    lines.append("")
    rows: list[tuple[str, Any]] = []
    if kind in ("model", "cloned"):
        rows += _model_rows(info)
    rows += [
        ("content sha256 (tensors)", f"`{info.get('sha256')}`" if info.get("sha256") else None),
        ("file sha256 (bytes)", f"`{file_sha256(p)}`"),
        ("file size", f"{info['file_bytes']:,} bytes"),
    ]
    if kind == "cloned":
        rows.append(("target content sha256", f"`{info.get('target_sha256')}`"))
    lines += _table(rows)
    training = info.get("training")
    if training:
        lines += ["", "## Training", ""]
        lines += _table(
            [
                ("data", training.get("data")),
                ("classes", _classes(training.get("classes"))),
                ("train samples", training.get("num_train")),
                ("settings", training.get("config")),
                ("test accuracy", _pct(training.get("test_accuracy"))),
            ]
        )
    if kind in ("delta", "search"):
        full = {k[len("pnc.delta.") :]: _loads(v) for k, v in meta.items() if k.startswith("pnc.delta.")}
        lines += ["", "## Delta", ""] + _delta_lines(info["delta"], full)
    if kind == "cloned":
        full_deltas = _loads(meta.get("pnc.deltas", "[]")) or []
        for d, raw in zip(info.get("deltas") or [], full_deltas, strict=False):
            lines += ["", f"## Delta `{d.get('name')}`", ""] + _delta_lines(d, (raw or {}).get("info"))
    lines += [""] + _provenance(meta)
    lines += [
        "",
        "## Use",
        "",
        "Inputs are images in [0, 1], `[N, C, S, S]`; the model normalises them itself. "
        "`pnc eval`/`pnc predict` on the command line, `pnc_cli.load(path)` in Python (docs/api.md).",
    ]
    return "\n".join(lines) + "\n"


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None
