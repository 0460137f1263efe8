"""Commands on deltas: apply (stack deltas on a target) and remove (strip them, restoring the target).

Layer cli: parse options → call ``pnc_cli.api`` → render (table or --json). docs/delta-format.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import _console as console
from .options import Run, examples, shared

OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output file; - writes it to stdout.")]


def register(app: typer.Typer) -> None:
    app.command(
        "apply",
        epilog=examples(
            "pnc apply -t target.safetensors -d delta.safetensors -o cloned.safetensors",
            "pnc apply -t target.safetensors -d delta.safetensors -o - | pnc info -",
        ),
    )(apply)
    app.command(
        "remove",
        epilog=examples(
            "pnc remove cloned.safetensors -o restored.safetensors --verify",
            "pnc remove cloned.safetensors --delta clone-5 -o fewer.safetensors",
        ),
    )(remove)


@shared("force", "dry_run")
def apply(
    run: Run,
    target: Annotated[
        Path,
        typer.Option("--target", "-t", help="Target model (or a cloned model to stack onto); - reads stdin."),
    ],
    delta: Annotated[
        list[Path], typer.Option("--delta", "-d", help="Delta file from `pnc clone` (repeatable).")
    ],
    output: OutOpt,
    source: Annotated[
        list[Path] | None,
        typer.Option("--source", "-s", help="Source model of an online delta (repeatable)."),
    ] = None,
) -> None:
    """Stack deltas on their target: one file with the target's tensors unchanged plus every delta."""
    from .. import api

    kwargs: dict[str, Any] = {
        "target": run.input(target),
        "deltas": [run.input(d) for d in delta],
        "sources": [run.input(s) for s in source or []],
        "output": output if run.dry_run else run.output(output),
        "force": run.force,
    }
    if run.dry_run:
        from ..api import plans

        run.emit(plans.plan_apply(**kwargs), _render_plan)
        return
    doc = api.apply_delta(**kwargs)

    def render(doc: dict[str, Any]) -> None:
        console.key_values(
            f"applied → {doc['output']}",
            [
                ("target sha256", doc["target_sha256"]),
                ("deltas", ", ".join(doc["deltas"])),
                ("classes", ", ".join(doc["classes"])),
                ("extra params", f"{doc['extra_params']} ({doc['extra_params_ratio']:.3f}× the target)"),
                ("sha256", doc["sha256"]),
            ],
        )

    run.emit(doc, render)


@shared("force", "dry_run")
def remove(
    run: Run,
    cloned: Annotated[
        Path,
        typer.Argument(help="A cloned model written by `pnc apply` or `pnc clone --merged`; - reads stdin."),
    ],
    output: OutOpt,
    delta: Annotated[
        list[str] | None, typer.Option("--delta", "-d", help="Name of a delta to remove (repeatable).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Remove every delta (the default without --delta).")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Exit 3 (writing nothing) unless the result is byte-identical to the original target file.",
        ),
    ] = False,
) -> None:
    """Strip deltas; with none left, write the original target back and check its sha256 (exit 3 if not)."""
    from .. import api

    kwargs: dict[str, Any] = {
        "cloned": run.input(cloned),
        "output": output if run.dry_run else run.output(output),
        "names": delta,
        "all": all_,
        "force": run.force,
    }
    if run.dry_run:
        from ..api import plans

        run.emit(plans.plan_remove(**kwargs, verify=verify), _render_plan)
        return
    doc = api.remove_delta(**kwargs, verify=verify)

    def render(doc: dict[str, Any]) -> None:
        if not doc["restored"]:
            console.key_values(
                f"removed {', '.join(doc['removed'])} → {doc['output']}",
                [("remaining deltas", ", ".join(doc["remaining"])), ("classes", ", ".join(doc["classes"]))],
            )
        elif doc["identical_to_original"]:
            console.text(f"restored target identical to the original (sha256 {doc['file_sha256']})")
        else:
            console.text(
                f"restored target: tensors and metadata identical to the original (sha256 {doc['sha256']}); "
                "its bytes may differ because the original was not written by pnc"
            )

    run.emit(doc, render)


def _render_plan(doc: dict[str, Any]) -> None:
    console.key_values(f"dry run: {doc['command']} (nothing written)", list(doc.items()))
