"""``pnc export``: a model or cloned model as TorchScript or ONNX, verified against PyTorch.

Layer L5: parse options → ``pnc_cli.api.export.export_model`` → render (table or --json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import _console as console
from .options import Run, examples, shared


def register(app: typer.Typer) -> None:
    app.command(
        "export",
        epilog=examples(
            "pnc export cloned.safetensors --format onnx -o cloned.onnx",
            "pnc export target.safetensors --format torchscript -o target.pt --image digit.png",
        ),
    )(export)


@shared("seed", "force")
def export(
    run: Run,
    model: Annotated[Path, typer.Argument(help="A model or cloned-model file (.safetensors).")],
    format: Annotated[str, typer.Option("--format", "-f", help="torchscript or onnx (needs pnc-cli[onnx]).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The exported file (.pt for TorchScript, .onnx).")
    ],
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image", help="Sample image to verify on (repeatable; default: seeded noise in [0, 1])."
        ),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Number of noise images when no --image.")] = 8,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="Largest allowed |difference| per max(1, |logit|).")
    ] = 1e-4,
) -> None:
    """Export to TorchScript or ONNX (deployment formats, not pnc files); verified on sample images."""
    from ..api.export import export_model

    doc = export_model(
        model=model,
        format=format,
        output=output,
        images=image,
        num_samples=samples,
        seed=run.seed,
        tolerance=tolerance,
        force=run.force,
    )

    def render(d: dict[str, Any]) -> None:
        console.key_values(
            f"exported {model} → {d['output']} ({d['format']})",
            [
                ("classes", ", ".join(d["classes"])),
                ("input", f"{d['input']['channels']}×{d['input']['size']}×{d['input']['size']} in [0, 1]"),
                ("verified on", f"{d['num_samples']} images"),
                ("max abs diff vs PyTorch", f"{d['max_abs_diff']:.3g} (limit {d['tolerance']:.3g})"),
                ("file sha256 (bytes)", d["file_sha256"]),
            ],
        )

    run.emit(doc, render)
