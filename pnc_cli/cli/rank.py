"""Command ``pnc rank-sources`` (docs/ranking.md; method spec §6, seed Eq. 6-8).

Layer cli: options → CloneConfig / SurrogateConfig → ``pnc_cli.api.ranking`` → table or --json. Exit
status: 0 when at least one source was ranked (ineligible ones are listed with their reasons), 1 when
none was; ``--strict``: 1 as soon as any source is ineligible (and ``--clone-best`` clones nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config import CloneConfig, SurrogateConfig
from ..core.errors import UsageError
from . import _console as console
from .options import Run, examples, shared

S = SurrogateConfig()


def register(app: typer.Typer) -> None:
    app.command(
        "rank-sources",
        epilog=examples(
            "pnc rank-sources source-*.safetensors -t target.safetensors -c 5 -d digits",
            "pnc rank-sources a.safetensors b.safetensors -t target.safetensors -c 5 -d digits "
            "--clone-best -o delta.safetensors --dry-run",
        ),
    )(rank_sources)


def _span(r: dict[str, Any]) -> str:
    s = r.get("span")
    return f"E={s['end']}" + (f" pool {s['pool']}" if s["pool"] else "") if s else "-"


def _render(doc: dict[str, Any]) -> None:
    logme = doc["score"] == "logme"
    rows = [
        (
            r["rank"] if r["rank"] is not None else "-",
            r["source"],
            f"{r['score']:.4f}" if r["score"] is not None else "-",
            *((_span(r),) if logme else ()),
            r["arch"] or "-",
            r["params"] if r["params"] is not None else "-",
            f"{r['seconds']:.2f}" + (" (cached)" if r["cached"] else ""),
            r["reason"] or "",
        )
        for r in doc["ranking"]
    ]
    if logme:
        how = f"LogME of the clone's labels on {doc['samples']} samples"
    else:
        how = f"{doc['samples']} samples × {doc['masks']} masks, grid {doc['grid']}, columns {doc['columns']}"
    title = (
        f"sources for classes {','.join(doc['classes'])} → {doc['target']['path']} "
        f"({how}, score {doc['score']}, seed {doc['seed']}; "
        f"{doc['eligible']} ranked, {doc['failed']} ineligible)"
    )
    header = [
        "rank",
        "source",
        f"score ({doc['score']})",
        *(["span"] if logme else []),
        "arch",
        "params",
        "time s",
        "ineligible because",
    ]
    console.table(title, header, rows)


@shared("seed", "device", "force", "split_seed", "dry_run", "tsv")
def rank_sources(
    run: Run,
    sources: Annotated[
        list[Path], typer.Argument(help="Candidate source models (.safetensors).", show_default=False)
    ],
    target: Annotated[Path, typer.Option("--target", "-t", help="Target model (.safetensors).")],
    classes: Annotated[
        str,
        typer.Option("--classes", "-c", help="Classes to clone, as the sources name them, e.g. 5 or 5-9."),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="Data holding those classes: digits, mnist5k, an ImageFolder dir, .npz or .safetensors.",
        ),
    ],
    surrogates_dir: Annotated[
        Path | None, typer.Option(help="Reuse / store the local model sets here (one file per model).")
    ] = None,
    samples: Annotated[int, typer.Option(help="Samples of the classes (D_t).")] = S.samples,
    masks: Annotated[int, typer.Option(help="Masks |B| per sample.")] = S.masks,
    grid: Annotated[int, typer.Option(help="Patches per side H.")] = S.grid,
    masking_rate: Annotated[float, typer.Option(help="Probability that a patch is off.")] = S.masking_rate,
    score: Annotated[
        str,
        typer.Option(
            help="Rank by 'logme': the evidence of the clone's labels given its own features (default), "
            "'similarity' to the target (seed Eq. 7) or the sources' class 'evidence' (docs/ranking.md)."
        ),
    ] = "logme",
    logme_samples: Annotated[
        int, typer.Option(help="--score logme: rows of the clone's training data scored (0: all).")
    ] = 500,
    target_data: Annotated[
        str | None,
        typer.Option(
            help="--score logme: target-domain data, as pnc clone (default: the target's recorded data)."
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Exit 1 when any source is ineligible (default: only when none is ranked)."
        ),
    ] = False,
    columns: Annotated[
        str, typer.Option(help="Source columns compared: 'all' (seed Eq. 7) or 'cloned' (only --classes).")
    ] = "all",
    split: Annotated[str, typer.Option(help="Split the samples come from: train, test or all.")] = "train",
    clone_best: Annotated[
        bool, typer.Option("--clone-best", help="Go on to pnc clone with the best source (needs -o).")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Delta file written by --clone-best.")
    ] = None,
    position: Annotated[str, typer.Option(help="--clone-best: 'auto' or a block index R.")] = "auto",
    clone_epochs: Annotated[
        int, typer.Option(help="--clone-best: epochs per position.")
    ] = CloneConfig.epochs,
) -> None:
    """Rank candidate sources for cloning classes into a target: by the evidence (LogME) of the clone's own
    labels given the features its head would read (default), or by local-model-set similarity (seed Eq. 7)."""
    from ..api import ranking
    from ..method.ranking import COLUMN_MODES

    seed, device, split_seed, force, quiet = run.seed, run.device, run.split_seed, run.force, run.quiet
    if columns not in COLUMN_MODES:
        raise UsageError(f"--columns must be one of {', '.join(COLUMN_MODES)}, got {columns!r}")
    if score not in ranking.SCORES:
        raise UsageError(f"--score must be one of {', '.join(ranking.SCORES)}, got {score!r}")
    if logme_samples < 0:
        raise UsageError(f"--logme-samples must be 0 (all) or positive, got {logme_samples}")
    if clone_best and output is None:
        raise UsageError("--clone-best needs -o delta.safetensors")
    if output is not None and not clone_best:
        raise UsageError("-o is only used with --clone-best")
    config = SurrogateConfig(samples=samples, masks=masks, grid=grid, masking_rate=masking_rate, seed=seed)
    clone_config = CloneConfig(epochs=clone_epochs, seed=seed)
    common: dict[str, Any] = {
        "target": target,
        "sources": list(sources),
        "classes": classes,
        "data": data,
        "split": split,
        "split_seed": split_seed,
        "config": config,
        "surrogates_dir": surrogates_dir,
        "columns": columns,
        "score": score,
        "device": device,
    }
    if run.dry_run:
        from ..api import plans

        del common["columns"], common["score"]
        plan = plans.plan_rank(**common, output=output, force=force)
        run.emit(
            plan,
            lambda d: console.key_values(
                "dry run: rank-sources (nothing computed or written)", list(d.items())
            ),
        )
        return
    common["progress"] = run.progress()
    common.update(logme_samples=logme_samples, target_data=target_data)
    if clone_best:
        assert output is not None
        clone_kwargs = {
            "position": position,
            "config": clone_config,
            "split_seed": split_seed,
            "target_data": target_data,
        }
        doc = ranking.rank_and_clone(
            output=output, force=force, strict=strict, clone_kwargs=clone_kwargs, **common
        )
    else:
        doc = ranking.rank_sources(**common, clone_config=clone_config)

    def render(doc: dict[str, Any]) -> None:
        _render(doc)
        if "clone" in doc:
            c = doc["clone"]
            console.key_values(
                f"cloned {','.join(c['classes'])} from {c['source']} → {c['output']}",
                [
                    ("R*", c["position"]),
                    ("Ori Acc %", console.pct(c["ori_acc"])),
                    ("Tar Acc %", console.pct(c["tar_acc"])),
                    ("Avg Acc %", console.pct(c["avg_acc"])),
                    ("seconds", f"{c['seconds']:.1f}"),
                ],
            )

    run.emit(doc, render)
    if not doc["eligible"]:
        console.note("no source is eligible; see the reasons above", quiet=quiet)
        raise typer.Exit(1)
    if doc["failed"]:
        console.note(
            f"{doc['failed']} source(s) ineligible; see the reasons above"
            + (" (--strict: exit 1, nothing cloned)" if strict else ""),
            quiet=quiet,
        )
        if strict:
            raise typer.Exit(1)
