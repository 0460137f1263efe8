"""Commands ``pnc clone`` and ``pnc search`` (docs/method-spec.md §3-5).

Layer cli: options → CloneConfig → ``pnc_cli.api.cloning`` → table or --json. The options the two
commands share (inputs, training) are declared once below and offered to both by ``option_group``;
their defaults are read from ``CloneConfig()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config import CloneConfig
from . import _console as console
from .options import Run, examples, option_group, param, shared

D = CloneConfig()

INPUTS = [
    param(
        "source",
        Annotated[
            Path, typer.Option("--source", "-s", help="Source model (.safetensors) that knows the classes.")
        ],
    ),
    param(
        "target",
        Annotated[
            Path,
            typer.Option(
                "--target", "-t", help="Target model (.safetensors); never modified; - reads stdin."
            ),
        ],
    ),
    param(
        "classes",
        Annotated[
            str, typer.Option("--classes", "-c", help="Source classes to clone, e.g. 5 or 5,7 or 5-6.")
        ],
    ),
    param(
        "output",
        Annotated[Path, typer.Option("--output", "-o", help="Output file; - writes it to stdout.")],
    ),
    param(
        "data",
        Annotated[
            str | None,
            typer.Option(
                "--data",
                "-d",
                help="Data with the cloned classes (default: the source's recorded training data).",
            ),
        ],
        None,
    ),
    param(
        "target_data",
        Annotated[
            str | None,
            typer.Option(
                "--target-data",
                help=(
                    "Target-domain data, pseudo-labelled by the target (default: its recorded training data)."
                ),
            ),
        ],
        None,
    ),
    param(
        "surrogate",
        Annotated[
            Path | None, typer.Option(help="Precomputed local model set of the source (pnc surrogate).")
        ],
        None,
    ),
    param(
        "rename",
        Annotated[
            list[str] | None,
            typer.Option(help="Rename a cloned class OLD=NEW (needed when the target has that name)."),
        ],
        None,
    ),
]

TRAINING = [
    param(
        "head",
        Annotated[
            str,
            typer.Option(
                help="'joint': one head over target and module features, fitted in closed form (default); "
                "'append': new-class logits appended, trained by gradient per position (the seed's "
                "objective)."
            ),
        ],
        D.head,
    ),
    param(
        "max_features",
        Annotated[
            int, typer.Option(help="Joint head: most numbers read from the module's output (pooled to fit).")
        ],
        D.max_features,
    ),
    param(
        "random_features",
        Annotated[
            int,
            typer.Option(
                help="Joint head: N fixed random ReLU features of what the head reads, seeded by --seed "
                "(RanPAC; 0: off). They cost N x classes head weights within the size budget."
            ),
        ],
        D.random_features,
    ),
    param(
        "shifts",
        Annotated[
            int | None,
            typer.Option(
                help="Joint head: shifted copies of each training image (0-8, towards the 8 neighbours by "
                "about 1/28 of the side) its statistics also see; each costs one more forward pass. "
                "Default: as many as cost at most 5e10 multiply-accumulates (all 8 for small networks, "
                "none for a resnet18)."
            ),
        ],
        D.shifts,
    ),
    param(
        "fraction",
        Annotated[float, typer.Option(help="Fraction of the training data used (seed Table 1 'Data Size').")],
        D.fraction,
    ),
    param("epochs", Annotated[int, typer.Option(help="Append head: epochs per position.")], D.epochs),
    param(
        "select_by",
        Annotated[str, typer.Option(help="Choose R* by 'loss' (seed) or 'val_acc'.")],
        D.select_by,
    ),
    param("alpha", Annotated[float, typer.Option(help="Weight of L_loc.")], D.alpha),
    param("beta", Annotated[float, typer.Option(help="Weight of L_ins.")], D.beta),
    param("gamma", Annotated[float, typer.Option(help="Weight of the mask L1 penalty.")], D.gamma),
    param("lr", Annotated[float, typer.Option(help="Learning rate of adapter and head.")], D.lr),
    param(
        "max_extra",
        Annotated[
            float,
            typer.Option(help="Size budget: delta params / target params after pruning (0: no budget)."),
        ],
        D.max_extra_ratio or 0.0,
    ),
]


def _config(training: dict[str, Any], seed: int, **extra: Any) -> CloneConfig:
    values = {**training, **extra}
    values["max_extra_ratio"] = values.pop("max_extra") or None
    return CloneConfig(seed=seed, **values)


def _inputs(run: Run, inputs: dict[str, Any]) -> dict[str, Any]:
    """The api's keyword arguments for the shared inputs, with ``-`` resolved (none for a dry run's
    output)."""
    out = dict(inputs)
    out["target"] = run.input(inputs["target"])
    out["output"] = inputs["output"] if run.dry_run else run.output(inputs["output"])
    return out


def register(app: typer.Typer) -> None:
    app.command(
        "clone",
        epilog=examples(
            "pnc clone -s source.safetensors -t target.safetensors -c 5 -o delta.safetensors",
            "pnc clone -s source.safetensors -t target.safetensors -c 5-6 -o delta.safetensors --dry-run",
            "pnc clone -s source.safetensors -t target.safetensors -c 5 -o delta.safetensors "
            "--merged cloned.safetensors",
        ),
    )(clone)
    app.command(
        "search",
        epilog=examples(
            "pnc search -s source.safetensors -t target.safetensors -c 5 -o search.safetensors",
            "pnc clone -s source.safetensors -t target.safetensors -c 5 --search search.safetensors "
            "-o delta.safetensors",
        ),
    )(search)


def _render(doc: dict[str, Any], title: str) -> None:
    if doc.get("head") == "joint":
        _render_joint(doc, title)
        return
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


def _render_joint(doc: dict[str, Any], title: str) -> None:
    rows = [
        (
            s["source_end"],
            s["pool"] or "-",
            s["features"],
            f"{s['ridge']:g}",
            console.pct(s["val_ori_acc"]),
            console.pct(s["val_tar_acc"]),
            console.pct(s["val_avg_acc"]),
            s["extra_params"],
        )
        for s in doc["search"]
    ]
    console.table(
        "module search (validation split; source blocks [0:E] read by the joint head)",
        ["E", "pool", "features", "ridge", "Ori %", "Tar %", "Avg %", "extra params"],
        rows,
    )
    console.key_values(
        title,
        [
            ("head", "joint (closed form)"),
            ("module", f"source blocks [0:{doc['source_end']}], pool {doc['pool'] or 'none'}"),
            ("shifted copies", doc.get("shifts")),
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


def _render_plan(doc: dict[str, Any]) -> None:
    console.key_values(f"dry run: {doc['command']} (nothing trained or written)", list(doc.items()))


@shared("seed", "device", "force", "split_seed", "dry_run")
@option_group("training", TRAINING)
@option_group("inputs", INPUTS)
def clone(
    run: Run,
    inputs: dict[str, Any],
    training: dict[str, Any],
    position: Annotated[
        str,
        typer.Option(
            help="'auto' (joint: 0, the input; append: search every block boundary) or a block index R."
        ),
    ] = "auto",
    max_ori_drop: Annotated[
        float,
        typer.Option(
            help="Refuse (exit 3, nothing written) a clone losing more points of held-out accuracy on the "
            "target's classes than this (-1: never refuse)."
        ),
    ] = D.max_ori_drop if D.max_ori_drop is not None else -1.0,
    search_file: Annotated[
        Path | None,
        typer.Option("--search", help="Finish from a pnc search output instead of searching again."),
    ] = None,
    link_source: Annotated[
        bool, typer.Option(help="Online delta: store no source weights, only the source's sha256.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Delta name (default clone-<classes>).")] = None,
    merged: Annotated[
        Path | None, typer.Option(help="Also write the cloned model (target + delta) here.")
    ] = None,
) -> None:
    """Clone source classes into the target as a removable delta (module, filter mask, head)."""
    config = _config(training, run.seed, max_ori_drop=None if max_ori_drop < 0 else max_ori_drop)
    common = {
        **_inputs(run, inputs),
        "position": position,
        "config": config,
        "search": search_file,
        "merged": merged,
        "split_seed": run.split_seed,
        "force": run.force,
        "device": run.device,
    }
    if run.dry_run:
        from ..api import plans

        run.emit(plans.plan_clone(**common), _render_plan)
        return
    from ..api import cloning

    doc = cloning.clone(**common, link_source=link_source, name=name, progress=run.progress())
    run.emit(
        doc, lambda d: _render(d, f"cloned {','.join(d['classes'])} → {d['output']} (held-out test split)")
    )


@shared("seed", "device", "force", "split_seed")
@option_group("training", TRAINING)
@option_group("inputs", INPUTS)
def search(
    run: Run,
    inputs: dict[str, Any],
    training: dict[str, Any],
    plot: Annotated[
        Path | None, typer.Option(help="Also write the loss/accuracy curve as a PNG (plot extra).")
    ] = None,
) -> None:
    """Search the transferable module (joint head: every source span; append: every insertion position);
    report the curve and keep the best branch in a search file."""
    from ..api import cloning

    doc = cloning.search(
        **_inputs(run, inputs),
        config=_config(training, run.seed),
        plot=plot,
        split_seed=run.split_seed,
        force=run.force,
        device=run.device,
        progress=run.progress(),
    )
    run.emit(
        doc,
        lambda d: _render(d, f"search → {d['output']} (finish with pnc clone --search {d['output']})"),
    )
