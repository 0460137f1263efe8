"""``torch.distributed`` as pnc uses it: sums over samples all-reduced across ``torchrun`` processes.

Layer: core (torch only). Nothing here starts a process group; ``torchrun`` sets the environment and the
CLI's entry initialises the group. Outside a process group every helper is a no-op, so the same code
runs in one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over every process in place (no-op in a single process) and return it."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
