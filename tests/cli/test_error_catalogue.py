"""docs/errors.md, reliability rows: each bad input is one line on stderr, its documented exit code,
nothing on stdout, no input changed and no output written (table-driven)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from functools import partial
from pathlib import Path

import pytest

from pnc_cli.io.safetensors_io import read_safetensors, write_safetensors
from tests.data.make_golden import GOLDEN_CLONED_V3, GOLDEN_V3
from tests.editing import edit_metadata

_variant = partial(edit_metadata, reseal=True)


@pytest.fixture
def work(tmp_path: Path, tiny_target: Path, tiny_source: Path, digits_npz: Path, digit_png: Path) -> Path:
    (tmp_path / "m.safetensors").write_bytes(tiny_target.read_bytes())
    (tmp_path / "s.safetensors").write_bytes(tiny_source.read_bytes())
    (tmp_path / "data.npz").write_bytes(digits_npz.read_bytes())
    (tmp_path / "x.png").write_bytes(digit_png.read_bytes())
    m = tmp_path / "m.safetensors"
    _variant(m, tmp_path / "edited.safetensors", reseal=False, pnc__classes='["a","b","c","d","e"]')
    _variant(m, tmp_path / "unsealed.safetensors", reseal=False, pnc__seal=None)
    _variant(m, tmp_path / "nosha.safetensors", pnc__sha256=None)
    _variant(m, tmp_path / "classes-int.safetensors", pnc__classes="5")
    _variant(m, tmp_path / "input-list.safetensors", pnc__input="[1, 16]")
    _variant(m, tmp_path / "norm-empty.safetensors", pnc__normalization="{}")
    _variant(m, tmp_path / "version-abc.safetensors", pnc__format_version="abc")
    _variant(m, tmp_path / "deep.safetensors", pnc__arch_kwargs="[" * 5000 + "]" * 5000)
    _variant(m, tmp_path / "bignum.safetensors", pnc__training="9" * 5000)
    _variant(m, tmp_path / "evil-arch.safetensors", pnc__arch="this:s")
    _variant(m, tmp_path / "huge-input.safetensors", pnc__input='{"channels": 1, "size": 99999999}')
    _variant(m, tmp_path / "dup-classes.safetensors", pnc__classes='["0","0","1","2","3"]')
    d, c = tmp_path / "d.safetensors", tmp_path / "c.safetensors"
    d.write_bytes(GOLDEN_V3.read_bytes())
    c.write_bytes(GOLDEN_CLONED_V3.read_bytes())
    _variant(d, tmp_path / "edited-delta.safetensors", reseal=False, pnc__delta__adapter='{"kind":"renorm"}')
    _variant(c, tmp_path / "edited-cloned.safetensors", reseal=False, pnc__classes='["a","b","c","d"]')
    _variant(d, tmp_path / "unsealed-delta.safetensors", reseal=False, pnc__seal=None)
    _variant(c, tmp_path / "unsealed-cloned.safetensors", reseal=False, pnc__seal=None)
    tensors, meta = read_safetensors(d)
    tensors["head.weight"] = tensors["head.weight"] + 1
    write_safetensors(tmp_path / "tampered-delta.safetensors", tensors, meta)
    (tmp_path / "notes.txt").write_text("not an image, not a data set\n")
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "bad-entry.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link-to-data.npz").symlink_to(tmp_path / "data.npz")
    os.link(tmp_path / "data.npz", tmp_path / "hard.npz")
    return tmp_path


TRAIN = ["train", "--arch", "tiny_cnn", "--data", "digits", "--epochs", "1"]
EVAL = ["eval", "--data", "digits", "--model"]
CLONE = ["clone", "-s", "s.safetensors", "-t", "m.safetensors", "-c", "5", "--epochs", "1"]

APPLY = ["apply", "--target", "m.safetensors", "-o", "o.safetensors", "--delta"]

CASES = [
    # (id, args, exit code, text in the one stderr line)
    ("metadata edited after writing", [*EVAL, "edited.safetensors"], 3, "pnc.seal"),
    ("seal removed", [*EVAL, "unsealed.safetensors"], 2, "'pnc.seal' is missing"),
    ("content hash removed", [*EVAL, "nosha.safetensors"], 2, "without its content hash"),
    ("classes an int", [*EVAL, "classes-int.safetensors"], 2, "'pnc.classes' must be"),
    ("input a list", [*EVAL, "input-list.safetensors"], 2, "'pnc.input' must be"),
    ("normalization empty", [*EVAL, "norm-empty.safetensors"], 2, "'pnc.normalization' must be"),
    ("format version not a number", [*EVAL, "version-abc.safetensors"], 2, "format version"),
    ("deeply nested JSON", [*EVAL, "deep.safetensors"], 2, "'pnc.arch_kwargs'"),
    ("5000-digit number", [*EVAL, "bignum.safetensors"], 2, "'pnc.training'"),
    ("input size out of bounds in a file", [*EVAL, "huge-input.safetensors"], 2, "'pnc.input' must be"),
    ("duplicate class names in a file", [*EVAL, "dup-classes.safetensors"], 2, "'pnc.classes' must be"),
    ("file names a module as architecture", [*EVAL, "evil-arch.safetensors"], 2, "not trusted"),
    ("info on a malformed file", ["info", "classes-int.safetensors"], 2, "'pnc.classes' must be"),
    ("delta metadata edited after writing", [*APPLY, "edited-delta.safetensors"], 3, "pnc.seal"),
    ("delta seal removed", [*APPLY, "unsealed-delta.safetensors"], 2, "'pnc.seal' is missing"),
    ("delta tensors changed", [*APPLY, "tampered-delta.safetensors"], 3, "do not match the recorded sha256"),
    (
        "cloned metadata edited after writing",
        ["remove", "edited-cloned.safetensors", "-o", "o.safetensors"],
        3,
        "pnc.seal",
    ),
    ("cloned seal removed", [*EVAL, "unsealed-cloned.safetensors"], 2, "'pnc.seal' is missing"),
    (
        "apply onto a model with edited metadata",
        ["apply", "--target", "edited.safetensors", "--delta", "d.safetensors", "-o", "o.safetensors"],
        3,
        "pnc.seal",
    ),
    ("output is a FIFO", [*TRAIN, "-o", "fifo", "--force"], 2, "FIFO"),
    ("output is a device", [*TRAIN, "-o", "/dev/null", "--force"], 2, "device"),
    ("output is a directory", [*TRAIN, "-o", ".", "--force"], 2, "directory"),
    (
        "clone output is the --data file",
        [*CLONE, "--data", "data.npz", "-o", "data.npz", "--force"],
        2,
        "input",
    ),
    (
        "clone output is a symlink to --data",
        [*CLONE, "--data", "data.npz", "-o", "link-to-data.npz", "--force"],
        2,
        "input",
    ),
    (
        "clone output is a hard link to --target-data",
        [*CLONE, "--target-data", "data.npz", "-o", "hard.npz", "--force"],
        2,
        "input",
    ),
    (
        "shifted copies out of range",
        [*CLONE, "-o", "o.safetensors", "--shifts", "9"],
        2,
        "--shifts must be in 0..8",
    ),
    (
        "joint-head option with the append head",
        [*CLONE, "-o", "o.safetensors", "--head", "append", "--shifts", "2"],
        2,
        "--shifts apply to the joint --head only",
    ),
    ("NaN learning rate", [*TRAIN, "--lr", "nan", "-o", "o.safetensors"], 2, "finite"),
    ("infinite learning rate", [*TRAIN, "--lr", "inf", "-o", "o.safetensors"], 2, "finite"),
    (
        "NaN sigma",
        ["surrogate", "-m", "m.safetensors", "-d", "digits", "-o", "o.safetensors", "--sigma", "nan"],
        2,
        "finite",
    ),
    (
        "NaN ridge",
        ["surrogate", "-m", "m.safetensors", "-d", "digits", "-o", "o.safetensors", "--ridge", "nan"],
        2,
        "finite",
    ),
    (
        "grid too large",
        ["surrogate", "-m", "m.safetensors", "-d", "digits", "-o", "o.safetensors", "--grid", "100000"],
        2,
        "grid",
    ),
    (
        "mask count too large",
        ["surrogate", "-m", "m.safetensors", "-d", "digits", "-o", "o.safetensors", "--masks", "999999999"],
        2,
        "masks",
    ),
    ("huge batch size", [*TRAIN, "--batch-size", str(2**64 + 1), "-o", "o.safetensors"], 2, "batch"),
    ("seed 2^64", [*TRAIN, "--seed", str(2**64), "-o", "o.safetensors"], 2, "seed"),
    ("negative input size", [*TRAIN, "--input-size", "-8", "-o", "o.safetensors"], 2, "input"),
    ("input size 2", [*TRAIN, "--input-size", "2", "-o", "o.safetensors"], 2, "input"),
    ("class range of 200000", [*TRAIN, "--classes", "0-200000", "-o", "o.safetensors"], 2, "at most"),
    ("class range of 10^11", [*TRAIN, "--classes", "0-99999999999", "-o", "o.safetensors"], 2, "at most"),
    ("empty --classes", [*TRAIN, "--classes", "", "-o", "o.safetensors"], 2, "selects no classes"),
    ("predict --top 0", ["predict", "--model", "m.safetensors", "x.png", "--top", "0"], 2, "top"),
    (
        "corrupt header entry",
        ["info", "bad-entry.safetensors"],
        2,
        "corrupt safetensors entry for tensor 'w'",
    ),
    (
        "custom architecture that cannot be imported",
        ["train", "--arch", "mypkg.nets:nope", "--data", "digits", "-o", "o.safetensors"],
        2,
        "cannot be imported",
    ),
    ("unknown data format", [*TRAIN, "--data", "notes.txt", "-o", "o.safetensors"], 2, "unknown data format"),
    ("unreadable image", ["predict", "--model", "m.safetensors", "notes.txt"], 2, "cannot read image"),
    ("unknown split", [*EVAL, "m.safetensors", "--split", "val"], 2, "unknown split 'val'"),
    ("output exists without --force", [*TRAIN, "-o", "m.safetensors"], 2, "pass --force"),
    ("output directory missing", [*TRAIN, "-o", "no/dir/o.safetensors"], 2, "does not exist"),
    ("output parent is a file", [*TRAIN, "-o", "notes.txt/o.safetensors"], 2, "is not a directory"),
    (
        "unknown ecosystem name",
        ["train", "--arch", "torchvision:resnet19", "--data", "digits", "-o", "o.safetensors"],
        2,
        "unknown architecture 'torchvision:resnet19'",
    ),
    (
        "weights asked of torchvision",
        [
            *["train", "--arch", "torchvision:resnet18", "--arch-arg", "weights=DEFAULT"],
            *["--data", "digits", "-o", "o.safetensors"],
        ],
        2,
        "'weights' is not accepted",
    ),
]


def _snapshot(d: Path) -> dict[str, str]:
    out = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and not p.is_symlink():
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[p.name] = "special"
    return out


@pytest.mark.parametrize(("args", "code", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_catalogue(run_cli, work: Path, monkeypatch: pytest.MonkeyPatch, args, code, needle) -> None:
    monkeypatch.chdir(work)
    before = _snapshot(work)
    exit_code, stdout, stderr = run_cli(*args, "--quiet")
    lines = stderr.strip().splitlines()
    assert exit_code == code, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert stdout == ""
    assert _snapshot(work) == before  # no input changed, no output (or temporary file) appeared
