"""The joint head (issue 15): size/accuracy Pareto front, five classes, speed against `pnc eval`.

On mnist5k, lenet5 target (0-4) and source (5-9), per seed (models trained with that seed, split seed 0):

- ``pareto``: clone "5" with both heads at size budgets 0.02, 0.05, 0.1, 0.25, 1.0× the target and online
  (``--link-source``: the source filters are not stored and do not count); Avg Acc against extra params.
- ``five``: clone "5-9" (default settings, and ``--shifts 0``) against joint retraining of all ten
  classes with all data, as ``pnc train`` does it and with the clone's shifted copies of every image;
  ``--random-features N ...`` adds one clone per N with that many random ReLU features (RanPAC option),
  on the same models.
- ``speed``: wall time of ``pnc clone`` (default: joint head, full search) against one ``pnc eval`` pass of
  the target over all 5,000 mnist5k images, both as fresh processes in the same run, alternating.
- ``resnet``: resnet18 → resnet18 at 32 px (mnist5k resized to RGB), clone "5": time per candidate
  against one forward pass of both networks over the training data.

    python benchmarks/bench_joint.py --seeds 0 1 2 --parts pareto five speed
    python benchmarks/bench_joint.py --seeds 0 --parts resnet
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import eval_metrics, load_splits, pseudo_labels, train_base, train_shifted  # noqa: E402

from pnc_cli.api.cloning import clone  # noqa: E402
from pnc_cli.core.config import CloneConfig  # noqa: E402

BUDGETS = [0.02, 0.05, 0.1, 0.25, 1.0]


def _clone(
    src: Path, tgt: Path, classes: str, out: Path, *, online: bool = False, **config: Any
) -> dict[str, Any]:
    return clone(
        source=src,
        target=tgt,
        classes=classes,
        output=out,
        data="mnist5k",
        target_data="mnist5k",
        config=CloneConfig(**config),
        link_source=online,
        force=True,
        device="cpu",
    )


def pareto(seed: int, work: Path, epochs: int, heads: list[str]) -> list[dict[str, Any]]:
    tgt = train_base(
        arch="lenet5", data="mnist5k", classes="0-4", seed=seed, epochs=epochs, out_dir=work, name=f"t{seed}"
    )
    src = train_base(
        arch="lenet5", data="mnist5k", classes="5-9", seed=seed, epochs=epochs, out_dir=work, name=f"s{seed}"
    )
    rows = []
    for head in heads:
        extra = {"max_ori_drop": None} if head == "append" else {}
        for budget in [*BUDGETS, "online"]:
            online = budget == "online"
            ratio = 0.1 if online else budget
            r = _clone(
                src.path,
                tgt.path,
                "5",
                work / "d.safetensors",
                online=online,
                head=head,
                seed=seed,
                max_extra_ratio=ratio,
                **extra,
            )
            rows.append(
                {
                    "seed": seed,
                    "head": head,
                    "budget": budget,
                    "avg_acc": r["avg_acc"],
                    "ori_acc": r["ori_acc"],
                    "tar_acc": r["tar_acc"],
                    "extra_ratio": r["extra_params_ratio"],
                }
            )
            print(
                f"  pareto seed {seed} {head} {budget}: Avg {100 * r['avg_acc']:.1f} "
                f"at {r['extra_params_ratio']:.3f}x",
                file=sys.stderr,
                flush=True,
            )
    return rows


def five(seed: int, work: Path, epochs: int, random_features: list[int]) -> dict[str, Any]:
    tgt = train_base(
        arch="lenet5", data="mnist5k", classes="0-4", seed=seed, epochs=epochs, out_dir=work, name=f"t{seed}"
    )
    src = train_base(
        arch="lenet5", data="mnist5k", classes="5-9", seed=seed, epochs=epochs, out_dir=work, name=f"s{seed}"
    )
    full = train_base(
        arch="lenet5",
        data="mnist5k",
        classes="0-9",
        seed=seed,
        epochs=epochs,
        out_dir=work,
        name=f"all{seed}",
    )
    r = _clone(src.path, tgt.path, "5-9", work / "d5.safetensors", seed=seed)
    splits = load_splits(
        data="mnist5k",
        target_classes=[str(c) for c in range(5)],
        new_classes=[str(c) for c in range(5, 10)],
        fraction=0.3,
        channels=1,
        size=28,
    )
    target_pred = pseudo_labels(tgt.network, splits.test[0])
    joint = eval_metrics(full.network, splits, target_pred)
    # the same ten-class retraining, shown the same shifted copies as the clone's statistics (fairness)
    shifted = train_shifted(full, splits.joint, epochs=epochs, seed=seed, shifts=CloneConfig().shifts)
    joint_shifted = eval_metrics(shifted, splits, target_pred)
    plain = _clone(src.path, tgt.path, "5-9", work / "d5.safetensors", seed=seed, shifts=0)
    variants = {}
    for n in random_features:
        v = _clone(src.path, tgt.path, "5-9", work / "d5.safetensors", seed=seed, random_features=n)
        variants[n] = {k: v[k] for k in ("avg_acc", "ori_acc", "tar_acc", "extra_params_ratio")}
        print(
            f"  five seed {seed} random_features {n}: Avg {100 * v['avg_acc']:.1f} "
            f"at {v['extra_params_ratio']:.3f}x (default: {100 * r['avg_acc']:.1f})",
            file=sys.stderr,
            flush=True,
        )
    return {
        "random_features": variants,
        "seed": seed,
        "pnc_avg": r["avg_acc"],
        "pnc_ori": r["ori_acc"],
        "pnc_tar": r["tar_acc"],
        "extra_ratio": r["extra_params_ratio"],
        "joint_all_avg": joint["avg_acc"],
        "joint_all_ori": joint["ori_acc"],
        "joint_all_tar": joint["tar_acc"],
        "joint_shifted_avg": joint_shifted["avg_acc"],
        "shifts0": {k: plain[k] for k in ("avg_acc", "ori_acc", "tar_acc", "extra_params_ratio")},
    }


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def speed(seed: int, work: Path, epochs: int, repeats: int) -> dict[str, Any]:
    tgt = train_base(
        arch="lenet5", data="mnist5k", classes="0-4", seed=seed, epochs=epochs, out_dir=work, name=f"t{seed}"
    )
    src = train_base(
        arch="lenet5", data="mnist5k", classes="5-9", seed=seed, epochs=epochs, out_dir=work, name=f"s{seed}"
    )
    py = [sys.executable, "-m", "pnc_cli"]
    clone_cmd = [
        *py,
        "clone",
        "-s",
        str(src.path),
        "-t",
        str(tgt.path),
        "-c",
        "5",
        "-o",
        str(work / "c.safetensors"),
        "--force",
        "--quiet",
        "--device",
        "cpu",
    ]
    eval_cmd = [
        *py,
        "eval",
        "--model",
        str(tgt.path),
        "--data",
        "mnist5k",
        "--split",
        "all",
        "--quiet",
        "--device",
        "cpu",
        "--json",
    ]
    c, e = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        e.append(_wall(eval_cmd))
        c.append(_wall(clone_cmd))
    return {
        "seed": seed,
        "clone_s": c,
        "eval_s": e,
        "ratio_of_medians": statistics.median(c) / statistics.median(e),
    }


def resnet(seed: int, work: Path) -> dict[str, Any]:
    """resnet18 pair at 32 px RGB: clone time, time per candidate, and one forward pass of both nets."""

    from pnc_cli.io.data import load_data

    ds = load_data("mnist5k", split="train")
    x = torch.nn.functional.interpolate(ds.images, size=32, mode="bilinear", align_corners=False).repeat(
        1, 3, 1, 1
    )
    npz = work / "mnist-rgb32.npz"
    np.savez(npz, x=x.permute(0, 2, 3, 1).numpy(), y=ds.labels.numpy(), classes=np.array(ds.classes))
    kw = {"arch": "resnet18", "data": str(npz), "seed": seed, "epochs": 1, "out_dir": work}
    tgt, src = train_base(classes="0-4", name="rt", **kw), train_base(classes="5-9", name="rs", **kw)
    start = time.perf_counter()
    r = clone(
        source=src.path,
        target=tgt.path,
        classes="5",
        output=work / "r.safetensors",
        data=str(npz),
        target_data=str(npz),
        force=True,
        device="cpu",
    )
    total = time.perf_counter() - start
    n = int(0.3 * len(ds.labels) * 0.8)
    xb = x[:256]
    with torch.no_grad():
        t0 = time.perf_counter()
        tgt.network(xb), src.network(xb)
        per = (time.perf_counter() - t0) / len(xb)
    return {
        "seed": seed,
        "clone_s": total,
        "candidates": len(r["search"]),
        "per_candidate_s": total / len(r["search"]),
        "forward_both_over_train_s": per * n,
        "avg_acc": r["avg_acc"],
        "extra_ratio": r["extra_params_ratio"],
    }


def pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    m = float(np.mean(values)) * scale
    s = float(np.std(values)) * scale
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for head, marker, colour in (("joint", "o", "C0"), ("append", "s", "C1")):
        if not any(r["head"] == head for r in rows):
            continue

        def point(budget: object, head: str = head) -> tuple[float, float]:
            sel = [r for r in rows if r["head"] == head and r["budget"] == budget]
            return float(np.mean([r["extra_ratio"] for r in sel])), float(
                100 * np.mean([r["avg_acc"] for r in sel])
            )

        pts = [(*point(b), str(b)) for b in BUDGETS]  # offline deltas: one line over the budgets
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker + "-", color=colour, label=f"{head} head")
        ox, oy = point("online")  # online (--link-source): stores no source weights, a point of its own
        ax.plot([ox], [oy], marker, color=colour, mfc="none", label=f"{head} head, online")
        for x, y, b in [*pts, (ox, oy, "online")]:
            ax.annotate(b, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("extra params (× target)")
    ax.set_ylabel("Avg Acc % (test)")
    ax.set_title("mnist5k, lenet5 → lenet5, clone '5' (mean over seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--parts",
        nargs="+",
        default=["pareto", "five", "speed"],
        choices=["pareto", "five", "speed", "resnet"],
    )
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument(
        "--random-features",
        type=int,
        nargs="*",
        default=[],
        help="five: also clone with N random ReLU features (RanPAC option), for each N given",
    )
    ap.add_argument(
        "--heads",
        nargs="+",
        default=["joint", "append"],
        choices=["joint", "append"],
        help="pareto: the heads to run",
    )
    ap.add_argument("--repeats", type=int, default=3, help="speed: runs of each command")
    ap.add_argument("--out", type=Path, default=Path("bench-out/joint.json"))
    ap.add_argument("--img", type=Path, default=Path("docs/img/joint-pareto.png"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    doc: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    lines = []
    with tempfile.TemporaryDirectory(prefix="bench-joint-") as tmp:
        work = Path(tmp)
        if "pareto" in args.parts:
            rows = [r for s in args.seeds for r in pareto(s, work, args.epochs, args.heads)]
            doc["pareto"] = rows
            lines += [
                "| head | budget | Avg Acc | Ori Acc | Tar Acc | extra params (×) |",
                "|---|---|---|---|---|---|",
            ]
            for head in args.heads:
                for b in [*BUDGETS, "online"]:
                    sel = [r for r in rows if r["head"] == head and r["budget"] == b]
                    lines.append(
                        f"| {head} | {b} | {pm([r['avg_acc'] for r in sel])} "
                        f"| {pm([r['ori_acc'] for r in sel])} "
                        f"| {pm([r['tar_acc'] for r in sel])} | {pm([r['extra_ratio'] for r in sel], 1, 3)} |"
                    )
            plot(rows, args.img)
            lines.append(f"\nplot: {args.img}\n")
        if "five" in args.parts:
            rows = [five(s, work, args.epochs, args.random_features) for s in args.seeds]
            doc["five"] = rows
            s0 = [r["shifts0"] for r in rows]
            lines += [
                "| clone 5-9 (mean ± std) | Avg | Ori | Tar | extra (×) |",
                "|---|---|---|---|---|",
                f"| PNC, default | {pm([r['pnc_avg'] for r in rows])} | {pm([r['pnc_ori'] for r in rows])} | "
                f"{pm([r['pnc_tar'] for r in rows])} | {pm([r['extra_ratio'] for r in rows], 1, 3)} |",
                f"| PNC, --shifts 0 | {pm([v['avg_acc'] for v in s0])} | {pm([v['ori_acc'] for v in s0])} | "
                f"{pm([v['tar_acc'] for v in s0])} | {pm([v['extra_params_ratio'] for v in s0], 1, 3)} |",
                f"| joint retraining, 10 classes, all data | {pm([r['joint_all_avg'] for r in rows])} | "
                f"{pm([r['joint_all_ori'] for r in rows])} | "
                f"{pm([r['joint_all_tar'] for r in rows])} | 1.0 |",
                f"| the same, with the clone's shifted copies | {pm([r['joint_shifted_avg'] for r in rows])} "
                "| | | 1.0 |",
                "",
            ]
            for n in args.random_features:
                sel = [r["random_features"][n] for r in rows]
                lines.insert(
                    len(lines) - 1,
                    f"| --random-features {n} | {pm([v['avg_acc'] for v in sel])} | "
                    f"{pm([v['ori_acc'] for v in sel])} | {pm([v['tar_acc'] for v in sel])} | "
                    f"{pm([v['extra_params_ratio'] for v in sel], 1, 3)} | |",
                )
        if "speed" in args.parts:
            rows = [speed(s, work, args.epochs, args.repeats) for s in args.seeds]
            doc["speed"] = rows
            lines.append(
                "| seed | pnc clone s (runs) | pnc eval s (runs) | ratio of medians |\n|---|---|---|---|"
            )
            for r in rows:
                lines.append(
                    f"| {r['seed']} | {[round(v, 1) for v in r['clone_s']]} "
                    f"| {[round(v, 1) for v in r['eval_s']]} "
                    f"| {r['ratio_of_medians']:.2f} |"
                )
            lines.append("")
        if "resnet" in args.parts:
            rows = [resnet(s, work) for s in args.seeds]
            doc["resnet"] = rows
            lines.append(
                "| seed | clone s | candidates | s per candidate "
                "| one forward of both nets over the training data, s |"
                "\n|---|---|---|---|---|"
            )
            for r in rows:
                lines.append(
                    f"| {r['seed']} | {r['clone_s']:.1f} | {r['candidates']} | {r['per_candidate_s']:.1f} | "
                    f"{r['forward_both_over_train_s']:.1f} |"
                )
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
