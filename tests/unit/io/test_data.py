"""Data sources, class selection, seeded stratified splits and input conformance (docs/formats.md)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pnc_cli.core.errors import DataError, UsageError
from pnc_cli.io.data import conform, load_data, parse_classes, read_raw
from pnc_cli.io.safetensors_io import write_safetensors

DIGITS = [str(i) for i in range(10)]


def _rows(ds) -> set[int]:
    return set(ds.index.tolist())


# --- sources ------------------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """cat (2 grey 10x10), dog (2 RGB 12x12), t-shirt (1 grey), a hidden dir and a stray text file."""
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for cls, n, mode, size in [("cat", 2, "L", 10), ("dog", 2, "RGB", 12), ("t-shirt", 1, "L", 10)]:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(
                root / cls / f"{i}.png"
            )
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder(image_folder: Path) -> None:
    images, names, ident = read_raw(str(image_folder))
    assert names == ["cat", "cat", "dog", "dog", "t-shirt"]
    assert images.shape == (5, 3, 10, 10)  # any RGB image → RGB; sizes follow the first image
    assert images.dtype == torch.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert ident == str(image_folder)
    ds = load_data(str(image_folder), classes="cat,t-shirt", split="all")
    assert ds.classes == ["cat", "t-shirt"] and ds.label_names == ["cat", "cat", "t-shirt"]


def test_image_folder_pixel_values(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "a" / "white.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a" / "zblack.png")
    images, names, _ = read_raw(str(tmp_path))
    assert images.shape == (2, 1, 4, 4)
    assert torch.equal(images[0], torch.ones(1, 4, 4)) and torch.equal(images[1], torch.zeros(1, 4, 4))


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no images found"):
        read_raw(str(tmp_path))


def test_npz_int_labels_with_classes(tmp_path: Path) -> None:
    x = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]), classes=np.array(["cat", "dog", "eel"]))
    images, names, _ = read_raw(str(tmp_path / "d.npz"))
    assert names == ["cat", "dog", "eel", "cat", "dog", "eel"]
    assert images.shape == (6, 1, 4, 4)
    assert torch.allclose(images[0, 0].flatten(), torch.arange(16, dtype=torch.float32) / 255)


def test_npz_int_labels_without_classes_and_nhwc(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((4, 5, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([3, 1, 3, 1]))
    images, names, _ = read_raw(str(tmp_path / "d.npz"))
    assert names == ["3", "1", "3", "1"]
    assert images.shape == (4, 3, 5, 5)
    assert torch.equal(images, torch.from_numpy(x).permute(0, 3, 1, 2))  # floats in [0, 1] kept as they are


def test_npz_string_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4), np.float32), y=np.array(["b", "a", "b"]))
    ds = load_data(str(tmp_path / "d.npz"), split="all")
    assert ds.classes == ["a", "b"] and ds.label_names == ["b", "a", "b"]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros((2, 4, 4))}, "needs arrays 'x' and 'y'"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 5]), "classes": np.array(["a", "b"])}, "must index"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 1, 1])}, "2 images but 3 labels"),
        ({"x": np.zeros((2, 2, 4, 4)), "y": np.array([0, 1])}, "1 or 3 channels"),
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        read_raw(str(tmp_path / "d.npz"))
    assert "cannot read .npz" not in str(err.value)  # one message, not a wrapped one


def test_npz_that_is_not_an_npz(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"garbage" * 10)
    with pytest.raises(DataError, match="cannot read .npz"):
        read_raw(str(tmp_path / "d.npz"))


def test_safetensors_data(tmp_path: Path) -> None:
    images = torch.rand(4, 1, 6, 6)
    labels = torch.tensor([1, 0, 1, 0])
    write_safetensors(
        tmp_path / "d.safetensors", {"images": images, "labels": labels}, {"classes": '["cat", "dog"]'}
    )
    ds = load_data(str(tmp_path / "d.safetensors"), split="all")
    assert ds.classes == ["cat", "dog"] and ds.label_names == ["dog", "cat", "dog", "cat"]
    assert torch.equal(ds.images, images)
    write_safetensors(tmp_path / "bad.safetensors", {"x": images}, {})
    with pytest.raises(DataError, match="needs tensors 'images' and 'labels'"):
        read_raw(str(tmp_path / "bad.safetensors"))


def test_builtins() -> None:
    images, names, ident = read_raw("digits")
    assert images.shape == (1797, 1, 8, 8) and ident == "digits"
    assert sorted(set(names), key=int) == DIGITS
    assert 0.0 <= images.min() and images.max() <= 1.0
    images, names, _ = read_raw("mnist5k")
    assert images.shape == (5000, 1, 28, 28) and len(set(names)) == 10
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found: give a built-in name"):
        read_raw("mnist_full")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unknown data format"):
        read_raw(str(tmp_path / "d.txt"))


# --- --classes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0-4", ["0", "1", "2", "3", "4"]),
        ("3,5,cat", ["3", "5", "cat"]),
        ("7, 0-2 ,1", ["7", "0", "1", "2"]),  # order kept, duplicates dropped, spaces ignored
        ("t-shirt,cat", ["t-shirt", "cat"]),  # a hyphenated name that exists is a name, not a range
        (["b", "a"], ["b", "a"]),
        (None, None),
    ],
)
def test_parse_classes(spec, expected) -> None:
    assert parse_classes(spec, DIGITS + ["cat", "t-shirt", "a", "b"]) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0,42", "unknown class '42' in classes; available: 0, 1"),
        ("0-12", "unknown class '10'"),
        ("a-c", "range 'a-c' needs integer class names"),
        ("4-0", "range '4-0' is empty"),
        (",", "selects no classes"),
        ("", "selects no classes"),  # an empty --classes is an error, not "all classes"
        ("0-99999999999", "at most 100000"),  # measured before it is expanded
    ],
)
def test_bad_classes(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_classes(spec, DIGITS)


def test_unknown_class_through_load_data() -> None:
    with pytest.raises(DataError, match="unknown class 'cat'"):
        load_data("digits", classes="1,cat")


# --- splits and fractions -------------------------------------------------------------------------------


def test_split_is_disjoint_and_complete() -> None:
    train, test, every = (load_data("digits", split=s) for s in ("train", "test", "all"))
    assert not _rows(train) & _rows(test)
    assert _rows(train) | _rows(test) == _rows(every) == set(range(1797))
    counts = np.bincount(every.labels.numpy())
    test_counts = np.bincount(test.labels.numpy(), minlength=10)
    assert (test_counts == np.round(0.2 * counts)).all()  # stratified: 20 % of every class


def test_split_does_not_depend_on_class_selection_or_fraction() -> None:
    test_all = load_data("digits", split="test")
    test_some = load_data("digits", classes="7,2", split="test")
    assert _rows(test_some) == {
        r for r, c in zip(test_all.index.tolist(), test_all.label_names, strict=True) if c in {"2", "7"}
    }
    train_frac = load_data("digits", classes="2", split="train", fraction=0.3)
    assert not _rows(train_frac) & _rows(test_all)


def test_split_seed_changes_the_split() -> None:
    a = load_data("digits", classes="0", split="test", split_seed=0)
    b = load_data("digits", classes="0", split="test", split_seed=0)
    c = load_data("digits", classes="0", split="test", split_seed=1)
    assert _rows(a) == _rows(b) != _rows(c)
    assert len(a) == len(c)


def test_fraction_is_stratified_seeded_and_nested() -> None:
    full = load_data("digits", classes="0-4", split="train")
    half = load_data("digits", classes="0-4", split="train", fraction=0.5)
    tenth = load_data("digits", classes="0-4", split="train", fraction=0.1)
    full_counts = np.bincount(full.labels.numpy())
    assert (np.bincount(half.labels.numpy()) == [math.ceil(0.5 * n) for n in full_counts]).all()
    assert _rows(tenth) < _rows(half) < _rows(full)
    assert _rows(load_data("digits", classes="0-4", split="train", fraction=0.5)) == _rows(half)
    assert _rows(load_data("digits", classes="3", split="train", fraction=0.5)) <= _rows(half)


def test_bad_split_and_fraction() -> None:
    with pytest.raises(UsageError, match="unknown split"):
        load_data("digits", split="val")
    for fraction in (0.0, 1.5):
        with pytest.raises(UsageError, match="fraction must be in"):
            load_data("digits", fraction=fraction)


# --- bad data --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_images(tmp_path: Path, value: float) -> None:
    x = np.random.default_rng(0).random((20, 4, 4)).astype(np.float32)
    x[5, 1, 1] = value
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_data(str(tmp_path / "d.npz"), split="all")
    # a selection without the bad image is fine
    assert len(load_data(str(tmp_path / "d.npz"), classes="0", split="all")) == 10


def test_no_samples_left(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4), np.float32), y=np.array(["a", "b", "b"]))
    with pytest.raises(DataError, match="no samples left after selecting classes a"):
        load_data(str(tmp_path / "d.npz"), classes="a", split="test")  # one sample: it is a training sample
    assert len(load_data(str(tmp_path / "d.npz"), classes="a", split="train")) == 1


# --- conform and relabel ------------------------------------------------------------------------------------


def test_conform_channels_and_size() -> None:
    grey = torch.rand(2, 1, 8, 8)
    rgb = conform(grey, 3, 8)
    assert rgb.shape == (2, 3, 8, 8) and rgb.is_contiguous()
    assert torch.equal(rgb[:, 0], grey[:, 0]) and torch.equal(rgb[:, 2], grey[:, 0])
    back = conform(torch.rand(2, 3, 8, 8), 1, 8)
    assert back.shape == (2, 1, 8, 8)
    big = conform(grey, 1, 16)
    assert big.shape == (2, 1, 16, 16) and 0.0 <= big.min() and big.max() <= 1.0
    assert conform(grey, 1, 8) is not None and torch.equal(conform(grey, 1, 8), grey)
    with pytest.raises(DataError, match="cannot convert 2-channel"):
        conform(torch.rand(1, 2, 4, 4), 3, 4)


def test_relabel() -> None:
    ds = load_data("digits", classes="3,1", split="test")
    again = ds.relabel(["0", "1", "2", "3"])
    assert again.label_names == ds.label_names and again.classes == ["0", "1", "2", "3"]
    with pytest.raises(DataError, match="not among"):
        ds.relabel(["1"])


def test_the_largest_range_expands_in_linear_time() -> None:
    names = parse_classes("0-99999,5")  # the old O(n²) de-duplication took minutes here
    assert names is not None and len(names) == 100_000 and names[-1] == "99999"
