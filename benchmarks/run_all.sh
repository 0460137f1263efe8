#!/usr/bin/env bash
# Every pnc benchmark, one command per line; `make bench` runs this. Output lands in bench-out/.
# Figures and the goals they are measured against: docs/benchmarks.md. Append new benchmarks below.
set -euo pipefail
PY=${PY:-python}
OUT=${OUT:-bench-out}
mkdir -p "$OUT"

# Surrogate (pnc surrogate) throughput vs. raw forward, and peak memory (docs/benchmarks.md "Surrogate")
"$PY" benchmarks/bench_surrogate.py --cases lenet --repeats 3 | tee "$OUT/surrogate-lenet.md"
"$PY" benchmarks/bench_surrogate.py --quick --cases resnet18 | tee "$OUT/surrogate-resnet18-quick.md"

# Ranking sources (pnc rank-sources): Spearman(score, clone accuracy) and cost vs. cloning from all (docs/benchmarks.md "Ranking sources")
"$PY" benchmarks/bench_rank.py --seeds 0 1 2 --out "$OUT/rank" | tee "$OUT/rank.md"

# Seed experiments (issue 6): Tables 2, 4, 5, 3/6 on mnist5k, 3 seeds; plots in docs/img/seed-*.png (docs/benchmarks.md "Seed experiments")
"$PY" benchmarks/bench_data_size.py --seeds 0 1 2 | tee "$OUT/seed-data-size.md"
"$PY" benchmarks/bench_num_classes.py --seeds 0 1 2 | tee "$OUT/seed-num-classes.md"
"$PY" benchmarks/bench_archs.py --seeds 0 1 2 | tee "$OUT/seed-archs.md"
# (joint head, the default: every delta is cloned on the stack below it, removed last-in-first-out)
"$PY" benchmarks/bench_incremental.py --seeds 0 1 2 | tee "$OUT/seed-incremental.md"

# Joint head (issue 15): Pareto front of both heads over size budgets, five classes, speed against pnc eval; resnet18 (docs/benchmarks.md "Joint head")
"$PY" benchmarks/bench_joint.py --seeds 0 1 2 --parts pareto five speed --random-features 256 --out "$OUT/joint.json" | tee "$OUT/joint.md"
"$PY" benchmarks/bench_joint.py --seeds 0 --parts resnet --out "$OUT/joint-resnet.json" | tee "$OUT/joint-resnet.md"

# Cloning quality (issue 4): PNC vs target alone, joint retraining, naive fine-tuning, LwF, LoRA; 3 seeds (docs/benchmarks.md "Cloning quality (issue 4)")
"$PY" benchmarks/bench_clone.py --seeds 0 1 2 --out "$OUT/clone.json" | tee "$OUT/clone.md"

# Seed experiments (issue 6) on scikit-learn digits: Tables 2 and 4 (docs/benchmarks.md "Seed experiments")
"$PY" benchmarks/bench_data_size.py --seeds 0 1 2 --data digits --out "$OUT/seed-data-size-digits.json" --img docs/img/seed-data-size-digits.png | tee "$OUT/seed-data-size-digits.md"
"$PY" benchmarks/bench_num_classes.py --seeds 0 1 2 --data digits --out "$OUT/seed-num-classes-digits.json" --img docs/img/seed-num-classes-digits.png | tee "$OUT/seed-num-classes-digits.md"

# Scale (issue 13): resnet18 clone wall time and peak RSS, time/RSS against the number of images (ImageFolder), 1 vs 2 processes, surrogate against peak forward (docs/benchmarks.md "Scale")
"$PY" benchmarks/bench_scale.py --out "$OUT/scale" | tee "$OUT/scale.md"
