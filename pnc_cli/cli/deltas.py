"""Commands on deltas: apply (stack deltas on a target) and remove (strip them, restoring the target).

Layer L5: parse options → call ``pnc_cli.api`` → render (table or --json). docs/delta-format.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import api
from . import _console as console
from ._common import DEFAULT_DEVICE, SEED, DeviceOpt, ForceOpt, JsonOpt, QuietOpt, SeedOpt, handle_errors

OutOpt = Annotated[Path, typer.Option("--output", "-o", help="Output file.")]


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("remove")(remove)


@handle_errors
def apply(
    target: Annotated[
        Path, typer.Option("--target", "-t", help="Target model (or a cloned model to stack onto).")
    ],
    delta: Annotated[
        list[Path], typer.Option("--delta", "-d", help="Delta file from `pnc clone` (repeatable).")
    ],
    output: OutOpt,
    source: Annotated[
        list[Path] | None,
        typer.Option("--source", "-s", help="Source model of an online delta (repeatable)."),
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Stack deltas on their target: one file with the target's tensors unchanged plus every delta."""
    doc = api.apply_delta(target=target, deltas=delta, sources=source or [], output=output, force=force)
    if json_out:
        console.print_json(doc)
        return
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


@handle_errors
def remove(
    cloned: Annotated[
        Path, typer.Argument(help="A cloned model written by `pnc apply` or `pnc clone --merged`.")
    ],
    output: OutOpt,
    delta: Annotated[
        list[str] | None, typer.Option("--delta", "-d", help="Name of a delta to remove (repeatable).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Remove every delta (the default without --delta).")
    ] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    seed: SeedOpt = SEED,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
) -> None:
    """Strip deltas; with none left, write the original target back and check its sha256 (exit 3 if not)."""
    doc = api.remove_delta(cloned=cloned, output=output, names=delta, all=all_, force=force)
    if json_out:
        console.print_json(doc)
        return
    if not doc["restored"]:
        console.key_values(
            f"removed {', '.join(doc['removed'])} → {doc['output']}",
            [("remaining deltas", ", ".join(doc["remaining"])), ("classes", ", ".join(doc["classes"]))],
        )
        return
    if doc["identical_to_original"]:
        console.stdout.print(
            f"restored target identical to the original (sha256 {doc['file_sha256']})", highlight=False
        )
    else:
        console.stdout.print(
            f"restored target: tensors and metadata identical to the original (sha256 {doc['sha256']}); "
            "its bytes may differ because the original was not written by pnc",
            highlight=False,
        )
