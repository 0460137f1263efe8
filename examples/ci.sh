#!/usr/bin/env bash
# A CI job with pnc on tiny models (built-in `digits`, the registry's tiny_cnn): train a target and a
# source, plan and clone, gate on quality, apply, remove, verify. Every step's exit code is checked:
# `set -e` stops at the first failing step, and the gate steps also check the codes they must return.
# Run by tests/e2e/test_ci_example.py inside `make test`; by hand: `PY=.venv/bin/python bash examples/ci.sh`.
# Exit codes (docs/errors.md): 0 ok, 1 runtime, 2 usage, 3 verification or gate failed, 4 incompatible.
set -euo pipefail
PY=${PY:-python}
pnc() { "$PY" -m pnc_cli "$@"; }
OUT=${OUT:-ci-out}
mkdir -p "$OUT"
T="$OUT/target.safetensors" S="$OUT/source.safetensors" D="$OUT/delta.safetensors"
C="$OUT/cloned.safetensors" R="$OUT/restored.safetensors"
TINY=(--arch tiny_cnn --data digits --epochs 3 --lr 0.01 --input-size 16 --force)

step() { echo "::: $*" >&2; }

step "train a target (digits 0-4) and a source (digits 5-9)"
pnc train "${TINY[@]}" --classes 0-4 -o "$T" --json > "$OUT/target.json"
pnc train "${TINY[@]}" --classes 5-9 -o "$S" --json > "$OUT/source.json"
pnc eval --model "$T" --data digits --fail-under accuracy=0.8

step "plan the clone (nothing written), then clone class 5"
pnc clone -s "$S" -t "$T" -c 5 -o "$D" --dry-run --json > "$OUT/plan.json"
test ! -e "$D"
pnc clone -s "$S" -t "$T" -c 5 -o "$D" --epochs 5 --force --json > "$OUT/clone.json"

step "apply the delta; gate on quality (exit 3 when a gate fails)"
pnc apply -t "$T" -d "$D" -o "$C" --force
pnc eval --model "$C" --data digits --fail-under tar=0.5 --fail-over ori_drop=0.1 --json > "$OUT/eval.json"
# a gate that cannot pass must fail the job with exit 3 (checked, not assumed)
set +e
pnc eval --model "$C" --data digits --fail-under tar=1.01 -q > /dev/null 2> "$OUT/gate.err"
rc=$?
set -e
test "$rc" -eq 3 || { echo "expected exit 3 from a failing gate, got $rc" >&2; exit 1; }

step "remove the delta and verify the target comes back byte for byte"
pnc remove "$C" -o "$R" --verify --force
cmp "$T" "$R"
test "$(pnc info "$R" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["sha256"])')" \
  = "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["sha256"])' "$OUT/target.json")"

step "the same through pipes: apply to stdout, remove from stdin"
pnc apply -t "$T" -d "$D" -o - -q | pnc remove - -o - --verify -q | cmp - "$T"

echo "ci: all steps passed" >&2
