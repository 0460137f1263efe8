"""Benchmark of ``pnc rank-sources``: does the score predict the clone, and how much cheaper is it?

For each seed it trains (or reuses from ``--out``) a target ``lenet5`` on mnist5k classes 0-4 and a
zoo of sources on classes 5-9 of different quality (epochs, data fraction, architecture), then

(a) ranks the sources for cloning class 5 (``pnc_cli.api.ranking.rank_sources``, fresh surrogate
    cache; then once more with ``columns="cloned"`` from that cache, which computes nothing);
(b) clones class 5 from every source (``pnc_cli.api.cloning.clone``, position auto) and records
    Tar Acc and Avg Acc on the held-out test split.

It prints the Spearman correlation between the score and the Tar / Avg Acc each clone reaches (and,
for reference, that of each source's own test accuracy on its classes 5-9, which needs labels and ranking does
not use), whether the top-ranked source gave the best clone, and the time of (clone from all)
against (rank + clone the best). Goals (issue #5): Spearman >= 0.8, >= 5x cheaper.
Timings are wall-clock on whatever machine runs it (CPU unless --device says otherwise).

    python benchmarks/bench_rank.py --quick                 # 1 seed, 6 sources, 1 clone epoch
    python benchmarks/bench_rank.py --seeds 0 1 2           # 7 sources, 1 clone epoch per position
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
from pnc_cli.checkpoint import load_model  # noqa: E402
from pnc_cli.config import CloneConfig, SurrogateConfig, TrainConfig  # noqa: E402
from pnc_cli.surrogate_file import read_surrogate  # noqa: E402

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
    t, cpu = time.perf_counter(), time.process_time()
    doc = rank_sources(
        target=target,
        sources=list(sources.values()),
        classes=CLONED,
        data=DATA,
        config=replace_seed(sconfig, seed),
        surrogates_dir=cache,
        device=device,
    )
    rank_s, rank_cpu = time.perf_counter() - t, time.process_time() - cpu
    cloned_doc = rank_sources(
        target=target,
        sources=list(sources.values()),
        classes=CLONED,
        data=DATA,
        config=replace_seed(sconfig, seed),
        surrogates_dir=cache,
        columns="cloned",
        device=device,
    )
    evidence = _class_evidence(cache, sources)
    score = {name_of[r["source"]]: r["score"] for r in doc["ranking"]}
    score_cloned = {name_of[r["source"]]: r["score"] for r in cloned_doc["ranking"]}
    order = [name_of[r["source"]] for r in doc["ranking"] if r["eligible"]]

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
            "score": score[n],
            "score_cloned": score_cloned[n],
            "evidence": evidence[n],
            "own_acc": own,
            "tar_acc": c["tar_acc"],
            "avg_acc": c["avg_acc"],
            "ori_acc": c["ori_acc"],
            "position": c["position"],
            "clone_s": time.perf_counter() - t,
            "clone_cpu": time.process_time() - cpu,
        }
        print(
            f"  seed {seed} {n:15s} score {score[n]:.4f} (cloned {score_cloned[n]:.4f})  source acc {own:.3f}  "
            f"Tar {c['tar_acc']:.3f}  Avg {c['avg_acc']:.3f}  R*={c['position']}  {rows[n]['clone_s']:.1f}s (cpu {rows[n]['clone_cpu']:.1f}s)",
            flush=True,
        )

    names = list(rows)
    keys = ("score", "score_cloned", "evidence", "own_acc", "tar_acc", "avg_acc")
    col = {k: [rows[n][k] for n in names] for k in keys}
    best = order[0]
    all_s = sum(r["clone_s"] for r in rows.values())
    all_cpu = sum(r["clone_cpu"] for r in rows.values())
    best_avg = max(r["avg_acc"] for r in rows.values())
    return {
        "seed": seed,
        "sources": rows,
        "ranking": order,
        "train_s": train_s,
        "rank_s": rank_s,
        "clone_all_s": all_s,
        "rank_and_clone_best_s": rank_s + rows[best]["clone_s"],
        "speedup": all_s / (rank_s + rows[best]["clone_s"]),
        "rank_cpu": rank_cpu,
        "clone_all_cpu": all_cpu,
        "rank_and_clone_best_cpu": rank_cpu + rows[best]["clone_cpu"],
        "speedup_cpu": all_cpu / (rank_cpu + rows[best]["clone_cpu"]),
        "top": best,
        "top_is_best_avg": rows[best]["avg_acc"] == best_avg,
        "regret_avg": best_avg - rows[best]["avg_acc"],
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


def _class_evidence(cache: Path, sources: dict[str, Path]) -> dict[str, float]:
    """Label-free reference: how much the visible patches push each source's own class-5 logit,
    ``mean_i sum_h theta_i[h, col5]``, read from the cached local model sets (not part of the score)."""
    by_sha = {sf.model_sha256: sf for sf in map(read_surrogate, sorted(cache.glob("*.safetensors")))}
    out = {}
    for n, path in sources.items():
        loaded = load_model(path)
        col = list(loaded.spec.classes).index(CLONED)
        out[n] = float(by_sha[loaded.sha256].theta[:, :, col].sum(dim=1).mean())
    return out


def replace_seed(config: SurrogateConfig, seed: int) -> SurrogateConfig:
    return SurrogateConfig(**{**config.to_dict(), "seed": seed})


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
        f"rank: {sconfig.samples} samples x {sconfig.masks} masks, grid {sconfig.grid}; clone: position auto, "
        f"epochs {clone_config.epochs} per position, other settings default; device {args.device}, "
        f"{torch.get_num_threads()} torch threads",
        "",
        "| seed | source | score | score (cloned cols) | evidence | source acc | Tar Acc | Avg Acc | R* | clone s (cpu s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for n in r["ranking"]:
            s = r["sources"][n]
            lines.append(
                f"| {r['seed']} | {n} | {s['score']:.4f} | {s['score_cloned']:.4f} | {s['evidence']:.2f} | "
                f"{s['own_acc']:.3f} | "
                f"{s['tar_acc']:.3f} | {s['avg_acc']:.3f} | {s['position']} | {s['clone_s']:.1f} ({s['clone_cpu']:.1f}) |"
            )
    sp = {k: [r["spearman"][k] for r in results] for k in results[0]["spearman"]}
    lines += [
        "",
        "| measure | mean ± std over seeds | goal |",
        "|---|---|---|",
        f"| Spearman(score, Tar Acc) | {mean_std(sp['score_tar'])} | >= 0.8 |",
        f"| Spearman(score, Avg Acc) | {mean_std(sp['score_avg'])} | >= 0.8 |",
        f"| Spearman(score with --columns cloned, Tar Acc) | {mean_std(sp['cloned_tar'])} | (variant) |",
        f"| Spearman(score with --columns cloned, Avg Acc) | {mean_std(sp['cloned_avg'])} | (variant) |",
        f"| Spearman(class-{CLONED} evidence of the source's G, Tar Acc) | {mean_std(sp['evidence_tar'])} | (label-free reference) |",
        f"| Spearman(class-{CLONED} evidence of the source's G, Avg Acc) | {mean_std(sp['evidence_avg'])} | (label-free reference) |",
        f"| Spearman(source's own test acc, Tar Acc) | {mean_std(sp['own_tar'])} | (labelled reference) |",
        f"| Spearman(source's own test acc, Avg Acc) | {mean_std(sp['own_avg'])} | (labelled reference) |",
        f"| top-ranked source gives the best Avg Acc | {sum(r['top_is_best_avg'] for r in results)}/{len(results)} | |",
        f"| Avg Acc lost by cloning the top-ranked source | {mean_std([r['regret_avg'] for r in results])} | |",
        f"| rank s (all {len(zoo) + 1} local model sets) | {mean_std([r['rank_s'] for r in results])} | |",
        f"| clone from all s | {mean_std([r['clone_all_s'] for r in results])} | |",
        f"| rank + clone best s | {mean_std([r['rank_and_clone_best_s'] for r in results])} | |",
        f"| speedup (all / rank+best), wall | {mean_std([r['speedup'] for r in results])} | >= 5 |",
        f"| rank cpu s | {mean_std([r['rank_cpu'] for r in results])} | |",
        f"| clone from all cpu s | {mean_std([r['clone_all_cpu'] for r in results])} | |",
        f"| rank + clone best cpu s | {mean_std([r['rank_and_clone_best_cpu'] for r in results])} | |",
        f"| speedup (all / rank+best), process cpu time | {mean_std([r['speedup_cpu'] for r in results])} | >= 5 |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 seed, 6 sources, 1 clone epoch per position")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default 0 1 2; quick: 0)")
    p.add_argument("--clone-epochs", type=int, default=1, help="clone epochs per position (default 1)")
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
    clone_config = CloneConfig(epochs=args.clone_epochs)
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
