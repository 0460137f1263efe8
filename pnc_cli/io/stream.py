"""Selected data read batch by batch: a ``torch.utils.data.Dataset`` and its ``DataLoader``.

Layer L1. ``ImageDataset`` holds rows of one or more sources (``io.data.Selection``) with a label each
and decodes an image only when a batch asks for it, converted to the model's channels and size
(``conform``, the same function the in-memory path uses, so both give the same pixels). Peak memory is
one batch per worker, whatever the number of images in an ImageFolder. ``loader`` builds the
DataLoader: ``workers`` processes, pinned memory for a CUDA device and, under ``torchrun``, a
``ShardSampler`` that gives each process its own rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..core.distributed import rank, world_size
from ..core.errors import DataError
from .data import Selection, Source, conform
from .safetensors_io import _dtype_name, tensor_bytes
from .safetensors_io import content_sha256 as _content_sha256

Batch = tuple[torch.Tensor, torch.Tensor]


class ImageDataset(Dataset[Batch]):
    """Rows of sources as ``(image [C, H, W] in [0, 1], label)`` pairs, decoded lazily.

    ``parts`` are ``(source, rows)`` pairs in order; ``labels`` has one entry per row of all parts.
    ``channels``/``size`` conform each image to a model's input (None: as stored).
    """

    def __init__(
        self,
        parts: Sequence[tuple[Source, np.ndarray]],
        labels: torch.Tensor,
        *,
        channels: int | None = None,
        size: int | None = None,
    ) -> None:
        self.parts = [(src, np.asarray(rows, dtype=np.int64)) for src, rows in parts]
        self.offsets = np.cumsum([0] + [len(r) for _, r in self.parts])
        if int(self.offsets[-1]) != len(labels):
            raise ValueError(f"{int(self.offsets[-1])} rows but {len(labels)} labels")
        self.labels = labels.to(torch.int64)
        self.channels, self.size = channels, size

    @classmethod
    def of(
        cls,
        sel: Selection,
        *,
        channels: int | None = None,
        size: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> ImageDataset:
        """One selection; ``labels`` replaces its own (e.g. shifted or pseudo-labels)."""
        return cls(
            [(sel.source, sel.rows)], sel.labels if labels is None else labels, channels=channels, size=size
        )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: torch.Tensor) -> ImageDataset:
        """The rows where the boolean mask ``keep`` is set, in order."""
        mask = keep.numpy()
        parts = [
            (src, rows[mask[int(a) : int(b)]])
            for (src, rows), a, b in zip(self.parts, self.offsets[:-1], self.offsets[1:], strict=True)
        ]
        return ImageDataset(parts, self.labels[keep], channels=self.channels, size=self.size)

    def concat(self, other: ImageDataset) -> ImageDataset:
        """This dataset's rows followed by ``other``'s (same channels and size)."""
        if (other.channels, other.size) != (self.channels, self.size):
            raise ValueError("only ImageDatasets with the same channels and size concatenate")
        return ImageDataset(
            self.parts + other.parts,
            torch.cat([self.labels, other.labels]),
            channels=self.channels,
            size=self.size,
        )

    def _conform(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None or self.size is None:
            return x
        return conform(x, self.channels, self.size)

    def images(self, positions: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Images at dataset positions, decoded and conformed, ``[n, C, H, W]`` in the given order."""
        pos = np.asarray(positions, dtype=np.int64)
        part = np.searchsorted(self.offsets, pos, side="right") - 1
        out: list[torch.Tensor | None] = [None] * len(pos)
        for p in np.unique(part).tolist():
            sel = np.flatnonzero(part == p)
            src, rows = self.parts[p]
            x = self._conform(
                torch.from_numpy(np.ascontiguousarray(src.images(rows[pos[sel] - self.offsets[p]])))
            )
            for j, i in enumerate(sel.tolist()):
                out[i] = x[j]
        return torch.stack(out) if len(pos) else torch.zeros(0)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Batch:
        return self.images([i])[0], self.labels[i]

    def __getitems__(self, positions: list[int]) -> Batch:
        """A whole batch at once (DataLoader calls this): one conform call per batch and source."""
        return self.images(positions), self.labels[torch.as_tensor(positions, dtype=torch.int64)]


def _collate(batch: Any) -> Any:
    return batch  # ``__getitems__`` returns a collated batch already


class ShardSampler(DistributedSampler[int]):
    """This process's rows of the dataset, in order: rows ``rank, rank + W, …`` (``W`` processes).

    Unlike its base class it neither pads nor drops rows: every row is read by exactly one process,
    so sums over samples added across processes equal the single-process sums.
    """

    def __init__(self, dataset: Dataset[Any], num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    device: torch.device | None = None,
    workers: int = 0,
    shard: bool = False,
) -> DataLoader[Any]:
    """A DataLoader over ``dataset`` in order: ``workers`` decoding processes, pinned memory when the
    batches go to a CUDA device; ``shard`` gives this process only its rows under ``torchrun``."""
    sampler: Sampler[int] | None = ShardSampler(dataset, world_size(), rank()) if shard else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device is not None and device.type == "cuda",
    )


def batches(loader_: DataLoader[Any]) -> Iterator[Batch]:
    """The loader's batches; an image a worker could not decode is re-raised as its one-line DataError."""
    try:
        yield from loader_
    except DataError as exc:
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        last = lines[-1] if lines else str(exc)
        raise DataError(last.split("DataError: ", 1)[-1]) from None


def content_sha256(dataset: ImageDataset, *, batch_size: int = 512, workers: int = 0) -> str:
    """``safetensors_io.content_sha256({"x": images, "y": labels})`` of the whole dataset, computed
    one batch at a time (same digest, without holding the images)."""
    n = len(dataset)
    h = hashlib.sha256()
    shape: list[int] | None = None
    for x, _ in batches(loader(dataset, batch_size=batch_size, workers=workers)):
        if shape is None:
            shape = [n, *x.shape[1:]]
            h.update(b"x")
            h.update(_dtype_name(x.dtype).encode())
            h.update(json.dumps(shape).encode())
        h.update(tensor_bytes(x))
    if shape is None:  # an empty dataset: the digest of empty tensors
        return _content_sha256({"x": torch.zeros(0), "y": dataset.labels})
    h.update(b"y")
    h.update(_dtype_name(dataset.labels.dtype).encode())
    h.update(json.dumps(list(dataset.labels.shape)).encode())
    h.update(tensor_bytes(dataset.labels))
    return h.hexdigest()
