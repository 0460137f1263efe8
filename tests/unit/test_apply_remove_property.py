"""Property: over every (target, source) pair of the tiny architectures in the registry, applying deltas
in any valid order (in one call or stacked one call at a time) and removing them in any order returns the
target file byte-identical (hypothesis; tiny nets, few derandomised examples per pair).

Each pair gets three deltas built without training, structurally exactly as ``pnc clone`` writes them
(``new_branch`` / ``fit_joint``, ``branch_tensors``, ``branch_info``): two append-head deltas at different
target positions, with random selector masks, and one joint-head delta fitted in closed form on random
images over the bare target. A joint head reads the stack below it (here: nothing), so it is valid only
at the bottom of the stack; append heads go anywhere above it and every delta comes off in any order.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnc_cli import api
from pnc_cli.io.delta_file import DeltaFile, count_params, write_delta
from pnc_cli.io.model_file import ModelSpec, save_model
from pnc_cli.method.branch_state import branch_info, branch_tensors
from pnc_cli.method.cloned_model import Branch, ClonedModel, new_branch
from pnc_cli.method.joint import JointSettings, batches, fit_joint
from pnc_cli.method.selector import maskable_layers
from pnc_cli.nets import Network, build_network, list_architectures

TINY = tuple(a.name for a in list_architectures() if a.tiny)
PAIRS = [(t, s) for t in TINY for s in TINY]
CHANNELS, SIZE = 1, 16
TARGET_CLASSES = ("0", "1", "2")
SOURCE_CLASSES = ("3", "4", "5", "6")
APPEND = ("clone-4", "clone-5")
JOINT = "clone-6"
NAMES = (JOINT, *APPEND)


def _network(arch: str, classes: tuple[str, ...], seed: int) -> tuple[Network, ModelSpec]:
    """A randomly initialised frozen network with non-trivial BatchNorm buffers."""
    torch.manual_seed(seed)
    net = build_network(arch, num_classes=len(classes), in_channels=CHANNELS, input_size=SIZE)
    for name, buf in net.model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buf.copy_(torch.rand_like(buf) + 0.5)
    spec = ModelSpec(arch, classes, CHANNELS, SIZE, mean=(0.5,), std=(0.25,))
    net.mean, net.std = torch.tensor(spec.mean), torch.tensor(spec.std)
    net.freeze()
    return net, spec


def _info(
    branch: Branch, target: tuple[Network, ModelSpec, str], source: tuple[Network, ModelSpec, str]
) -> dict[str, Any]:
    (t_net, t_spec, t_sha), (s_net, s_spec, s_sha) = target, source
    io = {"channels": CHANNELS, "size": SIZE}
    structure = branch_info(branch)
    info: dict[str, Any] = {
        "target": {"sha256": t_sha, "arch": t_spec.arch, "classes": list(t_spec.classes), "input": io},
        "source": {
            "sha256": s_sha,
            "arch": s_spec.arch,
            "arch_kwargs": {},
            "classes": list(s_spec.classes),
            "input": io,
            "normalization": {"mean": list(s_spec.mean), "std": list(s_spec.std)},
            "num_blocks": s_net.num_blocks,
        },
        "classes": list(branch.classes),
        "source_class_index": [SOURCE_CLASSES.index(c) for c in branch.classes],
        "position": {
            **structure["position"],
            "target_blocks": t_net.num_blocks,
            "source_blocks": s_net.num_blocks,
        },
        "adapter": structure["adapter"],
        "head": structure["head"],
        "mode": "offline",
        "config": {"property_test": True},
        "seed": 0,
    }
    if branch.head_kind == "joint":
        info["reads"] = []
    return info


def _delta(name: str, branch: Branch, masks: dict[str, torch.Tensor], target, source) -> DeltaFile:
    delta = DeltaFile(name, branch_tensors(branch, masks, online=False), _info(branch, target, source))
    delta.info["extra_params"] = count_params(delta.tensors)
    return delta


@cache
def pair_files(target_arch: str, source_arch: str, root: Path) -> dict[str, Path]:
    """Target and source model files and the three deltas of one architecture pair (built once)."""
    d = root / f"{target_arch}-{source_arch}"
    d.mkdir()
    t_net, t_spec = _network(target_arch, TARGET_CLASSES, seed=0)
    s_net, s_spec = _network(source_arch, SOURCE_CLASSES, seed=1)
    files = {"target": d / "target.safetensors", "source": d / "source.safetensors"}
    target = (t_net, t_spec, save_model(files["target"], t_net, t_spec))
    source = (s_net, s_spec, save_model(files["source"], s_net, s_spec))
    g = torch.Generator().manual_seed(0)
    for name, position in zip(APPEND, (1, t_net.num_blocks - 1), strict=True):
        cls = name.split("-")[1]
        branch = new_branch(
            t_net,
            s_net,
            position=position,
            class_index=[SOURCE_CLASSES.index(cls)],
            classes=[cls],
            in_channels=CHANNELS,
            input_size=SIZE,
        )
        masks = {}
        for layer_name, layer in maskable_layers(branch.module).items():
            n = layer.out_channels if hasattr(layer, "out_channels") else layer.out_features
            keep = torch.rand(n, generator=g) > 0.4
            keep[0] = True
            masks[layer_name] = keep
        files[name] = d / f"{name}.safetensors"
        write_delta(files[name], _delta(name, branch, masks, target, source))
    x = torch.rand(48, CHANNELS, SIZE, SIZE, generator=g)
    y = torch.randint(0, len(TARGET_CLASSES) + 1, (48,), generator=g)
    out = fit_joint(
        base=ClonedModel(t_net, TARGET_CLASSES).eval(),
        source=s_net,
        new_classes=[JOINT.split("-")[1]],
        image_shape=(CHANNELS, SIZE, SIZE),
        train=batches(x[:32], y[:32], 16),
        val=(x[32:], y[32:]),
        settings=JointSettings(max_features=64),
        ends=[1],  # one transferable module (source block 0): the fit is not what is tested here
    )
    files[JOINT] = d / f"{JOINT}.safetensors"
    write_delta(files[JOINT], _delta(JOINT, out.branch, out.masks, target, source))
    return files


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pair_files.cache_clear()
    return tmp_path_factory.mktemp("pairs")


def test_the_registry_offers_several_tiny_architectures() -> None:
    assert len(TINY) >= 3 and "tiny_cnn" in TINY and len(PAIRS) == len(TINY) ** 2


@pytest.mark.parametrize(("target_arch", "source_arch"), PAIRS, ids=[f"{t}<-{s}" for t, s in PAIRS])
def test_every_delta_of_a_pair_runs_on_the_cloned_model(
    target_arch: str, source_arch: str, root: Path
) -> None:
    """The deltas are real ones for this pair: stacked, the cloned model loads and predicts every class."""
    files = pair_files(target_arch, source_arch, root)
    cloned = root / f"all-{target_arch}-{source_arch}.safetensors"
    api.apply_delta(target=files["target"], deltas=[files[n] for n in NAMES], output=cloned)
    model, _, _ = api.load_cloned(cloned)
    with torch.no_grad():
        out = model(torch.rand(4, CHANNELS, SIZE, SIZE))
    assert out.shape == (4, len(TARGET_CLASSES) + len(NAMES)) and torch.isfinite(out).all()


@pytest.mark.parametrize(("target_arch", "source_arch"), PAIRS, ids=[f"{t}<-{s}" for t, s in PAIRS])
@settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    with_joint=st.booleans(),
    order=st.permutations(APPEND),
    stacked=st.booleans(),
    removal=st.permutations(NAMES),
    data=st.data(),
)
def test_any_apply_and_remove_order_restores_the_target(
    target_arch: str,
    source_arch: str,
    root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    with_joint: bool,
    order: list[str],
    stacked: bool,
    removal: list[str],
    data: st.DataObject,
) -> None:
    files = pair_files(target_arch, source_arch, root)
    k = data.draw(st.integers(0 if with_joint else 1, len(APPEND)), label="number of append deltas")
    chosen = [JOINT] * with_joint + list(order[:k])  # a joint head with nothing below it goes first
    d = tmp_path_factory.mktemp("run")
    current = files["target"]
    if stacked:  # one apply per delta, each onto the previous cloned model
        for i, name in enumerate(chosen):
            nxt = d / f"c{i}.safetensors"
            api.apply_delta(target=current, deltas=[files[name]], output=nxt)
            current = nxt
    else:
        current = d / "c.safetensors"
        api.apply_delta(target=files["target"], deltas=[files[n] for n in chosen], output=current)
    left = [n for n in removal if n in chosen]
    for i, name in enumerate(left):  # remove one at a time, in the drawn order
        nxt = d / f"r{i}.safetensors"
        doc = api.remove_delta(cloned=current, output=nxt, names=[name])
        current = nxt
        assert doc["restored"] == (i == len(left) - 1)
    assert current.read_bytes() == files["target"].read_bytes()
