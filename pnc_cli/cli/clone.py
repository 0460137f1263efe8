"""Commands ``pnc clone`` and ``pnc search`` (method spec §3-5).

Layer L5: options → CloneConfig → ``pnc_cli.api.cloning`` → table or --json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..api import cloning
from ..core.config import CloneConfig
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

D = CloneConfig()
SourceOpt = Annotated[
    Path, typer.Option("--source", "-s", help="Source model (.safetensors) that knows the classes.")
]
TargetOpt = Annotated[
    Path, typer.Option("--target", "-t", help="Target model (.safetensors); never modified.")
]
ClassesOpt = Annotated[
    str, typer.Option("--classes", "-c", help="Source classes to clone, e.g. 5 or 5,7 or 5-6.")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", "-d", help="Data with the cloned classes (default: the source's recorded training data)."
    ),
]
TargetDataOpt = Annotated[
    str | None,
    typer.Option(
        "--target-data",
        help="Target-domain data, pseudo-labelled by the target (default: its recorded training data).",
    ),
]
FractionOpt = Annotated[
    float, typer.Option(help="Fraction of the training data used (seed Table 1 'Data Size').")
]
EpochsOpt = Annotated[int, typer.Option(help="Epochs per position.")]
PositionOpt = Annotated[str, typer.Option(help="'auto' (search every block boundary) or a block index R.")]
SelectOpt = Annotated[str, typer.Option(help="Choose R* by 'loss' (seed) or 'val_acc'.")]
AlphaOpt = Annotated[float, typer.Option(help="Weight of L_loc.")]
BetaOpt = Annotated[float, typer.Option(help="Weight of L_ins.")]
GammaOpt = Annotated[float, typer.Option(help="Weight of the mask L1 penalty.")]
LrOpt = Annotated[float, typer.Option(help="Learning rate of adapter and head.")]
MaxExtraOpt = Annotated[
    float, typer.Option(help="Size budget: delta params / target params after pruning (0: no budget).")
]
RenameOpt = Annotated[
    list[str] | None,
    typer.Option(help="Rename a cloned class OLD=NEW (needed when the target has that name)."),
]
OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output file.")]


def register(app: typer.Typer) -> None:
    app.command("clone")(clone)
    app.command("search")(search)


def _config(**kw: Any) -> CloneConfig:
    return CloneConfig(**kw)


def _render(doc: dict[str, Any], title: str) -> None:
    rows = [
        (
            s["position"],
            s["source_position"],
            s["loss"],
            console.pct(s["val_ori_acc"]),
            console.pct(s["val_tar_acc"]),
            console.pct(s["val_avg_acc"]),
            console.pct(s["kept_fraction"]),
            f"{s['seconds']:.1f}",
        )
        for s in doc["search"]
    ]
    console.table(
        "position search (validation split)",
        ["R", "R_s", "loss", "Ori %", "Tar %", "Avg %", "kept filters %", "s"],
        rows,
    )
    console.key_values(
        title,
        [
            ("R*", doc["position"]),
            ("classes", ",".join(doc["classes"])),
            ("Ori Acc %", console.pct(doc["ori_acc"])),
            ("Tar Acc %", console.pct(doc["tar_acc"])),
            ("Avg Acc %", console.pct(doc["avg_acc"])),
            ("target alone, Ori %", console.pct(doc["target_ori_acc"])),
            ("locality %", console.pct(doc.get("locality"))),
            ("zest distance", doc.get("zest_distance")),
            ("extra params", f"{doc['extra_params']} ({doc['extra_params_ratio']:.3f}× target)"),
            ("output", doc["output"]),
            ("seconds", f"{doc['seconds']:.1f}"),
            ("seed", doc["seed"]),
        ],
    )


@handle_errors
def clone(
    source: SourceOpt,
    target: TargetOpt,
    classes: ClassesOpt,
    output: OutOpt,
    data: DataOpt = None,
    target_data: TargetDataOpt = None,
    fraction: FractionOpt = D.fraction,
    position: PositionOpt = "auto",
    epochs: EpochsOpt = D.epochs,
    select_by: SelectOpt = D.select_by,
    alpha: AlphaOpt = D.alpha,
    beta: BetaOpt = D.beta,
    gamma: GammaOpt = D.gamma,
    lr: LrOpt = D.lr,
    max_extra: MaxExtraOpt = D.max_extra_ratio or 0.0,
    surrogate: Annotated[
        Path | None, typer.Option(help="Precomputed local model set of the source (pnc surrogate).")
    ] = None,
    search_file: Annotated[
        Path | None,
        typer.Option("--search", help="Finish from a pnc search output instead of searching again."),
    ] = None,
    link_source: Annotated[
        bool, typer.Option(help="Online delta: store no source weights, only the source's sha256.")
    ] = False,
    rename: RenameOpt = None,
    name: Annotated[str | None, typer.Option(help="Delta name (default clone-<classes>).")] = None,
    merged: Annotated[
        Path | None, typer.Option(help="Also write the cloned model (target + delta) here.")
    ] = None,
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Clone source classes into the target as a removable delta (adapter + filter mask + head)."""
    config = _config(
        epochs=epochs,
        fraction=fraction,
        select_by=select_by,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        lr=lr,
        max_extra_ratio=max_extra or None,
        seed=seed,
    )
    doc = cloning.clone(
        source=source,
        target=target,
        classes=classes,
        output=output,
        data=data,
        target_data=target_data,
        position=position,
        config=config,
        surrogate=surrogate,
        search=search_file,
        link_source=link_source,
        rename=rename,
        name=name,
        merged=merged,
        split_seed=split_seed,
        force=force,
        device=device,
        progress=progress(quiet),
    )
    if json_out:
        console.print_json(doc)
        return
    _render(doc, f"cloned {','.join(doc['classes'])} → {doc['output']} (held-out test split)")


@handle_errors
def search(
    source: SourceOpt,
    target: TargetOpt,
    classes: ClassesOpt,
    output: OutOpt,
    data: DataOpt = None,
    target_data: TargetDataOpt = None,
    fraction: FractionOpt = D.fraction,
    epochs: EpochsOpt = D.epochs,
    select_by: SelectOpt = D.select_by,
    alpha: AlphaOpt = D.alpha,
    beta: BetaOpt = D.beta,
    gamma: GammaOpt = D.gamma,
    lr: LrOpt = D.lr,
    max_extra: MaxExtraOpt = D.max_extra_ratio or 0.0,
    surrogate: Annotated[
        Path | None, typer.Option(help="Precomputed local model set of the source (pnc surrogate).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Also write the loss/accuracy curve as a PNG (plot extra).")
    ] = None,
    rename: RenameOpt = None,
    split_seed: SplitSeedOpt = 0,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Train a branch at every block boundary and report the loss per insertion position; keep R*'s branch."""
    config = _config(
        epochs=epochs,
        fraction=fraction,
        select_by=select_by,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        lr=lr,
        max_extra_ratio=max_extra or None,
        seed=seed,
    )
    doc = cloning.search(
        source=source,
        target=target,
        classes=classes,
        output=output,
        data=data,
        target_data=target_data,
        config=config,
        surrogate=surrogate,
        plot=plot,
        rename=rename,
        split_seed=split_seed,
        force=force,
        device=device,
        progress=progress(quiet),
    )
    if json_out:
        console.print_json(doc)
        return
    _render(
        doc,
        f"search → {doc['output']} (R* = {doc['position']}; finish with pnc clone --search {doc['output']})",
    )
