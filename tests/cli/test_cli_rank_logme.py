"""`pnc rank-sources` (default --score logme) through Typer's CliRunner: the exit status (0 when a source
was ranked, 1 when none was, --strict: 1 on any ineligible source), ineligible sources listed with their
reasons in the table and the JSON, --clone-best with the winner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from pnc_cli.api import rank_sources
from pnc_cli.core.config import SurrogateConfig, TrainConfig
from pnc_cli.core.errors import EXIT_USAGE

torch.set_num_threads(1)
FAST = ("--device", "cpu", "--quiet", "--logme-samples", "200")


@pytest.fixture(scope="module")
def models(make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rank-logme-cli")
    junk = root / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    target, good = make_tiny_model("0-4"), make_tiny_model("5-9")
    rank_sources(  # a surrogate file next to the models, as a glob like *.safetensors would catch it
        target=target,
        sources=[good],
        classes="5",
        data="digits",
        score="similarity",
        config=SurrogateConfig(samples=4, masks=4),
        surrogates_dir=root,
        device="cpu",
    )
    return {
        "target": target,
        "good": good,
        "weak": make_tiny_model("5-9", config=TrainConfig(epochs=1, lr=1e-3, seed=1), fraction=0.2),
        "junk": junk,
        "surrogate": next(p for p in root.glob("*.safetensors") if p != junk),
    }


def _run(run_cli: Callable, models: dict[str, Path], names: list[str], *extra: object):  # noqa: ANN202
    return run_cli(
        "rank-sources",
        "-t",
        models["target"],
        "-c",
        "5-9",
        "-d",
        "digits",
        *[models[n] for n in names],
        *FAST,
        *extra,
    )


def test_ranked_with_ineligible_ones_exits_0_and_lists_them_in_json(
    run_cli: Callable, models: dict[str, Path]
) -> None:
    res = _run(run_cli, models, ["junk", "weak", "surrogate", "good"], "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["score"] == "logme" and doc["eligible"] == 2 and doc["failed"] == 2
    ranked, bad = doc["ranking"][:2], doc["ranking"][2:]
    assert [r["rank"] for r in ranked] == [1, 2] and all(r["span"] for r in ranked)
    assert [r["source"] for r in bad] == [str(models["junk"]), str(models["surrogate"])]
    assert all(not r["eligible"] and r["reason"] and r["rank"] is None for r in bad)


def test_table_lists_the_reasons_and_exits_0(run_cli: Callable, models: dict[str, Path]) -> None:
    res = _run(run_cli, models, ["good", "junk", "target"])
    assert res.exit_code == 0, res.stderr
    assert "ineligible because" in res.stdout and "lacks classes 5" in res.stdout
    assert "not a safetensors file" in res.stdout and "E=" in res.stdout


def test_no_eligible_source_exits_1_after_the_table(run_cli: Callable, models: dict[str, Path]) -> None:
    res = _run(run_cli, models, ["junk", "surrogate"], "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["eligible"] == 0 and doc["failed"] == 2


def test_strict_exits_1_on_any_ineligible_source_and_clones_nothing(
    run_cli: Callable, models: dict[str, Path], tmp_path: Path
) -> None:
    assert _run(run_cli, models, ["good", "junk"], "--strict").exit_code == 1
    assert _run(run_cli, models, ["good", "weak"], "--strict").exit_code == 0
    out = tmp_path / "delta.safetensors"
    res = _run(run_cli, models, ["good", "junk"], "--strict", "--clone-best", "-o", out, "--json")
    assert res.exit_code == 1 and not out.exists()
    assert "clone" not in json.loads(res.stdout)


def test_clone_best_clones_the_winner_despite_an_ineligible_source(
    run_cli: Callable, models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "delta.safetensors"
    res = _run(run_cli, models, ["weak", "junk", "good"], "--clone-best", "-o", out, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert out.exists() and doc["clone"]["source"] == doc["ranking"][0]["source"]
    assert doc["clone"]["head"] == "joint" and {"ori_acc", "tar_acc", "avg_acc"} <= set(doc["clone"])


@pytest.mark.parametrize("extra", [("--logme-samples", "-1"), ("--score", "leep")])
def test_bad_options_exit_2(run_cli: Callable, models: dict[str, Path], extra: tuple[str, ...]) -> None:
    res = _run(run_cli, models, ["good"], *extra)
    assert res.exit_code == EXIT_USAGE and res.stdout == ""
