"""Benchmark of ``pnc rank-sources`` (issue 10): does the default score (LogME) predict the clone, and is
ranking + cloning the winner cheaper than cloning from every candidate?

Per seed it trains (or reuses from ``--out``) a target ``lenet5`` on mnist5k classes 0-4 and a zoo of 10
sources on classes 5-9 that differ in architecture (lenet5, plaincnn, tiny_cnn, tiny_resnet), epochs
and data fraction, then, all through the Python API, in one process:

(a) ``rank_sources`` with the default score (LogME of the cloning labels given the joint head's features),
    timed in process CPU time;
(b) the same sources scored by the seed's Eq. 7 (``score="similarity"``, default local model sets), by
    their own held-out accuracy on the cloned classes 5-9 (recorded at training) and by a 5-fold
    cross-validated 5-NN accuracy on the same rows and features as (a) (best candidate span);
(c) ``clone`` of classes 5-9 from every source with the default ``CloneConfig`` (joint head), each timed;
(d) ``rank_and_clone`` (rank + clone the top-ranked source, reusing the ranking's data), timed.

It reports Spearman's ρ and weighted Kendall τ (``scipy.stats.weightedtau``) between each score and the
clone's Avg Acc on the held-out test split, the Avg Acc lost by cloning the top-ranked source, and
(clone from all) / (rank + clone the winner) in process CPU time. Goals (issue 10): ρ ≥ 0.9 (mean
over seeds), top-ranked within 0.3 points of the best clone in every seed, ≥ 5× cheaper.

    python benchmarks/bench_rank.py                      # seeds 0 1 2, 10 sources each
    python benchmarks/bench_rank.py --seeds 0 --quick    # 1 seed, 6 sources (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import spearmanr, weightedtau  # noqa: E402

from pnc_cli.api import train_model  # noqa: E402
from pnc_cli.api.cloning import clone, gather_inputs  # noqa: E402
from pnc_cli.api.ranking import rank_and_clone, rank_sources  # noqa: E402
from pnc_cli.api.ranking_logme import scoring_rows  # noqa: E402
from pnc_cli.core.config import CloneConfig, SurrogateConfig, TrainConfig  # noqa: E402
from pnc_cli.io.model_file import load_model  # noqa: E402
from pnc_cli.method.cloned_model import ClonedModel  # noqa: E402
from pnc_cli.method.joint import candidates, joint_features  # noqa: E402
from pnc_cli.method.logme import prepare  # noqa: E402

DATA = "mnist5k"
TARGET_CLASSES = "0-4"
CLONED = "5-9"
# name: (arch, epochs, fraction of the train split)
ZOO: dict[str, tuple[str, int, float]] = {
    "lenet5-e1": ("lenet5", 1, 1.0),
    "lenet5-e3": ("lenet5", 3, 1.0),
    "lenet5-e8": ("lenet5", 8, 1.0),
    "lenet5-e3-f05": ("lenet5", 3, 0.05),
    "lenet5-e1-f05": ("lenet5", 1, 0.05),
    "plaincnn-e3": ("plaincnn", 3, 1.0),
    "plaincnn-e1-f10": ("plaincnn", 1, 0.10),
    "tiny_cnn-e3": ("tiny_cnn", 3, 1.0),
    "tiny_cnn-e1-f05": ("tiny_cnn", 1, 0.05),
    "tiny_resnet-e2-f30": ("tiny_resnet", 2, 0.30),
}
QUICK = ("lenet5-e1", "lenet5-e8", "lenet5-e1-f05", "plaincnn-e1-f10", "tiny_cnn-e3", "tiny_cnn-e1-f05")
SCORES = ("logme", "logme_cloned", "similarity", "own_acc", "knn")
LABEL = {
    "logme": "LogME (default score)",
    "logme_cloned": "LogME, cloned classes only (variant)",
    "similarity": "seed Eq. 7 (--score similarity)",
    "own_acc": "source's own held-out acc on 5-9",
    "knn": "5-fold CV 5-NN acc, same features",
}


def _train(out: Path, arch: str, classes: str, epochs: int, fraction: float, seed: int) -> Path:
    if not out.exists():
        train_model(
            arch=arch,
            data=DATA,
            classes=classes,
            output=out,
            config=TrainConfig(epochs=epochs, seed=seed),
            fraction=fraction,
            device="cpu",
        )
    return out


def knn_cv(f: torch.Tensor, y: torch.Tensor, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated k-NN accuracy (Euclidean, majority vote, ties to the nearest) on ``f [N, D]``."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    correct = 0
    for i in range(folds):
        test = perm[i::folds]
        train = torch.cat([perm[j::folds] for j in range(folds) if j != i])
        d = torch.cdist(f[test], f[train])
        nn_idx = d.topk(k, largest=False).indices
        votes = y[train][nn_idx]  # [n_test, k], nearest first
        num = int(y.max()) + 1
        counts = torch.nn.functional.one_hot(votes, num).sum(1).double()
        counts += torch.nn.functional.one_hot(votes[:, 0], num).double() * 0.5  # ties: the nearest wins
        correct += int((counts.argmax(1) == y[test]).sum())
    return correct / len(y)


def knn_scores(target: Path, sources: dict[str, Path], config: CloneConfig, samples: int) -> dict[str, float]:
    """Best-candidate CV k-NN accuracy on the rows and standardised joint features LogME scores."""
    first = next(iter(sources.values()))
    inp = gather_inputs(
        source=first,
        target=target,
        classes=CLONED,
        data=DATA,
        target_data=None,
        rename=None,
        config=config,
        split_seed=0,
        device=torch.device("cpu"),
    )
    x, y = scoring_rows(inp, samples, config.seed)
    spec = inp.target.spec
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    base = ClonedModel(inp.target.network, list(spec.classes)).eval()
    out = {}
    for name, path in sources.items():
        net = load_model(path).network.eval()
        cands = candidates(net, shape, config.max_features)
        out[name] = max(
            knn_cv(prepare(f).float(), y, seed=config.seed)
            for f in joint_features(base, net, x, cands, shape)
        )
    return out


def _corr(x: list[float], y: list[float]) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic), float(weightedtau(x, y).statistic)


def run_seed(seed: int, zoo: list[str], root: Path, samples: int) -> dict[str, Any]:
    d = root / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    target = _train(d / "target-lenet5-0-4.safetensors", "lenet5", TARGET_CLASSES, 3, 1.0, seed)
    sources = {}
    for n in zoo:
        arch, epochs, fraction = ZOO[n]
        sources[n] = _train(d / f"{n}.safetensors", arch, CLONED, epochs, fraction, seed)
    train_s = time.perf_counter() - t0
    name_of = {str(p): n for n, p in sources.items()}
    config = CloneConfig(seed=seed)
    common = {"target": target, "sources": list(sources.values()), "classes": CLONED, "data": DATA}

    cpu = time.process_time()
    doc = rank_sources(**common, clone_config=config, logme_samples=samples, device="cpu")
    rank_cpu = time.process_time() - cpu
    assert doc["failed"] == 0, doc
    sim = rank_sources(**common, score="similarity", config=SurrogateConfig(seed=seed), device="cpu")
    knn = knn_scores(target, sources, config, samples)

    rows: dict[str, dict[str, Any]] = {}
    by = {name_of[r["source"]]: r for r in doc["ranking"]}
    by_sim = {name_of[r["source"]]: r for r in sim["ranking"]}
    for n, path in sources.items():
        cpu = time.process_time()
        c = clone(
            source=path,
            target=target,
            classes=CLONED,
            output=d / f"delta-{n}.safetensors",
            data=DATA,
            config=config,
            force=True,
            device="cpu",
        )
        rows[n] = {
            "logme": by[n]["logme"],
            "logme_cloned": by[n]["logme_cloned"],
            "span": by[n]["span"],
            "similarity": by_sim[n]["similarity"],
            "own_acc": float(load_model(path).spec.training["test_accuracy"]),
            "knn": knn[n],
            "avg_acc": c["avg_acc"],
            "tar_acc": c["tar_acc"],
            "ori_acc": c["ori_acc"],
            "clone_end": c["source_end"],
            "clone_pool": c["pool"],
            "clone_cpu": time.process_time() - cpu,
        }
        r = rows[n]
        print(
            f"  seed {seed} {n:20s} logme {r['logme']:.4f} (E={r['span']['end']})  "
            f"sim {r['similarity']:.4f}  "
            f"own {r['own_acc']:.3f}  knn {r['knn']:.3f}  Avg {r['avg_acc']:.4f} (E={r['clone_end']})  "
            f"clone cpu {r['clone_cpu']:.2f}s",
            flush=True,
        )

    cpu = time.process_time()
    rc = rank_and_clone(
        **common,
        output=d / "delta-best.safetensors",
        force=True,
        device="cpu",
        logme_samples=samples,
        clone_kwargs={"config": config},
    )
    rank_clone_cpu = time.process_time() - cpu
    top = name_of[doc["ranking"][0]["source"]]
    assert name_of[rc["clone"]["source"]] == top
    names = list(rows)
    avg = [rows[n]["avg_acc"] for n in names]
    best = max(avg)
    corr = {s: _corr([rows[n][s] for n in names], avg) for s in SCORES}
    picks = {s: max(names, key=lambda n, s=s: rows[n][s]) for s in SCORES}
    clone_all = sum(rows[n]["clone_cpu"] for n in names)
    return {
        "seed": seed,
        "sources": rows,
        "ranking": [name_of[r["source"]] for r in doc["ranking"]],
        "train_s": train_s,
        "rank_cpu": rank_cpu,
        "rank_and_clone_cpu": rank_clone_cpu,
        "rank_and_clone_avg": rc["clone"]["avg_acc"],
        "clone_all_cpu": clone_all,
        "speedup_cpu": clone_all / rank_clone_cpu,
        "spearman": {s: v[0] for s, v in corr.items()},
        "weightedtau": {s: v[1] for s, v in corr.items()},
        "regret": {s: best - rows[picks[s]]["avg_acc"] for s in SCORES},
        "top": top,
    }


def mean_std(values: list[float], fmt: str = ".3f") -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "nan"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.fmean(vals), fmt)} ± {format(statistics.stdev(vals), fmt)}"


def report(results: list[dict[str, Any]], zoo: list[str], samples: int) -> str:
    seeds = " ".join(str(r["seed"]) for r in results)
    lines = [
        f"## bench_rank: clone {CLONED} of {DATA} into lenet5({TARGET_CLASSES}) from {len(zoo)} sources, "
        f"seeds {seeds}",
        "",
        f"default CloneConfig (joint head); LogME on {samples} rows; 1 torch thread; CPU",
        "",
        "| seed | source | LogME | span E | Eq. 7 | own acc | k-NN | clone Avg | clone E | clone cpu s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for n in r["ranking"]:
            s = r["sources"][n]
            lines.append(
                f"| {r['seed']} | {n} | {s['logme']:.4f} | {s['span']['end']} | {s['similarity']:.4f} | "
                f"{s['own_acc']:.3f} | {s['knn']:.3f} | {s['avg_acc']:.4f} | {s['clone_end']} | "
                f"{s['clone_cpu']:.2f} |"
            )
    lines += [
        "",
        "| score | Spearman ρ with clone Avg | weighted τ | Avg points lost by its top pick "
        "| top pick within 0.3 pt |",
        "|---|---|---|---|---|",
    ]
    for s in SCORES:
        reg = [100 * r["regret"][s] for r in results]
        each = ", ".join(format(r["spearman"][s], ".2f") for r in results)
        lines.append(
            f"| {LABEL[s]} | {mean_std([r['spearman'][s] for r in results], '.2f')} ({each}) | "
            f"{mean_std([r['weightedtau'][s] for r in results], '.2f')} | {mean_std(reg, '.2f')} | "
            f"{sum(x <= 0.3 + 1e-9 for x in reg)}/{len(reg)} |"
        )
    lines += [
        "",
        "| cost (process CPU s) | mean ± std over seeds |",
        "|---|---|",
        f"| rank (LogME, {len(zoo)} sources) | {mean_std([r['rank_cpu'] for r in results], '.2f')} |",
        "| rank + clone the winner (rank_and_clone) | "
        f"{mean_std([r['rank_and_clone_cpu'] for r in results], '.2f')} |",
        f"| clone from all {len(zoo)} | {mean_std([r['clone_all_cpu'] for r in results], '.2f')} |",
        f"| speedup (all / rank + winner) | {mean_std([r['speedup_cpu'] for r in results], '.2f')} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help=f"{len(QUICK)} sources instead of {len(ZOO)}")
    p.add_argument("--samples", type=int, default=500, help="rows LogME and k-NN score (--logme-samples)")
    p.add_argument("--out", type=Path, default=Path("bench-out/rank"), help="models, deltas, results.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    zoo = list(QUICK if args.quick else ZOO)
    start, cpu = time.perf_counter(), time.process_time()
    results = [run_seed(seed, zoo, args.out, args.samples) for seed in args.seeds]
    text = report(results, zoo, args.samples)
    text += (
        f"\n\ntotal: wall {time.perf_counter() - start:.0f} s, process CPU {time.process_time() - cpu:.0f} s "
        "(training included)"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
