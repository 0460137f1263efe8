"""Label-preserving shifts of the training images the joint head's statistics also see (docs/method.md).

Layer: method (pure torch). Both networks are frozen, so augmenting costs forward passes only: each
training batch is followed by up to ``MAX_SHIFTS`` copies translated by one step (``shift_step``, about
1/28 of the image side) towards the eight neighbours, the borders filled by repeating the edge pixels.
Each copy keeps its label (the cloned class, or the target's pseudo-label of the unshifted image). The
sufficient statistics simply sum over the copies: memory does not change, time grows by the copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

# The eight neighbours: the four axis-aligned steps first, so ``count`` 4 shifts along the axes only.
STEPS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))
MAX_SHIFTS = len(STEPS)

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def shift_step(side: int) -> int:
    """Pixels per step: 1 up to 42 px (MNIST's 28, CIFAR's 32), then ``round(side / 28)`` (8 at 224)."""
    return max(1, round(side / 28))


def shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Images ``[N, C, H, W]`` moved ``dx`` pixels right and ``dy`` down, edges repeated."""
    p = max(abs(dx), abs(dy))
    if p == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def with_shifts(train: Batches, count: int) -> Batches:
    """``train`` followed, batch by batch, by ``count`` shifted copies (0: ``train`` itself)."""
    if not 0 <= count <= MAX_SHIFTS:
        raise ValueError(f"shifts must be in 0..{MAX_SHIFTS}, got {count}")
    if count == 0:
        return train

    def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in train():
            yield x, y
            step = shift_step(min(x.shape[-2:]))
            for dx, dy in STEPS[:count]:
                yield shift(x, dx * step, dy * step), y

    return gen
