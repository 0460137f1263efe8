"""Streamed data (io/stream.py): lazy decoding, same rows and pixels as the in-memory path, sharding;
device and precision choice (core/device.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pnc_cli.core.device import autocast_dtype, configure, resolve_device, runtime
from pnc_cli.core.errors import DataError, UsageError
from pnc_cli.io import data as data_mod
from pnc_cli.io.data import conform_set, load_data, select_data
from pnc_cli.io.stream import ImageDataset, ShardSampler, batches, loader


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """3 classes of mixed grey/RGB images and sizes (the first image's size wins)."""
    rng = np.random.default_rng(1)
    for c, mode, size in [("a", "L", 9), ("b", "RGB", 11), ("c", "L", 9)]:
        (tmp_path / c).mkdir()
        for i in range(7):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(
                tmp_path / c / f"{i}.png"
            )
    return tmp_path


def _stream(ds: ImageDataset, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches(loader(ds, batch_size=4, **kw)), strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("source", ["digits", "folder"])
def test_streamed_equals_in_memory(source: str, workers: int, folder: Path) -> None:
    src = str(folder) if source == "folder" else source
    for split, fraction in [("train", 1.0), ("test", 1.0), ("train", 0.4)]:
        ref = load_data(src, split=split, fraction=fraction, split_seed=3)
        sel = select_data(src, split=split, fraction=fraction, split_seed=3)
        assert torch.equal(sel.index, ref.index) and torch.equal(sel.labels, ref.labels)  # same split
        x, y = _stream(ImageDataset.of(sel, channels=3, size=16), workers=workers)
        conformed = conform_set(ref, 3, 16)
        assert torch.equal(x, conformed.images) and torch.equal(y, ref.labels)  # same pixels, bit for bit


def test_folder_is_listed_without_decoding(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = data_mod._decode_image
    monkeypatch.setattr(data_mod, "_decode_image", lambda p, m, s: calls.append(str(p)) or real(p, m, s))
    data_mod._open_path.cache_clear()
    sel = select_data(str(folder), classes="a,c", split="train")
    assert calls == []  # classes, split and labels come from the file list
    src = sel.source
    assert isinstance(src, data_mod.FolderSource) and src.mode == "RGB" and src.size == (9, 9)
    ds = ImageDataset.of(sel)
    x = ds.images([0, len(ds) - 1])
    assert len(calls) == 2 and x.shape == (2, 3, 9, 9)


def test_concatenated_parts_and_subset(folder: Path) -> None:
    a = select_data(str(folder), classes="a", split="all")
    b = select_data("digits", classes="3", split="test")
    ds = ImageDataset.of(a, channels=1, size=8).concat(
        ImageDataset.of(b, channels=1, size=8, labels=b.labels + 5)
    )
    x, y = _stream(ds)
    ref_a = conform_set(a.decode(), 1, 8).images
    ref_b = conform_set(b.decode(), 1, 8).images
    assert torch.equal(x, torch.cat([ref_a, ref_b])) and y.tolist() == [0] * 7 + [5] * len(b)
    keep = torch.arange(len(ds)) % 3 == 0
    xs, ys = _stream(ds.subset(keep))
    assert torch.equal(xs, x[keep]) and torch.equal(ys, y[keep])


def test_shard_sampler_neither_pads_nor_drops() -> None:
    data = list(range(7))
    shards = [list(ShardSampler(data, 3, r)) for r in range(3)]  # type: ignore[arg-type]
    assert sorted(sum(shards, [])) == data and [len(s) for s in shards] == [3, 2, 2]
    assert len(ShardSampler(data, 3, 2)) == 2  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_one_line(folder: Path, workers: int) -> None:
    bad = folder / "b" / "3.png"
    sel = select_data(str(folder), split="all")
    bad.write_bytes(b"not a png any more")  # broken after listing: found when its batch is decoded
    with pytest.raises(DataError) as err:
        _stream(ImageDataset.of(sel), workers=workers)
    assert str(err.value) == f"{bad}: cannot read image; remove or fix it"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cpu:0", "cuda:"):
        with pytest.raises(UsageError, match="unknown device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_precision_choice() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        autocast_dtype(cpu, "fp16")
    with pytest.raises(UsageError, match="unknown precision"):
        configure(precision="fp8")
    before = runtime()
    try:
        assert configure(workers=2).workers == 2 and runtime().precision == before.precision
    finally:
        configure(workers=before.workers, precision=before.precision)


def test_streamed_content_hash_equals_in_memory() -> None:
    from pnc_cli.io.safetensors_io import content_sha256 as in_memory
    from pnc_cli.io.stream import content_sha256

    sel = select_data("digits", classes="2,7", split="train")
    ds = ImageDataset.of(sel, channels=3, size=12)
    x = conform_set(sel.decode(), 3, 12).images
    assert content_sha256(ds, batch_size=50) == in_memory({"x": x, "y": sel.labels})
