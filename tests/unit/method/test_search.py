"""Position search (docs/method-spec.md §5; pnc_cli.method.search, pnc_cli.io.search_file,
``pnc clone --search``).

``choose`` is tested on hand-made scores; one real search (tiny_cnn pair from tests/conftest.py, one
epoch per position) feeds the search-file round trip and ``clone --search``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from pnc_cli.api import cloning
from pnc_cli.api.branches import branch_from_delta
from pnc_cli.cli import app
from pnc_cli.core.config import CloneConfig, SurrogateConfig
from pnc_cli.core.errors import IncompatibleError
from pnc_cli.io.delta_file import read_delta
from pnc_cli.io.model_file import load_model
from pnc_cli.io.search_file import CURVE_FIELDS, SearchFile, check_inputs, read_search, write_search
from pnc_cli.method.search import PositionScore, choose

torch.set_num_threads(1)

FAST = CloneConfig(
    head="append", epochs=1, finetune_epochs=0, loc_samples=4, loc_masks=4, seed=0, max_ori_drop=None
)  # the position search of the appended head


def score(position: int, loss: float, val: float) -> PositionScore:
    return PositionScore(position, position, loss, val, val, val, 1.0, 0.1)


# ----------------------------------------------------------------------------- choosing R*
def test_choose_by_loss_takes_the_lowest() -> None:
    scores = [score(2, 0.5, 0.9), score(1, 0.2, 0.7), score(0, 0.3, 0.95)]
    assert choose(scores, "loss") == 1


def test_choose_by_val_acc_takes_the_highest() -> None:
    scores = [score(2, 0.5, 0.9), score(1, 0.2, 0.7), score(0, 0.3, 0.95)]
    assert choose(scores, "val_acc") == 2


@pytest.mark.parametrize("select_by", ["loss", "val_acc"])
def test_ties_go_to_the_later_block(select_by: str) -> None:
    """Equal loss (or accuracy): the larger R wins — the smaller branch."""
    scores = [score(0, 0.2, 0.9), score(2, 0.2, 0.9), score(1, 0.2, 0.9)]
    assert scores[choose(scores, select_by)].position == 2
    scores = [score(3, 0.4, 0.8), score(1, 0.2, 0.9), score(0, 0.2, 0.9)]
    assert scores[choose(scores, select_by)].position == 1


def test_choose_by_loss_ignores_nan_accuracy() -> None:
    """Without a validation split the accuracies are NaN; choosing by loss must not care."""
    scores = [score(1, 0.4, math.nan), score(0, 0.1, math.nan)]
    assert choose(scores, "loss") == 1


# ----------------------------------------------------------------------------- one real search
@pytest.fixture(scope="module")
def searched(
    tiny_target: Path, tiny_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("search")
    doc = cloning.search(
        source=tiny_source,
        target=tiny_target,
        classes="5",
        output=out / "search.safetensors",
        config=FAST,
        surrogate_config=SurrogateConfig(samples=16, masks=16),
        device="cpu",
    )
    return SimpleNamespace(
        doc=doc, path=out / "search.safetensors", dir=out, target=tiny_target, source=tiny_source
    )


def test_search_covers_every_position_from_last_to_first(searched: SimpleNamespace) -> None:
    blocks = load_model(searched.target).network.num_blocks
    positions = [s["position"] for s in searched.doc["search"]]
    assert positions == list(range(blocks - 1, -1, -1)) == [2, 1, 0]
    losses = [s["loss"] for s in searched.doc["search"]]
    assert all(math.isfinite(v) for v in losses)
    best = min(range(len(losses)), key=lambda i: (losses[i], -positions[i]))
    assert searched.doc["position"] == positions[best]
    for s in searched.doc["search"]:
        assert 0.0 <= s["val_avg_acc"] <= 1.0 and 0.0 < s["kept_fraction"] <= 1.0 and s["seconds"] >= 0


def test_search_file_round_trip(searched: SimpleNamespace, tmp_path: Path) -> None:
    sf = read_search(searched.path)
    assert set(sf.curves) == set(CURVE_FIELDS)
    assert sf.curves["position"].tolist() == [2, 1, 0]
    for i, s in enumerate(searched.doc["search"]):
        for f in CURVE_FIELDS:
            assert sf.curves[f][i].item() == pytest.approx(s[f]), f
    assert sf.inputs["classes"] == ["5"] and sf.inputs["target"] == load_model(searched.target).sha256
    assert sf.delta.info["position"]["target"] == searched.doc["position"]
    branch = branch_from_delta(sf.delta)  # R*'s trained branch is in the file, ready to use
    assert branch.position == searched.doc["position"] and branch.classes == ["5"]
    # write → read → write gives the same bytes
    again = tmp_path / "again.safetensors"
    write_search(again, SearchFile(sf.delta, sf.curves, sf.inputs))
    assert again.read_bytes() == searched.path.read_bytes()
    with pytest.raises(IncompatibleError, match="another classes"):
        check_inputs(sf, {**sf.inputs, "classes": ["6"]}, searched.path)


def _run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_clone_finishes_from_the_search_file(searched: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "d.safetensors"
    res = _run(
        "clone",
        "-s",
        searched.source,
        "-t",
        searched.target,
        "-c",
        "5",
        "--search",
        searched.path,
        "-o",
        out,
        "--json",
        "--quiet",
    )
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["position"] == searched.doc["position"]
    assert [s["position"] for s in doc["search"]] == [2, 1, 0]
    # nothing was trained again: the delta carries exactly the search file's branch
    delta, sf = read_delta(out), read_search(searched.path)
    assert set(delta.tensors) == set(sf.delta.tensors)
    assert all(torch.equal(delta.tensors[k], v) for k, v in sf.delta.tensors.items())
    assert doc["tar_acc"] == pytest.approx(searched.doc["tar_acc"])


@pytest.mark.parametrize("change", ["classes", "target", "fraction"])
def test_clone_refuses_a_search_file_made_with_other_inputs(
    searched: SimpleNamespace, tmp_path: Path, make_tiny_model: Any, change: str
) -> None:
    target, classes, extra = searched.target, "5", []
    if change == "classes":
        classes = "6"
    elif change == "target":
        target = make_tiny_model("0-4", fraction=0.9)  # another target with the same classes
    else:
        extra = ["--fraction", "0.5"]
    out = tmp_path / "d.safetensors"
    res = _run(
        "clone",
        "-s",
        searched.source,
        "-t",
        target,
        "-c",
        classes,
        "--search",
        searched.path,
        "-o",
        out,
        *extra,
    )
    assert res.exit_code == 4, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("error:")
        and f"another {change}" in lines[-1]
        and "pnc search again" in lines[-1]
    )
    assert sum(line.startswith("error:") for line in lines) == 1
    assert res.stdout == "" and not out.exists()


def test_search_config_is_recorded(searched: SimpleNamespace) -> None:
    sf = read_search(searched.path)
    assert CloneConfig.from_dict(sf.delta.info["config"]["clone"]) == FAST
