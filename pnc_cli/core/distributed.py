"""``torch.distributed`` as pnc uses it: sums over samples all-reduced across ``torchrun`` processes.

Layer: core (torch only). ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address; the CLI's entry calls ``init_from_env`` (gloo on the CPU, nccl on CUDA) and ``shutdown`` at the
end. Outside a process group every helper is a no-op, so the same code runs in one process.

Failing together: a rank that fails records its one-line error and exit code in the process group's
store (``record_failure``); a rank that then fails because a peer is gone finds that record
(``peer_failure``) and stays silent, so the user sees the first error once (docs/scale.md).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

_FAILURE_KEY = "pnc/failure"


def env_world_size() -> int:
    """The number of processes ``torchrun`` started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def init_from_env(device: torch.device, *, timeout_s: float = 1800.0) -> bool:
    """Join the process group ``torchrun`` described (no-op outside torchrun or when already joined).

    nccl for a CUDA device (each process on its ``LOCAL_RANK`` GPU), gloo otherwise. Returns True
    when this process is part of a group of more than one process.
    """
    if env_world_size() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if cuda else None,
        )
    return is_distributed()


def shutdown() -> None:
    """Leave the process group (every rank, at the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over every process in place (no-op in a single process) and return it."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _store() -> dist.Store | None:
    if not is_distributed():
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None


def record_failure(message: str, exit_code: int) -> tuple[bool, int]:
    """Record this rank's error for the others unless one was recorded first.

    Returns ``(first, exit_code)``: whether this rank's error is the first (the one to print) and the
    exit code every rank should leave with (the first error's).
    """
    store = _store()
    if store is None:
        return True, exit_code
    me = f"{rank()}\t{exit_code}\t{message}"
    try:
        now = store.compare_set(_FAILURE_KEY, "", me).decode()
        first_rank, code, _ = now.split("\t", 2)
        return now == me, int(code)
    except (RuntimeError, OSError, ValueError, dist.DistError):
        return True, exit_code
