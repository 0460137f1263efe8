"""Command ``pnc surrogate``: the local model set G of a model on a sample of data (method spec §2).

Layer L5: options → SurrogateConfig → ``pnc_cli.api.surrogates.compute_surrogate`` → table or --json.
Numeric options default to None, meaning "the SurrogateConfig default" (the single source of defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..api.surrogates import compute_surrogate
from ..core.config import SurrogateConfig
from . import _console as console
from ._common import (
    DEFAULT_DEVICE,
    SEED,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    SplitSeedOpt,
    handle_errors,
    progress,
)

D = SurrogateConfig()


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text, show_default=False)


ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model file (.safetensors).")]
DataOpt = Annotated[
    str, typer.Option("--data", "-d", help="digits, mnist5k, an ImageFolder dir, .npz or .safetensors.")
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", "-c", help="Classes of the data to sample (default: all).")
]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output surrogate file (.safetensors).")]
SamplesOpt = Annotated[int | None, _opt("--samples", f"Samples N of the data [default: {D.samples}].")]
MasksOpt = Annotated[
    int | None, _opt("--masks", f"Masks |B| per sample, incl. all-ones [default: {D.masks}].")
]
GridOpt = Annotated[int | None, _opt("--grid", f"Patches per side H (H² patches) [default: {D.grid}].")]
RateOpt = Annotated[
    float | None,
    _opt("--masking-rate", f"Probability a patch is off, in (0, 1) [default: {D.masking_rate}]."),
]
SigmaOpt = Annotated[float | None, _opt("--sigma", f"Kernel width σ of Π_b [default: {D.sigma}].")]
RidgeOpt = Annotated[float | None, _opt("--ridge", f"Ridge penalty λ on θ [default: {D.ridge}].")]
BatchOpt = Annotated[
    int | None, _opt("--batch-size", f"Perturbed images per forward pass [default: {D.batch_size}].")
]
SplitOpt = Annotated[str, typer.Option("--split", help="train, test or all.")]


def register(app: typer.Typer) -> None:
    app.command("surrogate")(surrogate)


def _config(seed: int, **values: Any) -> SurrogateConfig:
    return SurrogateConfig(seed=seed, **{k: v for k, v in values.items() if v is not None})


@handle_errors
def surrogate(
    model: ModelOpt,
    data: DataOpt,
    output: OutOpt,
    classes: ClassesOpt = None,
    samples: SamplesOpt = None,
    masks: MasksOpt = None,
    grid: GridOpt = None,
    masking_rate: RateOpt = None,
    sigma: SigmaOpt = None,
    ridge: RidgeOpt = None,
    batch_size: BatchOpt = None,
    split: SplitOpt = "train",
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Fit the local model set G (one linear surrogate per sample, seed Eq. 1-4) and save it.

    The masks are drawn from --seed and shared by all samples: files made with the same seed and data
    are comparable across models (rank-sources, clone --surrogate).
    """
    config = _config(
        seed,
        samples=samples,
        masks=masks,
        grid=grid,
        masking_rate=masking_rate,
        sigma=sigma,
        ridge=ridge,
        batch_size=batch_size,
    )
    doc = compute_surrogate(
        model=model,
        data=data,
        classes=classes,
        split=split,
        split_seed=split_seed,
        config=config,
        output=output,
        force=force,
        device=device,
        progress=progress(quiet),
    )
    if json_out:
        console.print_json(doc)
        return
    console.key_values(
        f"surrogate of {model} → {doc['output']}",
        [
            ("data", f"{doc['data']} ({doc['split']}, classes {','.join(doc['classes'])})"),
            ("samples N", doc["samples"]),
            ("masks |B|", doc["masks"]),
            ("grid", f"{doc['grid']}x{doc['grid']}"),
            ("outputs C", doc["num_classes"]),
            ("fidelity (weighted R²)", doc["fidelity"]),
            ("seconds", f"{doc['seconds']:.2f}"),
            ("images/s", f"{doc['images_per_second']:,.0f}" if doc["images_per_second"] else "-"),
            ("sha256", doc["sha256"]),
            ("seed", doc["seed"]),
        ],
    )
