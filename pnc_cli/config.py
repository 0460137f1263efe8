"""Frozen configuration dataclasses, the single source of defaults.

Layer L0: stdlib only. Each stage has one config; ``__post_init__`` validates and raises
``ConfigError`` naming the bad value; ``to_dict``/``from_dict`` round-trip through JSON metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")

DEFAULT_SEED = 0


def _from_dict(cls: type[T], data: dict[str, Any], *, strict: bool = True) -> T:
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown and strict:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SurrogateConfig:
    """Local model set G (method spec section 2)."""

    samples: int = 100
    masks: int = 100
    grid: int = 4
    masking_rate: float = 0.3
    sigma: float = 0.25
    ridge: float = 1e-3
    batch_size: int = 512
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {self.samples}")
        if self.masks < 1:
            raise ConfigError(f"--masks must be at least 1, got {self.masks}")
        if self.grid < 1:
            raise ConfigError(f"--grid must be at least 1, got {self.grid}")
        if not 0.0 < self.masking_rate < 1.0:
            raise ConfigError(f"--masking-rate must be in (0, 1), got {self.masking_rate}")
        if self.sigma <= 0:
            raise ConfigError(f"--sigma must be positive, got {self.sigma}")
        if self.ridge < 0:
            raise ConfigError(f"--ridge must be >= 0, got {self.ridge}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")

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
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = True) -> TrainConfig:
        return _from_dict(cls, data, strict=strict)
