"""Seed Table 3 / Eq. 5 and Table 6 (issue 6): several sources, several functionalities; incremental
learning against baselines.

mnist5k split into 5 tasks of 2 classes ({0,1}, {2,3}, …, {8,9}). Per seed: a lenet5 target on task 1,
four lenet5 sources on tasks 2-5 (one each; 5 epochs, cached in bench-out/seed-bases/).

PNC (Table 3): clone each source's two classes into the target (30 % data, target-domain samples of
task 1 pseudo-labelled by the target, position auto, 10 epochs); stack the deltas one after the other
(``apply_delta`` onto the previous cloned file), then remove them in reverse (``remove_delta``). After
every step: accuracy on every task seen so far (argmax over all classes of the model) and extra params.
Asserted: after the last removal the file is byte-identical to the original target, and every
intermediate removal gives back the byte-identical cloned file of the matching apply step.

Baselines (Table 6), the same task sequence from the same target: naive fine-tuning (all weights + 2
new head rows per task, cross-entropy on the new task's 30 % only), LwF (same, plus the task-1
samples PNC sees with the target's pseudo-labels, plus KD T=2 to the previous model's old outputs),
joint retraining (lenet5 from scratch on every class seen so far, all their data; an upper bound).
Plots: docs/img/seed-incremental-stack.png, docs/img/seed-incremental-methods.png.

    python benchmarks/bench_incremental.py --seeds 0 1 2
    python benchmarks/bench_incremental.py --quick       # seed 0, 3 tasks, 4 clone/baseline epochs
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

from _seed_common import (  # noqa: E402
    Growing,
    cached_base,
    clone_metrics,
    config_summary,
    fmt_pm,
    labelled,
    seq_step,
    summarize,
    table,
    task_accuracies,
    weights_equal,
)

from pnc_cli.api import apply_delta, load_cloned, remove_delta  # noqa: E402
from pnc_cli.core.config import CloneConfig  # noqa: E402
from pnc_cli.io.model_file import load_model  # noqa: E402
from pnc_cli.nets.training import predict_logits  # noqa: E402

SEED_T6 = [
    ("Grow", "yes", "1.3×", 54.7),
    ("APD", "no", "1.3×", 57.5),
    ("CPG", "no", "1.3×", 60.1),
    ("GROWN", "yes", "1.2×", 60.8),
    ("FFNB", "yes", "0.5×", 68.1),
    ("DER", "yes", "0.8×", 72.5),
    ("PNC", "yes", "0.1×", 73.6),
]
SEED_T3_AVG = [84.8, 84.3, 82.9, 82.3, 80.9]  # seed Table 3: pre-trained target's Acc-1, then PNC-s1..s4 Avg
METHODS = ["PNC", "naive fine-tuning", "LwF", "joint retraining (upper bound)"]


def on_stack(args: argparse.Namespace) -> bool:
    """Clone each task on the current cloned model: asked for, or implied by the joint head, whose delta
    reads the features of every delta below it (docs/delta-format.md: joint heads stack LIFO)."""
    return bool(args.train_on_stack) or CloneConfig().head == "joint"


def run_seed(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    tasks_names = [[str(2 * t), str(2 * t + 1)] for t in range(args.tasks)]
    order = [c for t in tasks_names for c in t]
    tasks = [[2 * t, 2 * t + 1] for t in range(args.tasks)]

    def base(cls, **kw):
        return cached_base(arch="lenet5", data=args.data, classes=cls, seed=seed, epochs=args.epochs, **kw)  # noqa: E731

    tgt = base(",".join(tasks_names[0]))
    srcs = [base(",".join(t)) for t in tasks_names[1:]]
    loaded = load_model(tgt["path"])
    net, ch, size = loaded.network, loaded.spec.in_channels, loaded.spec.input_size
    n_target = net.num_params()
    tx, ty = labelled(args.data, order, order, "test", 1.0, ch, size)
    out: dict[str, Any] = {
        "seed": seed,
        "target_test_accuracy": tgt["test_accuracy"],
        "source_test_accuracy": [s["test_accuracy"] for s in srcs],
    }

    # ---- PNC: clone, stack, remove
    steps: list[dict[str, Any]] = [
        {"step": "target", **task_accuracies(net, tx, ty, tasks[:1]), "extra_params_ratio": 0.0}
    ]
    deltas, names, files = [], [], [Path(tgt["path"])]
    for k, src in enumerate(srcs, start=1):
        d = work / f"delta-t{k + 1}-s{seed}.safetensors"
        m = clone_metrics(
            source=src["path"],
            target=str(files[-1]) if on_stack(args) else tgt["path"],
            classes=",".join(tasks_names[k]),
            data=args.data,
            seed=seed,
            out=d,
            epochs=args.clone_epochs,
            fraction=0.3,
            max_extra_ratio=args.max_extra,
        )
        deltas.append(m)
        names.append(m["name"])
        f = work / f"cloned-{k}-s{seed}.safetensors"
        r = apply_delta(target=files[-1], deltas=[d], output=f, force=True)
        files.append(f)
        model = load_cloned(f)[0]
        steps.append(
            {
                "step": f"+task {k + 1}",
                **task_accuracies(model, tx, ty, tasks[: k + 1]),
                "extra_params_ratio": float(r["extra_params_ratio"]),
            }
        )
        print(
            f"seed {seed} +task {k + 1}: {[round(a, 3) for a in steps[-1]['per_task']]} extra "
            f"{r['extra_params_ratio']:.3f} (this delta {m['extra_params_ratio']:.3f})",
            file=sys.stderr,
            flush=True,
        )
    cur, identical = files[-1], []
    for k in range(len(srcs), 0, -1):
        f = work / f"removed-{k}-s{seed}.safetensors"
        r = remove_delta(cloned=cur, output=f, names=[names[k - 1]], force=True)
        same = f.read_bytes() == files[k - 1].read_bytes()
        identical.append(same)
        model = load_cloned(f)[0] if k > 1 else load_model(f).network
        extra = (
            0.0
            if k == 1
            else float(
                apply_delta(
                    target=tgt["path"],
                    deltas=[work / f"delta-t{j + 1}-s{seed}.safetensors" for j in range(1, k)],
                    output=work / f"tmp-s{seed}.safetensors",
                    force=True,
                )["extra_params_ratio"]
            )
        )
        steps.append(
            {
                "step": f"−task {k + 1}",
                **task_accuracies(model, tx, ty, tasks[:k]),
                "extra_params_ratio": extra,
                "bytes_identical_to_apply_step": same,
            }
        )
        cur = f
    assert r["restored"] and r.get("identical_to_original", False), f"remove did not restore the target: {r}"
    assert Path(cur).read_bytes() == Path(tgt["path"]).read_bytes(), (
        "restored file differs from the original target"
    )
    assert all(identical), f"an intermediate removal differs from its apply step: {identical}"
    out["pnc_steps"] = steps
    out["deltas"] = deltas
    out["on_stack"] = on_stack(args)
    incr = {"PNC": [s for s in steps if not s["step"].startswith("−")]}
    extra = {"PNC": steps[len(srcs)]["extra_params_ratio"]}
    recov = {"PNC": "yes (byte-identical, asserted)"}

    # ---- baselines
    first = labelled(args.data, tasks_names[0], order, "train", 0.3, ch, size)
    domain = (first[0], predict_logits(net, first[0]).argmax(1))
    for method in ("naive", "lwf"):
        name = "naive fine-tuning" if method == "naive" else "LwF"
        model = Growing(net)
        hist = [steps[0]]
        for k in range(1, len(tasks)):
            # the old heads do not change when a head is added: the old outputs are its first 2k columns
            prev = model
            model.add_head(2, seed=seed * 100 + k)
            data = labelled(args.data, tasks_names[k], order, "train", 0.3, ch, size)
            seq_step(
                model,
                prev,
                data,
                domain,
                2 * k,
                method=method,
                epochs=args.baseline_epochs,
                lr=1e-3,
                seed=seed * 100 + k,
            )
            hist.append({"step": f"+task {k + 1}", **task_accuracies(model, tx, ty, tasks[: k + 1])})
        incr[name] = hist
        extra[name] = sum(p.numel() for p in model.parameters()) / n_target
        recov[name] = "no" if not weights_equal(net, model) else "yes"
    hist = [steps[0]]
    for k in range(1, len(tasks)):
        j = base(f"0-{2 * k + 1}")
        hist.append(
            {
                "step": f"+task {k + 1}",
                **task_accuracies(load_model(j["path"]).network, tx, ty, tasks[: k + 1]),
            }
        )
    incr["joint retraining (upper bound)"] = hist
    extra["joint retraining (upper bound)"] = load_model(j["path"]).network.num_params() / n_target
    recov["joint retraining (upper bound)"] = "no (a new model; keep the old one to go back)"
    out.update(incremental=incr, extra=extra, recoverable=recov)
    return out


def plots(results: list[dict[str, Any]], n_tasks: int, img_stack: Path, img_methods: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = [s["step"] for s in results[0]["pnc_steps"]]
    fig, ax = plt.subplots(figsize=(8.4, 5.2), dpi=120)
    x = np.arange(len(steps))
    for t in range(n_tasks):
        xs = [i for i, s in enumerate(results[0]["pnc_steps"]) if len(s["per_task"]) > t]
        vals = np.array([[100 * r["pnc_steps"][i]["per_task"][t] for i in xs] for r in results])
        ax.errorbar(
            xs,
            vals.mean(0),
            yerr=vals.std(0),
            marker="o",
            capsize=3,
            label=f"task {t + 1} ({{{2 * t},{2 * t + 1}}})",
        )
    avg = np.array([[100 * s["avg_acc"] for s in r["pnc_steps"]] for r in results])
    ax.errorbar(
        x, avg.mean(0), yerr=avg.std(0), color="k", linewidth=2.2, marker="s", capsize=3, label="Avg (pooled)"
    )
    n_add = sum(1 for s in steps if s.startswith("+"))
    ref = SEED_T3_AVG[: n_add + 1]
    ax.plot(range(len(ref)), ref, "k--", alpha=0.45, marker=".", label="seed PNC-s Avg (CIFAR-100)")
    ax.set_xticks(x)
    ax.set_xticklabels(["target"] + steps[1:], rotation=30)
    ax.set_ylabel("test accuracy on the tasks in the model (%)")
    ax.set_xlabel("step (apply deltas one by one, then remove them in reverse)")
    ax2 = ax.twinx()
    ex = np.array([[s["extra_params_ratio"] for s in r["pnc_steps"]] for r in results])
    ax2.bar(x, ex.mean(0), color="grey", alpha=0.2, width=0.6)
    ax2.set_ylabel("extra params (× target), grey bars")
    ax.set_title(
        f"Table 3 / Eq. 5: stacked PNC deltas on a lenet5 target, mean ± std over {len(results)} seed(s)",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=4)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    img_stack.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(img_stack)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for m in METHODS:
        vals = np.array([[100 * s["avg_acc"] for s in r["incremental"][m]] for r in results])
        ax.errorbar(np.arange(1, n_tasks + 1), vals.mean(0), yerr=vals.std(0), marker="o", capsize=3, label=m)
    ax.set_xticks(np.arange(1, n_tasks + 1))
    ax.set_xlabel("tasks learned (2 classes each)")
    ax.set_ylabel("accuracy on all classes seen so far (%)")
    ax.set_title(f"Table 6: class-incremental mnist5k, mean ± std over {len(results)} seed(s)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img_methods)
    plt.close(fig)


def report(results: list[dict[str, Any]], n_tasks: int) -> str:
    lines = []
    head = (
        ["step", "extra params (×)"]
        + [f"Acc-{t + 1}" for t in range(n_tasks)]
        + ["Avg (pooled)", "Mean of tasks"]
    )
    body = []
    for i, s in enumerate(results[0]["pnc_steps"]):
        rows = [r["pnc_steps"][i] for r in results]
        per = [
            summarize([{"a": r["per_task"][t]} for r in rows], ["a"]) if t < len(s["per_task"]) else None
            for t in range(n_tasks)
        ]
        sm = summarize(rows, ["avg_acc", "mean_task_acc", "extra_params_ratio"])
        body.append(
            [s["step"], fmt_pm(sm, "extra_params_ratio", pct=False, digits=3)]
            + [fmt_pm(p, "a") if p else "—" for p in per]
            + [fmt_pm(sm, "avg_acc"), fmt_pm(sm, "mean_task_acc")]
        )
    lines.append("Table 3 / Eq. 5 (PNC, stack then remove):\n\n" + table(head, body))
    per_delta = [d["extra_params_ratio"] for r in results for d in r["deltas"]]
    lines.append(
        f"Extra params per delta (× target): max {max(per_delta):.3f}, "
        f"mean {sum(per_delta) / len(per_delta):.3f} "
        f"over {len(per_delta)} deltas; cloned on the stack: {'yes' if results[0].get('on_stack') else 'no'}"
    )
    head = [
        "method",
        "Recov.?",
        "extra params (×)",
        "Avg Acc, all classes after the last task",
        "mean of task accs (last)",
        "avg incremental acc (mean over steps)",
    ]
    body = []
    for m in METHODS:
        last = summarize([r["incremental"][m][-1] for r in results], ["avg_acc", "mean_task_acc"])
        inc = summarize(
            [{"a": sum(s["avg_acc"] for s in r["incremental"][m]) / n_tasks} for r in results], ["a"]
        )
        ex = summarize([{"e": r["extra"][m]} for r in results], ["e"])
        body.append(
            [
                m,
                results[0]["recoverable"][m],
                fmt_pm(ex, "e", pct=False, digits=3),
                fmt_pm(last, "avg_acc"),
                fmt_pm(last, "mean_task_acc"),
                fmt_pm(inc, "a"),
            ]
        )
    lines.append("Table 6 (same task sequence):\n\n" + table(head, body))
    lines.append(
        "Seed Table 6 (split CIFAR-100, 10 tasks): "
        + "; ".join(f"{n} recov {r}, {e}, {a}" for n, r, e, a in SEED_T6)
    )
    return "\n\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument(
        "--epochs", type=int, default=5, help="epochs of the base models (target, sources, joint)"
    )
    ap.add_argument("--clone-epochs", type=int, default=10)
    ap.add_argument(
        "--max-extra",
        type=float,
        default=0.12,
        help="size budget per delta (x target); a stacked joint head reads every feature below it, and "
        "issue 15 asks for <= 0.12x per delta",
    )
    ap.add_argument(
        "--train-on-stack",
        action="store_true",
        help="clone each task against the current cloned model (target + earlier deltas) "
        "instead of the bare target",
    )
    ap.add_argument(
        "--baseline-epochs", type=int, default=5, help="epochs per task of naive fine-tuning and LwF"
    )
    ap.add_argument("--out", type=Path, default=Path("bench-out/seed-incremental.json"))
    ap.add_argument("--img-dir", type=Path, default=Path("docs/img"))
    args = ap.parse_args()
    suffix = ""
    if args.quick:
        args.seeds, args.tasks, args.clone_epochs, args.baseline_epochs, suffix = (
            args.seeds[:1],
            3,
            4,
            4,
            "-quick",
        )
        args.out = args.out.with_name(f"seed-incremental{suffix}.json")
        args.img_dir = Path("bench-out")  # quick plots stay out of docs/
    if args.train_on_stack and CloneConfig().head != "joint":
        suffix += "-stacktrain"
        args.out = args.out.with_name(f"seed-incremental{suffix}.json")
    torch.set_num_threads(1)
    start = time.perf_counter()
    work = args.out.parent / f"seed-incremental-{args.data}{suffix}-work"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed, args, work))
        print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    text = (
        f"{args.data}, {args.tasks} tasks of 2 classes, lenet5 target (task 1) and sources (one task "
        "each), base epochs "
        f"{args.epochs}, clone epochs {args.clone_epochs}, baseline epochs/task {args.baseline_epochs}, "
        f"seeds {args.seeds}; "
        f"CloneConfig defaults: {config_summary()}\n\n" + report(results, args.tasks)
    )
    print(text)
    plots(
        results,
        args.tasks,
        args.img_dir / f"seed-incremental-stack{suffix}.png",
        args.img_dir / f"seed-incremental-methods{suffix}.png",
    )
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "clone_config": CloneConfig().to_dict(),
                "per_seed": results,
                "table": text,
                "seconds": time.perf_counter() - start,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwrote {args.out} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
