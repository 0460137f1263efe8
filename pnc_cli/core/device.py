"""Device, numeric precision and data-loading settings, and the process rank, in one place.

Layer core (torch only). ``resolve_device`` is the only place that maps ``auto|cpu|cuda|cuda:N`` to a
torch device (under ``torchrun`` ``cuda`` means the process's own GPU, ``LOCAL_RANK``); ``autocast`` is
the only place that maps the precision ``auto|fp32|bf16|fp16`` to ``torch.autocast``. ``Runtime`` holds
the settings that change how fast a command runs, not what it computes (``workers``) or only within
rounding (``precision``); the CLI sets them once per command (``configure``), library users may too.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError, UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """Map a ``--device`` value to a torch device; refuse ``cuda`` when none is present."""
    kind, sep, num = name.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (sep and (kind != "cuda" or not num.isdigit())):
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N (N a GPU number)")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r} was asked for but no CUDA device is available; use device 'cpu'",
                options=("device",),
            )
        index = int(num) if sep else int(os.environ.get("LOCAL_RANK", "0"))
        if index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise UsageError(f"device {name!r}: there are {n} CUDA devices; use cuda:0 … cuda:{n - 1}")
        return torch.device("cuda", index)
    return torch.device("cpu")


@dataclass(frozen=True)
class Runtime:
    """How a command runs: DataLoader worker processes and the precision of frozen forward passes."""

    workers: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise UsageError(f"workers must be >= 0, got {self.workers}", options=("workers",))
        if self.precision not in PRECISIONS:
            raise UsageError(
                f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}",
                options=("precision",),
            )


_runtime = Runtime()
_TF32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # torch's defaults


def configure(*, workers: int | None = None, precision: str | None = None) -> Runtime:
    """Set the runtime settings of this process (unset ones keep their value); returns them.

    ``fp32`` means IEEE float32 on a GPU too: TensorFloat-32 matrix products and convolutions (which
    round the inputs to 10 mantissa bits on Ampere and later) are turned off while it is set, and
    torch's defaults come back with any other precision.
    """
    global _runtime
    _runtime = Runtime(
        _runtime.workers if workers is None else workers,
        _runtime.precision if precision is None else precision,
    )
    fp32 = _runtime.precision == "fp32"
    torch.backends.cuda.matmul.allow_tf32 = False if fp32 else _TF32[0]
    torch.backends.cudnn.allow_tf32 = False if fp32 else _TF32[1]
    return _runtime


def runtime() -> Runtime:
    return _runtime


def autocast_dtype(device: torch.device, precision: str | None = None) -> torch.dtype | None:
    """The dtype frozen forward passes run in, or None for float32.

    ``auto``: bf16 on a CUDA device that supports it, fp16 on an older one, float32 on the CPU (CPU
    autocast is slower than float32 on most CPUs). ``bf16`` / ``fp16`` are honoured where the device
    can run them and refused otherwise.
    """
    precision = precision or _runtime.precision
    if precision not in PRECISIONS:
        raise UsageError(
            f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}", options=("precision",)
        )
    if precision == "fp32":
        return None
    cuda = device.type == "cuda"
    if precision == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and not cuda:
        raise UsageError(
            "precision fp16 needs a CUDA device; use precision bf16 or fp32 on the CPU",
            options=("precision",),
        )
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise UsageError(
            "precision bf16: this GPU has no bfloat16; use precision fp16 or fp32", options=("precision",)
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, precision: str | None = None) -> Iterator[None]:
    """``torch.autocast`` for frozen forward passes at ``--precision`` (no-op for float32).

    Only float32 operations are cast; float64 sums (the ridge statistics) stay float64.
    """
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def rank() -> int:
    """Global rank under torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for explicit use."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
        raise ConfigError(f"seed must be an integer in 0..2^63-1, got {seed!r}", options=("seed",))
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
