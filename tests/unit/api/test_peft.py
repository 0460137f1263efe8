"""``pnc_cli.load`` / ``PncModel``: a target plus deltas as one frozen ``nn.Module`` (docs/api.md).

Tiny synthetic files (tests/data/make_golden.py): two append-head deltas (classes 5 and 6) on a
tiny_cnn target. Checks that the target is a real child (state_dict, .to/.double), that adding,
deleting and unloading deltas in memory match the files ``pnc apply``/``pnc remove`` write, and that
torch.jit.trace, torch.export and torch.compile give the same logits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import pnc_cli
from pnc_cli import api
from pnc_cli.core.errors import IncompatibleError, UsageError
from pnc_cli.io.delta_file import write_delta
from tests.data.make_golden import SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("peft")
    target, source = root / "target.safetensors", root / "source.safetensors"
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    kw = {"target_sha": target_sha, "source_net": source_net, "source_sha": source_sha}
    d5, d6, online = root / "d5.safetensors", root / "d6.safetensors", root / "online.safetensors"
    write_delta(d5, make_delta(**kw))
    write_delta(d6, make_delta(**kw, name="clone-6", classes=("6",), seed=1))
    write_delta(online, make_delta(**kw, name="clone-7", classes=("7",), seed=2, mode="online"))
    cloned = root / "cloned.safetensors"
    api.apply_delta(target=target, deltas=[d5, d6], output=cloned)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    return SimpleNamespace(
        root=root, target=target, source=source, d5=d5, d6=d6, online=online, cloned=cloned, x=x
    )


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_load_matches_the_cloned_file(env: SimpleNamespace) -> None:
    from_file = pnc_cli.load(env.cloned)
    in_memory = pnc_cli.load(env.target, deltas=[env.d5, env.d6])
    assert isinstance(in_memory, torch.nn.Module)
    assert in_memory.classes == from_file.classes == [*TARGET_CLASSES, "5", "6"]
    assert in_memory.deltas == ["clone-5", "clone-6"]
    assert torch.equal(_logits(in_memory, env.x), _logits(from_file, env.x))
    assert not in_memory.training and all(not p.requires_grad for p in in_memory.parameters())
    in_memory.train()
    assert not in_memory.training, "a PncModel stays in eval mode"


def test_target_is_a_real_child(env: SimpleNamespace) -> None:
    model = pnc_cli.load(env.cloned)
    keys = model.state_dict().keys()
    target_keys = pnc_cli.load(env.target).target.state_dict().keys()
    assert {f"cloned.target_model.{k}" for k in target_keys} <= set(keys)
    ref = _logits(model, env.x)
    model.double()
    assert all(p.dtype == torch.float64 for p in model.target.parameters())
    assert torch.allclose(_logits(model, env.x.double()).float(), ref, atol=1e-5)
    model.half()
    assert all(p.dtype == torch.float16 for p in model.parameters())
    model.float()
    assert torch.allclose(_logits(model, env.x), ref, atol=1e-3)


def test_add_delete_unload(env: SimpleNamespace) -> None:
    target_logits = _logits(pnc_cli.load(env.target), env.x)
    model = pnc_cli.load(env.target)
    assert model.add_delta(env.d5) == "clone-5"
    model.add_delta(env.d6)
    both = _logits(model, env.x)
    model.delete_delta("clone-5")
    only6 = _logits(pnc_cli.load(env.target, deltas=[env.d6]), env.x)
    assert model.deltas == ["clone-6"] and torch.equal(_logits(model, env.x), only6)
    n = len(TARGET_CLASSES)
    kept = [*range(n), n + 1]  # the target's outputs and clone-6's
    assert torch.equal(both[:, kept], only6), "append heads: the other outputs are untouched"
    same = model.unload()
    assert same is model and model.deltas == [] and model.classes == list(TARGET_CLASSES)
    assert torch.equal(_logits(model, env.x), target_logits)


def test_add_delta_errors(env: SimpleNamespace, tmp_path: Path) -> None:
    model = pnc_cli.load(env.target, deltas=[env.d5])
    with pytest.raises(IncompatibleError, match="already used"):
        model.add_delta(env.d5)
    with pytest.raises(UsageError, match="no delta named 'nope'"):
        model.delete_delta("nope")
    with pytest.raises(UsageError, match="needs its source"):
        model.add_delta(env.online)
    assert model.add_delta(env.online, source=env.source) == "clone-7"
    other = tmp_path / "other.safetensors"
    tiny_model_file(other, TARGET_CLASSES, seed=5)
    with pytest.raises(IncompatibleError, match="made for target"):
        pnc_cli.load(other, deltas=[env.d5])


def test_save_writes_cloned_and_original_target(env: SimpleNamespace, tmp_path: Path) -> None:
    model = pnc_cli.load(env.target, deltas=[env.d5, env.d6])
    doc = model.save(tmp_path / "c.safetensors")
    assert doc["kind"] == "cloned" and doc["deltas"] == ["clone-5", "clone-6"]
    assert torch.equal(_logits(pnc_cli.load(tmp_path / "c.safetensors"), env.x), _logits(model, env.x))
    model.unload().save(tmp_path / "t.safetensors")
    assert (tmp_path / "t.safetensors").read_bytes() == env.target.read_bytes()
    with pytest.raises(UsageError, match="exists"):
        model.save(tmp_path / "t.safetensors")


def test_trace_export_compile(env: SimpleNamespace) -> None:
    model = pnc_cli.load(env.cloned)
    ref = _logits(model, env.x)
    with torch.no_grad():
        traced = torch.jit.trace(model, (env.x,), check_trace=False)
    assert torch.allclose(traced(env.x), ref, atol=1e-6)
    exported = torch.export.export(model, (env.x,))
    assert torch.allclose(exported.module()(env.x), ref, atol=1e-6)
    compiled = torch.compile(model, backend="eager")  # graph capture without a C++ toolchain
    assert torch.allclose(_logits(compiled, env.x), ref, atol=1e-6)


def test_import_pnc_cli_stays_light() -> None:
    code = (
        "import sys, pnc_cli; assert 'torch' not in sys.modules; pnc_cli.load; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path(__file__).parents[2])
