"""Every registered architecture: its block split reproduces the model exactly (docs/architectures.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pnc_cli.core.errors import UnknownArchitectureError, UsageError
from pnc_cli.core.trust import trusted_archs
from pnc_cli.nets import (
    build_network,
    get_architecture,
    list_architectures,
    register_architecture,
)

ARCHS = [a.name for a in list_architectures()]
CUSTOM = "tests.custom_arch:build"


def _input(channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _params(modules: list[nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def _last_linear(classifier: nn.Module) -> nn.Linear:
    """The classifier is a Linear layer, or ends in one (MobileNetV2: Dropout then Linear)."""
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1
    return linears[0]


def test_the_issue_architectures_are_registered() -> None:
    expected = {
        "lenet5": 3,
        "plaincnn": 3,
        "resnet18": 5,
        "resnet50": 5,
        "mobilenet_v2": 5,
        "shufflenet_v2_x1_0": 5,
        "tiny_cnn": 3,
        "tiny_resnet": 5,
        "tiny_mobilenet": 5,
    }
    registered = {a.name: a.num_blocks for a in list_architectures()}
    assert expected.items() <= registered.items()
    assert [a.name for a in list_architectures()] == sorted(registered)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_then_classifier_equal_forward(arch: str, channels: int) -> None:
    info = get_architecture(arch)
    torch.manual_seed(0)
    net = build_network(arch, num_classes=4, in_channels=channels, input_size=info.default_input_size)
    net.model.eval()
    assert net.num_blocks == info.num_blocks
    x = _input(channels, info.default_input_size)
    with torch.no_grad():
        expected = net.model(x)
        h = x
        for block in net.blocks:
            h = block(h)
        got = net.classifier(h)
    assert got.shape == (2, 4)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_blocks_and_classifier_own_every_parameter(arch: str) -> None:
    net = build_network(arch, num_classes=3, in_channels=1)
    assert _params(net.blocks + [net.classifier]) == _params([net.model])
    assert _last_linear(net.classifier).out_features == 3


@pytest.mark.parametrize("arch", ["tiny_cnn", "tiny_resnet", "tiny_mobilenet", "lenet5"])
def test_block_shapes_chain(arch: str) -> None:
    info = get_architecture(arch)
    net = build_network(arch, num_classes=3, in_channels=1, input_size=info.default_input_size)
    shapes = net.block_shapes(1, info.default_input_size)
    assert len(shapes) == net.num_blocks + 1
    assert shapes[0] == (1, info.default_input_size, info.default_input_size)
    assert len(shapes[-1]) == 1 and shapes[-1][0] == _last_linear(net.classifier).in_features


@pytest.mark.parametrize(("size", "small"), [(32, True), (96, False)])
def test_resnet_small_stem_rule(size: int, small: bool) -> None:
    net = build_network("resnet18", num_classes=2, in_channels=3, input_size=size)
    conv1 = net.model.conv1
    assert conv1.kernel_size == ((3, 3) if small else (7, 7))
    assert isinstance(net.model.maxpool, nn.Identity) == small
    net.model.eval()
    x = _input(3, size)
    with torch.no_grad():
        assert torch.equal(net.classifier(net.run_blocks(x, 0)), net.model(x))


def test_small_input_can_be_forced_off() -> None:
    net = build_network(
        "resnet18", num_classes=2, in_channels=3, input_size=32, arch_kwargs={"small_input": False}
    )
    assert net.model.conv1.kernel_size == (7, 7)


def test_network_call_normalises_then_runs_the_model() -> None:
    net = build_network("tiny_cnn", num_classes=3, in_channels=1, input_size=16).eval()
    net.mean, net.std = torch.tensor([0.5]), torch.tensor([0.25])
    x = _input(1, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net.model((x - 0.5) / 0.25))
        assert torch.equal(net.features(x, 2), net.run_blocks((x - 0.5) / 0.25, 0, 2))


# --- registry ----------------------------------------------------------------------------------------


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(UnknownArchitectureError, match=r"unknown architecture 'nope'; known: .*lenet5"):
        get_architecture("nope")
    assert UnknownArchitectureError.exit_code == 2


def test_importing_the_registry_module_alone_gives_the_full_registry() -> None:
    """nets/registry.py holds only state; the package ``__init__`` fills it, whatever module is imported."""
    code = "import pnc_cli.nets.registry as r; print(','.join(a.name for a in r.list_architectures()))"
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert set(out.stdout.strip().split(",")) == set(ARCHS)
    assert {"lenet5", "tiny_cnn"} <= set(ARCHS)


def test_registering_a_name_twice_fails() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_architecture("tiny_cnn", num_blocks=3, description="dup")(lambda *a: None)


def test_bad_architecture_kwargs_are_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot build architecture 'tiny_cnn'"):
        build_network("tiny_cnn", num_classes=2, arch_kwargs={"depth": 3})


# --- custom architectures: package.module:function -------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_custom_architecture_through_build_network(channels: int) -> None:
    with trusted_archs(CUSTOM):
        net = build_network(
            CUSTOM, num_classes=3, in_channels=channels, input_size=12, arch_kwargs={"width": 6}
        )
    net.model.eval()
    x = _input(channels, 12)
    with torch.no_grad():
        assert torch.equal(net.classifier(net.run_blocks(x, 0)), net.model(x))
    assert net.num_blocks == 2
    assert net.arch_kwargs == {"width": 6}
    assert _params(net.blocks + [net.classifier]) == _params([net.model])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tests.no_such_module:build", "cannot be imported"),
        ("tests.custom_arch:missing", "cannot be imported"),
        ("tests.custom_arch:", "package.module:function"),
        ("tests.custom_arch:TwoBlockNet.__doc__", "package.module:function"),
    ],
)
def test_custom_architecture_errors(name: str, message: str) -> None:
    with trusted_archs(name), pytest.raises(UnknownArchitectureError, match=message):
        build_network(name, num_classes=2)


def test_custom_builder_must_follow_the_protocol() -> None:
    name = "tests.custom_arch:not_a_builder"
    with trusted_archs(name), pytest.raises(UsageError, match=r"must return \(model, blocks, classifier\)"):
        build_network(name, num_classes=2)


def test_custom_architecture_through_pnc_train(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "custom.safetensors"
    args = ["train", "--arch", CUSTOM, "--data", "digits", "--classes", "0,1", "--epochs", "1"]
    code, stdout, stderr = run_cli(*args, "--arch-arg", "width=3", "-o", out, "--json", "--quiet")
    assert code == 0, stderr
    assert json.loads(stdout)["output"] == str(out)
    code, stdout, stderr = run_cli("info", out, "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert info["arch"] == CUSTOM and info["arch_kwargs"] == {"width": 3} and info["classes"] == ["0", "1"]
    code, stdout, stderr = run_cli(
        "eval", "--model", out, "--data", "digits", "--json", "--trust-arch", CUSTOM
    )
    assert code == 0, stderr
    assert set(json.loads(stdout)["per_class"]) == {"0", "1"}
