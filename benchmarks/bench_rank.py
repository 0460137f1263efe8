"""Benchmark of ``pnc rank-sources``: does the score predict the clone, and how much cheaper is it?

For each seed it trains (or reuses from ``--out``) a target ``lenet5`` on mnist5k classes 0-4 and a
zoo of sources on classes 5-9 of different quality (epochs, data fraction, architecture), then

(a) ranks the sources for cloning class 5 (``pnc_cli.api.ranking.rank_sources``, fresh surrogate
    cache, timed); then twice more from that cache, which computes nothing: ``columns="cloned"`` and
    ``score="evidence"`` (the label-free alternative to the seed's similarity, docs/ranking.md);
(b) clones class 5 from every source (``pnc_cli.api.cloning.clone``, position auto) and records
    Tar Acc and Avg Acc on the held-out test split.

It prints the Spearman correlation between each score and the Tar / Avg Acc each clone reaches (and,
for reference, that of each source's own test accuracy on its classes 5-9, which needs labels),
whether the top-ranked source gave the best clone, and the time of (clone from all) against
(rank + clone the best), wall-clock and process CPU time. Goals (issue #5): Spearman >= 0.8, >= 5x
cheaper. Models are trained once per seed and kept under ``--out`` (delete it to retrain).
Timings are wall-clock on whatever machine runs it (CPU unless --device says otherwise).

    python benchmarks/bench_rank.py --quick                 # 1 seed, 6 sources, 1 clone epoch
    python benchmarks/bench_rank.py --seeds 0 1 2           # 7 sources, default clone config
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pnc_cli.api import train_model  # noqa: E402
from pnc_cli.api.cloning import clone  # noqa: E402
from pnc_cli.api.ranking import rank_sources  # noqa: E402
from pnc_cli.core.config import CloneConfig, SurrogateConfig, TrainConfig  # noqa: E402
from pnc_cli.io.model_file import load_model  # noqa: E402

DATA = "mnist5k"
CLONED = "5"
# name: (arch, epochs, fraction of the train split)
ZOO: dict[str, tuple[str, int, float]] = {
    "lenet5-e1": ("lenet5", 1, 1.0),
    "lenet5-e3": ("lenet5", 3, 1.0),
    "lenet5-e8": ("lenet5", 8, 1.0),
    "lenet5-e3-f05": ("lenet5", 3, 0.05),
    "lenet5-e3-f30": ("lenet5", 3, 0.30),
    "lenet5-e1-f05": ("lenet5", 1, 0.05),
    "plaincnn-e3": ("plaincnn", 3, 1.0),
}
QUICK_ZOO = ("lenet5-e1", "lenet5-e3", "lenet5-e3-f05", "lenet5-e3-f30", "lenet5-e1-f05", "plaincnn-e3")


# --------------------------------------------------------------------------- statistics


def _ranks(values: list[float]) -> list[float]:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho (scipy when importable); NaN when either side is constant."""
    try:
        import warnings

        from scipy.stats import spearmanr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(spearmanr(x, y).statistic)
    except ImportError:
        rx, ry = _ranks(x), _ranks(y)
        mx, my = statistics.fmean(rx), statistics.fmean(ry)
        cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
        den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
        return cov / den if den > 0 else float("nan")


def mean_std(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "nan"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"


# --------------------------------------------------------------------------- one seed


def _train(out: Path, arch: str, classes: str, epochs: int, fraction: float, seed: int, device: str) -> Path:
    """Train once; a file already in ``out`` is reused (delete ``--out`` to retrain)."""
    if not out.exists():
        train_model(
            arch=arch,
            data=DATA,
            classes=classes,
            output=out,
            config=TrainConfig(epochs=epochs, seed=seed),
            fraction=fraction,
            device=device,
        )
    return out


def _pick(rows: dict[str, dict[str, Any]], top: str, rank_s: float, rank_cpu: float) -> dict[str, Any]:
    """Cost and outcome of (rank + clone the top-ranked source) against (clone from all)."""
    best_avg = max(r["avg_acc"] for r in rows.values())
    all_s = sum(r["clone_s"] for r in rows.values())
    all_cpu = sum(r["clone_cpu"] for r in rows.values())
    return {
        "top": top,
        "top_is_best_avg": rows[top]["avg_acc"] == best_avg,
        "regret_avg": best_avg - rows[top]["avg_acc"],
        "clone_all_s": all_s,
        "rank_and_clone_best_s": rank_s + rows[top]["clone_s"],
        "speedup": all_s / (rank_s + rows[top]["clone_s"]),
        "clone_all_cpu": all_cpu,
        "rank_and_clone_best_cpu": rank_cpu + rows[top]["clone_cpu"],
        "speedup_cpu": all_cpu / (rank_cpu + rows[top]["clone_cpu"]),
    }


def run_seed(
    seed: int, zoo: list[str], root: Path, clone_config: CloneConfig, sconfig: SurrogateConfig, device: str
) -> dict[str, Any]:
    d = root / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    target = _train(d / "target-lenet5-0-4.safetensors", "lenet5", "0-4", 3, 1.0, seed, device)
    sources = {}
    for n in zoo:
        arch, epochs, fraction = ZOO[n]
        sources[n] = _train(d / f"{n}.safetensors", arch, "5-9", epochs, fraction, seed, device)
    train_s = time.perf_counter() - t0
    name_of = {str(p): n for n, p in sources.items()}

    cache = d / "G"
    for f in cache.glob("*.safetensors"):
        f.unlink()  # the timed ranking computes every local model set
    common = {
        "target": target,
        "sources": list(sources.values()),
        "classes": CLONED,
        "data": DATA,
        "config": SurrogateConfig(**{**sconfig.to_dict(), "seed": seed}),
        "surrogates_dir": cache,
        "device": device,
    }
    t, cpu = time.perf_counter(), time.process_time()
    doc = rank_sources(**common)
    rank_s, rank_cpu = time.perf_counter() - t, time.process_time() - cpu
    # the same local model sets (all read from the cache): the variants cost nothing more
    cloned_doc = rank_sources(**common, columns="cloned")
    evidence_doc = rank_sources(**common, score="evidence")
    by_name = {name_of[r["source"]]: r for r in doc["ranking"]}
    score_cloned = {name_of[r["source"]]: r["score"] for r in cloned_doc["ranking"]}

    rows = {}
    for n, path in sources.items():
        own = float(load_model(path).spec.training["test_accuracy"])
        t, cpu = time.perf_counter(), time.process_time()
        c = clone(
            source=path,
            target=target,
            classes=CLONED,
            output=d / f"delta-{n}.safetensors",
            data=DATA,
            position="auto",
            config=clone_config,
            force=True,
            device=device,
        )
        rows[n] = {
            "score": by_name[n]["similarity"],
            "score_cloned": score_cloned[n],
            "evidence": by_name[n]["evidence"],
            "own_acc": own,
            "tar_acc": c["tar_acc"],
            "avg_acc": c["avg_acc"],
            "ori_acc": c["ori_acc"],
            "position": c["position"],
            "clone_s": time.perf_counter() - t,
            "clone_cpu": time.process_time() - cpu,
        }
        r = rows[n]
        print(
            f"  seed {seed} {n:15s} score {r['score']:.4f} (cloned {r['score_cloned']:.4f})  "
            f"evidence {r['evidence']:.2f}  source acc {own:.3f}  Tar {c['tar_acc']:.3f}  Avg "
            f"{c['avg_acc']:.3f}  "
            f"R*={c['position']}  {r['clone_s']:.1f}s (cpu {r['clone_cpu']:.1f}s)",
            flush=True,
        )

    names = list(rows)
    keys = ("score", "score_cloned", "evidence", "own_acc", "tar_acc", "avg_acc")
    col = {k: [rows[n][k] for n in names] for k in keys}
    return {
        "seed": seed,
        "sources": rows,
        "ranking": [name_of[r["source"]] for r in doc["ranking"]],
        "train_s": train_s,
        "rank_s": rank_s,
        "rank_cpu": rank_cpu,
        "similarity": _pick(rows, name_of[doc["ranking"][0]["source"]], rank_s, rank_cpu),
        "evidence": _pick(rows, name_of[evidence_doc["ranking"][0]["source"]], rank_s, rank_cpu),
        "spearman": {
            "score_tar": spearman(col["score"], col["tar_acc"]),
            "score_avg": spearman(col["score"], col["avg_acc"]),
            "cloned_tar": spearman(col["score_cloned"], col["tar_acc"]),
            "cloned_avg": spearman(col["score_cloned"], col["avg_acc"]),
            "evidence_tar": spearman(col["evidence"], col["tar_acc"]),
            "evidence_avg": spearman(col["evidence"], col["avg_acc"]),
            "own_tar": spearman(col["own_acc"], col["tar_acc"]),
            "own_avg": spearman(col["own_acc"], col["avg_acc"]),
        },
    }


# --------------------------------------------------------------------------- report


def report(
    results: list[dict[str, Any]],
    args: argparse.Namespace,
    clone_config: CloneConfig,
    sconfig: SurrogateConfig,
    zoo: list[str],
) -> str:
    lines = [
        f"## bench_rank: clone class {CLONED} of {DATA} into lenet5(0-4) from {len(zoo)} sources, "
        f"seeds {' '.join(str(r['seed']) for r in results)}",
        "",
        f"rank: {sconfig.samples} samples x {sconfig.masks} masks, grid {sconfig.grid}; clone: position "
        "auto, "
        f"epochs {clone_config.epochs} per position, other settings default; device {args.device}, "
        f"{torch.get_num_threads()} torch threads",
        "",
        "| seed | source | similarity (seed) | similarity, cloned cols | evidence | source acc | Tar Acc | "
        "Avg Acc | R* | clone s (cpu s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for n in r["ranking"]:
            s = r["sources"][n]
            lines.append(
                f"| {r['seed']} | {n} | {s['score']:.4f} | {s['score_cloned']:.4f} | {s['evidence']:.2f} | "
                f"{s['own_acc']:.3f} | "
                f"{s['tar_acc']:.3f} | {s['avg_acc']:.3f} | {s['position']} | {s['clone_s']:.1f} "
                f"({s['clone_cpu']:.1f}) |"
            )
    sp = {k: [r["spearman"][k] for r in results] for k in results[0]["spearman"]}
    lines += [
        "",
        "| measure | mean ± std over seeds | goal |",
        "|---|---|---|",
        f"| Spearman(score = similarity (seed), Tar Acc) | {mean_std(sp['score_tar'])} | >= 0.8 |",
        f"| Spearman(score = similarity (seed), Avg Acc) | {mean_std(sp['score_avg'])} | >= 0.8 |",
        f"| Spearman(score with --columns cloned, Tar Acc) | {mean_std(sp['cloned_tar'])} | (variant) |",
        f"| Spearman(score with --columns cloned, Avg Acc) | {mean_std(sp['cloned_avg'])} | (variant) |",
        f"| Spearman(--score evidence, Tar Acc) | {mean_std(sp['evidence_tar'])} | >= 0.8 |",
        f"| Spearman(--score evidence, Avg Acc) | {mean_std(sp['evidence_avg'])} | >= 0.8 |",
        f"| Spearman(source's own test acc, Tar Acc) | {mean_std(sp['own_tar'])} | (labelled reference) |",
        f"| Spearman(source's own test acc, Avg Acc) | {mean_std(sp['own_avg'])} | (labelled reference) |",
        f"| rank s (all {len(zoo) + 1} local model sets), wall / process cpu | "
        f"{mean_std([r['rank_s'] for r in results])} / {mean_std([r['rank_cpu'] for r in results])} | |",
    ]
    for mode in ("similarity", "evidence"):
        pick = [r[mode] for r in results]
        lines += [
            f"| --score {mode}: top-ranked source gives the best Avg Acc | "
            f"{sum(p['top_is_best_avg'] for p in pick)}/{len(pick)} | |",
            f"| --score {mode}: Avg Acc lost by cloning the top-ranked source | "
            f"{mean_std([p['regret_avg'] for p in pick])} | |",
            f"| --score {mode}: clone from all s, wall / cpu | "
            f"{mean_std([p['clone_all_s'] for p in pick])} / "
            f"{mean_std([p['clone_all_cpu'] for p in pick])} | |",
            f"| --score {mode}: rank + clone best s, wall / cpu | "
            f"{mean_std([p['rank_and_clone_best_s'] for p in pick])} / "
            f"{mean_std([p['rank_and_clone_best_cpu'] for p in pick])} | |",
            f"| --score {mode}: speedup (all / rank+best), wall | {mean_std([p['speedup'] for p in pick])} "
            "| >= 5 |",
            f"| --score {mode}: speedup (all / rank+best), process cpu | "
            f"{mean_std([p['speedup_cpu'] for p in pick])} | >= 5 |",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 seed, 6 sources, 1 clone epoch per position")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick: 0)")
    p.add_argument(
        "--clone-epochs",
        type=int,
        default=None,
        help=f"clone epochs per position (default {CloneConfig.epochs}; quick: 1)",
    )
    p.add_argument("--samples", type=int, default=SurrogateConfig.samples)
    p.add_argument("--masks", type=int, default=SurrogateConfig.masks)
    p.add_argument("--out", type=Path, default=Path("bench-out/rank"), help="models, deltas and results.json")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: timings suffer least from a busy machine)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    zoo = list(QUICK_ZOO if args.quick else ZOO)
    clone_config = CloneConfig(epochs=args.clone_epochs or (1 if args.quick else CloneConfig.epochs))
    sconfig = SurrogateConfig(samples=args.samples, masks=args.masks)
    start = time.perf_counter()
    results = []
    for seed in seeds:
        cfg = CloneConfig(**{**clone_config.to_dict(), "seed": seed})
        results.append(run_seed(seed, zoo, args.out, cfg, sconfig, args.device))
    text = report(results, args, clone_config, sconfig, zoo)
    text += f"\n\ntotal wall time {time.perf_counter() - start:.0f} s (training included)"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ("results-quick.json" if args.quick else "results.json")).write_text(
        json.dumps(results, indent=2)
    )


if __name__ == "__main__":
    main()
