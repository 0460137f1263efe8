"""Device choice and process rank, in one place.

Layer core (torch only). ``resolve_device`` is the only place that maps ``auto|cpu|cuda`` to a torch
device; ``is_main_process`` is what a future torchrun (DDP) run will use to print on rank 0 only.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .errors import ConfigError, UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Map a ``--device`` value to a torch device; refuse ``cuda`` when none is present."""
    if name not in DEVICE_CHOICES:
        raise UsageError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError(
                "device 'cuda' was asked for but no CUDA device is available; use device 'cpu'",
                options=("device",),
            )
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


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
