"""Seed Table 5 (issue 6): the same class cloned from sources of different architectures.

Per seed, on mnist5k: one lenet5 target (0-4, 5 epochs) and three sources of 5-9: lenet5 (5 epochs),
plaincnn (5 epochs) and resnet18 (small stem, 28 px input, 2 epochs on half of the 5-9 train split —
a full resnet18 is too slow for a 2-core CPU budget). Each is ranked by ``pnc_cli.api.rank_sources``
(SurrogateConfig samples=50, masks=50, same seed) and cloned into the target (class "5", 30 % data,
position auto, with the default joint head (closed form, every source span from the input: one forward
pass of each network, no epochs); ``--resnet-position 2 --head append`` gives the append head's older
setting for the resnet18 source (R_t = 2, 3 epochs: its position search takes > 5 min per clone on one
CPU thread); the source's local model set G on 50 samples × 50 masks for all three). Reports source
accuracy (its own 5-9 test split), Ori/Tar/Avg Acc, the rank score, extra params, and whether the
top-ranked source gives the best clone.
Bases are cached in bench-out/seed-bases/. Plot: docs/img/seed-archs.png.

    python benchmarks/bench_archs.py --seeds 0 1 2
    python benchmarks/bench_archs.py --quick      # seed 0, resnet18 1 epoch, 4 clone epochs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seed_common import cached_base, clone_metrics, config_summary, fmt_pm, summarize, table  # noqa: E402

from pnc_cli.api import rank_sources  # noqa: E402
from pnc_cli.core.config import CloneConfig, SurrogateConfig  # noqa: E402

ARCHS = ["lenet5", "plaincnn", "resnet18"]
SEED = {
    "Source Acc": (88.1, 95.9, 96.2),
    "Ori. Acc": (91.7, 94.4, 94.0),
    "Tar. Acc": (93.4, 95.8, 93.3),
    "Avg. Acc": (92.0, 94.6, 93.9),
}


def plot(summ: dict[str, dict[str, dict[str, float]]], n_seeds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [
        ("source_acc", "source acc"),
        ("ori_acc", "Ori Acc"),
        ("tar_acc", "Tar Acc"),
        ("avg_acc", "Avg Acc"),
    ]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120, gridspec_kw={"width_ratios": [3, 1.2]})
    x = np.arange(len(keys))
    w = 0.8 / len(ARCHS)
    for i, a in enumerate(ARCHS):
        m = [100 * summ[a][k]["mean"] for k, _ in keys]
        s = [100 * summ[a][k]["std"] for k, _ in keys]
        ax.bar(x + (i - 1) * w, m, w, yerr=s, capsize=3, label=f"{a} source")
    ax.set_xticks(x)
    ax.set_xticklabels([n for _, n in keys])
    lo = min(100 * summ[a][k]["mean"] - 100 * summ[a][k]["std"] for a in ARCHS for k, _ in keys)
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Table 5: clone '5' into a lenet5 target, mean ± std over {n_seeds} seed(s)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    for i, a in enumerate(ARCHS):
        ax2.errorbar(
            [summ[a]["score"]["mean"]],
            [100 * summ[a]["avg_acc"]["mean"]],
            xerr=[summ[a]["score"]["std"]],
            yerr=[100 * summ[a]["avg_acc"]["std"]],
            marker="o",
            capsize=3,
            label=a,
            color=f"C{i}",
        )
    ax2.set_xlabel("rank-sources score")
    ax2.set_ylabel("clone Avg Acc (%)")
    ax2.set_title("score vs clone accuracy", fontsize=10)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--resnet-epochs", type=int, default=2)
    ap.add_argument("--resnet-fraction", type=float, default=0.5)
    ap.add_argument(
        "--clone-epochs", type=int, default=10, help="clone epochs per position, lenet5 and plaincnn sources"
    )
    ap.add_argument("--resnet-clone-epochs", type=int, default=3, help="clone epochs, resnet18 source")
    ap.add_argument(
        "--resnet-position",
        default="auto",
        help="target position for the resnet18 source (an integer needs --head append)",
    )
    ap.add_argument("--head", choices=["joint", "append"], default="joint", help="the clone head")
    ap.add_argument("--out", type=Path, default=Path("bench-out/seed-archs.json"))
    ap.add_argument("--img", type=Path, default=Path("docs/img/seed-archs.png"))
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.resnet_epochs, args.clone_epochs, args.resnet_clone_epochs = args.seeds[:1], 1, 4, 1
        args.img, args.out = (
            Path("bench-out/seed-archs-quick.png"),
            args.out.with_name("seed-archs-quick.json"),
        )
    torch.set_num_threads(1)
    start = time.perf_counter()
    work = args.out.parent / f"seed-archs-{args.data}-work"
    work.mkdir(parents=True, exist_ok=True)
    per_seed: list[dict[str, Any]] = []
    for seed in args.seeds:
        tgt = cached_base(arch="lenet5", data=args.data, classes="0-4", seed=seed, epochs=args.epochs)
        srcs = {
            a: cached_base(arch=a, data=args.data, classes="5-9", seed=seed, epochs=args.epochs)
            for a in ARCHS[:2]
        }
        srcs["resnet18"] = cached_base(
            arch="resnet18",
            data=args.data,
            classes="5-9",
            seed=seed,
            epochs=args.resnet_epochs,
            input_size=28,
            fraction=args.resnet_fraction,
        )
        t0 = time.perf_counter()
        rk = rank_sources(
            target=tgt["path"],
            sources=[srcs[a]["path"] for a in ARCHS],
            classes="5",
            data=args.data,
            config=SurrogateConfig(samples=50, masks=50, seed=seed),
            device="cpu",
        )
        rank_s = time.perf_counter() - t0
        score = {r["source"]: r["score"] for r in rk["ranking"]}
        rows = {}
        for a in ARCHS:
            ep = args.resnet_clone_epochs if a == "resnet18" else args.clone_epochs
            pos = args.resnet_position if a == "resnet18" else "auto"
            m = clone_metrics(
                position=pos if pos == "auto" else int(pos),
                source=srcs[a]["path"],
                target=tgt["path"],
                classes="5",
                data=args.data,
                seed=seed,
                out=work / f"delta-{a}-s{seed}.safetensors",
                epochs=ep,
                fraction=0.3,
                head=args.head,
                surrogate_config=SurrogateConfig(samples=50, masks=50, seed=seed),
            )
            rows[a] = {
                **m,
                "source_acc": srcs[a]["test_accuracy"],
                "score": float(score[srcs[a]["path"]]),
                "source_train_seconds": srcs[a]["seconds"],
            }
            print(
                f"seed {seed} {a}: src {rows[a]['source_acc']:.3f} score {rows[a]['score']:.3f} Ori "
                f"{m['ori_acc']:.3f} "
                f"Tar {m['tar_acc']:.3f} Avg {m['avg_acc']:.3f} R={m['position']} "
                f"({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        top = max(ARCHS, key=lambda a: rows[a]["score"])
        best = max(ARCHS, key=lambda a: rows[a]["avg_acc"])
        per_seed.append(
            {
                "seed": seed,
                "target_test_accuracy": tgt["test_accuracy"],
                "sources": rows,
                "rank_seconds": rank_s,
                "top_ranked": top,
                "best_clone": best,
            }
        )
    keys = [
        "source_acc",
        "ori_acc",
        "tar_acc",
        "avg_acc",
        "mean_acc",
        "locality",
        "extra_params_ratio",
        "score",
        "seconds",
    ]
    summ = {a: summarize([r["sources"][a] for r in per_seed], keys) for a in ARCHS}
    body = [
        ["Source Acc (own 5-9 test)"] + [fmt_pm(summ[a], "source_acc") for a in ARCHS],
        ["Ori Acc"] + [fmt_pm(summ[a], "ori_acc") for a in ARCHS],
        ["Tar Acc"] + [fmt_pm(summ[a], "tar_acc") for a in ARCHS],
        ["Avg Acc"] + [fmt_pm(summ[a], "avg_acc") for a in ARCHS],
        ["locality"] + [fmt_pm(summ[a], "locality") for a in ARCHS],
        ["rank-sources score"] + [fmt_pm(summ[a], "score", pct=False, digits=3) for a in ARCHS],
        ["extra params (×)"] + [fmt_pm(summ[a], "extra_params_ratio", pct=False, digits=2) for a in ARCHS],
        ["chosen R"] + [",".join(str(r["sources"][a]["position"]) for r in per_seed) for a in ARCHS],
        ["clone time (s)"] + [fmt_pm(summ[a], "seconds", pct=False) for a in ARCHS],
    ]
    hits = sum(r["top_ranked"] == r["best_clone"] for r in per_seed)
    text = (
        f"Table 5: {args.data}, lenet5 target 0-4, clone '5' (30 % data) from three 5-9 sources; seeds "
        f"{args.seeds}; "
        f"resnet18: 28 px, {args.resnet_epochs} epochs on {100 * args.resnet_fraction:g} % of the train "
        "split; "
        f"CloneConfig defaults: {config_summary()}\n\n"
        + table(["metric"] + [f"{a} source" for a in ARCHS], body)
        + f"\n\ntop-ranked source = best clone (Avg Acc) in {hits}/{len(per_seed)} seeds; "
        + "per seed (top, best): "
        + ", ".join(f"({r['top_ranked']}, {r['best_clone']})" for r in per_seed)
        + "\n\nSeed (CIFAR-10, ResNet-18 target; CNN / ResNet-18 / ResNet-50 sources): "
        + "; ".join(f"{k} {'/'.join(map(str, v))}" for k, v in SEED.items())
    )
    print(text)
    plot(summ, len(args.seeds), args.img)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "clone_config": CloneConfig().to_dict(),
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


if __name__ == "__main__":
    main()
