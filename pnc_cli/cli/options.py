"""The options every command shares, declared once, and the ``command`` decorator that offers them.

Layer cli. A command function declares only its own options, plus a ``run: Run`` parameter when it
needs the shared ones; ``command(...)`` adds the shared options it names to the signature Typer
reads, collects their values into a ``Run`` and handles errors. Options a command does not name are
not offered (``info`` has no ``--seed``). Defaults come from one place: the core config dataclasses
(``DEFAULT_SEED``, ``CloneConfig()``...), never from literals in a signature.

Every command gets ``--json``, ``--quiet/-q``, ``--log-file`` and ``--debug``; the rest on request:

    seed device force split_seed dry_run tsv trust_arch

Commands offering ``device`` or ``force`` (those that load models) also get ``--trust-arch``;
``device`` also brings ``--workers`` and ``--precision`` (every command that runs a network).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from ..core.config import DEFAULT_SEED
from ..core.trust import trusted_archs
from ._common import handle_errors
from ._distributed import process_group
from .streams import Streams

DEFAULT_DEVICE = "auto"
DEVICE_HELP = "auto (CUDA when present), cpu or cuda."

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON document on stdout (numbers to 6 digits).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")]
LogFileOpt = Annotated[
    Path | None,
    typer.Option("--log-file", help="Also append the progress lines and notes to this file.", dir_okay=False),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks (or set PNC_DEBUG=1).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (recorded in outputs).")]
DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
SplitSeedOpt = Annotated[
    int, typer.Option("--split-seed", help="Seed of the train/test split (same in every command).")
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the resolved inputs, outputs and expected sizes; train and write nothing."
    ),
]
TrustArchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-arch",
        help="Allow importing this custom package.module:function architecture (repeatable; "
        "or PNC_TRUST_ARCH=a:b,c:d). A file's metadata never imports code on its own.",
    ),
]
TsvOpt = Annotated[bool, typer.Option("--tsv", help="Print tables as tab-separated values.")]
WorkersOpt = Annotated[
    int, typer.Option("--workers", min=0, help="Processes that decode the data (0: in this process).")
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision", help="Frozen forward passes: auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, bf16, fp16."
    ),
]


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


# name in ``command(...)`` -> the parameter added to the command (its Python name, type and default).
SHARED: dict[str, inspect.Parameter] = {
    "json": _param("json_out", JsonOpt, False),
    "quiet": _param("quiet", QuietOpt, False),
    "log_file": _param("log_file", LogFileOpt, None),
    "debug": _param("debug", DebugOpt, False),
    "seed": _param("seed", SeedOpt, DEFAULT_SEED),
    "device": _param("device", DeviceOpt, DEFAULT_DEVICE),
    "force": _param("force", ForceOpt, False),
    "split_seed": _param("split_seed", SplitSeedOpt, 0),
    "dry_run": _param("dry_run", DryRunOpt, False),
    "tsv": _param("tsv", TsvOpt, False),
    "trust_arch": _param("trust_arch", TrustArchOpt, None),
    "workers": _param("workers", WorkersOpt, 0),
    "precision": _param("precision", PrecisionOpt, "auto"),
}
ALWAYS = ("json", "quiet", "log_file", "debug")


@dataclass
class Run:
    """The shared options of one invocation, and what the command needs to print and stream."""

    json: bool = False
    quiet: bool = False
    log_file: Path | None = None
    debug: bool = False
    seed: int = DEFAULT_SEED
    device: str = DEFAULT_DEVICE
    force: bool = False
    split_seed: int = 0
    dry_run: bool = False
    tsv: bool = False
    workers: int = 0
    precision: str = "auto"
    streams: Streams = field(default_factory=Streams)

    def progress(self) -> Any:
        """The Progress (core/progress.py) for library calls: rich on a TTY, plain lines otherwise."""
        from . import _console as console

        return console.make_progress(quiet=self.quiet)

    def input(self, path: Path) -> Path:
        """``-`` → a temporary copy of stdin; any other path unchanged."""
        return self.streams.input(path)

    def output(self, path: Path) -> Path:
        """``-`` → a temporary file that ``emit`` copies to stdout; any other path unchanged."""
        return self.streams.output(path)

    def emit(self, doc: dict[str, Any], render: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Print the result: one JSON document with ``--json``, else ``render(doc)`` (tables).

        When an output is ``-`` its bytes go to stdout and the JSON document / summary to stderr.
        """
        from . import _console as console

        if not console.is_main_process():  # under torchrun only rank 0 prints
            return
        doc = self.streams.relabel(doc)
        to_stderr = self.streams.flush_to_stdout()
        if self.json:
            console.print_json(doc, stderr=to_stderr)
        elif render is not None and not (to_stderr and self.quiet):
            with console.redirect_stdout(to_stderr):
                render(doc)


def _split(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in SHARED]
    if unknown:
        raise ValueError(f"unknown shared options {unknown}; known: {sorted(SHARED)}")
    # Commands that load models (they take --device or --force) may be allowed custom architectures.
    trust = ["trust_arch"] if {"device", "force"} & set(names) and "trust_arch" not in names else []
    # A command that runs a network (--device): how it reads data and its precision too.
    runtime = ["workers", "precision"] if "device" in names else []
    return [*ALWAYS, *[n for n in names if n not in ALWAYS], *trust, *runtime]


def shared(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the shared options ``names`` (and ``ALWAYS``) to a command; pass them as ``run: Run``."""
    wanted = _split(names)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        takes_run = "run" in sig.parameters
        own = [p for p in sig.parameters.values() if p.name != "run"]
        added = [SHARED[n] for n in wanted]
        py_names = {SHARED[n].name: n for n in wanted}

        def command(**kwargs: Any) -> Any:
            from . import _console as console

            values = {py_names[k]: kwargs.pop(k) for k in list(kwargs) if k in py_names}
            trust = values.pop("trust_arch", None) or []
            run = Run(json=values.pop("json"), **values)
            console.configure(quiet=run.quiet, debug=run.debug, log_file=run.log_file, tsv=run.tsv)
            try:
                with (
                    trusted_archs(trust),
                    process_group(run),
                ):  # core/trust.py; torchrun (cli/_distributed.py)
                    return fn(run=run, **kwargs) if takes_run else fn(**kwargs)
            finally:
                run.streams.close()
                console.close_log()

        command.__name__ = fn.__name__
        command.__qualname__ = fn.__qualname__
        command.__doc__ = fn.__doc__
        command.__module__ = fn.__module__
        command.__signature__ = sig.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return handle_errors(command)

    return decorate


def option_group(
    into: str, params: Sequence[inspect.Parameter]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Offer ``params`` (declared once, shared by several commands) and pass their values to the
    command as one dict named ``into`` (``clone`` and ``search`` share their inputs and training)."""
    names = [p.name for p in params]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != into]

        def command(**kwargs: Any) -> Any:
            group = {n: kwargs.pop(n) for n in names}
            return fn(**{into: group}, **kwargs)

        command.__name__ = fn.__name__
        command.__qualname__ = fn.__qualname__
        command.__doc__ = fn.__doc__
        command.__module__ = fn.__module__
        required = [p for p in own if p.default is p.empty and p.kind is not p.KEYWORD_ONLY]
        rest = [p for p in own if p not in required]
        kw = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
        command.__signature__ = sig.replace(parameters=[*required, *rest, *kw])  # type: ignore[attr-defined]
        return command

    return decorate


def param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A parameter for ``option_group`` (keyword-only; Typer reads its Annotated option)."""
    return _param(name, annotation, default)


def examples(*lines: str) -> str:
    """The ``--help`` epilog: 1-3 runnable example command lines."""
    return "Examples:\n\n" + "\n\n".join(f"  $ {line}" for line in lines)
