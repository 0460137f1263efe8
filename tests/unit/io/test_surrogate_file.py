"""The surrogate file (pnc_cli.io.surrogate_file) and its orchestration (pnc_cli.api.surrogates):
round trip, byte-identical reruns, shared masks, comparability checks, bad files, reuse by clone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pnc_cli.api.surrogates import compute_surrogate, load_or_compute, select_samples, surrogate_for
from pnc_cli.core.config import SurrogateConfig
from pnc_cli.core.errors import CheckpointError, IncompatibleError, VerificationError
from pnc_cli.io.data import load_data
from pnc_cli.io.model_file import ModelSpec, load_model, save_model
from pnc_cli.io.safetensors_io import read_safetensors, write_safetensors
from pnc_cli.io.surrogate_file import (
    KIND_SURROGATE,
    SurrogateFile,
    check_comparable,
    read_surrogate,
    write_surrogate,
)
from pnc_cli.nets import build_network

CONFIG = SurrogateConfig(samples=12, masks=16, grid=2, batch_size=64)


def tiny_model(path: Path, classes: tuple[str, ...] = ("0", "1", "2"), seed: int = 0) -> Path:
    """An untrained tiny_cnn on 8x8 grey images (digits' native size): enough to have logits."""
    torch.manual_seed(seed)
    net = build_network("tiny_cnn", num_classes=len(classes), in_channels=1, input_size=8)
    save_model(path, net, ModelSpec("tiny_cnn", classes, 1, 8))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("surrogate-models")
    return tiny_model(root / "a.safetensors"), tiny_model(root / "b.safetensors", ("5", "6"), seed=1)


def _file(seed: int = 0, n: int = 3, p: int = 4, c: int = 2, m: int = 5) -> SurrogateFile:
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(m, p, generator=g) > 0.3).float()
    masks[0] = 1.0
    return SurrogateFile(
        theta=torch.randn(n, p, c, generator=g),
        intercept=torch.randn(n, c, generator=g),
        masks=masks,
        weights=torch.rand(m, generator=g),
        sample_index=torch.arange(n) * 7,
        config=replace(CONFIG, samples=n, masks=m).to_dict(),
        model_sha256="ab" * 32,
        model_classes=[str(i) for i in range(c)],
        data={
            "data": "digits",
            "classes": ["0"],
            "split": "train",
            "split_seed": 0,
            "samples_sha256": "cd" * 32,
        },
    )


def test_round_trip(tmp_path: Path) -> None:
    sf = _file()
    sha = write_surrogate(tmp_path / "g.safetensors", sf)
    back = read_surrogate(tmp_path / "g.safetensors")
    for name in ("theta", "intercept", "masks", "weights", "sample_index"):
        assert torch.equal(getattr(back, name), getattr(sf, name)), name
    assert back.sample_index.dtype == torch.int64
    assert (back.config, back.model_sha256, back.model_classes, back.data) == (
        sf.config,
        sf.model_sha256,
        sf.model_classes,
        sf.data,
    )
    assert back.sha256 == sha and back.pnc_version == sf.pnc_version
    _, meta = read_safetensors(tmp_path / "g.safetensors")
    assert meta["pnc.kind"] == KIND_SURROGATE and meta["format"] == "pt" and meta["pnc.sha256"] == sha
    assert {"pnc.surrogate.config", "pnc.surrogate.model_sha256", "pnc.surrogate.data"} <= set(meta)


def test_write_refuses_shapes_that_do_not_fit(tmp_path: Path) -> None:
    sf = _file()
    with pytest.raises(CheckpointError, match="intercept"):
        write_surrogate(tmp_path / "g.safetensors", replace(sf, intercept=torch.zeros(2, 2)))
    assert not (tmp_path / "g.safetensors").exists()


def test_same_seed_gives_identical_bytes_and_other_seed_other_masks(
    tmp_path: Path, models: tuple[Path, Path]
) -> None:
    a, b = models
    kw = {"model": a, "data": "digits", "classes": "0-4", "device": "cpu"}
    doc1 = compute_surrogate(**kw, config=CONFIG, output=tmp_path / "g1.safetensors")
    doc2 = compute_surrogate(**kw, config=CONFIG, output=tmp_path / "g2.safetensors")
    assert (tmp_path / "g1.safetensors").read_bytes() == (tmp_path / "g2.safetensors").read_bytes()
    assert doc1["sha256"] == doc2["sha256"]
    assert (doc1["samples"], doc1["masks"], doc1["grid"], doc1["num_classes"]) == (12, 16, 2, 3)
    assert 0.0 <= doc1["fidelity"] <= 1.0 + 1e-9
    g1 = read_surrogate(tmp_path / "g1.safetensors")
    assert g1.theta.shape == (12, 4, 3) and torch.equal(g1.masks[0], torch.ones(4))
    assert g1.model_sha256 == load_model(a).sha256 and g1.model_classes == ["0", "1", "2"]

    compute_surrogate(**kw, config=replace(CONFIG, seed=1), output=tmp_path / "g3.safetensors")
    g3 = read_surrogate(tmp_path / "g3.safetensors")
    assert not torch.equal(g1.masks, g3.masks)
    with pytest.raises(IncompatibleError, match="different masks"):
        check_comparable(g1, g3, "g1", "g3")

    # another model, same seed and data: comparable (what rank-sources relies on)
    compute_surrogate(**{**kw, "model": b}, config=CONFIG, output=tmp_path / "gb.safetensors")
    gb = read_surrogate(tmp_path / "gb.safetensors")
    check_comparable(g1, gb)
    assert gb.theta.shape == (12, 4, 2)

    # other samples: another split seed
    compute_surrogate(**kw, config=CONFIG, split_seed=3, output=tmp_path / "g4.safetensors")
    with pytest.raises(IncompatibleError, match="different samples"):
        check_comparable(g1, read_surrogate(tmp_path / "g4.safetensors"), "g1", "g4")


def test_samples_are_stratified_and_seeded() -> None:
    labels = torch.tensor([0] * 30 + [1] * 10 + [2] * 5)
    pos = select_samples(labels, 9, seed=0)
    assert torch.equal(pos, pos.sort().values) and len(set(pos.tolist())) == 9
    assert torch.bincount(labels[pos], minlength=3).tolist() == [3, 3, 3]
    assert not torch.equal(pos, select_samples(labels, 9, seed=1))
    assert len(select_samples(labels, 100, seed=0)) == 45


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "only 0 bytes"),
        (b"garbage that is not a safetensors file at all", "not a safetensors file"),
    ],
)
def test_garbage_is_a_checkpoint_error(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "g.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_surrogate(tmp_path / "g.safetensors")


def test_truncated_and_modified_files(tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    write_surrogate(path, _file())
    raw = path.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(raw[:-16])
    with pytest.raises(CheckpointError, match="truncated"):
        read_surrogate(tmp_path / "t.safetensors")
    tensors, meta = read_safetensors(path)
    tensors["theta"] = tensors["theta"] + 1.0
    write_safetensors(tmp_path / "m.safetensors", tensors, meta)
    with pytest.raises(VerificationError, match="sha256"):
        read_surrogate(tmp_path / "m.safetensors")
    newer = {**meta, "pnc.format_version": "99"}
    write_safetensors(tmp_path / "v.safetensors", tensors, newer)
    with pytest.raises(CheckpointError, match="newer"):
        read_surrogate(tmp_path / "v.safetensors")
    del tensors["weights"]
    write_safetensors(tmp_path / "w.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="weights"):
        read_surrogate(tmp_path / "w.safetensors")


def test_other_kinds_are_refused(tmp_path: Path, models: tuple[Path, Path]) -> None:
    with pytest.raises(CheckpointError, match="model file.*not a surrogate file"):
        read_surrogate(models[0])
    write_safetensors(tmp_path / "plain.safetensors", {"x": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="without pnc metadata"):
        read_surrogate(tmp_path / "plain.safetensors")
    write_surrogate(tmp_path / "g.safetensors", _file())
    tensors, meta = read_safetensors(tmp_path / "g.safetensors")
    write_safetensors(tmp_path / "d.safetensors", tensors, {**meta, "pnc.kind": "delta"})
    with pytest.raises(CheckpointError, match="delta file"):
        read_surrogate(tmp_path / "d.safetensors")


def test_load_or_compute_reuses_a_file_and_checks_it(tmp_path: Path, models: tuple[Path, Path]) -> None:
    a, b = models
    path = tmp_path / "g.safetensors"
    compute_surrogate(model=a, data="digits", classes="0-4", config=CONFIG, output=path, device="cpu")
    loaded = load_model(a)
    data = load_data("digits", classes="0-4", split="train")

    result, images = load_or_compute(loaded, data, CONFIG, path, device=torch.device("cpu"))
    sf = read_surrogate(path)
    assert torch.equal(result.theta, sf.theta) and torch.equal(result.masks, sf.masks)
    assert result.config == SurrogateConfig.from_dict(sf.config) and images.shape == (12, 1, 8, 8)

    # without a file the same samples and the same G come out
    fresh, fresh_images = load_or_compute(loaded, data, CONFIG, None, device=torch.device("cpu"))
    assert torch.equal(fresh_images, images) and torch.allclose(fresh.theta, sf.theta, atol=1e-6)
    again = surrogate_for(loaded, images, fresh.config, masks=sf.masks, device=torch.device("cpu"))
    assert torch.allclose(again.theta, sf.theta, atol=1e-6)

    with pytest.raises(IncompatibleError, match="another model"):
        load_or_compute(load_model(b), data, CONFIG, path)
    other = load_data("digits", classes="5-9", split="train")
    with pytest.raises(IncompatibleError, match="not in the given data"):
        load_or_compute(loaded, other, CONFIG, path)
    changed = replace(data, images=data.images.flip(-1))
    with pytest.raises(IncompatibleError, match="samples differ"):
        load_or_compute(loaded, changed, CONFIG, path)
