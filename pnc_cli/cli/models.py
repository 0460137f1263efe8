"""Commands on base models: list-archs, info, train, eval, predict, import.

Layer cli: parse options → build config → call ``pnc_cli.api`` → render (table or --json). The api
(and with it torch) is imported inside the command functions, so ``pnc --version`` and ``--help``
stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config import TrainConfig
from ..core.errors import EXIT_VERIFY, UsageError
from . import _console as console
from . import gates as gates_
from .options import Run, examples, shared

ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="Model file (.safetensors); - reads stdin.")]
DataOpt = Annotated[
    str, typer.Option("--data", "-d", help="digits, mnist5k, an ImageFolder dir, .npz or .safetensors.")
]
ClassesOpt = Annotated[str | None, typer.Option("--classes", "-c", help="Classes, e.g. 0-4 or 3,5,cat.")]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output file; - writes it to stdout.")]
TRAIN = TrainConfig()
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
    app.command(
        "list-archs",
        epilog=examples("pnc list-archs", "pnc list-archs --json | jq -r '.architectures[].name'"),
    )(list_archs)
    app.command(
        "info",
        epilog=examples("pnc info target.safetensors", "cat cloned.safetensors | pnc info - --json"),
    )(info)
    app.command(
        "train",
        epilog=examples(
            "pnc train --arch tiny_cnn --data digits --classes 0-4 --epochs 3 -o target.safetensors",
            "pnc train --arch lenet5 --data mnist5k --classes 5-9 -o source.safetensors --json",
        ),
    )(train)
    app.command(
        "eval",
        epilog=examples(
            "pnc eval --model target.safetensors --data digits",
            "pnc eval --model cloned.safetensors --data digits "
            "--fail-under tar=0.8 --fail-over ori_drop=0.05",
        ),
    )(evaluate)
    app.command("predict", epilog=examples("pnc predict --model target.safetensors digit.png --top 3"))(
        predict
    )
    app.command(
        "import",
        epilog=examples(
            "pnc import weights.safetensors --arch resnet18 --classes 0-9 --input-size 32 "
            "-o model.safetensors"
        ),
    )(import_model)


@shared("tsv")
def list_archs(run: Run) -> None:
    """List the registered architectures and their number of blocks."""
    from .. import api

    def render(doc: dict[str, Any]) -> None:
        console.table(
            "architectures",
            ["name", "blocks", "input", "description"],
            [
                (a["name"], a["blocks"], a["default_input_size"], a["description"])
                for a in doc["architectures"]
            ],
        )
        console.note(
            "also: --arch torchvision:NAME, timm:NAME, or a custom package.module:function "
            "(docs/architectures.md)"
        )

    run.emit({"architectures": api.list_archs()}, render)


@shared("tsv")
def info(
    run: Run,
    file: Annotated[
        Path,
        typer.Argument(help="A pnc file: model, cloned model, delta, surrogate or search; - reads stdin."),
    ],
    card: Annotated[
        bool, typer.Option("--card", help="Print a markdown model card (model, delta or cloned file).")
    ] = False,
) -> None:
    """Show a file's header (reads no tensors); --card: a markdown model card."""
    from .. import api

    path = run.input(file)
    if card:
        run.emit({"path": str(file), "card": api.model_card(path)}, lambda d: typer.echo(d["card"], nl=False))
        return
    doc = api.file_info(path)

    def render(doc: dict[str, Any]) -> None:
        # hashes are labelled by their keys: sha256 = content_sha256 (tensors), file_sha256 (bytes)
        pairs = [(k, v) for k, v in doc.items() if k != "metadata" and v is not None]
        pairs += [(k, v) for k, v in doc["metadata"].items()]
        console.key_values(str(file), pairs)

    run.emit(doc, render)


@shared("seed", "device", "force", "split_seed")
def train(
    run: Run,
    arch: Annotated[
        str, typer.Option("--arch", "-a", help="Architecture (pnc list-archs) or package.module:function.")
    ],
    data: DataOpt,
    output: OutOpt,
    classes: ClassesOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = TRAIN.epochs,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = TRAIN.lr,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = TRAIN.batch_size,
    fraction: Annotated[float, typer.Option(help="Stratified fraction of the train split to use.")] = 1.0,
    input_size: Annotated[
        int | None, typer.Option(help="Model input size (default: the data's, at least 16 px).")
    ] = None,
    arch_arg: ArchArgOpt = None,
) -> None:
    """Train a base classifier on the train split (to make targets and sources)."""
    from .. import api

    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=run.seed)
    doc = api.train_model(
        arch=arch,
        data=data,
        output=run.output(output),
        classes=classes,
        config=config,
        fraction=fraction,
        split_seed=run.split_seed,
        input_size=input_size,
        arch_kwargs=_arch_kwargs(arch_arg),
        force=run.force,
        device=run.device,
        progress=run.progress(),
    )

    def render(doc: dict[str, Any]) -> None:
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

    run.emit(doc, render)


GateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-under",
        metavar="METRIC=VALUE",
        help="Exit 3 when METRIC is below VALUE (repeatable): accuracy; on a cloned model also ori, tar, "
        "avg, mean, locality. ori_drop is a cost: it fails when above VALUE. VALUE 0.9 or 90%.",
    ),
]
GateOverOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-over",
        metavar="METRIC=VALUE",
        help="Exit 3 when METRIC is above VALUE (repeatable), e.g. ori_drop=0.02.",
    ),
]


@shared("device", "split_seed", "tsv")
def evaluate(
    run: Run,
    model: ModelOpt,
    data: DataOpt,
    classes: ClassesOpt = None,
    split: Annotated[str, typer.Option(help="test, train or all.")] = "test",
    fail_under: GateOpt = None,
    fail_over: GateOverOpt = None,
) -> None:
    """Accuracy of a model (or cloned model) on a data split, overall and per class; quality gates."""
    from .. import api

    gates = gates_.parse(fail_under, fail_over)
    doc = api.evaluate_model(
        model=run.input(model),
        data=data,
        classes=classes,
        split=split,
        split_seed=run.split_seed,
        device=run.device,
    )
    doc["model"] = str(model)
    results = gates_.check(gates, doc)
    if gates:
        doc["gates"] = results

    def render(doc: dict[str, Any]) -> None:
        console.table(
            f"{model} on {data} ({split}, {doc['num_samples']} samples)",
            ["class", "accuracy %"],
            [(c, console.pct(a)) for c, a in doc["per_class"].items()]
            + [("all", console.pct(doc["accuracy"]))],
        )
        if doc.get("kind") == "cloned":
            console.key_values(
                f"cloned model: target + {', '.join(doc['deltas'])}",
                [
                    ("Ori Acc % (target classes)", console.pct(doc["ori_acc"])),
                    ("target alone, Ori Acc %", console.pct(doc.get("target_ori_acc"))),
                    ("Ori drop % (target alone - cloned)", console.pct(doc.get("ori_drop"))),
                    ("Tar Acc % (cloned classes)", console.pct(doc["tar_acc"])),
                    ("Avg Acc % (pooled)", console.pct(doc["avg_acc"])),
                    ("mean of Ori and Tar %", console.pct(doc["mean_acc"])),
                    ("locality % (same prediction as the target)", console.pct(doc["locality"])),
                    ("zest distance to the target", doc.get("zest_distance")),
                    ("extra params", f"{doc['extra_params']} ({doc['extra_params_ratio']:.3f}× target)"),
                ],
            )
        if gates:
            console.table(
                "gates",
                ["gate", "value", "passed"],
                [
                    (
                        f"{r['metric']} {'>=' if r['op'] == 'min' else '<='} {r['threshold']:g}",
                        r["value"],
                        r["passed"],
                    )
                    for r in doc["gates"]
                ],
            )

    run.emit(doc, render)
    failed = gates_.failure_line(results)
    if failed:
        console.error(failed)
        raise typer.Exit(EXIT_VERIFY)


@shared("device", "tsv")
def predict(
    run: Run,
    model: ModelOpt,
    images: Annotated[list[str], typer.Argument(help="Image files (PNG, JPEG, ...).")],
    top: Annotated[int, typer.Option(help="How many classes to show per image.")] = 3,
) -> None:
    """Predict the class of image files."""
    from .. import api

    doc = api.predict_images(model=run.input(model), images=images, top=top, device=run.device)
    doc["model"] = str(model)

    def render(doc: dict[str, Any]) -> None:
        console.table(
            None,
            ["image", "prediction", "top classes"],
            [
                (
                    p["image"],
                    p["prediction"],
                    "  ".join(f"{t['class']}:{t['probability']:.2f}" for t in p["top"]),
                )
                for p in doc["predictions"]
            ],
        )

    run.emit(doc, render)


@shared("force")
def import_model(
    run: Run,
    file: Annotated[
        Path,
        typer.Argument(
            help="A state dict: .safetensors, or .pt/.pth/.bin (read with weights_only=True); - reads stdin."
        ),
    ],
    arch: Annotated[
        str, typer.Option("--arch", "-a", help="Its architecture: a built-in, torchvision:NAME or timm:NAME.")
    ],
    output: OutOpt,
    classes: Annotated[
        str | None,
        typer.Option("--classes", "-c", help="Its class names in output order, e.g. 0-9 or cat,dog."),
    ] = None,
    classes_file: Annotated[
        Path | None, typer.Option("--classes-file", help="A text file with one class name a line.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="Entry holding the state dict, e.g. state_dict or model (default: found)."
        ),
    ] = None,
    strip_prefix: Annotated[
        str | None,
        typer.Option(
            "--strip-prefix", help="Remove this prefix from tensor names (default: module. when all have it)."
        ),
    ] = None,
    arch_arg: ArchArgOpt = None,
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
) -> None:
    """Turn a state dict from another tool into a pnc model file (keys and shapes must match --arch)."""
    from .. import api

    if classes is None and classes_file is None:
        raise UsageError("give --classes (e.g. 0-9) or --classes-file (one name a line)")
    if classes is not None and classes_file is not None:
        raise UsageError("give --classes or --classes-file, not both")
    doc = api.import_model(
        file=run.input(file),
        arch=arch,
        classes=classes,
        classes_file=classes_file,
        output=run.output(output),
        key=key,
        strip_prefix=strip_prefix,
        arch_kwargs=_arch_kwargs(arch_arg),
        in_channels=in_channels,
        input_size=input_size,
        mean=_floats(mean, "--mean"),
        std=_floats(std, "--std"),
        force=run.force,
    )

    def render(doc: dict[str, Any]) -> None:
        src = doc["source"]
        console.key_values(
            f"imported {file} → {doc['output']}",
            [
                ("arch", doc["arch"]),
                ("arch args", doc["arch_kwargs"] or "-"),
                (
                    "classes",
                    f"{len(doc['classes'])}: {', '.join(doc['classes'][:10])}"
                    + (" …" if len(doc["classes"]) > 10 else ""),
                ),
                ("input", f"{doc['input']['channels']}×{doc['input']['size']}×{doc['input']['size']}"),
                ("normalisation", f"mean {doc['normalization']['mean']} std {doc['normalization']['std']}"),
                (
                    "read from",
                    f"{src['format']}"
                    + (f", entry {src['key']!r}" if src["key"] else "")
                    + (f", stripped {src['stripped_prefix']!r}" if src["stripped_prefix"] else ""),
                ),
                ("file sha256 (input bytes)", src["file_sha256"]),
                ("content sha256 (tensors)", doc["content_sha256"]),
                ("params", doc["num_params"]),
            ],
        )

    run.emit(doc, render)
