"""The config dataclasses (pnc_cli.core.config): defaults, validation, JSON round trip, and errors that
name the parameter (never a flag) and declare it in ``options``."""

from __future__ import annotations

import json

import pytest

from pnc_cli.core.config import CloneConfig, SurrogateConfig, TrainConfig
from pnc_cli.core.errors import EXIT_USAGE, ConfigError


@pytest.mark.parametrize("cls", [SurrogateConfig, TrainConfig, CloneConfig])
def test_round_trip_through_json(cls) -> None:
    config = cls()
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_keys_are_refused_unless_lenient() -> None:
    with pytest.raises(ConfigError, match="unknown TrainConfig keys: nope"):
        TrainConfig.from_dict({"epochs": 2, "nope": 1})
    assert TrainConfig.from_dict({"epochs": 2, "nope": 1}, strict=False) == TrainConfig(epochs=2)


@pytest.mark.parametrize(
    ("make", "message", "options"),
    [
        (lambda: TrainConfig(epochs=0), "epochs must be at least 1, got 0", ("epochs",)),
        (lambda: TrainConfig(batch_size=0), "batch_size must be at least 1, got 0", ("batch_size",)),
        (
            lambda: SurrogateConfig(masking_rate=1.0),
            "masking_rate must be in (0, 1), got 1.0",
            ("masking_rate",),
        ),
        (lambda: SurrogateConfig(grid=0), "grid must be at least 1, got 0", ("grid",)),
        (
            lambda: CloneConfig(select_by="x"),
            "select_by must be one of loss, val_acc, got 'x'",
            ("select_by",),
        ),
        (
            lambda: CloneConfig(gamma=-1),
            "loss weights alpha, beta, gamma must be >= 0",
            ("alpha", "beta", "gamma"),
        ),
        (lambda: CloneConfig(max_extra_ratio=0), "max_extra_ratio must be positive", ("max_extra_ratio",)),
    ],
)
def test_bad_values_name_the_parameter(make, message: str, options: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert str(info.value).startswith(message)
    assert info.value.options == options
    assert "--" not in str(info.value)
    assert info.value.exit_code == EXIT_USAGE
