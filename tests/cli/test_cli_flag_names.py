"""The CLI edge writes the parameter names an error declares as flags (cli/_common.py ``cli_message``).

Library code names parameters ("epochs must be at least 1"); the command line shows "--epochs".
tests/unit/test_layering.py checks that nothing below cli/ writes a flag itself.
"""

from __future__ import annotations

import pytest

from pnc_cli.cli._flags import cli_message, flag_of
from pnc_cli.core.errors import ConfigError, DataError, IncompatibleError, UsageError


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        (
            ConfigError("epochs must be at least 1, got 0", options=("epochs",)),
            "--epochs must be at least 1, got 0",
        ),
        (
            DataError("unknown class 'x' in classes; available: 0, 1", options=("classes",)),
            "unknown class 'x' in --classes; available: 0, 1",
        ),
        (
            IncompatibleError(
                "recompute them on the same split, split_seed and seed",
                options=("split", "split_seed", "seed"),
            ),
            "recompute them on the same --split, --split-seed and --seed",
        ),
        (
            UsageError("give delta NAME or all, not both", options=("delta", "all")),
            "give --delta NAME or --all, not both",
        ),
        (
            ConfigError("max_extra_ratio must be positive", options=("max_extra_ratio",)),
            "--max-extra must be positive",
        ),
        # names inside paths and file names stay as they are; errors without options are unchanged
        (
            UsageError("/tmp/classes/data.safetensors: pass data", options=("classes", "data")),
            "/tmp/classes/data.safetensors: pass --data",
        ),
        (UsageError("epochs must be at least 1"), "epochs must be at least 1"),
        # a name in the what-to-do part (after the last "; ") is replaced there only
        (
            UsageError(
                "device 'cuda' was asked for but no CUDA device is available; use device 'cpu'",
                options=("device",),
            ),
            "device 'cuda' was asked for but no CUDA device is available; use --device 'cpu'",
        ),
        (
            IncompatibleError(
                "a and b use different masks (8 masks, grid 2); recompute them with the same masks and grid",
                options=("masks", "grid"),
            ),
            "a and b use different masks (8 masks, grid 2); recompute them with the same --masks and --grid",
        ),
        # otherwise its first occurrence
        (
            DataError("classes ',' selects no classes; give class names", options=("classes",)),
            "--classes ',' selects no classes; give class names",
        ),
    ],
)
def test_cli_message_writes_flags(exc: Exception, shown: str) -> None:
    assert cli_message(exc) == shown  # type: ignore[arg-type]


def test_flag_of() -> None:
    assert flag_of("batch_size") == "--batch-size"
    assert flag_of("max_extra_ratio") == "--max-extra"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--classes", "4-0"], "--classes range '4-0' is empty"),
    ],
)
def test_the_command_line_names_the_flag(run_cli, in_tmp, args: list[str], needle: str) -> None:
    base = {"--arch": "tiny_cnn", "--data": "digits", "--classes": "0-4", "--epochs": "1"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for kv in base.items() for x in kv]
    code, stdout, stderr = run_cli("train", *flat, "-o", "out.safetensors", "--quiet")
    assert code == 2 and stdout == ""
    assert needle in stderr, stderr
    assert not (in_tmp / "out.safetensors").exists()
