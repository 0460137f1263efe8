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
