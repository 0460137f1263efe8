"""The pnc Python API end to end, on scikit-learn digits with tiny models (well under a minute on a CPU).

    python examples/api_example.py [WORKDIR]

Trains a target (digits 0-4) and a source (digits 5-9), clones the source's class 5 into the target
as a delta, applies it, runs the cloned model as one ``torch.nn.Module`` (``pnc_cli.load``), then
removes the delta and checks that the restored file is the original target, byte for byte.
docs/api.md explains each call; tests/e2e/test_api_example.py
runs this script.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import pnc_cli
from pnc_cli import api
from pnc_cli.core.config import CloneConfig, TrainConfig


def main(workdir: Path) -> None:
    torch.set_num_threads(1)
    target, source = workdir / "target.safetensors", workdir / "source.safetensors"
    delta, cloned, restored = (
        workdir / "delta.safetensors",
        workdir / "cloned.safetensors",
        workdir / "restored.safetensors",
    )

    # 1. two small classifiers; each file records the data it was trained on ("digits")
    train = TrainConfig(epochs=3, lr=1e-2)
    for path, classes in ((target, "0-4"), (source, "5-9")):
        doc = api.train_model(
            arch="tiny_cnn",
            data="digits",
            classes=classes,
            output=path,
            config=train,
            input_size=16,
            device="cpu",
            force=True,
        )
        print(f"trained {path.name}: classes {classes}, test accuracy {doc['test_accuracy']:.3f}")

    # 2. clone class 5: data defaults to the source's recorded training data, target-domain samples
    #    to the target's (pseudo-labelled by the target); R is searched over every block boundary
    doc = api.clone(
        source=source,
        target=target,
        classes="5",
        output=delta,
        config=CloneConfig(epochs=2),
        device="cpu",
        force=True,
    )
    print(
        f"cloned class 5 at R={doc['position']}: Ori {doc['ori_acc']:.3f}  Tar {doc['tar_acc']:.3f}  "
        f"Avg {doc['avg_acc']:.3f}  locality {doc['locality']:.3f}  extra params "
        f"{doc['extra_params_ratio']:.2f}x"
    )

    # 3. apply the delta: one file with the target's tensors unchanged plus the delta
    doc = api.apply_delta(target=target, deltas=[delta], output=cloned, force=True)
    print(f"applied → {cloned.name}: classes {','.join(doc['classes'])}")

    # 4. in Python the cloned model is one torch.nn.Module: the target (a real child) plus the delta;
    #    images in [0, 1], normalisation inside; deltas can be added and removed in memory
    model = pnc_cli.load(target, deltas=[delta])
    images = torch.rand(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(images)
        same = torch.equal(logits, pnc_cli.load(cloned)(images))
    print(f"cloned model: {logits.shape[1]} outputs for classes {model.classes}; same as the file: {same}")
    with torch.no_grad():
        exact = torch.equal(model.unload()(images), pnc_cli.load(target)(images))
    print(f"unload(): deltas {model.deltas}, classes {model.classes}, exactly the target: {exact}")

    # 5. remove it again: the restored file is the original target, byte for byte
    doc = api.remove_delta(cloned=cloned, output=restored, force=True)
    same = restored.read_bytes() == target.read_bytes()
    print(f"removed → {restored.name}: identical to the original target: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
