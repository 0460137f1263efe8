"""Outputs never destroy inputs; only regular files are replaced; verification runs before replace
(docs/security.md, "Outputs never destroy inputs")."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pnc_cli import api
from pnc_cli.core.errors import OutputExistsError, UsageError, VerificationError
from pnc_cli.io.delta_file import write_delta
from pnc_cli.io.safetensors_io import atomic_write_bytes, check_output
from tests.data.make_golden import SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file


def _no_temp_files(d: Path) -> bool:
    return not [p for p in d.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def inp(tmp_path: Path) -> Path:
    p = tmp_path / "input.bin"
    p.write_bytes(b"precious")
    return p


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "dotted"])
def test_output_that_is_an_input_is_refused_even_with_force(tmp_path: Path, inp: Path, how: str) -> None:
    out = {"same": inp, "dotted": tmp_path / "." / "input.bin"}.get(how, tmp_path / "alias.bin")
    if how == "symlink":
        out.symlink_to(inp)
    elif how == "hardlink":
        os.link(inp, out)
    with pytest.raises(UsageError, match="is also an input"):
        check_output(out, force=True, inputs=["digits", inp])
    with pytest.raises(UsageError, match="is also an input"):
        atomic_write_bytes(out, b"new", force=True, inputs=[inp])
    assert inp.read_bytes() == b"precious"


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        p = tmp_path / "fifo"
        os.mkfifo(p)
    elif kind == "socket":
        p = tmp_path / "sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif kind == "directory":
        p = tmp_path / "dir"
        p.mkdir()
    elif kind == "device":
        p = Path("/dev/null")
    elif kind == "link-to-device":
        p = tmp_path / "stdout-link"
        p.symlink_to("/dev/null")
    elif kind == "dangling-link":
        p = tmp_path / "dangling"
        p.symlink_to(tmp_path / "nowhere")
    else:
        raise AssertionError(kind)
    return p


@pytest.mark.parametrize("kind", ["fifo", "socket", "directory", "device", "link-to-device", "dangling-link"])
def test_only_regular_files_are_replaced(tmp_path: Path, kind: str) -> None:
    p = _special(tmp_path, kind)
    mode = os.lstat(p).st_mode
    with pytest.raises(UsageError, match="regular file|directory|symbolic link to nothing"):
        atomic_write_bytes(p, b"x", force=True)
    assert os.lstat(p).st_mode == mode
    assert _no_temp_files(tmp_path)


def test_symlink_to_a_regular_file_replaces_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(link, b"new")
    assert atomic_write_bytes(link, b"new", force=True) == real
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_failed_verification_never_touches_an_existing_output(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    seen: list[bytes] = []

    def verify(tmp: Path) -> None:
        assert tmp.parent == tmp_path  # the temporary file lives in the output's directory
        seen.append(tmp.read_bytes())
        raise VerificationError("bad")

    with pytest.raises(VerificationError):
        atomic_write_bytes(out, b"new", force=True, verify=verify)
    assert seen == [b"new"] and out.read_bytes() == b"old" and _no_temp_files(tmp_path)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError, MemoryError])
def test_temp_file_removed_on_every_failure(tmp_path: Path, exc: type[BaseException]) -> None:
    def verify(tmp: Path) -> None:
        raise exc()

    with pytest.raises(exc):
        atomic_write_bytes(tmp_path / "out.bin", b"new", verify=verify)
    assert list(tmp_path.iterdir()) == []


def test_remove_verifies_before_replacing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, source = tmp_path / "target.safetensors", tmp_path / "source.safetensors"
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    delta = tmp_path / "d.safetensors"
    write_delta(delta, make_delta(target_sha=target_sha, source_net=source_net, source_sha=source_sha))
    cloned, out = tmp_path / "c.safetensors", tmp_path / "restored.safetensors"
    api.apply_delta(target=target, deltas=[delta], output=cloned)
    out.write_bytes(b"the user's existing file")
    import pnc_cli.api.deltas as deltas_api

    real = deltas_api.target_bytes
    monkeypatch.setattr(deltas_api, "target_bytes", lambda c: real(c)[:-4] + b"\0\0\0\0")
    with pytest.raises(VerificationError, match="nothing written"):
        api.remove_delta(cloned=cloned, output=out, force=True)
    assert out.read_bytes() == b"the user's existing file" and _no_temp_files(tmp_path)
    monkeypatch.setattr(deltas_api, "target_bytes", real)
    assert api.remove_delta(cloned=cloned, output=out, force=True)["identical_to_original"]
    assert out.read_bytes() == target.read_bytes()


@pytest.mark.parametrize("option", ["--data", "--target-data"])
def test_clone_output_onto_the_data_file_is_refused(
    run_cli, tiny_target: Path, tiny_source: Path, digits_npz: Path, tmp_path: Path, option: str
) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(digits_npz.read_bytes())
    before = data.read_bytes()
    args = ["clone", "-s", tiny_source, "-t", tiny_target, "-c", "5", "-o", data, "--force", "--epochs", "1"]
    code, stdout, stderr = run_cli(*args, option, data, *(["--data", "digits"] if option != "--data" else []))
    assert code == 2, stderr
    assert "is also an input" in stderr and len(stderr.strip().splitlines()) == 1 and stdout == ""
    assert data.read_bytes() == before


def test_train_onto_a_device_is_refused(run_cli, tmp_path: Path) -> None:
    code, _, stderr = run_cli("train", "--arch", "tiny_cnn", "--data", "digits", "-o", "/dev/null", "--force")
    assert code == 2 and "regular file" in stderr
