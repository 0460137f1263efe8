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
from ..method.cloned_model import ClonedModel

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


class StagePair:
    """Two stages of a cloned model's stack (``ClonedModel.stage_logits``: 0 = the target alone, -1 =
    the whole model, -2 = the model the last branch was cloned onto) from one forward pass.

    ``first(x)`` then ``second(x)`` on the same batch (as ``predict_labels`` calls its forwards) run the
    model once (in either order): the target's blocks are the bulk of a cloned model's cost, and the
    held-out metrics need both predictions.
    """

    def __init__(self, model: ClonedModel, first: int, second: int) -> None:
        self.model, self.index = model, (first, second)
        self._x: torch.Tensor | None = None
        self._z: list[torch.Tensor] = []

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x is not self._x:  # a new batch (the last one is held, so its identity cannot be reused)
            self._x, self._z = x, self.model.stage_logits(x)
        return self._z

    def first(self, x: torch.Tensor) -> torch.Tensor:
        return self._stages(x)[self.index[0]]

    def second(self, x: torch.Tensor) -> torch.Tensor:
        return self._stages(x)[self.index[1]]


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
