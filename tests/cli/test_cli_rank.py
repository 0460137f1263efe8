"""`pnc rank-sources --score similarity` through Typer's CliRunner: --json output, --surrogates-dir reuse,
--clone-best, bad options → exit 2 (the default --score logme and the exit status: test_cli_rank_logme.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pnc_cli.core.config import TrainConfig
from pnc_cli.core.errors import EXIT_USAGE

torch.set_num_threads(1)
FAST = ("--samples", "10", "--masks", "12", "--device", "cpu", "--quiet", "--score", "similarity")
ROW_KEYS = {
    "rank",
    "source",
    "score",
    "similarity",
    "evidence",
    "arch",
    "params",
    "seconds",
    "eligible",
    "reason",
}


@pytest.fixture(scope="module")
def models(make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    bad = tmp_path_factory.mktemp("rank-cli") / "garbage.safetensors"
    bad.write_bytes(b"\x00" * 40)
    return {
        "target": make_tiny_model("0-4"),
        "good": make_tiny_model("5-9"),
        "weak": make_tiny_model("5-9", config=TrainConfig(epochs=1, lr=1e-3, seed=1), fraction=0.2),
        "bad": bad,
    }


def test_json_ranks_every_readable_source(run_cli: Callable, models: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli(
        "rank-sources",
        "-t",
        models["target"],
        "-c",
        "5",
        "-d",
        "digits",
        models["weak"],
        models["good"],
        "--surrogates-dir",
        tmp_path / "G",
        "--json",
        *FAST,
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["failed"] == 0 and doc["classes"] == ["5"] and doc["samples"] == 10 and doc["masks"] == 12
    assert [r["rank"] for r in doc["ranking"]] == [1, 2]
    assert all(ROW_KEYS <= set(r) for r in doc["ranking"])
    assert doc["ranking"][0]["score"] >= doc["ranking"][1]["score"]
    again = json.loads(
        run_cli(
            "rank-sources",
            "-t",
            models["target"],
            "-c",
            "5",
            "-d",
            "digits",
            models["weak"],
            models["good"],
            "--surrogates-dir",
            tmp_path / "G",
            "--json",
            *FAST,
        ).stdout
    )
    assert all(r["cached"] for r in again["ranking"]) and again["target"]["cached"]
    assert [r["score"] for r in again["ranking"]] == pytest.approx([r["score"] for r in doc["ranking"]])


def test_unreadable_source_reported_rest_ranked_exit_0(run_cli: Callable, models: dict[str, Path]) -> None:
    res = run_cli(
        "rank-sources",
        "-t",
        models["target"],
        "-c",
        "5",
        "-d",
        "digits",
        models["bad"],
        models["good"],
        "--json",
        *FAST,
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["failed"] == 1
    good, bad = doc["ranking"]
    assert good["eligible"] and good["rank"] == 1 and good["source"] == str(models["good"])
    assert (
        not bad["eligible"] and bad["rank"] is None and bad["source"] == str(models["bad"]) and bad["reason"]
    )


def test_table_then_exit_1_with_strict(run_cli: Callable, models: dict[str, Path]) -> None:
    res = run_cli(
        "rank-sources",
        "-t",
        models["target"],
        "-c",
        "5",
        "-d",
        "digits",
        models["good"],
        models["target"],
        "--strict",
        *FAST,
    )
    assert res.exit_code == 1
    assert "rank" in res.stdout and "lacks class 5" in res.stdout and "tiny_cnn" in res.stdout


def test_clone_best_writes_the_delta(run_cli: Callable, models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "delta.safetensors"
    res = run_cli(
        "rank-sources",
        "-t",
        models["target"],
        "-c",
        "5",
        "-d",
        "digits",
        models["weak"],
        models["good"],
        "--clone-best",
        "-o",
        out,
        "--clone-epochs",
        "1",
        "--json",
        *FAST,
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert out.exists() and doc["clone"]["source"] == doc["ranking"][0]["source"]
    assert {"ori_acc", "tar_acc", "avg_acc"} <= set(doc["clone"])


@pytest.mark.parametrize(
    "extra",
    [
        ("--columns", "some"),
        ("--score", "acc"),
        ("--clone-best",),
        ("-o", "x.safetensors"),
        ("--samples", "0"),
    ],
)
def test_bad_options_exit_2(run_cli: Callable, models: dict[str, Path], extra: tuple[str, ...]) -> None:
    res = run_cli(
        "rank-sources", "-t", models["target"], "-c", "5", "-d", "digits", models["good"], *FAST, *extra
    )
    assert res.exit_code == EXIT_USAGE and res.stdout == ""
