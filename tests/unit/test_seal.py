"""The recorded hash covers the metadata as well as the tensors (pnc.seal, model format v2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pnc_cli.core.errors import CheckpointError, VerificationError
from pnc_cli.io.model_file import FORMAT_VERSION, load_model
from pnc_cli.io.safetensors_io import KEY_SEAL, read_safetensors, seal, write_safetensors

GOLDEN_V1 = Path(__file__).parents[1] / "data" / "model_v1_tiny.safetensors"
GOLDEN_V1_SHA = "c26680bfd5288b707582952ecc3f5c06c515da34dacdaa396c6fd2efd308ee23"


def _rewrite(src: Path, dst: Path, **changes: str | None) -> Path:
    tensors, meta = read_safetensors(src)
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    write_safetensors(dst, tensors, meta, force=True)
    return dst


def test_golden_v1_model_still_loads_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    assert FORMAT_VERSION == 2
    with caplog.at_level(logging.INFO, logger="pnc_cli"):
        m = load_model(GOLDEN_V1)
    assert m.sha256 == GOLDEN_V1_SHA and m.spec.classes == ("0", "1", "2")
    assert "not covered by a hash" in caplog.text


def test_new_model_files_are_sealed(tiny_target: Path) -> None:
    _, meta = read_safetensors(tiny_target)
    assert meta["pnc.format_version"] == "2" and KEY_SEAL in meta
    assert seal({k: v for k, v in meta.items() if k != KEY_SEAL}) == meta


def test_edited_metadata_is_refused(tiny_target: Path, tmp_path: Path) -> None:
    bad = _rewrite(tiny_target, tmp_path / "m.safetensors", **{"pnc.classes": '["a","b","c","d","e"]'})
    with pytest.raises(VerificationError, match="metadata does not match the recorded pnc.seal"):
        load_model(bad)


def test_removing_the_seal_does_not_downgrade_the_check(tiny_target: Path, tmp_path: Path) -> None:
    bad = _rewrite(tiny_target, tmp_path / "m.safetensors", **{"pnc.seal": None})
    with pytest.raises(CheckpointError, match="'pnc.seal' is missing"):
        load_model(bad)


def test_a_pnc_file_without_its_content_hash_is_refused(tmp_path: Path) -> None:
    bad = _rewrite(GOLDEN_V1, tmp_path / "m.safetensors", **{"pnc.sha256": None})
    with pytest.raises(CheckpointError, match="without its content hash"):
        load_model(bad)


def test_cli_exit_codes(run_cli, tiny_target: Path, tmp_path: Path) -> None:
    edited = _rewrite(tiny_target, tmp_path / "e.safetensors", **{"pnc.arch_kwargs": '{"width": 5}'})
    code, stdout, stderr = run_cli("eval", "--model", edited, "--data", "digits")
    assert code == 3 and stdout == "" and len(stderr.strip().splitlines()) == 1
    unsealed = _rewrite(tiny_target, tmp_path / "u.safetensors", **{"pnc.seal": None})
    code, _, stderr = run_cli("eval", "--model", unsealed, "--data", "digits")
    assert code == 2 and "pnc.seal" in stderr
