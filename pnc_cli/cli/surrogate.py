"""Command ``pnc surrogate``: the local model set G of a model on a sample of data (docs/method-spec.md §2).

Layer cli: options → SurrogateConfig → ``pnc_cli.api.surrogates.compute_surrogate`` → table or --json.
Numeric defaults are read from ``SurrogateConfig()`` (the single source of defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config import SurrogateConfig
from . import _console as console
from .options import Run, examples, shared

D = SurrogateConfig()


ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model file (.safetensors).")]
DataOpt = Annotated[
    str, typer.Option("--data", "-d", help="digits, mnist5k, an ImageFolder dir, .npz or .safetensors.")
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", "-c", help="Classes of the data to sample (default: all).")
]
OutOpt = Annotated[
    Path, typer.Option("--output", "-o", help="Output surrogate file (.safetensors); - writes it to stdout.")
]
SamplesOpt = Annotated[int, typer.Option("--samples", help="Samples N of the data.")]
MasksOpt = Annotated[int, typer.Option("--masks", help="Masks |B| per sample, incl. all-ones.")]
GridOpt = Annotated[int, typer.Option("--grid", help="Patches per side H (H² patches).")]
RateOpt = Annotated[float, typer.Option("--masking-rate", help="Probability a patch is off, in (0, 1).")]
SigmaOpt = Annotated[float, typer.Option("--sigma", help="Kernel width σ of Π_b.")]
RidgeOpt = Annotated[float, typer.Option("--ridge", help="Ridge penalty λ on θ.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Perturbed images per forward pass.")]
SplitOpt = Annotated[str, typer.Option("--split", help="train, test or all.")]


def register(app: typer.Typer) -> None:
    app.command(
        "surrogate",
        epilog=examples(
            "pnc surrogate -m source.safetensors -d digits -c 5 -o source.g.safetensors",
            "pnc surrogate -m source.safetensors -d digits --samples 20 --masks 50 -o - > g.safetensors",
        ),
    )(surrogate)


def _config(seed: int, **values: Any) -> SurrogateConfig:
    return SurrogateConfig(seed=seed, **values)


@shared("seed", "device", "force", "split_seed")
def surrogate(
    run: Run,
    model: ModelOpt,
    data: DataOpt,
    output: OutOpt,
    classes: ClassesOpt = None,
    samples: SamplesOpt = D.samples,
    masks: MasksOpt = D.masks,
    grid: GridOpt = D.grid,
    masking_rate: RateOpt = D.masking_rate,
    sigma: SigmaOpt = D.sigma,
    ridge: RidgeOpt = D.ridge,
    batch_size: BatchOpt = D.batch_size,
    split: SplitOpt = "train",
) -> None:
    """Fit the local model set G (one linear surrogate per sample, seed Eq. 1-4) and save it.

    The masks are drawn from --seed and shared by all samples: files made with the same seed and data
    are comparable across models (rank-sources, clone --surrogate).
    """
    from ..api.surrogates import compute_surrogate

    config = _config(
        run.seed,
        samples=samples,
        masks=masks,
        grid=grid,
        masking_rate=masking_rate,
        sigma=sigma,
        ridge=ridge,
        batch_size=batch_size,
    )
    doc = compute_surrogate(
        model=run.input(model),
        data=data,
        classes=classes,
        split=split,
        split_seed=run.split_seed,
        config=config,
        output=run.output(output),
        force=run.force,
        device=run.device,
        progress=run.progress(),
    )
    run.emit(doc, _render(model))


def _render(model: Path) -> Any:
    return lambda doc: console.key_values(
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
