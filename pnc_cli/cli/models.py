"""Commands on base models: list-archs, info, train, eval, predict, import.

Layer L5: parse options → build config → call ``pnc_cli.api`` → render (table or --json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import api
from ..core.config import TrainConfig
from ..core.errors import UsageError
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

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model file (.safetensors).")]
DataOpt = Annotated[
    str, typer.Option("--data", "-d", help="digits, mnist5k, an ImageFolder dir, .npz or .safetensors.")
]
ClassesOpt = Annotated[str | None, typer.Option("--classes", "-c", help="Classes, e.g. 0-4 or 3,5,cat.")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output file.")]
ArchArgOpt = Annotated[
    list[str] | None, typer.Option("--arch-arg", help="Architecture keyword argument KEY=VALUE (repeatable).")
]


def _arch_kwargs(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--arch-arg {item!r} must be KEY=VALUE, e.g. --arch-arg width=16")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(
            f"{option} {text!r} must be comma-separated numbers, e.g. 0.5 or 0.485,0.456,0.406"
        ) from None


def register(app: typer.Typer) -> None:
    app.command("list-archs")(list_archs)
    app.command("info")(info)
    app.command("train")(train)
    app.command("eval")(evaluate)
    app.command("predict")(predict)
    app.command("import")(import_model)


@handle_errors
def list_archs(
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """List the registered architectures and their number of blocks."""
    archs = api.list_archs()
    if json_out:
        console.print_json({"architectures": archs})
        return
    console.table(
        "architectures",
        ["name", "blocks", "input", "description"],
        [(a["name"], a["blocks"], a["default_input_size"], a["description"]) for a in archs],
    )
    console.note("custom: --arch package.module:function (docs/architectures.md)", quiet=quiet)


@handle_errors
def info(
    file: Annotated[
        Path, typer.Argument(help="A pnc file: model, cloned model, delta, surrogate or search.")
    ],
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Show a file's header (reads no tensors)."""
    doc = api.file_info(file)
    if json_out:
        console.print_json(doc)
        return
    pairs = [(k, v) for k, v in doc.items() if k != "metadata" and v is not None]
    pairs += [(k, v) for k, v in doc["metadata"].items()]
    console.key_values(str(file), pairs)


@handle_errors
def train(
    arch: Annotated[
        str, typer.Option("--arch", "-a", help="Architecture (pnc list-archs) or package.module:function.")
    ],
    data: DataOpt,
    output: OutOpt,
    classes: ClassesOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = TrainConfig.epochs,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = TrainConfig.lr,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = TrainConfig.batch_size,
    fraction: Annotated[float, typer.Option(help="Stratified fraction of the train split to use.")] = 1.0,
    input_size: Annotated[
        int | None, typer.Option(help="Model input size (default: the data's, at least 16 px).")
    ] = None,
    arch_arg: ArchArgOpt = None,
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Train a base classifier on the train split (to make targets and sources)."""
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    doc = api.train_model(
        arch=arch,
        data=data,
        output=output,
        classes=classes,
        config=config,
        fraction=fraction,
        split_seed=split_seed,
        input_size=input_size,
        arch_kwargs=_arch_kwargs(arch_arg),
        force=force,
        device=device,
        progress=progress(quiet),
    )
    if json_out:
        console.print_json(doc)
        return
    console.key_values(
        f"trained {arch} → {doc['output']}",
        [
            ("classes", ",".join(doc["classes"])),
            ("train samples", doc["num_train"]),
            ("test accuracy", console.pct(doc["test_accuracy"]) + " %"),
            ("params", doc["num_params"]),
            ("sha256", doc["sha256"]),
            ("seed", doc["seed"]),
        ],
    )


@handle_errors
def evaluate(
    model: ModelOpt,
    data: DataOpt,
    classes: ClassesOpt = None,
    split: Annotated[str, typer.Option(help="test, train or all.")] = "test",
    split_seed: SplitSeedOpt = 0,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy of a model (or cloned model) on a data split, overall and per class."""
    doc = api.evaluate_model(
        model=model, data=data, classes=classes, split=split, split_seed=split_seed, device=device
    )
    if json_out:
        console.print_json(doc)
        return
    console.table(
        f"{model} on {data} ({split}, {doc['num_samples']} samples)",
        ["class", "accuracy %"],
        [(c, console.pct(a)) for c, a in doc["per_class"].items()] + [("all", console.pct(doc["accuracy"]))],
    )
    if doc.get("kind") == "cloned":
        console.key_values(
            f"cloned model: target + {', '.join(doc['deltas'])}",
            [
                ("Ori Acc % (target classes)", console.pct(doc["ori_acc"])),
                ("Tar Acc % (cloned classes)", console.pct(doc["tar_acc"])),
                ("Avg Acc % (pooled)", console.pct(doc["avg_acc"])),
                ("mean of Ori and Tar %", console.pct(doc["mean_acc"])),
                ("locality % (same prediction as the target)", console.pct(doc["locality"])),
                ("zest distance to the target", doc.get("zest_distance")),
                ("extra params", f"{doc['extra_params']} ({doc['extra_params_ratio']:.3f}× target)"),
            ],
        )


@handle_errors
def predict(
    model: ModelOpt,
    images: Annotated[list[str], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    top: Annotated[int, typer.Option(help="How many classes to show per image.")] = 3,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Predict the class of image files."""
    doc = api.predict_images(model=model, images=images, top=top, device=device)
    if json_out:
        console.print_json(doc)
        return
    console.table(
        None,
        ["image", "prediction", "top classes"],
        [
            (p["image"], p["prediction"], "  ".join(f"{t['class']}:{t['probability']:.2f}" for t in p["top"]))
            for p in doc["predictions"]
        ],
    )


@handle_errors
def import_model(
    file: Annotated[Path, typer.Argument(help="A plain state dict (.safetensors) without pnc metadata.")],
    arch: Annotated[str, typer.Option("--arch", "-a", help="Its architecture.")],
    classes: Annotated[
        str, typer.Option("--classes", "-c", help="Its class names in output order, e.g. 0-9 or cat,dog.")
    ],
    output: OutOpt,
    in_channels: Annotated[
        int | None, typer.Option(help="Input channels (default: from the first conv).")
    ] = None,
    input_size: Annotated[int | None, typer.Option(help="Input size (default: the architecture's).")] = None,
    mean: Annotated[
        str | None, typer.Option(help="Per-channel normalisation mean, e.g. 0.485,0.456,0.406.")
    ] = None,
    std: Annotated[
        str | None, typer.Option(help="Per-channel normalisation std, e.g. 0.229,0.224,0.225.")
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Turn a plain state dict into a pnc model file (keys and shapes must match --arch exactly)."""
    doc = api.import_model(
        file=file,
        arch=arch,
        classes=classes,
        output=output,
        in_channels=in_channels,
        input_size=input_size,
        mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"),
        force=force,
    )
    if json_out:
        console.print_json(doc)
        return
    console.key_values(f"imported {file} → {doc['output']}", list(doc.items()))
