"""Tiny targets, sources and deltas for tests, and the golden delta and cloned files.

``python tests/data/make_golden.py v4`` writes ``delta_v4_read_tiny.safetensors`` (a joint head whose
budget makes it read part of the target's features: ``features.read``) and ``delta_v4_random_tiny``
(the same with 8 random ReLU features) with the current writer.
Run it only to create golden files for a NEW format version (add its names here); the committed files
of older versions (``delta_v1_tiny``: append head, ``delta_v2_joint_tiny``: joint head, unsealed) were
written by older pnc and are frozen: they must keep loading — and running — in every future pnc
(docs/delta-format.md, "Version policy").

The helpers build synthetic deltas of the right shape and schema for ``tiny_cnn`` models (1 channel,
16 px, 3 blocks), without training: the tests here are about the file format, not about accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from pnc_cli.io.delta_file import DELTA_FORMAT_VERSION, DeltaFile, write_delta
from pnc_cli.io.model_file import ModelSpec, save_model
from pnc_cli.io.safetensors_io import content_sha256
from pnc_cli.method.adapter import build_adapter
from pnc_cli.method.branch_state import branch_info, branch_tensors
from pnc_cli.method.cloned_model import ClonedModel
from pnc_cli.method.joint import JointSettings, batches, fit_joint
from pnc_cli.method.selector import maskable_layers, slice_state
from pnc_cli.nets import Network, build_network

GOLDEN = Path(__file__).with_name("delta_v1_tiny.safetensors")
GOLDEN_V2 = Path(__file__).with_name("delta_v2_joint_tiny.safetensors")
GOLDEN_V3 = Path(__file__).with_name("delta_v3_joint_tiny.safetensors")
GOLDEN_CLONED_V3 = Path(__file__).with_name("cloned_v3_joint_tiny.safetensors")
GOLDEN_V4 = Path(__file__).with_name("delta_v4_read_tiny.safetensors")
GOLDEN_V4_RANDOM = Path(__file__).with_name("delta_v4_random_tiny.safetensors")
ARCH, CHANNELS, SIZE, BLOCKS = "tiny_cnn", 1, 16, 3
TARGET_CLASSES = ("0", "1", "2")
V4_BUDGET = 1400  # extra parameters of the version-4 golden delta: its head reads part of the target
SOURCE_CLASSES = ("3", "4", "5", "6")


def tiny_network(classes: tuple[str, ...], seed: int) -> tuple[Network, ModelSpec, str]:
    """A randomly initialised tiny_cnn with non-trivial BatchNorm buffers, its spec and content sha256."""
    torch.manual_seed(seed)
    net = build_network(ARCH, num_classes=len(classes), in_channels=CHANNELS, input_size=SIZE)
    for name, buf in net.model.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            buf.copy_(torch.rand_like(buf) + 0.5)
    spec = ModelSpec(ARCH, tuple(classes), CHANNELS, SIZE, mean=(0.5,), std=(0.25,))
    return net, spec, content_sha256(net.model.state_dict())


def tiny_model_file(path: Path, classes: tuple[str, ...], seed: int) -> tuple[Network, str]:
    """Write a tiny model file with ``checkpoint.save_model``; returns the network and its sha256."""
    net, spec, _ = tiny_network(classes, seed)
    return net, save_model(path, net, spec)


def make_delta(
    *,
    target_sha: str,
    source_net: Network,
    source_sha: str,
    name: str = "clone-5",
    classes: tuple[str, ...] = ("5",),
    mode: str = "offline",
    position: int = 1,
    seed: int = 0,
) -> DeltaFile:
    """A synthetic delta for a tiny_cnn target: random adapter/head, random masks, sliced source filters."""
    g = torch.Generator().manual_seed(seed)
    module = nn.ModuleList(source_net.blocks[position:])
    masks = {}
    for layer_name, layer in maskable_layers(module).items():
        keep = torch.rand(layer.out_channels, generator=g) > 0.4
        keep[0] = True
        masks[layer_name] = keep
    shape = source_net.block_shapes(CHANNELS, SIZE)[position]
    adapter = build_adapter(shape, shape)
    tensors = {
        f"adapter.{k}": v + 0.01 * torch.randn(v.shape, generator=g) for k, v in adapter.state_dict().items()
    }
    tensors.update(
        {
            "head.weight": torch.randn(len(classes), 32, generator=g),
            "head.bias": torch.randn(len(classes), generator=g),
            "calibration.scale": torch.ones(1),
            "calibration.bias": torch.zeros(1),
        }
    )
    tensors.update({f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()})
    if mode == "offline":
        tensors.update({f"source.{k}": v.clone() for k, v in slice_state(module, masks, shape).items()})
    io = {"channels": CHANNELS, "size": SIZE}
    info = {
        "target": {"sha256": target_sha, "arch": ARCH, "classes": list(TARGET_CLASSES), "input": io},
        "source": {
            "sha256": source_sha,
            "arch": ARCH,
            "arch_kwargs": {},
            "classes": list(SOURCE_CLASSES),
            "input": io,
            "normalization": {"mean": [0.5], "std": [0.25]},
            "num_blocks": BLOCKS,
        },
        "classes": list(classes),
        "source_class_index": [SOURCE_CLASSES.index(c) if c in SOURCE_CLASSES else 0 for c in classes],
        "position": {
            "target": position,
            "source": position,
            "target_blocks": BLOCKS,
            "source_blocks": BLOCKS,
        },
        "adapter": adapter.config(),
        "mode": mode,
        "config": {"epochs": 1, "fraction": 0.3},
        "seed": seed,
        "metrics": {"tar_acc": 0.9, "ori_acc": 0.95},
    }
    delta = DeltaFile(name, tensors, info)
    delta.info["extra_params"] = delta.num_params
    return delta


def golden_delta() -> DeltaFile:
    _, _, target_sha = tiny_network(TARGET_CLASSES, seed=0)
    source_net, _, source_sha = tiny_network(SOURCE_CLASSES, seed=1)
    return make_delta(target_sha=target_sha, source_net=source_net, source_sha=source_sha, seed=0)


def golden_joint_delta(budget: int = 2000, random_features: int = 0) -> DeltaFile:
    """A joint-head delta fitted in closed form on random images (seed 0); the golden files of versions 2
    and 3 with the budget 2000, of version 4 with a budget small enough that its head reads a subset of
    the target's features (``features.read``) and, with ``random_features``, random ReLU features."""
    target, spec, target_sha = tiny_network(TARGET_CLASSES, seed=0)
    source_net, source_spec, source_sha = tiny_network(SOURCE_CLASSES, seed=1)
    target.mean, target.std = torch.tensor(spec.mean), torch.tensor(spec.std)
    source_net.mean, source_net.std = torch.tensor(source_spec.mean), torch.tensor(source_spec.std)
    target.freeze(), source_net.freeze()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, CHANNELS, SIZE, SIZE, generator=g)
    y = torch.randint(0, len(TARGET_CLASSES) + 1, (64,), generator=g)
    out = fit_joint(
        base=ClonedModel(target, TARGET_CLASSES).eval(),
        source=source_net,
        new_classes=["5"],
        image_shape=(CHANNELS, SIZE, SIZE),
        train=batches(x[:48], y[:48], 16),
        val=(x[48:], y[48:]),
        settings=JointSettings(budget=budget, random_features=random_features, random_seed=0),
    )
    branch = out.branch
    io = {"channels": CHANNELS, "size": SIZE}
    tensors = branch_tensors(branch, out.masks, online=False)
    structure = branch_info(branch)
    info = {
        "target": {"sha256": target_sha, "arch": ARCH, "classes": list(TARGET_CLASSES), "input": io},
        "source": {
            "sha256": source_sha,
            "arch": ARCH,
            "arch_kwargs": {},
            "classes": list(SOURCE_CLASSES),
            "input": io,
            "normalization": {"mean": [0.5], "std": [0.25]},
            "num_blocks": BLOCKS,
        },
        "classes": ["5"],
        "source_class_index": [SOURCE_CLASSES.index("5")],
        "position": {**structure["position"], "target_blocks": BLOCKS, "source_blocks": BLOCKS},
        "adapter": structure["adapter"],
        "head": structure["head"],
        "reads": [],
        "mode": "offline",
        "config": {"head": "joint"},
        "seed": 0,
    }
    delta = DeltaFile("clone-5", tensors, info)
    delta.info["extra_params"] = delta.num_params
    return delta


def main() -> None:
    """``make_golden.py v4 [DIR]``: write the golden delta of the current format version."""
    torch.set_num_threads(1)
    version = sys.argv[1] if len(sys.argv) > 1 else f"v{DELTA_FORMAT_VERSION}"
    if version != f"v{DELTA_FORMAT_VERSION}":
        sys.exit(f"only v{DELTA_FORMAT_VERSION} golden files can be written; older ones are frozen")
    where = Path(sys.argv[2]) if len(sys.argv) > 2 else GOLDEN_V4.parent
    for name, random_features in ((GOLDEN_V4.name, 0), (GOLDEN_V4_RANDOM.name, 8)):
        delta = where / name
        sha = write_delta(delta, golden_joint_delta(V4_BUDGET, random_features), force=True)
        print(f"wrote {delta} ({delta.stat().st_size} bytes, content sha256 {sha})")


if __name__ == "__main__":
    main()
