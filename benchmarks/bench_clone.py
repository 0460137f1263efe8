"""Cloning quality (issue 4): PNC against the target alone, joint retraining and three baselines.

On mnist5k, per seed: train the target (lenet5, classes 0-4) and the source (lenet5, 5-9) with that
seed; then, on the same data and splits (split seed 0; test = the test split of 0-5):

(a) target alone;
(b) PNC: ``pnc_cli.api.cloning.clone`` of class 5 (position auto, 30 % of the class-5 train split, the
    same fraction of the target's train split pseudo-labelled by the target; clone's own 20 %
    validation split comes out of that data);
(c) joint retraining of lenet5 on classes 0-5 with all their train data (upper bound, same epochs);
(d) naive fine-tuning: every weight of the target + a new head row, on the class-5 samples only;
(e) LwF: extended head, cross-entropy (class-5 label / target pseudo-label) + KD (T=2) on the old
    outputs, on the data PNC sees;
(f) PEFT LoRA (r=4) on the target's conv/linear layers + a new head row, on the data PNC sees.

Metrics on the test split (docs/method-spec.md §7): Ori/Tar/Avg Acc, Mean = (Ori+Tar)/2, locality (share of
target-class test images predicted as the target predicts), extra params / target params (a method
that changes every weight needs a whole copy: 1.0x), wall time of the method's training (PNC: the whole
``clone`` call, search included). The goal "pnc clone with position search <= 30 s" is timed on the
command line (``python -m pnc_cli clone``, default config, torch's default threads) per seed.

    python benchmarks/bench_clone.py --seeds 0 1 2          # ~5 min on 2 cores
    python benchmarks/bench_clone.py --quick                # seed 0, no CLI timing, < 1 min
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    Splits,
    eval_metrics,
    load_splits,
    lora_adapter,
    lwf,
    naive_finetune,
    pseudo_labels,
    summarize,
    train_base,
)

from pnc_cli.api.cloning import clone  # noqa: E402
from pnc_cli.core.config import CloneConfig  # noqa: E402

APPEND = "PNC, appended head (--head append)"
PNC_VARIANTS = {"PNC": {}, APPEND: {"head": "append", "max_ori_drop": None}}
JOINT_ONLY = {"random_features", "shifts"}  # --set options the appended-head row does not take
METHODS = [
    "target alone",
    "PNC",
    APPEND,
    "joint retraining (upper bound)",
    "naive fine-tuning",
    "LwF",
    "LoRA r=4",
]
BASELINES = ["target alone", "naive fine-tuning", "LwF", "LoRA r=4"]
KEYS = ["ori_acc", "tar_acc", "avg_acc", "mean_acc", "locality", "extra_ratio", "seconds"]
GOALS = {
    "avg_vs_joint": 1.0,
    "ori_drop": 0.5,
    "avg_over_best_baseline": 3.0,
    "extra_ratio": 0.1,
    "cli_seconds": 30.0,
}


def parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` CloneConfig overrides (VALUE parsed as JSON when it can be)."""
    names = {f.name for f in fields(CloneConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in names:
            raise SystemExit(f"--set: unknown CloneConfig field {key!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def time_cli(src: Path, tgt: Path, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys) of ``pnc clone`` with the default config, in a fresh process."""
    cmd = [
        sys.executable,
        "-m",
        "pnc_cli",
        "clone",
        "-s",
        str(src),
        "-t",
        str(tgt),
        "-c",
        "5",
        "-o",
        str(out),
        "--force",
        "--quiet",
        "--device",
        "cpu",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_seed(seed: int, args: argparse.Namespace, overrides: dict[str, Any], work: Path) -> dict[str, Any]:
    def base(classes: str, name: str):  # noqa: ANN202
        return train_base(
            arch=args.arch,
            data=args.data,
            classes=classes,
            seed=seed,
            epochs=args.epochs,
            out_dir=work,
            name=name,
        )

    tgt, src, joint = base("0-4", f"target{seed}"), base("5-9", f"source{seed}"), base("0-5", f"joint{seed}")
    net = tgt.network
    spec_size = int(net.block_shapes(1, 28)[0][-1])
    splits: Splits = load_splits(
        data=args.data,
        target_classes=[str(c) for c in range(5)],
        new_classes=["5"],
        fraction=args.fraction,
        channels=1,
        size=spec_size,
    )
    target_pred = pseudo_labels(net, splits.test[0])
    rows: dict[str, dict[str, Any]] = {}

    def target_only(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x), torch.full((len(x), 1), float("-inf"))], dim=1)

    rows["target alone"] = {
        **eval_metrics(target_only, splits, target_pred),
        "extra_ratio": 0.0,
        "seconds": tgt.seconds,
    }
    for method, variant in PNC_VARIANTS.items():
        mine = overrides if method == "PNC" else {k: v for k, v in overrides.items() if k not in JOINT_ONLY}
        config = CloneConfig(**{"fraction": args.fraction, "seed": seed, **mine, **variant})
        start = time.perf_counter()
        r = clone(
            source=src.path,
            target=tgt.path,
            classes="5",
            output=work / f"delta{seed}.safetensors",
            data=args.data,
            target_data=args.data,
            position="auto",
            config=config,
            force=True,
            device="cpu",
        )
        rows[method] = {k: r[k] for k in ("ori_acc", "tar_acc", "avg_acc", "mean_acc", "locality")}
        rows[method].update(
            extra_ratio=r["extra_params_ratio"],
            seconds=time.perf_counter() - start,
            position=r["position"],
            search=r["search"],
            target_ori_acc=r["target_ori_acc"],
        )
    rows["joint retraining (upper bound)"] = {
        **eval_metrics(joint.network, splits, target_pred),
        "extra_ratio": joint.num_params / tgt.num_params,
        "seconds": joint.seconds,
    }
    kw = {"epochs": args.baseline_epochs, "seed": seed}
    for name, fn, lr in [
        ("naive fine-tuning", naive_finetune, 1e-3),
        ("LwF", lwf, 1e-3),
        ("LoRA r=4", lora_adapter, 3e-3),
    ]:
        t = fn(net, splits, lr=lr, **kw)
        rows[name] = {
            **eval_metrics(t.forward, splits, target_pred),
            "extra_ratio": t.extra_params / tgt.num_params,
            "seconds": t.seconds,
        }
    x_test, y_test = splits.test
    on_class = y_test == splits.num_target  # the cloned class "5" (label n_t); the source's class index 0
    with torch.no_grad():
        src_pred = src.network(x_test[on_class]).argmax(1)
    out: dict[str, Any] = {
        "seed": seed,
        "methods": rows,
        "source_test_accuracy": src.test_accuracy,
        # the source's own accuracy on the cloned class's test images (among its classes 5-9)
        "source_class_acc": float((src_pred == 0).float().mean()),
    }
    if args.cli_time:
        out["cli_seconds"], out["cli_cpu_seconds"] = time_cli(
            src.path, tgt.path, work / f"cli-delta{seed}.safetensors"
        )
        out["load_average"] = os.getloadavg()[0]
    return out


def fmt(summary: dict[str, dict[str, float]], key: str) -> str:
    if key not in summary:
        return "—"
    m, s = summary[key]["mean"], summary[key]["std"]
    if key == "extra_ratio":
        return f"{m:.3f} ± {s:.3f}"
    if key == "seconds":
        return f"{m:.1f} ± {s:.1f}"
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def report(results: list[dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    summary = {m: summarize([r["methods"][m] for r in results], KEYS) for m in METHODS}
    lines = [
        "| method | Ori Acc | Tar Acc | Avg Acc | Mean (Ori+Tar)/2 | locality | extra params (× target) | "
        "time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(fmt(summary[m], k) for k in KEYS) + " |")

    def per_seed(f: Any) -> list[float]:
        return [f(r) for r in results]

    pnc = lambda r, k: r["methods"]["PNC"][k]  # noqa: E731
    avg_gap = per_seed(
        lambda r: 100 * (r["methods"]["joint retraining (upper bound)"]["avg_acc"] - pnc(r, "avg_acc"))
    )
    drop = per_seed(lambda r: 100 * (r["methods"]["target alone"]["ori_acc"] - pnc(r, "ori_acc")))
    over = per_seed(lambda r: 100 * (pnc(r, "avg_acc") - max(r["methods"][b]["avg_acc"] for b in BASELINES)))
    extra = per_seed(lambda r: pnc(r, "extra_ratio"))
    tar_gap = per_seed(lambda r: 100 * (pnc(r, "tar_acc") - r["source_class_acc"]))
    cli = [r["cli_seconds"] for r in results if "cli_seconds" in r]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    goals = {
        "avg_vs_joint": {
            "value": mean(avg_gap),
            "goal": f"<= {GOALS['avg_vs_joint']} pt",
            "met": mean(avg_gap) <= GOALS["avg_vs_joint"],
        },
        "ori_drop": {
            "value": mean(drop),
            "goal": f"<= {GOALS['ori_drop']} pt",
            "met": mean(drop) <= GOALS["ori_drop"],
        },
        "avg_over_best_baseline": {
            "value": mean(over),
            "goal": f">= {GOALS['avg_over_best_baseline']} pt",
            "met": mean(over) >= GOALS["avg_over_best_baseline"],
        },
        "tar_vs_source_on_class": {
            "value": mean(tar_gap),
            "goal": ">= -1 pt (PNC Tar minus the source's own accuracy on the cloned class)",
            "met": mean(tar_gap) >= -1.0,
        },
        "extra_ratio": {
            "value": mean(extra),
            "goal": f"<= {GOALS['extra_ratio']}x",
            "met": mean(extra) <= GOALS["extra_ratio"],
        },
    }
    if cli:  # median over seeds: one run on a machine shared with other jobs can stall (see the CPU seconds)
        median = sorted(cli)[len(cli) // 2]
        goals["cli_seconds"] = {
            "value": median,
            "max": max(cli),
            "goal": f"<= {GOALS['cli_seconds']} s (median over seeds)",
            "met": median <= GOALS["cli_seconds"],
        }
    lines += ["", "| goal | PNC (mean; CLI time: median) | goal | reached |", "|---|---|---|---|"]
    for k, g in goals.items():
        lines.append(f"| {k} | {g['value']:.3f} | {g['goal']} | {'reached' if g['met'] else 'NOT reached'} |")
    positions = [r["methods"]["PNC"]["position"] for r in results]
    cpu = [round(r["cli_cpu_seconds"], 1) for r in results if "cli_cpu_seconds" in r]
    load = [round(r["load_average"], 1) for r in results if "load_average" in r]
    lines.append(
        f"\nPNC chosen positions per seed: {positions}; `pnc clone` wall s: {[round(c, 1) for c in cli]}, "
        f"CPU s: {cpu}, 1-min load average at the time: {load}"
    )
    on_class = [100 * r["source_class_acc"] for r in results]
    mu = sum(on_class) / len(on_class)
    sd = (sum((v - mu) ** 2 for v in on_class) / len(on_class)) ** 0.5
    lines.append(f"The source's own accuracy on the cloned class's test images: {mu:.1f} ± {sd:.1f}")
    return "\n".join(lines), summary, goals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="seed 0 only, no command-line timing")
    ap.add_argument("--out", type=Path, default=Path("bench-out/clone.json"))
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--arch", default="lenet5")
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the target, source and joint models")
    ap.add_argument(
        "--baseline-epochs", type=int, default=10, help="epochs of naive fine-tuning, LwF and LoRA"
    )
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of this process")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="CloneConfig overrides for PNC")
    ap.add_argument("--no-cli-time", dest="cli_time", action="store_false")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.cli_time = args.seeds[:1], False
    torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-clone-") as tmp:
        for seed in args.seeds:
            results.append(run_seed(seed, args, overrides, Path(tmp)))
            avg = {m: round(100 * r["avg_acc"], 1) for m, r in results[-1]["methods"].items()}
            print(
                f"seed {seed} done ({time.perf_counter() - start:.0f} s): Avg {avg}",
                file=sys.stderr,
                flush=True,
            )
    table, summary, goals = report(results)
    header = (
        f"PNC clone quality: {args.data}, {args.arch} target 0-4 / source 5-9, clone '5', fraction "
        f"{args.fraction}, "
        f"seeds {args.seeds}, {args.threads} torch threads, CloneConfig overrides {overrides or 'none'}"
    )
    print(header + "\n\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "clone_config": CloneConfig(**{"fraction": args.fraction, **overrides}).to_dict(),
        "per_seed": results,
        "summary": summary,
        "goals": goals,
        "seconds": time.perf_counter() - start,
    }
    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
