"""Safetensors IO and model checkpoints (docs/formats.md): round trip, canonical hash, deterministic
bytes, atomic writes, header-only reads, and a clear error for every kind of bad file."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pnc_cli import api
from pnc_cli.core.config import TrainConfig
from pnc_cli.core.errors import (
    CheckpointError,
    IncompatibleError,
    OutputExistsError,
    UsageError,
    VerificationError,
)
from pnc_cli.io.model_file import ModelSpec, load_model, read_spec, save_model
from pnc_cli.io.safetensors_io import (
    content_sha256,
    read_header,
    read_safetensors,
    serialize,
    write_safetensors,
)
from pnc_cli.nets import build_network


def _net(seed: int = 0, classes: int = 3):
    torch.manual_seed(seed)
    return build_network("tiny_cnn", num_classes=classes, in_channels=1, input_size=16)


def _spec(classes: tuple[str, ...] = ("a", "b", "c")) -> ModelSpec:
    return ModelSpec("tiny_cnn", classes, 1, 16, {}, (0.5,), (0.25,))


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(3, 4, generator=g),
        "b": torch.arange(5, dtype=torch.int64),
        "h": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "m": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
    }


# --- content hash -------------------------------------------------------------------------------------


def _reference_sha(tensors: dict[str, torch.Tensor]) -> str:
    """docs/formats.md, written out independently: for each name in sorted order, hash the UTF-8 name,
    the safetensors dtype string, the shape as compact JSON with ", " separators, then the raw
    little-endian bytes of the contiguous tensor."""
    dtypes = {torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16", torch.bool: "BOOL"}
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(dtypes[t.dtype].encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def test_content_hash_matches_the_documented_definition() -> None:
    tensors = _tensors()
    assert content_sha256(tensors) == _reference_sha(tensors)


def test_content_hash_is_canonical() -> None:
    tensors = _tensors()
    sha = content_sha256(tensors)
    assert content_sha256(dict(reversed(list(tensors.items())))) == sha  # order of the dict
    t = torch.randn(4, 3).t()  # non-contiguous view vs its contiguous copy
    assert content_sha256({"x": t}) == content_sha256({"x": t.contiguous()})


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(w=d["w"] + 1e-6),  # a value
        lambda d: d.update(w=d["w"].reshape(4, 3)),  # the shape, same bytes
        lambda d: d.update(w=d["w"].double()),  # the dtype
        lambda d: d.update(w2=d.pop("w")),  # a name
        lambda d: d.pop("empty"),  # a tensor less
    ],
)
def test_content_hash_sees_every_change(change) -> None:
    tensors = _tensors()
    sha = content_sha256(tensors)
    change(tensors)
    assert content_sha256(tensors) != sha


# --- writing ------------------------------------------------------------------------------------------


def test_serialize_is_deterministic_and_readable_by_safetensors(tmp_path: Path) -> None:
    tensors, meta = _tensors(), {"z": "1", "a": "2"}
    assert serialize(tensors, meta) == serialize(
        dict(reversed(list(tensors.items()))), dict(reversed(meta.items()))
    )
    path = write_safetensors(tmp_path / "t.safetensors", tensors, meta)
    loaded = load_file(path)  # the official reader
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v)
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == meta
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert n % 8 == 0  # header padded to 8 bytes


def test_save_model_round_trip(tmp_path: Path) -> None:
    net, spec = _net(), _spec()
    sha = save_model(tmp_path / "m.safetensors", net, spec)
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.sha256 == sha == content_sha256(net.model.state_dict())
    assert loaded.spec == spec
    for k, v in net.model.state_dict().items():
        assert torch.equal(loaded.network.model.state_dict()[k], v)
    assert not loaded.network.model.training
    assert all(not p.requires_grad for p in loaded.network.model.parameters())
    assert torch.equal(loaded.network.mean, torch.tensor([0.5]))
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), net.model.eval()((x - 0.5) / 0.25))


def test_same_network_gives_same_bytes(tmp_path: Path) -> None:
    save_model(tmp_path / "a.safetensors", _net(), _spec())
    save_model(tmp_path / "b.safetensors", _net(), _spec())
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_training_twice_with_the_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, lr=1e-2, seed=3)
    for name in ("a", "b"):
        api.train_model(
            arch="tiny_cnn",
            data="digits",
            classes="0,1",
            output=tmp_path / f"{name}.safetensors",
            config=config,
            input_size=16,
            device="cpu",
        )
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_model_metadata_keys(tiny_target: Path) -> None:
    _, meta = read_header(tiny_target)
    assert set(meta) == {
        "format",
        "pnc.kind",
        "pnc.format_version",
        "pnc.writer",
        "pnc.sha256",
        "pnc.arch",
        "pnc.arch_kwargs",
        "pnc.classes",
        "pnc.input",
        "pnc.normalization",
        "pnc.training",
        "pnc.seal",
        "pnc.provenance",
    }
    assert meta["format"] == "pt" and meta["pnc.kind"] == "model" and meta["pnc.format_version"] == "2"
    prov = json.loads(meta["pnc.provenance"])  # core/provenance.py: options and data actually used
    assert prov["options"]["arch"] == "tiny_cnn" and prov["data"]["data"] == "digits"
    assert len(prov["data"]["content_sha256"]) == 64 and prov["pnc_version"] and prov["torch_version"]
    assert json.loads(meta["pnc.classes"]) == ["0", "1", "2", "3", "4"]
    assert json.loads(meta["pnc.input"]) == {"channels": 1, "size": 16}
    training = json.loads(meta["pnc.training"])
    assert training["data"] == "digits" and training["split_seed"] == 0 and training["fraction"] == 1.0
    assert training["config"]["seed"] == 0


def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="pass force"):
        save_model(out, _net(), _spec())
    assert out.read_bytes() == b"keep me"
    save_model(out, _net(), _spec(), force=True)
    assert load_model(out).spec == _spec()


@pytest.mark.parametrize("where", ["missing_dir/m.safetensors", "a_file/m.safetensors", "."])
def test_unusable_output_path(tmp_path: Path, where: str) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UsageError, match="output"):
        save_model(tmp_path / where, _net(), _spec(), force=True)


def test_output_that_is_an_input_is_refused(tmp_path: Path, tiny_target: Path) -> None:
    with pytest.raises(UsageError, match="also an input"):
        api.import_model(file=tiny_target, arch="tiny_cnn", classes="0-4", output=tiny_target, force=True)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"old")

    def boom(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_model(out, _net(), _spec(), force=True)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temporary left behind


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "m.safetensors", _net(), _spec())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644


# --- reading: header only, and bad files ----------------------------------------------------------------


def test_header_only_read(tiny_target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pnc_cli.io.safetensors_io as fileio

    def no_tensors(*args, **kwargs):
        raise AssertionError("tensors were loaded")

    monkeypatch.setattr(fileio, "st_load", no_tensors)
    header, meta = read_header(tiny_target)
    assert "classifier.weight" in header and header["classifier.weight"]["shape"] == [5, 32]
    spec, _ = read_spec(tiny_target)
    assert spec.classes == ("0", "1", "2", "3", "4")
    info = api.file_info(tiny_target)
    assert info["kind"] == "model" and info["sha256"] == meta["pnc.sha256"]


def test_info_counts_parameters_like_train(tiny_target: Path) -> None:
    info = api.file_info(tiny_target)
    net = load_model(tiny_target).network
    assert info["num_params"] == net.num_params()
    assert info["num_values"] == sum(v.numel() for v in net.model.state_dict().values())
    assert info["sha256"] == load_model(tiny_target).sha256


def _bad_files(tmp: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "empty": b"",
        "random": os.urandom(4096),
        "short": b"\x01\x02\x03",
        "truncated": data[: len(data) // 2],
        "header_only": data[: 8 + struct.unpack("<Q", data[:8])[0]],
        "bad_json": struct.pack("<Q", 8) + b"{notjson",
        "not_object": struct.pack("<Q", 8) + b"[1,2,3] ",
        "bad_entry": struct.pack("<Q", 16) + b'{"w": "x"}      ',
        "huge_header_len": struct.pack("<Q", 2**60) + b"{}",
        "bad_dtype": _with_header(b'{"w":{"dtype":"Q99","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
    }
    out = {}
    for name, content in files.items():
        (tmp / f"{name}.safetensors").write_bytes(content)
        out[name] = tmp / f"{name}.safetensors"
    return out


def _with_header(header: bytes, data: bytes) -> bytes:
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "random",
        "short",
        "truncated",
        "header_only",
        "bad_json",
        "not_object",
        "bad_entry",
        "huge_header_len",
        "bad_dtype",
    ],
)
def test_bad_files_are_checkpoint_errors(tmp_path: Path, tiny_target: Path, kind: str) -> None:
    path = _bad_files(tmp_path, tiny_target)[kind]
    for read in (read_safetensors, load_model, api.file_info):
        with pytest.raises(CheckpointError, match=str(path)) as err:
            read(path)
        assert err.value.exit_code == 2
        assert "\n" not in str(err.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_header(tmp_path)


def test_tampered_tensor_bytes_fail_verification(tmp_path: Path, tiny_target: Path) -> None:
    data = bytearray(tiny_target.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's data: the header stays valid
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="do not match the recorded sha256") as err:
        load_model(bad)
    assert err.value.exit_code == 3
    assert load_model(bad, verify=False).sha256 != load_model(tiny_target).sha256


def test_newer_format_version_and_other_kinds_are_refused(tmp_path: Path) -> None:
    net = _net()
    tensors = dict(net.model.state_dict())
    meta = {**_spec().to_metadata(), "pnc.format_version": "99"}
    write_safetensors(tmp_path / "new.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="newer"):
        load_model(tmp_path / "new.safetensors")
    write_safetensors(tmp_path / "delta.safetensors", tensors, {"pnc.kind": "delta"})
    with pytest.raises(CheckpointError, match="not a model"):
        load_model(tmp_path / "delta.safetensors")


# --- plain state dicts --------------------------------------------------------------------------------


@pytest.fixture
def plain_file(tmp_path: Path, tiny_target: Path) -> Path:
    path = tmp_path / "plain.safetensors"
    save_file(load_file(tiny_target), path)  # someone else's tool: no pnc metadata
    return path


def test_plain_state_dict_needs_arch_and_classes(plain_file: Path) -> None:
    with pytest.raises(CheckpointError, match="no pnc metadata.*arch and classes"):
        load_model(plain_file)
    with pytest.raises(CheckpointError, match="no pnc metadata"):
        load_model(plain_file, arch="tiny_cnn")


def test_plain_state_dict_with_arch_and_classes(plain_file: Path, tiny_target: Path) -> None:
    loaded = load_model(plain_file, arch="tiny_cnn", classes=list("01234"), input_size=16)
    assert loaded.spec.in_channels == 1  # from the first conv
    assert loaded.sha256 == load_model(tiny_target).sha256


def test_mismatching_state_dict_names_the_tensors(plain_file: Path, tmp_path: Path) -> None:
    with pytest.raises(IncompatibleError, match=r"classifier\.bias is \[5\] not \[7\]") as err:
        load_model(plain_file, arch="tiny_cnn", classes=list("0123456"), input_size=16)
    assert err.value.exit_code == 4
    with pytest.raises(
        IncompatibleError, match=r"missing blocks\.1\.bn1\.bias, .*; unexpected blocks\.1\.0\.weight"
    ):
        load_model(plain_file, arch="tiny_resnet", classes=list("01234"))
    tensors = load_file(plain_file)
    del tensors["classifier.weight"]
    save_file(tensors, tmp_path / "short.safetensors")
    with pytest.raises(IncompatibleError, match=r"missing classifier\.weight"):
        load_model(tmp_path / "short.safetensors", arch="tiny_cnn", classes=list("01234"))


def test_unknown_arch_for_a_plain_state_dict(plain_file: Path) -> None:
    with pytest.raises(UsageError, match="unknown architecture 'nope'"):
        load_model(plain_file, arch="nope", classes=["a"])


def test_pnc_import(run_cli, plain_file: Path, tiny_target: Path, tmp_path: Path) -> None:
    out = tmp_path / "imported.safetensors"
    before = plain_file.read_bytes()
    code, stdout, stderr = run_cli(
        "import",
        plain_file,
        "--arch",
        "tiny_cnn",
        "--classes",
        "0-4",
        "--input-size",
        "16",
        "-o",
        out,
        "--json",
    )
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["output"] == str(out) and doc["classes"] == ["0", "1", "2", "3", "4"]
    assert doc["sha256"] == load_model(tiny_target).sha256
    assert plain_file.read_bytes() == before  # the input is never modified
    info = api.file_info(out)
    assert (
        info["kind"] == "model"
        and info["arch"] == "tiny_cnn"
        and info["input"] == {"channels": 1, "size": 16}
    )
