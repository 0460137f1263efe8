"""`pnc import` from checkpoints of other tools: .pth/.pt/.bin through the restricted unpickler only.

The security test writes a pickle whose ``__reduce__`` calls ``os.system`` to create a marker file and
checks that import refuses it (exit 2, one line) and that the marker never appears.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pnc_cli import api
from pnc_cli.core import provenance


def _one_error_line(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


class _RunsCode:
    """Pickles into a call of os.system: loading it with plain torch.load would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def weights(tiny_target: Path) -> dict[str, torch.Tensor]:
    return load_file(tiny_target)


def _norm(tiny_target: Path) -> list[str]:
    norm = api.file_info(tiny_target)["normalization"]
    return ["--mean", str(norm["mean"][0]), "--std", str(norm["std"][0])]


IMPORT = ["--arch", "tiny_cnn", "--input-size", "16"]


def test_malicious_pickle_is_refused_without_running(run_cli, in_tmp: Path, snapshot) -> None:
    marker = in_tmp / "MARKER"
    torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, "evil.pth")
    before = snapshot(in_tmp)
    code, stdout, stderr = run_cli("import", "evil.pth", *IMPORT, "--classes", "0-4", "-o", "m.safetensors")
    assert code == 2
    _one_error_line(stderr, "evil.pth", "refused", "posix.system", "state_dict()")
    assert not marker.exists(), "the pickle's code ran"
    assert snapshot(in_tmp) == before  # nothing written
    torch.load("evil.pth", weights_only=False)  # the payload is live: the unrestricted unpickler runs it
    assert marker.exists()


def test_pickled_module_is_refused_with_the_reason(run_cli, in_tmp: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), "whole_model.pt")
    code, _, stderr = run_cli("import", "whole_model.pt", *IMPORT, "--classes", "0-4", "-o", "m.safetensors")
    assert code == 2
    _one_error_line(stderr, "refused", "torch.nn.modules.linear.Linear", "torch.save(model.state_dict()")


def test_training_checkpoint_with_dataparallel_prefix(
    run_cli, in_tmp: Path, tiny_target: Path, weights
) -> None:
    """{"epoch", "state_dict": {module.*}, "optimizer"}: the state dict is found and ``module.`` stripped;
    the imported model has the same tensors (content sha256) and accuracy as the original."""
    ckpt = {
        "epoch": 3,
        "state_dict": {f"module.{k}": v for k, v in weights.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
    }
    torch.save(ckpt, "ckpt.pth")
    code, stdout, stderr = run_cli(
        "import",
        "ckpt.pth",
        *IMPORT,
        "--classes",
        "0-4",
        *_norm(tiny_target),
        "-o",
        "m.safetensors",
        "--json",
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["source"]["format"] == "pytorch-pickle"
    assert doc["source"]["key"] == "state_dict" and doc["source"]["stripped_prefix"] == "module."
    assert doc["content_sha256"] == api.file_info(tiny_target)["sha256"]
    assert doc["source"]["file_sha256"] == provenance_file_sha("ckpt.pth")
    original = api.evaluate_model(model=tiny_target, data="digits", device="cpu")
    again = api.evaluate_model(model="m.safetensors", data="digits", device="cpu")
    assert again["per_class"] == original["per_class"]
    prov = provenance.read(load_meta("m.safetensors"))
    assert prov is not None and prov["source"]["key"] == "state_dict"
    assert prov["options"]["arch"] == "tiny_cnn" and prov["pnc_version"]


def provenance_file_sha(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_meta(path: str) -> dict[str, str]:
    from pnc_cli.io.safetensors_io import read_header

    return read_header(path)[1]


def test_key_and_ambiguity(run_cli, in_tmp: Path, weights) -> None:
    torch.save({"model": weights, "ema": weights}, "two.pt")
    code, _, stderr = run_cli("import", "two.pt", *IMPORT, "--classes", "0-4", "-o", "m.safetensors")
    assert code == 2
    _one_error_line(stderr, "ema, model", "--key")
    code, stdout, stderr = run_cli(
        "import", "two.pt", *IMPORT, "--classes", "0-4", "--key", "ema", "-o", "m.safetensors", "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["source"]["key"] == "ema"
    code, _, stderr = run_cli("import", "two.pt", *IMPORT, "--classes", "0-4", "--key", "nope", "-o", "x.st")
    assert code == 2
    _one_error_line(stderr, "no entry 'nope'", "ema, model")


def test_strip_prefix_and_classes_file(run_cli, in_tmp: Path, weights) -> None:
    torch.save({f"net.{k}": v for k, v in weights.items()}, "w.bin")
    Path("names.txt").write_text("zero\none\n\n two \nthree\nfour\n")
    code, stdout, stderr = run_cli(
        "import", "w.bin", *IMPORT, "--classes-file", "names.txt", "--strip-prefix", "net.",
        "-o", "m.safetensors", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["classes"] == ["zero", "one", "two", "three", "four"]
    assert doc["source"]["stripped_prefix"] == "net."
    # without the prefix option the names do not match the architecture (exit 4)
    code, _, stderr = run_cli(
        "import", "w.bin", *IMPORT, "--classes-file", "names.txt", "-o", "x.safetensors"
    )
    assert code == 4
    _one_error_line(stderr, "does not match architecture", "unexpected net.")
    code, _, stderr = run_cli("import", "w.bin", *IMPORT, "-o", "x.safetensors")
    assert code == 2
    _one_error_line(stderr, "--classes-file")


def test_warns_without_normalisation(run_cli, in_tmp: Path, weights) -> None:
    save_file(weights, "plain.safetensors")
    code, stdout, stderr = run_cli(
        "import", "plain.safetensors", *IMPORT, "--classes", "0-4", "-o", "m.safetensors", "--json"
    )
    assert code == 0
    json.loads(stdout)  # the warning is on stderr only
    assert "no normalisation given" in stderr


def test_arch_arg_reaches_the_builder(run_cli, in_tmp: Path) -> None:
    from pnc_cli.nets import build_network

    net = build_network("plaincnn", num_classes=3, in_channels=1, input_size=16, arch_kwargs={"width": 4})
    torch.save(net.model.state_dict(), "w.pt")
    code, stdout, stderr = run_cli(
        "import", "w.pt", "--arch", "plaincnn", "--arch-arg", "width=4", "--input-size", "16",
        "--classes", "a,b,c", "--mean", "0.5", "--std", "0.25", "-o", "m.safetensors", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["arch_kwargs"] == {"width": 4}
    assert api.file_info("m.safetensors")["arch_kwargs"] == {"width": 4}
