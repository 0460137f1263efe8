"""`pnc export`: TorchScript and ONNX files that reproduce the PyTorch logits (the command verifies and
reports the max abs diff); ONNX tests skip when the optional extra is absent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pnc_cli import api
from pnc_cli.io.delta_file import write_delta
from tests.data.make_golden import SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (optional extra)")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    target, source, delta, cloned = (
        root / f"{n}.safetensors" for n in ("target", "source", "delta", "cloned")
    )
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    write_delta(delta, make_delta(target_sha=target_sha, source_net=source_net, source_sha=source_sha))
    api.apply_delta(target=target, deltas=[delta], output=cloned)
    return {"target": target, "cloned": cloned}


def _reference(path: Path, x: torch.Tensor) -> torch.Tensor:
    from pnc_cli.api.export import runnable

    module, _ = runnable(path)
    with torch.no_grad():
        return module(x)


@pytest.mark.parametrize("kind", ["target", "cloned"])
def test_torchscript_matches_pytorch(run_cli, files: dict[str, Path], in_tmp: Path, kind: str) -> None:
    code, stdout, stderr = run_cli(
        "export", files[kind], "--format", "torchscript", "-o", "m.pt", "--json", "--samples", "4"
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["max_abs_diff"] <= doc["tolerance"] and doc["num_samples"] == 4
    assert doc["kind"] == ("cloned" if kind == "cloned" else "model")
    extra = {"pnc.export": ""}
    loaded = torch.jit.load("m.pt", _extra_files=extra)
    assert json.loads(extra["pnc.export"])["classes"] == doc["classes"]
    c, s = doc["input"]["channels"], doc["input"]["size"]
    x = torch.rand(5, c, s, s, generator=torch.Generator().manual_seed(3))  # another batch size
    with torch.no_grad():
        assert torch.allclose(loaded(x), _reference(files[kind], x), atol=1e-5)
    assert len(doc["classes"]) == (len(TARGET_CLASSES) + 1 if kind == "cloned" else len(TARGET_CLASSES))


@needs_onnx
def test_onnx_matches_pytorch(run_cli, files: dict[str, Path], in_tmp: Path) -> None:
    import onnx
    import onnxruntime as ort

    code, stdout, stderr = run_cli("export", files["cloned"], "--format", "onnx", "-o", "m.onnx", "--json")
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["max_abs_diff"] <= doc["tolerance"]
    proto = onnx.load("m.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["pnc.export"])["classes"] == doc["classes"]
    assert json.loads(props["pnc.provenance"])["options"]["format"] == "onnx"
    c, s = doc["input"]["channels"], doc["input"]["size"]
    x = torch.rand(3, c, s, s, generator=torch.Generator().manual_seed(4))
    got = ort.InferenceSession("m.onnx", providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[
        0
    ]
    assert torch.allclose(torch.from_numpy(got), _reference(files["cloned"], x), atol=1e-4)


def test_bad_export_requests(run_cli, files: dict[str, Path], in_tmp: Path) -> None:

    code, stdout, stderr = run_cli("export", files["target"], "--format", "tflite", "-o", "m.x")
    assert code == 2 and stdout == "" and "unknown export format 'tflite'" in stderr
    Path("exists.pt").write_bytes(b"keep")
    code, _, stderr = run_cli("export", files["target"], "--format", "torchscript", "-o", "exists.pt")
    assert code == 2 and "--force" in stderr
    assert Path("exists.pt").read_bytes() == b"keep"


def test_verification_failure_writes_nothing(files: dict[str, Path], in_tmp: Path, monkeypatch) -> None:
    """An export whose program disagrees with PyTorch is refused (exit 3) and leaves no file."""
    from pnc_cli.api import export as export_mod
    from pnc_cli.core.errors import VerificationError

    monkeypatch.setattr(export_mod, "_run_torchscript", lambda data, x: torch.zeros(len(x), 5) + 1.0)
    with pytest.raises(VerificationError, match="differs from PyTorch"):
        export_mod.export_model(model=files["target"], format="torchscript", output="m.pt")
    assert not Path("m.pt").exists()
