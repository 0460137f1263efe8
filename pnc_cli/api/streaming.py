"""Frozen forward passes over streamed data: predictions and training batches (docs/scale.md).

Layer L4. Every command that runs a frozen network over a data source reads it through
``io.stream`` (one batch in memory per worker), runs the network under ``--precision`` autocast and,
under ``torchrun``, on this process's shard only: predictions are gathered with one all-reduce, so
every process holds the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from ..core.device import autocast, runtime
from ..core.distributed import all_reduce_sum, is_distributed
from ..io.stream import Batch, batches, loader

Forward = Callable[[torch.Tensor], torch.Tensor]
PREDICT_BATCH = 512


@torch.no_grad()
def predict_labels(
    forwards: Sequence[Forward],
    dataset: Dataset[Batch],
    device: torch.device,
    *,
    batch_size: int = PREDICT_BATCH,
) -> list[torch.Tensor]:
    """Each network's top-1 prediction ``[N]`` (int64, CPU) for every sample of ``dataset``, in order.

    One pass over the data feeds all ``forwards``. Under torchrun each process predicts its shard and
    the shards are summed into the full vectors (every row belongs to exactly one process).
    """
    n = len(dataset)  # type: ignore[arg-type]
    out = torch.zeros(len(forwards), n, dtype=torch.int64)
    shard = is_distributed()
    ld = loader(dataset, batch_size=batch_size, device=device, workers=runtime().workers, shard=shard)
    positions = iter(ld.sampler) if shard else None  # type: ignore[arg-type]
    start = 0
    for x, _ in batches(ld):
        rows = (
            torch.tensor([next(positions) for _ in range(len(x))])  # type: ignore[arg-type]
            if positions is not None
            else torch.arange(start, start + len(x))
        )
        start += len(x)
        x = x.to(device, non_blocking=True)
        with autocast(device):
            for k, f in enumerate(forwards):
                out[k, rows] = f(x).float().argmax(1).cpu()
    if shard:
        all_reduce_sum(out)
    return list(out)


def train_batches(
    dataset: Dataset[Batch], device: torch.device, *, batch_size: int
) -> Callable[[], Iterable[Batch]]:
    """A re-iterable source of this process's training batches (``fit_joint``'s ``train``)."""

    def gen() -> Iterator[Batch]:
        ld = loader(
            dataset, batch_size=batch_size, device=device, workers=runtime().workers, shard=is_distributed()
        )
        yield from batches(ld)

    return gen
