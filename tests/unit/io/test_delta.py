"""Tests of the delta / cloned file format (pnc_cli.io.delta_file) and of apply/remove
(pnc_cli.api.deltas)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pnc_cli.api import apply_delta, file_info, load_cloned, read_delta_info, remove_delta
from pnc_cli.core.errors import (
    CheckpointError,
    DeltaFormatError,
    IncompatibleError,
    UsageError,
    VerificationError,
)
from pnc_cli.io.delta_file import (
    CLONED_PREFIX,
    OPTIONAL_INFO,
    REQUIRED_INFO,
    TENSOR_PREFIXES,
    ClonedFile,
    DeltaFile,
    read_cloned,
    read_delta,
    target_bytes,
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
from pnc_cli.method.selector import slice_state
from tests.data.make_golden import GOLDEN, SOURCE_CLASSES, TARGET_CLASSES, make_delta, tiny_model_file

torch.set_num_threads(1)
DOC = Path(__file__).resolve().parents[3] / "docs" / "delta-format.md"


@pytest.fixture
def env(tmp_path: Path) -> SimpleNamespace:
    """A tiny target and source on disk, an offline delta (class 5) and a second one (class 6)."""
    target, source = tmp_path / "target.safetensors", tmp_path / "source.safetensors"
    _, target_sha = tiny_model_file(target, TARGET_CLASSES, seed=0)
    source_net, source_sha = tiny_model_file(source, SOURCE_CLASSES, seed=1)
    kw = {"target_sha": target_sha, "source_net": source_net, "source_sha": source_sha}
    d5, d6 = tmp_path / "d5.safetensors", tmp_path / "d6.safetensors"
    write_delta(d5, make_delta(**kw))
    write_delta(d6, make_delta(**kw, name="clone-6", classes=("6",), position=2, seed=1))
    return SimpleNamespace(
        dir=tmp_path, target=target, source=source, d5=d5, d6=d6, kw=kw, source_net=source_net
    )


def _rewrite(
    src: Path,
    dst: Path,
    *,
    drop_meta: tuple[str, ...] = (),
    tensors: dict | None = None,
    reseal: bool = True,
    **meta: str,
) -> Path:
    """Copy a safetensors file with metadata changed (the recorded sha256 follows the new tensors and,
    with ``reseal``, ``pnc.seal`` the new metadata, so the edit reaches the checks behind the seal)."""
    old, md = read_safetensors(src)
    new = {**old, **(tensors or {})}
    md = {k: v for k, v in md.items() if k not in drop_meta} | meta
    if tensors:
        md["pnc.sha256"] = content_sha256(new)
    if reseal and KEY_SEAL in md:
        md[KEY_SEAL] = metadata_sha256(md)
    write_safetensors(dst, new, md, force=True)
    return dst


# ----------------------------------------------------------------------------------- the format
def test_round_trip_and_deterministic_bytes(env: SimpleNamespace) -> None:
    delta = make_delta(**env.kw)
    sha = write_delta(env.dir / "a.safetensors", delta)
    back = read_delta(env.dir / "a.safetensors")
    assert back.name == delta.name == "clone-5" and back.info == delta.info and sha == back.sha256
    assert set(back.tensors) == set(delta.tensors)
    assert all(torch.equal(back.tensors[k], delta.tensors[k]) for k in delta.tensors)
    assert back.tensors["mask.0.0"].dtype == torch.uint8 and back.num_params == delta.num_params > 0
    write_delta(env.dir / "b.safetensors", back)
    assert (env.dir / "a.safetensors").read_bytes() == (env.dir / "b.safetensors").read_bytes()
    _, meta = read_safetensors(env.dir / "a.safetensors")
    assert meta["pnc.kind"] == "delta" and meta["pnc.format_version"] == "4" and meta["format"] == "pt"
    assert meta["pnc.delta.name"] == '"clone-5"' and meta["pnc.sha256"] == sha


def _doc_table(heading: str) -> list[list[str]]:
    lines = DOC.read_text().split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_constants_match_the_normative_doc() -> None:
    prefixes = tuple(re.sub(r"`", "", row[0]) for row in _doc_table("### Tensor names"))
    assert prefixes == TENSOR_PREFIXES
    info = _doc_table("### Info keys")
    assert tuple(r[0].strip("`") for r in info if r[1] == "yes") == REQUIRED_INFO
    assert tuple(r[0].strip("`") for r in info if r[1] == "no") == OPTIONAL_INFO


def test_golden_v1_file_still_reads() -> None:
    delta = read_delta(GOLDEN)
    assert delta.name == "clone-5" and delta.classes == ["5"] and delta.mode == "offline"
    assert delta.info["position"] == {"target": 1, "source": 1, "target_blocks": 3, "source_blocks": 3}
    assert any(k.startswith("source.") for k in delta.tensors) and GOLDEN.stat().st_size < 50_000


def test_newer_version_is_refused(env: SimpleNamespace) -> None:
    bad = _rewrite(env.d5, env.dir / "v5.safetensors", **{"pnc.format_version": "5"})
    with pytest.raises(DeltaFormatError, match="newer than supported 4; upgrade pnc"):
        read_delta(bad)


def test_unknown_tensor_prefix_and_missing_key_are_refused(env: SimpleNamespace) -> None:
    bad = _rewrite(env.d5, env.dir / "x.safetensors", tensors={"weird.x": torch.zeros(2)})
    with pytest.raises(DeltaFormatError, match="weird.x"):
        read_delta(bad)
    delta = make_delta(**env.kw)
    delta.tensors["lora.a"] = torch.zeros(2)
    with pytest.raises(DeltaFormatError, match="lora.a"):
        write_delta(env.dir / "y.safetensors", delta)
    assert not (env.dir / "y.safetensors").exists()
    bad = _rewrite(env.d5, env.dir / "z.safetensors", drop_meta=("pnc.delta.position", "pnc.delta.seed"))
    with pytest.raises(DeltaFormatError, match="position, seed"):
        read_delta(bad)


def test_schema_violations_are_refused_on_write(env: SimpleNamespace) -> None:
    online_with_source = make_delta(**env.kw)
    online_with_source.info["mode"] = "online"
    dotted = make_delta(**env.kw, name="clone.5")
    unknown = make_delta(**env.kw)
    unknown.info["colour"] = "blue"
    bool_mask = make_delta(**env.kw)
    bool_mask.tensors["mask.0.0"] = bool_mask.tensors["mask.0.0"].bool()
    for delta, msg in [
        (online_with_source, "online"),
        (dotted, "no dots"),
        (unknown, "colour"),
        (bool_mask, "uint8"),
    ]:
        with pytest.raises(DeltaFormatError, match=msg):
            write_delta(env.dir / "bad.safetensors", delta)


def test_unknown_optional_info_key_is_ignored_when_reading(env: SimpleNamespace) -> None:
    path = _rewrite(env.d5, env.dir / "extra.safetensors", **{"pnc.delta.future": '{"x":1}'})
    assert "future" not in read_delta(path).info


def test_truncated_tampered_and_wrong_kind(env: SimpleNamespace) -> None:
    raw = env.d5.read_bytes()
    (env.dir / "trunc.safetensors").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        read_delta(env.dir / "trunc.safetensors")
    (env.dir / "tamper.safetensors").write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(VerificationError):
        read_delta(env.dir / "tamper.safetensors")
    with pytest.raises(CheckpointError, match="is a model file.*pnc apply"):
        read_delta(env.target)


# ----------------------------------------------------------------------------------- apply / remove
def test_apply_then_remove_is_byte_identical(env: SimpleNamespace) -> None:
    cloned, restored = env.dir / "c.safetensors", env.dir / "r.safetensors"
    doc = apply_delta(target=env.target, deltas=[env.d5], output=cloned)
    assert doc["deltas"] == ["clone-5"] and doc["classes"] == [*TARGET_CLASSES, "5"]
    assert 0 < doc["extra_params_ratio"] < 1
    model = read_cloned(cloned)
    assert target_bytes(model) == env.target.read_bytes()
    target_tensors, _ = read_safetensors(env.target)
    assert all(torch.equal(model.target_tensors[k], v) for k, v in target_tensors.items())
    out = remove_delta(cloned=cloned, output=restored)
    assert out["restored"] and out["identical_to_original"]
    assert restored.read_bytes() == env.target.read_bytes()


def test_stacked_deltas_remove_one_then_the_other(env: SimpleNamespace) -> None:
    c1, c2, c3, r = (env.dir / f"{n}.safetensors" for n in ("c1", "c2", "c3", "r"))
    apply_delta(target=env.target, deltas=[env.d5], output=c1)
    doc = apply_delta(target=c1, deltas=[env.d6], output=c2)  # stack onto an already cloned file
    assert doc["deltas"] == ["clone-5", "clone-6"] and doc["classes"][-2:] == ["5", "6"]
    left = remove_delta(cloned=c2, names=["clone-5"], output=c3)
    assert left["remaining"] == ["clone-6"] and not left["restored"]
    kept, original = read_cloned(c3).deltas, read_delta(env.d6)
    assert [d.name for d in kept] == ["clone-6"] and kept[0].sha256 == original.sha256
    assert kept[0].info == original.info
    remove_delta(cloned=c3, output=r, all=True)
    assert r.read_bytes() == env.target.read_bytes()


def test_delta_for_another_target_is_refused(env: SimpleNamespace) -> None:
    other = env.dir / "other.safetensors"
    tiny_model_file(other, TARGET_CLASSES, seed=7)
    with pytest.raises(IncompatibleError, match="was made for target"):
        apply_delta(target=other, deltas=[env.d5], output=env.dir / "c.safetensors")
    assert not (env.dir / "c.safetensors").exists()


def test_colliding_classes_and_names_are_refused(env: SimpleNamespace) -> None:
    d0 = env.dir / "d0.safetensors"
    write_delta(d0, make_delta(**env.kw, name="clone-0", classes=("0",)))
    with pytest.raises(IncompatibleError, match="adds classes 0"):
        apply_delta(target=env.target, deltas=[d0], output=env.dir / "c.safetensors")
    with pytest.raises(IncompatibleError, match="already used"):
        apply_delta(target=env.target, deltas=[env.d5, env.d5], output=env.dir / "c.safetensors")
    assert not (env.dir / "c.safetensors").exists()


def test_online_delta_needs_and_materialises_its_source(env: SimpleNamespace) -> None:
    online = env.dir / "online.safetensors"
    delta = make_delta(**env.kw, mode="online")
    write_delta(online, delta)
    assert not any(k.startswith("source.") for k in read_delta(online).tensors)
    with pytest.raises(UsageError, match="needs its source file .*pass source"):
        apply_delta(target=env.target, deltas=[online], output=env.dir / "c.safetensors")
    apply_delta(
        target=env.target, deltas=[online], sources=[env.target, env.source], output=env.dir / "c.safetensors"
    )
    got = read_cloned(env.dir / "c.safetensors").deltas[0]
    assert got.mode == "offline" and got.info["extra_params"] == got.num_params > delta.num_params
    want = slice_state(nn.ModuleList(env.source_net.blocks[1:]), delta.masks())
    assert set(got.group("source.")) == set(want)
    assert all(torch.equal(got.group("source.")[k], v) for k, v in want.items())


def test_remove_on_a_plain_model_and_unknown_name(env: SimpleNamespace) -> None:
    with pytest.raises(UsageError, match="file carries no delta"):
        remove_delta(cloned=env.target, output=env.dir / "r.safetensors")
    apply_delta(target=env.target, deltas=[env.d5], output=env.dir / "c.safetensors")
    with pytest.raises(UsageError, match="no delta named nope; it has clone-5"):
        remove_delta(cloned=env.dir / "c.safetensors", names=["nope"], output=env.dir / "r.safetensors")
    assert not (env.dir / "r.safetensors").exists()
    before = (env.dir / "c.safetensors").read_bytes()
    with pytest.raises(UsageError, match="also an input"):
        remove_delta(cloned=env.dir / "c.safetensors", output=env.dir / "c.safetensors", force=True)
    assert (env.dir / "c.safetensors").read_bytes() == before


def test_remove_with_wrong_recorded_hash_exits_3_and_writes_nothing(env: SimpleNamespace) -> None:
    cloned = env.dir / "c.safetensors"
    apply_delta(target=env.target, deltas=[env.d5], output=cloned)
    _rewrite(cloned, cloned, **{"pnc.target_file_sha256": "0" * 64})
    with pytest.raises(VerificationError, match="restored file hashes"):
        remove_delta(cloned=cloned, output=env.dir / "r.safetensors")
    assert not (env.dir / "r.safetensors").exists()


def test_target_written_by_another_tool_restores_tensors_and_metadata(env: SimpleNamespace) -> None:
    tensors, meta = read_safetensors(env.target)
    foreign = env.dir / "foreign.safetensors"
    save_file(tensors, str(foreign), metadata=meta)
    apply_delta(target=foreign, deltas=[env.d5], output=env.dir / "c.safetensors")
    doc = remove_delta(cloned=env.dir / "c.safetensors", output=env.dir / "r.safetensors")
    assert doc["tensors_identical"] and doc["identical_to_original"] is False
    back, back_meta = read_safetensors(env.dir / "r.safetensors")
    assert back_meta == meta and all(torch.equal(back[k], v) for k, v in tensors.items())


def test_write_cloned_refuses_reserved_names_and_duplicates(env: SimpleNamespace) -> None:
    tensors, meta = read_safetensors(env.target)
    delta = make_delta(**env.kw)
    with pytest.raises(DeltaFormatError, match="reserved prefix"):
        write_cloned(
            env.dir / "c.safetensors", ClonedFile({f"{CLONED_PREFIX}x": torch.zeros(1)}, meta, None, [delta])
        )
    with pytest.raises(DeltaFormatError, match="unique"):
        write_cloned(env.dir / "c.safetensors", ClonedFile(tensors, meta, None, [delta, delta]))


def test_info_works_on_delta_and_cloned_files(env: SimpleNamespace) -> None:
    apply_delta(target=env.target, deltas=[env.d5, env.d6], output=env.dir / "c.safetensors")
    doc = file_info(env.dir / "c.safetensors")
    assert doc["kind"] == "cloned" and doc["arch"] == "tiny_cnn"
    assert doc["classes"] == [*TARGET_CLASSES, "5", "6"]
    assert file_info(env.d5)["kind"] == "delta"
    info = read_delta_info(env.d5)
    assert (
        info["name"] == "clone-5"
        and info["mode"] == "offline"
        and info["sha256"] == read_delta(env.d5).sha256
    )


def test_deltafile_name_is_in_info() -> None:
    d = DeltaFile("a", {"head.weight": torch.zeros(1, 2)}, {"classes": ["x"]})
    assert d.info["name"] == "a" and d.num_params == 2


def test_golden_v1_file_still_runs(tmp_path: Path) -> None:
    """The golden delta applies to its target and the cloned model runs: target logits unchanged."""
    target = tmp_path / "t.safetensors"
    net, _ = tiny_model_file(target, TARGET_CLASSES, seed=0)
    apply_delta(target=target, deltas=[GOLDEN], output=tmp_path / "c.safetensors")
    cloned, _, _ = load_cloned(tmp_path / "c.safetensors")
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        out = cloned(x)
        ref = net.eval()(x)
    assert out.shape == (3, len(TARGET_CLASSES) + 1) and cloned.classes == [*TARGET_CLASSES, "5"]
    assert torch.equal(out[:, : len(TARGET_CLASSES)], ref)
