"""Delta and cloned files are sealed since delta format v3: ``pnc.seal`` covers their metadata (adapter
info, class names, head, the target's metadata), a removed seal does not downgrade the check, and the
unsealed golden files of v1 and v2 still load (with a note), apply and come off byte-exactly."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pytest
import torch

from pnc_cli.api import apply_delta, remove_delta
from pnc_cli.core.errors import CheckpointError, VerificationError
from pnc_cli.io.delta_file import (
    DELTA_FORMAT_VERSION,
    SEALED_SINCE,
    read_cloned,
    read_delta,
    write_cloned,
    write_delta,
)
from pnc_cli.io.safetensors_io import (
    KEY_SEAL,
    content_sha256,
    metadata_sha256,
    read_safetensors,
    write_safetensors,
)
from pnc_cli.io.search_file import SearchFile, read_search, write_search
from tests.data.make_golden import (
    GOLDEN,
    GOLDEN_CLONED_V3,
    GOLDEN_V2,
    GOLDEN_V3,
    TARGET_CLASSES,
    tiny_model_file,
)
from tests.editing import edit_metadata

TARGET_SHA = "c26680bfd5288b707582952ecc3f5c06c515da34dacdaa396c6fd2efd308ee23"  # tiny target, seed 0


_edit = partial(edit_metadata, reseal=False)


def _json_edit(src: Path, key: str, fn) -> str:
    _, meta = read_safetensors(src)
    value = json.loads(meta[key])
    fn(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "target.safetensors"
    _, sha = tiny_model_file(path, TARGET_CLASSES, seed=0)
    assert sha == TARGET_SHA
    return path


# ------------------------------------------------------------------------------- golden files
def test_new_files_are_sealed_from_version_3(target: Path, tmp_path: Path) -> None:
    assert DELTA_FORMAT_VERSION >= SEALED_SINCE == 3
    delta = tmp_path / "d.safetensors"
    write_delta(delta, read_delta(GOLDEN_V3))
    cloned = tmp_path / "c.safetensors"
    apply_delta(target=target, deltas=[delta], output=cloned)
    for path, version in (
        (delta, DELTA_FORMAT_VERSION),
        (cloned, DELTA_FORMAT_VERSION),
        (GOLDEN_V3, 3),
        (GOLDEN_CLONED_V3, 3),
    ):
        _, meta = read_safetensors(path)
        assert meta["pnc.format_version"] == str(version) and meta[KEY_SEAL] == metadata_sha256(meta), path


@pytest.mark.parametrize("golden", [GOLDEN, GOLDEN_V2], ids=["v1", "v2"])
def test_unsealed_golden_deltas_load_with_a_note_and_come_off_byte_exactly(
    golden: Path, target: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, meta = read_safetensors(golden)
    assert KEY_SEAL not in meta and int(meta["pnc.format_version"]) < SEALED_SINCE
    with caplog.at_level(logging.INFO, logger="pnc_cli"):
        delta = read_delta(golden)
    assert "metadata is not covered by a hash" in caplog.text and delta.classes == ["5"]
    cloned, restored = tmp_path / "c.safetensors", tmp_path / "r.safetensors"
    apply_delta(target=target, deltas=[golden], output=cloned)
    assert read_cloned(cloned).deltas[0].sha256 == delta.sha256  # the same tensors, now in a sealed file
    doc = remove_delta(cloned=cloned, output=restored)
    assert doc["identical_to_original"] and restored.read_bytes() == target.read_bytes()


def test_golden_v3_delta_and_cloned_file_load_and_come_off(target: Path, tmp_path: Path) -> None:
    delta = read_delta(GOLDEN_V3)
    assert delta.spec.head.kind == "joint" and delta.sha256 == read_delta(GOLDEN_V2).sha256
    cloned = read_cloned(GOLDEN_CLONED_V3)
    assert cloned.target_sha256 == TARGET_SHA and [d.sha256 for d in cloned.deltas] == [delta.sha256]
    restored = tmp_path / "r.safetensors"
    doc = remove_delta(cloned=GOLDEN_CLONED_V3, output=restored)
    assert doc["identical_to_original"] and doc["sha256"] == TARGET_SHA  # verified against the recorded hash
    again = tmp_path / "c.safetensors"
    apply_delta(target=target, deltas=[GOLDEN_V3], output=again)
    assert read_safetensors(again)[0].keys() == read_safetensors(GOLDEN_CLONED_V3)[0].keys()


def test_a_v2_cloned_file_still_loads_and_is_resealed_when_rewritten(target: Path, tmp_path: Path) -> None:
    """A cloned file as pnc wrote it before v3 (no seal) loads; removing one of two deltas writes v3."""
    both = tmp_path / "both.safetensors"
    apply_delta(target=target, deltas=[GOLDEN], output=both)
    old = _edit(both, tmp_path / "v2.safetensors", pnc__seal=None, pnc__format_version="2")
    assert read_cloned(old).deltas[0].name == "clone-5"
    restored = tmp_path / "r.safetensors"
    remove_delta(cloned=old, output=restored)
    assert restored.read_bytes() == target.read_bytes()


# ----------------------------------------------------------------------------- edits refused
DELTA_EDITS = {
    "adapter info": ("pnc.delta.adapter", '{"kind":"renorm","shape":[1,16,5]}'),
    "class names": ("pnc.delta.classes", '["7"]'),
    "head info": ("pnc.delta.head", '{"kind":"append","pool":0}'),
    "metrics": ("pnc.delta.metrics", '{"tar_acc":1.0}'),
    "target hash": ("pnc.delta.target", '{"sha256":"0"}'),
    "an added key": ("pnc.note", "hello"),
    "provenance": ("pnc.provenance", '{"command":"pnc clone --epochs 1"}'),
}


@pytest.mark.parametrize("edit", list(DELTA_EDITS), ids=list(DELTA_EDITS))
def test_edited_delta_metadata_is_refused(edit: str, tmp_path: Path) -> None:
    key, value = DELTA_EDITS[edit]
    bad = _edit(GOLDEN_V3, tmp_path / "d.safetensors", **{key.replace(".", "__"): value})
    with pytest.raises(
        VerificationError, match=r"d\.safetensors: metadata does not match the recorded pnc\.seal"
    ):
        read_delta(bad)


CLONED_EDITS = {
    "delta info": lambda p: (
        "pnc.deltas",
        _json_edit(p, "pnc.deltas", lambda v: v[0]["info"]["adapter"].update(shape=[1, 16, 5])),
    ),
    "class names": lambda p: ("pnc.classes", '["a","b","c","d"]'),
    "target metadata": lambda p: (
        "pnc.target_metadata",
        _json_edit(p, "pnc.target_metadata", lambda v: v.update({"pnc.classes": '["x","y","z"]'})),
    ),
    "architecture options": lambda p: ("pnc.arch_kwargs", '{"width":5}'),
    "target file hash": lambda p: ("pnc.target_file_sha256", "0" * 64),
}


@pytest.mark.parametrize("edit", list(CLONED_EDITS), ids=list(CLONED_EDITS))
def test_edited_cloned_metadata_is_refused(edit: str, tmp_path: Path) -> None:
    key, value = CLONED_EDITS[edit](GOLDEN_CLONED_V3)
    bad = _edit(GOLDEN_CLONED_V3, tmp_path / "c.safetensors", **{key.replace(".", "__"): value})
    with pytest.raises(
        VerificationError, match=r"c\.safetensors: metadata does not match the recorded pnc\.seal"
    ):
        read_cloned(bad)
    out = tmp_path / "r.safetensors"
    with pytest.raises(VerificationError):
        remove_delta(cloned=bad, output=out)
    assert not out.exists()


@pytest.mark.parametrize("golden", [GOLDEN_V3, GOLDEN_CLONED_V3], ids=["delta", "cloned"])
def test_removing_the_seal_does_not_downgrade_the_check(golden: Path, tmp_path: Path) -> None:
    bad = _edit(golden, tmp_path / "x.safetensors", pnc__seal=None)
    reader = read_delta if golden == GOLDEN_V3 else read_cloned
    with pytest.raises(CheckpointError, match=r"x\.safetensors: metadata key 'pnc\.seal' is missing"):
        reader(bad)
    bad = _edit(golden, tmp_path / "y.safetensors", pnc__sha256=None, reseal=True)
    with pytest.raises(CheckpointError, match="without its content hash"):
        reader(bad)


def test_tampered_tensors_are_still_refused(tmp_path: Path) -> None:
    for golden, reader in ((GOLDEN_V3, read_delta), (GOLDEN_CLONED_V3, read_cloned)):
        tensors, meta = read_safetensors(golden)
        name = next(k for k in sorted(tensors) if "head.weight" in k)
        tensors[name] = tensors[name] + 1.0
        bad = tmp_path / f"t-{golden.name}"
        write_safetensors(bad, tensors, meta)  # metadata (and seal) unchanged
        with pytest.raises(VerificationError, match="do not match the recorded sha256"):
            reader(bad)


def test_resealed_edits_reach_the_schema_checks(tmp_path: Path) -> None:
    """A tool that recomputes the seal gets past it (not a signature): the typed checks still apply."""
    bad = _edit(GOLDEN_V3, tmp_path / "d.safetensors", reseal=True, pnc__delta__adapter="5")
    with pytest.raises(CheckpointError, match="info.adapter must be a JSON object"):
        read_delta(bad)


def test_every_writer_seals_and_rewrites_verify(target: Path, tmp_path: Path) -> None:
    """write_delta, write_cloned (apply, partial remove) and write_search all write sealed files."""
    delta = read_delta(GOLDEN)
    paths = {"delta": tmp_path / "d.safetensors", "search": tmp_path / "s.safetensors"}
    write_delta(paths["delta"], delta)
    curves = {"position": torch.tensor([1.0]), "loss": torch.tensor([0.5])}
    write_search(paths["search"], SearchFile(delta, curves, {"source": "x"}))
    two = read_delta(GOLDEN_V3)
    other = read_delta(GOLDEN)
    other = type(other)("clone-6", other.tensors, {**other.info, "name": "clone-6", "classes": ["6"]})
    write_delta(tmp_path / "d6.safetensors", other)
    paths["cloned"] = tmp_path / "c.safetensors"
    apply_delta(target=target, deltas=[GOLDEN, tmp_path / "d6.safetensors"], output=paths["cloned"])
    paths["partial"] = tmp_path / "p.safetensors"
    remove_delta(cloned=paths["cloned"], output=paths["partial"], names=["clone-5"])
    paths["direct"] = tmp_path / "w.safetensors"
    write_cloned(paths["direct"], read_cloned(GOLDEN_CLONED_V3))
    for what, path in paths.items():
        _, meta = read_safetensors(path)
        assert meta[KEY_SEAL] == metadata_sha256(meta), what
        assert content_sha256(read_safetensors(path)[0]) == meta["pnc.sha256"], what
    assert read_search(paths["search"]).delta.sha256 == delta.sha256
    assert [d.name for d in read_cloned(paths["partial"]).deltas] == ["clone-6"]
    assert read_cloned(paths["direct"]).deltas[0].sha256 == two.sha256


# ----------------------------------------------------------------------------------------- CLI
def test_cli_apply_and_remove_refuse_edited_files_in_one_line(
    run_cli, target: Path, tmp_path: Path, snapshot
) -> None:
    edited = _edit(GOLDEN_V3, tmp_path / "edited-delta.safetensors", pnc__delta__classes='["7"]')
    cloned = _edit(GOLDEN_CLONED_V3, tmp_path / "edited-cloned.safetensors", pnc__classes='["a","b","c","d"]')
    unsealed = _edit(GOLDEN_V3, tmp_path / "unsealed.safetensors", pnc__seal=None)
    before = snapshot(tmp_path)
    cases = [
        (["apply", "--target", target, "--delta", edited, "-o", tmp_path / "o.safetensors"], 3, edited),
        (["remove", cloned, "-o", tmp_path / "o.safetensors"], 3, cloned),
        (["eval", "--model", cloned, "--data", "digits"], 3, cloned),
        (["apply", "--target", target, "--delta", unsealed, "-o", tmp_path / "o.safetensors"], 2, unsealed),
    ]
    for args, code, named in cases:
        exit_code, stdout, stderr = run_cli(*args)
        lines = stderr.strip().splitlines()
        assert exit_code == code and stdout == "", stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(named) in lines[0], stderr
        assert "pnc.seal" in lines[0]
    assert snapshot(tmp_path) == before  # no input changed, no output appeared
