"""`pnc apply` and `pnc remove` through Typer's CliRunner: --json output, and bad input → exit code,
one line on stderr, nothing on stdout, nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from pnc_cli.cli import app
from pnc_cli.io.delta_file import write_delta
from pnc_cli.io.safetensors_io import KEY_SEAL, metadata_sha256, read_safetensors, write_safetensors
from tests.data.make_golden import SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file

torch.set_num_threads(1)


@pytest.fixture
def env(tmp_path: Path) -> SimpleNamespace:
    target, source = tmp_path / "target.safetensors", tmp_path / "source.safetensors"
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    kw = {"target_sha": target_sha, "source_net": source_net, "source_sha": source_sha}
    paths = {name: tmp_path / f"{name}.safetensors" for name in ("d5", "d6", "d0", "online")}
    write_delta(paths["d5"], make_delta(**kw))
    write_delta(paths["d6"], make_delta(**kw, name="clone-6", classes=("6",), seed=1))
    write_delta(paths["d0"], make_delta(**kw, name="clone-0", classes=("0",)))
    write_delta(paths["online"], make_delta(**kw, mode="online"))
    return SimpleNamespace(dir=tmp_path, target=target, source=source, **paths)


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_apply_and_remove_json(env: SimpleNamespace) -> None:
    cloned, restored = env.dir / "c.safetensors", env.dir / "r.safetensors"
    res = run("apply", "--target", env.target, "--delta", env.d5, "--delta", env.d6, "-o", cloned, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["deltas"] == ["clone-5", "clone-6"] and doc["classes"] == [*TARGET_CLASSES, "5", "6"]
    res = run("remove", cloned, "--delta", "clone-5", "-o", env.dir / "c6.safetensors", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["remaining"] == ["clone-6"]
    res = run("remove", cloned, "--all", "-o", restored, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["restored"] and doc["identical_to_original"]
    assert restored.read_bytes() == env.target.read_bytes()


def test_tables_and_restored_message(env: SimpleNamespace) -> None:
    cloned, restored = env.dir / "c.safetensors", env.dir / "r.safetensors"
    res = run("apply", "-t", env.target, "-d", env.online, "-s", env.source, "-o", cloned)
    assert res.exit_code == 0, res.stderr
    assert "clone-5" in res.stdout and "extra params" in res.stdout
    res = run("remove", cloned, "-o", restored, "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.startswith("restored target identical to the original (sha256 ")


def _rewrite(src: Path, dst: Path, **meta: str) -> Path:
    """Copy with metadata changed and the seal recomputed, so the edit reaches the checks behind it."""
    tensors, md = read_safetensors(src)
    md |= meta
    if KEY_SEAL in md:
        md[KEY_SEAL] = metadata_sha256(md)
    write_safetensors(dst, tensors, md, force=True)
    return dst


def _bad_inputs(env: SimpleNamespace) -> dict[str, tuple[list[object], int, str]]:
    other = env.dir / "other.safetensors"
    tiny_model_file(other, TARGET_CLASSES, seed=7)
    raw = env.d5.read_bytes()
    (env.dir / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    v2 = _rewrite(env.d5, env.dir / "v5.safetensors", **{"pnc.format_version": "5"})
    cloned = env.dir / "cl.safetensors"
    assert run("apply", "-t", env.target, "-d", env.d5, "-o", cloned).exit_code == 0
    wrong = _rewrite(cloned, env.dir / "wrong.safetensors", **{"pnc.target_file_sha256": "0" * 64})
    exists = env.dir / "exists.safetensors"
    exists.write_bytes(b"keep")
    return {
        "another target": (["apply", "-t", other, "-d", env.d5], 4, "was made for target"),
        "colliding class": (["apply", "-t", env.target, "-d", env.d0], 4, "adds classes 0"),
        "truncated delta": (["apply", "-t", env.target, "-d", env.dir / "trunc.safetensors"], 2, "truncated"),
        "newer version": (["apply", "-t", env.target, "-d", v2], 2, "newer than supported"),
        "online no source": (["apply", "-t", env.target, "-d", env.online], 2, "pass --source"),
        "delta as target": (["apply", "-t", env.d6, "-d", env.d5], 2, "--target takes a model"),
        "missing delta": (["apply", "-t", env.target, "-d", env.dir / "nope.safetensors"], 2, "not found"),
        "remove plain model": (["remove", env.target], 2, "file carries no delta"),
        "unknown name": (["remove", cloned, "--delta", "nope"], 2, "no delta named nope"),
        "names and --all": (["remove", cloned, "--delta", "clone-5", "--all"], 2, "not both"),
        "recorded hash": (["remove", wrong], 3, "restored file hashes"),
        "output exists": (["remove", cloned, "-o", exists], 2, "--force"),
    }


CASES = [
    "another target",
    "colliding class",
    "truncated delta",
    "newer version",
    "online no source",
    "delta as target",
    "missing delta",
    "remove plain model",
    "unknown name",
    "names and --all",
    "recorded hash",
    "output exists",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input(env: SimpleNamespace, case: str) -> None:
    args, code, message = _bad_inputs(env)[case]
    out = env.dir / "out.safetensors"
    if "-o" not in args:
        args = [*args, "-o", out]
    res = run(*args)
    assert res.exit_code == code, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert not out.exists()
    if case == "output exists":
        assert (env.dir / "exists.safetensors").read_bytes() == b"keep"
