#!/usr/bin/env bash
# Bring your own model: a torchvision resnet18 state dict (.pth) at 32 px goes through
# import -> clone -> apply -> eval -> remove; then the same with a timm model when timm is installed.
# Run by tests/e2e/test_byo_example.py on a few hundred 32 px images (a couple of minutes on one CPU).
#
#   bash examples/byo_model.sh [WORKDIR]        # PY=python by default
set -euo pipefail
PY=${PY:-python}
pnc() { "$PY" -m pnc_cli "$@"; }
OUT=${1:-byo-out}
mkdir -p "$OUT"
cd "$OUT"

echo "== 0. your files: RGB 32 px digits (rgb.npz) and a torchvision resnet18 trained on digits 0-4 (resnet18.pth)"
"$PY" - <<'EOF'
import numpy as np, torch, torch.nn.functional as F, torchvision
from sklearn.datasets import load_digits

torch.manual_seed(0)
d = load_digits()
keep = np.concatenate([np.flatnonzero(d.target == c)[:12] for c in range(10)])  # 12 images a class
x = torch.from_numpy(d.images[keep] / 16.0).float()[:, None]
x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1).expand(-1, 3, -1, -1)
np.savez("rgb.npz", x=x.numpy(), y=d.target[keep])

# "your" model: a plain torchvision resnet18 (standard stem), trained a little on 0-4 with its own
# normalisation (mean 0.5, std 0.25), saved the usual way
model = torchvision.models.resnet18(num_classes=5)
sel = torch.from_numpy(d.target[keep] < 5)
xs, ys = (x[sel] - 0.5) / 0.25, torch.from_numpy(d.target[keep])[sel]
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(10):
    opt.zero_grad()
    F.cross_entropy(model(xs), ys).backward()
    opt.step()
torch.save({"epoch": 10, "state_dict": model.state_dict()}, "resnet18.pth")
EOF

echo "== 1. import it: the state dict is found in the checkpoint; standard stem (--arch-arg small_input=false)"
pnc import resnet18.pth --arch torchvision:resnet18 --arch-arg small_input=false --input-size 32 \
    --classes 0-4 --mean 0.5 --std 0.25 -o target.safetensors --force --quiet
pnc info target.safetensors --card

echo "== 2. a source for digits 5-9 (any architecture with the same input: 3x32x32)"
pnc train --arch tiny_resnet --data rgb.npz --classes 5-9 --input-size 32 --epochs 3 --lr 0.01 \
    -o source.safetensors --force --quiet

echo "== 3. clone class 5 into the resnet18 after block 3; apply; eval; remove"
# (an append head at one position for one epoch keeps this quick on a CPU; the default joint head
#  searches source spans and poolings, a few minutes for a resnet18 on a CPU)
pnc clone --source source.safetensors --target target.safetensors --classes 5 --data rgb.npz \
    --target-data rgb.npz --head append --position 3 --epochs 1 -o delta.safetensors --force --quiet
pnc apply --target target.safetensors --delta delta.safetensors -o cloned.safetensors --force --quiet
pnc eval --model cloned.safetensors --data rgb.npz --classes 0-5 --json > eval.json
"$PY" -c 'import json; d = json.load(open("eval.json")); print("cloned resnet18: Ori %.3f Tar %.3f locality %.3f" % (d["ori_acc"], d["tar_acc"], d["locality"]))'
pnc remove cloned.safetensors --all -o restored.safetensors --force --quiet
cmp restored.safetensors target.safetensors && echo "restored == target (byte for byte)"

if "$PY" -c "import timm" 2>/dev/null; then
    echo "== 4. the same with timm:resnet18 (timm installed)"
    "$PY" -c '
import timm, torch
torch.manual_seed(0)
torch.save(timm.create_model("resnet18", pretrained=False, num_classes=5).state_dict(), "timm_resnet18.pth")'
    pnc import timm_resnet18.pth --arch timm:resnet18 --input-size 32 --classes 0-4 --mean 0.5 --std 0.25 \
        -o timm_target.safetensors --force --quiet
    pnc clone --source source.safetensors --target timm_target.safetensors --classes 5 --data rgb.npz \
        --target-data rgb.npz --head append --position 3 --epochs 1 -o timm_delta.safetensors --force --quiet
    pnc apply --target timm_target.safetensors --delta timm_delta.safetensors -o timm_cloned.safetensors --force --quiet
    pnc eval --model timm_cloned.safetensors --data rgb.npz --classes 0-5 --json > timm_eval.json
    pnc remove timm_cloned.safetensors --all -o timm_restored.safetensors --force --quiet
    cmp timm_restored.safetensors timm_target.safetensors && echo "timm: restored == target (byte for byte)"
else
    echo "== 4. skipped: timm is not installed (pip install 'pnc-cli[timm]')"
fi
