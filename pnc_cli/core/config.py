"""Frozen configuration dataclasses, the single source of defaults.

Layer core: stdlib only. Each stage has one config; ``__post_init__`` validates and raises
``ConfigError`` naming the bad value; ``to_dict``/``from_dict`` round-trip through JSON metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

DEFAULT_SEED = 0


MAX_SEED = 2**63 - 1
# Upper bounds of integer options, checked before anything is allocated from them (docs/errors.md).
INT_LIMITS: dict[str, int] = {
    "epochs": 100_000,
    "batch_size": 1_000_000,
    "samples": 1_000_000,
    "masks": 100_000,
    "grid": 64,
    "loc_samples": 10_000,
    "loc_masks": 10_000,
    "straight_through_epochs": 100_000,
    "finetune_epochs": 100_000,
}
DEFAULT_INT_LIMIT = 2**31 - 1


def check_numbers(obj: Any) -> None:
    """Every float field finite (NaN and inf rejected), every int field bounded; seed in 0..2^63-1.

    Runs first in each config's ``__post_init__``, so the range checks after it never see NaN.
    """
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{f.name} must be a finite number, got {v}", options=(f.name,))
        if isinstance(v, int):
            hi = MAX_SEED if f.name == "seed" else INT_LIMITS.get(f.name, DEFAULT_INT_LIMIT)
            lo = 0 if f.name == "seed" else -DEFAULT_INT_LIMIT
            if not lo <= v <= hi:
                raise ConfigError(f"{f.name} must be in {lo}..{hi}, got {v}", options=(f.name,))


def _from_dict(cls: type[T], data: dict[str, Any], *, strict: bool = True) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown and strict:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SurrogateConfig:
    """Local model set G (docs/method-spec.md §2)."""

    samples: int = 100
    masks: int = 100
    grid: int = 4
    masking_rate: float = 0.3
    sigma: float = 0.25
    ridge: float = 1e-3
    batch_size: int = 512
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.samples < 1:
            raise ConfigError(f"samples must be at least 1, got {self.samples}", options=("samples",))
        if self.masks < 1:
            raise ConfigError(f"masks must be at least 1, got {self.masks}", options=("masks",))
        if self.grid < 1:
            raise ConfigError(f"grid must be at least 1, got {self.grid}", options=("grid",))
        if not 0.0 < self.masking_rate < 1.0:
            raise ConfigError(
                f"masking_rate must be in (0, 1), got {self.masking_rate}", options=("masking_rate",)
            )
        if self.sigma <= 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma}", options=("sigma",))
        if self.ridge < 0:
            raise ConfigError(f"ridge must be >= 0, got {self.ridge}", options=("ridge",))
        if self.batch_size < 1:
            raise ConfigError(
                f"batch_size must be at least 1, got {self.batch_size}", options=("batch_size",)
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = True) -> SurrogateConfig:
        return _from_dict(cls, data, strict=strict)


@dataclass(frozen=True)
class TrainConfig:
    """Training of a base classifier (``pnc train``)."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}", options=("epochs",))
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}", options=("lr",))
        if self.batch_size < 1:
            raise ConfigError(
                f"batch_size must be at least 1, got {self.batch_size}", options=("batch_size",)
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = True) -> TrainConfig:
        return _from_dict(cls, data, strict=strict)


SELECT_BY = ("loss", "val_acc")
HEADS = ("joint", "append")
MASK_PENALTIES = ("params", "channels")
INS_LOGITS = ("raw", "calibrated")


@dataclass(frozen=True)
class CloneConfig:
    """Training of adapter A, selector M and head F_c (docs/method-spec.md §4-5).

    ``head``: ``joint`` (default) fits one head over the target's and the module's features in closed
    form (``max_features``, ``standardize``, ``refit_on_val``); ``append`` trains an appended head by
    gradient with L_cls + alpha·L_loc + beta·L_ins + gamma·‖M‖₁ (defaults from benchmarks/bench_clone.py).
    ``max_ori_drop``: points of held-out accuracy on the target's classes a clone may lose before it is
    refused (None: never refused).
    """

    head: str = "joint"
    max_features: int = 1024
    random_features: int = 0  # joint head: N fixed random ReLU features before the solve (RanPAC; 0 off)
    shifts: int | None = None  # joint head: shifted copies of each training image (0-8; None: by cost)
    standardize: bool = True
    refit_on_val: bool = True
    max_ori_drop: float | None = 5.0

    epochs: int = 10
    lr: float = 1e-2
    mask_lr: float = 5e-2
    batch_size: int = 64
    alpha: float = 0.0
    beta: float = 0.0
    gamma: float = 1.0
    mask_penalty: str = "params"
    temperature: float = 1.0
    temperature_end: float = 0.1
    straight_through_epochs: int = 3
    init_score: float = 3.0
    finetune_epochs: int = 3
    finetune_lr_scale: float = 1.0
    ins_logits: str = "raw"
    max_extra_ratio: float | None = 0.1
    loc_samples: int = 8
    loc_masks: int = 8
    fraction: float = 0.3
    val_fraction: float = 0.2
    max_val_samples: int = 2048  # validation images are held in memory: this bounds them (docs/scale.md)
    select_by: str = "loss"
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        check_numbers(self)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}", options=("epochs",))
        if self.lr <= 0 or self.mask_lr <= 0:
            raise ConfigError("learning rates must be positive")
        if self.batch_size < 1:
            raise ConfigError(
                f"batch_size must be at least 1, got {self.batch_size}", options=("batch_size",)
            )
        if min(self.alpha, self.beta, self.gamma) < 0:
            raise ConfigError(
                "loss weights alpha, beta, gamma must be >= 0", options=("alpha", "beta", "gamma")
            )
        if self.temperature <= 0:
            raise ConfigError(
                f"temperature must be positive, got {self.temperature}", options=("temperature",)
            )
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}", options=("fraction",))
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction must be in [0, 1), got {self.val_fraction}", options=("val_fraction",)
            )
        if not 1 <= self.max_val_samples <= 10**7:
            raise ConfigError(
                f"max_val_samples must be in [1, 10000000], got {self.max_val_samples}",
                options=("max_val_samples",),
            )
        if self.select_by not in SELECT_BY:
            raise ConfigError(
                f"select_by must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}",
                options=("select_by",),
            )
        if self.mask_penalty not in MASK_PENALTIES:
            raise ConfigError(
                f"mask_penalty must be one of {', '.join(MASK_PENALTIES)}, got {self.mask_penalty!r}",
                options=("mask_penalty",),
            )
        if self.finetune_epochs < 0:
            raise ConfigError("finetune_epochs must be >= 0", options=("finetune_epochs",))
        if self.temperature_end <= 0:
            raise ConfigError(
                f"temperature_end must be positive, got {self.temperature_end}", options=("temperature_end",)
            )
        if self.straight_through_epochs < 0:
            raise ConfigError(
                f"straight_through_epochs must be >= 0, got {self.straight_through_epochs}",
                options=("straight_through_epochs",),
            )
        if self.finetune_lr_scale <= 0:
            raise ConfigError(
                f"finetune_lr_scale must be positive, got {self.finetune_lr_scale}",
                options=("finetune_lr_scale",),
            )
        if self.max_extra_ratio is not None and not self.max_extra_ratio > 0:
            raise ConfigError(
                f"max_extra_ratio must be positive (or None: no budget), got {self.max_extra_ratio}",
                options=("max_extra_ratio",),
            )
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if not 1 <= self.max_features <= 1 << 16:
            raise ConfigError(f"max_features must be in 1..65536, got {self.max_features}")
        if not 0 <= self.random_features <= 1 << 16:
            raise ConfigError(
                f"random_features must be in 0..65536, got {self.random_features}",
                options=("random_features",),
            )
        if self.shifts is not None and not 0 <= self.shifts <= 8:
            raise ConfigError(f"shifts must be in 0..8, got {self.shifts}", options=("shifts",))
        if self.shifts is not None and self.head != "joint":
            raise ConfigError("shifts apply to the joint head only (head joint)", options=("shifts", "head"))
        if self.random_features and self.head != "joint":
            raise ConfigError(
                "random_features apply to the joint head only (head joint)",
                options=("random_features", "head"),
            )
        if self.max_ori_drop is not None and not 0 <= self.max_ori_drop <= 100:
            raise ConfigError(f"max_ori_drop must be in [0, 100] points (or None), got {self.max_ori_drop}")
        if self.ins_logits not in INS_LOGITS:
            raise ConfigError(
                f"ins_logits must be one of {', '.join(INS_LOGITS)}, got {self.ins_logits!r}",
                options=("ins_logits",),
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = True) -> CloneConfig:
        return _from_dict(cls, data, strict=strict)
