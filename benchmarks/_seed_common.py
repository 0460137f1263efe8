"""Shared pieces of the issue-6 seed-table benchmarks (bench_data_size, bench_num_classes, bench_archs,
bench_incremental). Reuses ``benchmarks/_common.py`` (base training, the fitting loop, summaries).

- ``cached_base``: a base classifier trained once per (arch, data, classes, seed, epochs, …) and kept in
  ``bench-out/seed-bases/`` so the tables share it.
- ``clone_metrics``: one ``pnc_cli.api.clone`` call reduced to the seed tables' metrics.
- ``test_set`` / ``task_accuracies``: accuracy of any forward on each task of a class-incremental run.
- ``Growing``, ``seq_finetune``, ``seq_lwf``: class-incremental baselines (a copy of the target whose
  head grows by one block of rows per task).
- ``table`` / ``errorbar_plot``: mean ± std rendering (Markdown and matplotlib, Agg).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import _fit, summarize, train_base  # noqa: E402

from pnc_cli.api import clone  # noqa: E402
from pnc_cli.core.config import CloneConfig  # noqa: E402
from pnc_cli.io.data import conform_set, load_data  # noqa: E402
from pnc_cli.method.cloned_model import last_linear  # noqa: E402
from pnc_cli.nets import Network  # noqa: E402
from pnc_cli.nets.training import predict_logits  # noqa: E402

CACHE = Path("bench-out/seed-bases")
METRICS = ["ori_acc", "tar_acc", "avg_acc", "mean_acc", "locality", "extra_params_ratio", "seconds"]


def cached_base(
    *,
    arch: str,
    data: str,
    classes: str,
    seed: int,
    epochs: int,
    cache: Path = CACHE,
    input_size: int | None = None,
    fraction: float = 1.0,
) -> dict[str, Any]:
    """Train (or reuse) a base model; returns ``{"path", "test_accuracy", "seconds", "cached"}``."""
    tag = (
        f"{arch}-{data}-{classes.replace(',', '_')}-s{seed}-e{epochs}"
        + (f"-px{input_size}" if input_size else "")
        + (f"-f{fraction:g}" if fraction < 1 else "")
    )
    path, meta = cache / f"{tag}.safetensors", cache / f"{tag}.json"
    if path.exists() and meta.exists():
        return {**json.loads(meta.read_text()), "cached": True}
    cache.mkdir(parents=True, exist_ok=True)
    if input_size is None and fraction >= 1:
        b = train_base(
            arch=arch, data=data, classes=classes, seed=seed, epochs=epochs, out_dir=cache, name=tag
        )
        doc = {"path": str(b.path), "test_accuracy": b.test_accuracy, "seconds": b.seconds}
    else:  # _common.train_base has no input_size / fraction: call the API directly
        from pnc_cli.api import train_model
        from pnc_cli.core.config import TrainConfig

        start = time.perf_counter()
        r = train_model(
            arch=arch,
            data=data,
            classes=classes,
            config=TrainConfig(epochs=epochs, seed=seed),
            fraction=fraction,
            input_size=input_size,
            output=path,
            force=True,
            device="cpu",
        )
        doc = {
            "path": str(r["output"]),
            "test_accuracy": float(r["test_accuracy"]),
            "seconds": time.perf_counter() - start,
        }
    meta.write_text(json.dumps(doc))
    return {**doc, "cached": False}


def clone_metrics(
    *, source: str, target: str, classes: str, out: Path, seed: int, data: str, **cfg: Any
) -> dict[str, Any]:
    """``pnc_cli.api.clone`` (position auto unless ``position`` is given) → the seed tables' metrics."""
    position = cfg.pop("position", "auto")
    sconfig = cfg.pop("surrogate_config", None)
    # a benchmark measures every point: the clone's Ori gate (max_ori_drop, default 5 points) is off here,
    # and the tables mark the points where it would have refused to write the clone (``gate``)
    cfg.setdefault("max_ori_drop", None)
    r = clone(
        source=source,
        target=target,
        classes=classes,
        output=out,
        data=data,
        target_data=data,
        position=position,
        config=CloneConfig(seed=seed, **cfg),
        surrogate_config=sconfig,
        force=True,
        device="cpu",
    )
    row = {k: float(r[k]) for k in METRICS if r.get(k) is not None}
    row.update(position=r["position"], target_ori_acc=float(r["target_ori_acc"]), name=r.get("name"))
    default_gate = CloneConfig().max_ori_drop
    assert default_gate is not None
    row["refused_by_default_gate"] = 100 * (row["target_ori_acc"] - row.get("ori_acc", 0.0)) > default_gate
    return row


def config_summary() -> str:
    """The CloneConfig defaults this run used (they are still being tuned: record them with every table)."""
    c = CloneConfig().to_dict()
    keys = [
        "lr",
        "alpha",
        "beta",
        "gamma",
        "max_extra_ratio",
        "ins_logits",
        "finetune_epochs",
        "straight_through_epochs",
        "temperature_end",
    ]
    return ", ".join(f"{k}={c[k]}" for k in keys if k in c)


def fmt_pm(s: dict[str, dict[str, float]], key: str, pct: bool = True, digits: int = 1) -> str:
    if key not in s:
        return "—"
    f = 100.0 if pct else 1.0
    return f"{f * s[key]['mean']:.{digits}f} ± {f * s[key]['std']:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )


def errorbar_plot(
    x: list[Any],
    series: dict[str, tuple[list[float], list[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
    xticks: list[str] | None = None,
    refs: dict[str, list[float]] | None = None,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
    hlines: dict[str, float] | None = None,
) -> None:
    """One line per series with std error bars; optional dashed reference lines (e.g. the seed's CIFAR
    figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, (m, s)) in enumerate(series.items()):
        ax.errorbar(x, m, yerr=s, marker="o", capsize=4, label=name, color=colors[i % len(colors)])
    for i, (name, vals) in enumerate((refs or {}).items()):
        ax.plot(x, vals, linestyle="--", marker=".", alpha=0.6, color=colors[i % len(colors)], label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, color="grey", linestyle=":", linewidth=1.2, label=name)
    if logx:
        ax.set_xscale("log")
        ax.minorticks_off()
    if xticks is not None:
        ax.set_xticks(x)
        ax.set_xticklabels(xticks)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def series_of(
    summaries: list[dict[str, dict[str, float]]], key: str, pct: bool = True
) -> tuple[list[float], list[float]]:
    f = 100.0 if pct else 1.0
    return [f * s[key]["mean"] for s in summaries], [f * s[key]["std"] for s in summaries]


# ---------------------------------------------------------------- class-incremental evaluation and baselines


def labelled(
    data: str, classes: list[str], order: list[str], split: str, fraction: float, channels: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    ds = conform_set(
        load_data(data, classes=classes, split=split, fraction=fraction, split_seed=0).relabel(order),
        channels,
        size,
    )
    return ds.images, ds.labels


def task_accuracies(forward: Any, x: torch.Tensor, y: torch.Tensor, tasks: list[list[int]]) -> dict[str, Any]:
    """Accuracy per task seen so far (argmax over the classes of those tasks) and the pooled average."""
    seen = [c for t in tasks for c in t]
    keep = torch.isin(y, torch.tensor(seen))
    xs, ys = x[keep], y[keep]
    logits = predict_logits(forward, xs)[:, : len(seen)]
    pred = logits.argmax(1)
    per = [
        float((pred[torch.isin(ys, torch.tensor(t))] == ys[torch.isin(ys, torch.tensor(t))]).float().mean())
        for t in tasks
    ]
    return {
        "per_task": per,
        "avg_acc": float((pred == ys).float().mean()),
        "mean_task_acc": sum(per) / len(per),
    }


class Growing(nn.Module):
    """A trainable copy of the target whose head grows by ``add_head(n)`` rows per task (reads the
    classifier's input features, like ``_common.Extended``)."""

    def __init__(self, target: Network) -> None:
        super().__init__()
        self.net = copy.deepcopy(target)
        self.model = self.net.model
        lin = last_linear(self.net.classifier)
        self.in_features = lin.in_features
        self.heads = nn.ModuleList()
        self._feats: list[torch.Tensor] = []
        lin.register_forward_pre_hook(self._grab)
        for p in self.parameters():
            p.requires_grad_(True)

    def _grab(self, _m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        self._feats.append(inp[0])

    def add_head(self, n: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.heads.append(nn.Linear(self.in_features, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._feats.clear()
        old = self.net.model(self.net.normalize(x))
        return torch.cat([old, *[h(self._feats[-1]) for h in self.heads]], dim=1)


def seq_step(
    model: Growing,
    prev: nn.Module | None,
    task: tuple[torch.Tensor, torch.Tensor],
    domain: tuple[torch.Tensor, torch.Tensor] | None,
    n_old: int,
    *,
    method: str,
    epochs: int,
    lr: float,
    seed: int,
    temperature: float = 2.0,
) -> None:
    """One task of naive fine-tuning (``method="naive"``: CE on the new task's samples only) or LwF
    (``"lwf"``: CE on the task's samples and the target-domain samples with their target pseudo-labels, plus
    T²·KL to the previous model's softened outputs over the old classes on every sample)."""
    x, y = task
    if method == "naive":
        _fit(
            model,
            list(model.parameters()),
            x,
            lambda z, i: F.cross_entropy(z, y[i]),
            epochs=epochs,
            lr=lr,
            seed=seed,
        )
        return
    if domain is not None:
        x, y = torch.cat([x, domain[0]]), torch.cat([y, domain[1]])
    old = predict_logits(prev, x)[:, :n_old]
    t = temperature

    def loss(z: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        kd = (
            F.kl_div(F.log_softmax(z[:, :n_old] / t, 1), F.softmax(old[i] / t, 1), reduction="batchmean")
            * t
            * t
        )
        return F.cross_entropy(z, y[i]) + kd

    _fit(model, list(model.parameters()), x, loss, epochs=epochs, lr=lr, seed=seed)


def weights_equal(a: Network, b: nn.Module) -> bool:
    """Whether every tensor of network ``a`` is unchanged in ``b`` (b's extra head rows aside)."""
    sb = b.state_dict()
    return all(torch.equal(v, sb.get(f"model.{k}", torch.empty(0))) for k, v in a.state_dict().items())


__all__ = [
    "cached_base",
    "clone_metrics",
    "summarize",
    "fmt_pm",
    "table",
    "errorbar_plot",
    "series_of",
    "labelled",
    "task_accuracies",
    "Growing",
    "seq_step",
    "weights_equal",
]


# ---------------------------------------------------------------- one-knob sweeps (Tables 2 and 4)


def sweep_main(
    *,
    name: str,
    doc: str,
    points: list[Any],
    quick_points: list[Any],
    labels: Any,
    clone_kwargs: Any,
    xlabel: str,
    title: str,
    seed_ref: dict[Any, tuple[float, float, float]] | None,
    xvalues: Any = None,
    logx: bool = False,
) -> None:
    """Shared driver of bench_data_size / bench_num_classes: per seed, a lenet5 target (0-4) and source (5-9),
    one clone per point; table, JSON and plot. ``clone_kwargs(point)`` → (classes, CloneConfig overrides)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="seed 0, fewer points, 4 clone epochs")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the base models")
    ap.add_argument("--clone-epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(f"bench-out/{name}.json"))
    ap.add_argument("--img", type=Path, default=Path(f"docs/img/{name}.png"))
    ap.add_argument(
        "--replot", action="store_true", help="redraw the table and plot from --out without running"
    )
    args = ap.parse_args()
    if args.quick:
        args.seeds, points, args.clone_epochs = args.seeds[:1], quick_points, 4
        args.img = Path("bench-out") / (args.img.stem + "-quick.png")  # quick plots stay out of docs/
        args.out = args.out.with_name(args.out.stem + "-quick.json")
    torch.set_num_threads(1)
    start = time.perf_counter()
    per_seed: list[dict[str, Any]] = []
    work = args.out.parent / f"{name}-{args.data}-work"
    work.mkdir(parents=True, exist_ok=True)
    if args.replot:
        per_seed = json.loads(args.out.read_text())["per_seed"]
        args.seeds = [r["seed"] for r in per_seed]
    for seed in [] if args.replot else args.seeds:
        tgt = cached_base(arch="lenet5", data=args.data, classes="0-4", seed=seed, epochs=args.epochs)
        src = cached_base(arch="lenet5", data=args.data, classes="5-9", seed=seed, epochs=args.epochs)
        rows = {}
        for p in points:
            classes, over = clone_kwargs(p)
            rows[str(p)] = clone_metrics(
                source=src["path"],
                target=tgt["path"],
                classes=classes,
                data=args.data,
                seed=seed,
                out=work / f"delta-{p}-s{seed}.safetensors",
                epochs=args.clone_epochs,
                **over,
            )
            print(
                f"seed {seed} {labels(p)}: "
                + " ".join(f"{k} {rows[str(p)][k]:.3f}" for k in ("ori_acc", "tar_acc", "avg_acc")),
                f"R={rows[str(p)]['position']} ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        per_seed.append(
            {
                "seed": seed,
                "target_test_accuracy": tgt["test_accuracy"],
                "source_test_accuracy": src["test_accuracy"],
                "points": rows,
            }
        )
    keys = [
        "ori_acc",
        "tar_acc",
        "avg_acc",
        "mean_acc",
        "locality",
        "extra_params_ratio",
        "seconds",
        "target_ori_acc",
    ]
    summ = [summarize([r["points"][str(p)] for r in per_seed], keys) for p in points]
    head = [
        xlabel,
        "Ori Acc",
        "Tar Acc",
        "Avg Acc",
        "Mean (Ori+Tar)/2",
        "locality",
        "extra params (×)",
        "chosen R",
        "time (s)",
    ]
    body = []
    for p, s in zip(points, summ, strict=True):
        pos = [r["points"][str(p)]["position"] for r in per_seed]
        body.append(
            [labels(p)]
            + [fmt_pm(s, k) for k in ("ori_acc", "tar_acc", "avg_acc", "mean_acc", "locality")]
            + [
                fmt_pm(s, "extra_params_ratio", pct=False, digits=2),
                ",".join(map(str, pos)),
                fmt_pm(s, "seconds", pct=False),
            ]
        )
    tgt_ori = summarize([{"a": r["points"][str(points[0])]["target_ori_acc"]} for r in per_seed], ["a"])
    text = (
        f"{title}; {args.data}, lenet5 target 0-4 / lenet5 source 5-9, base epochs {args.epochs}, clone "
        "epochs "
        f"{args.clone_epochs}, seeds {args.seeds}; target alone on 0-4: {fmt_pm(tgt_ori, 'a')}; "
        "CloneConfig defaults: "
        f"{config_summary()}\n\n" + table(head, body)
    )
    if seed_ref:
        text += "\n\nSeed (CIFAR-10, ResNet-18): " + "; ".join(
            f"{labels(p)} Ori {seed_ref[p][0]} / Tar {seed_ref[p][1]} / Avg {seed_ref[p][2]}"
            for p in points
            if p in seed_ref
        )
    print(text)
    xs = [xvalues(p) for p in points] if xvalues else list(range(len(points)))
    series = {
        k: series_of(summ, key)
        for k, key in (("Ori Acc", "ori_acc"), ("Tar Acc", "tar_acc"), ("Avg Acc", "avg_acc"))
    }
    refs = None
    if seed_ref and all(p in seed_ref for p in points):
        refs = {
            f"seed {n} (CIFAR-10)": [seed_ref[p][j] for p in points]
            for j, n in enumerate(["Ori", "Tar", "Avg"])
        }
    errorbar_plot(
        xs,
        series,
        xlabel=xlabel,
        ylabel="accuracy (%)",
        title=f"{title}, {args.data} — mean ± std over {len(args.seeds)} seed(s)",
        path=args.img,
        xticks=[labels(p) for p in points],
        refs=refs,
        logx=logx,
        hlines={"target alone, Ori (ours)": 100 * tgt_ori["a"]["mean"]},
    )
    if args.replot:
        return
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "clone_config": CloneConfig().to_dict(),
                "points": [str(p) for p in points],
                "per_seed": per_seed,
                "summary": summ,
                "table": text,
                "seconds": time.perf_counter() - start,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {args.out}, {args.img} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
