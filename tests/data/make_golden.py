"""Tiny targets, sources and deltas for tests, and the golden delta of format version 1.

``python tests/data/make_golden.py`` (re)writes ``delta_v1_tiny.safetensors`` from seed 0. Run it only to
create a golden file for a NEW format version (under a new name); the committed v1 file must keep
loading — and running — in every future pnc (docs/delta-format.md, "Version policy").

The helpers build synthetic deltas of the right shape and schema for ``tiny_cnn`` models (1 channel,
16 px, 3 blocks), without training: the tests here are about the file format, not about accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from pnc_cli.io.delta_file import DeltaFile, write_delta
from pnc_cli.io.model_file import ModelSpec, save_model
from pnc_cli.io.safetensors_io import content_sha256
from pnc_cli.method.adapter import build_adapter
from pnc_cli.method.selector import maskable_layers, slice_state
from pnc_cli.nets.architectures import Network, build_network

GOLDEN = Path(__file__).with_name("delta_v1_tiny.safetensors")
ARCH, CHANNELS, SIZE, BLOCKS = "tiny_cnn", 1, 16, 3
TARGET_CLASSES = ("0", "1", "2")
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


def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN
    sha = write_delta(out, golden_delta(), force=True)
    print(f"wrote {out} ({out.stat().st_size} bytes, sha256 {sha})")


if __name__ == "__main__":
    main()
