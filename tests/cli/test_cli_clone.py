"""`pnc clone` and `pnc search` through Typer's CliRunner (docs/method-spec.md §3-5, §7; issue 4).

The models are trained here with `pnc train ... --data digits`, so they record their training data and
the short form `pnc clone --source S --target T --classes 5 -o d.safetensors` works. Pairs: tiny_cnn →
tiny_cnn (same architecture) and tiny_cnn → lenet5 (mixed). Bad input: one error line on stderr, the
documented exit code (docs/cloning.md, "Errors"), nothing on stdout, nothing written. The delta-file
errors of `pnc apply` / `pnc remove` (another target, truncated, newer version, online without its
source, remove on a plain model) are covered by tests/cli/test_cli_deltas.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pnc_cli.api.branches import load_cloned
from pnc_cli.cli import app
from pnc_cli.io.delta_file import read_delta
from pnc_cli.io.model_file import load_model
from pnc_cli.io.search_file import read_search
from tests.conftest import dir_snapshot

torch.set_num_threads(1)

JSON_KEYS = {"ori_acc", "tar_acc", "avg_acc", "locality", "extra_params_ratio", "position", "search"}
FAST = ["--epochs", "1"]
SEARCH_APPEND = ["--head", "append", "--epochs", "1"]  # the gradient-trained appended head, by position
APPEND = [*SEARCH_APPEND, "--max-ori-drop", "-1"]  # 1 epoch on tiny nets: no Ori gate


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args: Any) -> Any:
    res = run(*args)
    assert res.exit_code == 0, (args, res.stdout, res.stderr)
    return res


def train(out: Path, arch: str, classes: str, *extra: Any, data: str | Path = "digits") -> Path:
    ok(
        "train",
        "--arch",
        arch,
        "--data",
        data,
        "--classes",
        classes,
        "--epochs",
        3,
        "--lr",
        0.01,
        "--input-size",
        16,
        "-o",
        out,
        "--quiet",
        *extra,
    )
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("clone-models")
    x, y = _digits()
    rgb = d / "digits-rgb.npz"  # the same digits as 3-channel images
    np.savez(rgb, x=np.repeat(x[..., None], 3, axis=-1), y=y, classes=np.array([str(i) for i in range(10)]))
    low = d / "digits-0-4.npz"  # data without the classes to clone
    np.savez(low, x=x[y < 5], y=y[y < 5])
    return SimpleNamespace(
        dir=d,
        target=train(d / "target.safetensors", "tiny_cnn", "0-4"),
        source=train(d / "source.safetensors", "tiny_cnn", "5-9"),
        lenet=train(d / "lenet.safetensors", "lenet5", "0-4"),
        small=train(d / "small.safetensors", "tiny_cnn", "0-4", "--input-size", 12),
        rgb=train(d / "rgb.safetensors", "tiny_cnn", "5-9", data=rgb),
        low=low,
    )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    dg = load_digits()
    return (dg.images / 16.0).astype(np.float32), dg.target.astype(np.int64)


@pytest.fixture(scope="module")
def at_one(models: SimpleNamespace) -> SimpleNamespace:
    """`pnc clone --position 1 --merged`: the delta, the cloned model and the JSON document."""
    d = models.dir
    res = ok(
        "clone",
        "-s",
        models.source,
        "-t",
        models.target,
        "-c",
        5,
        *APPEND,
        "--position",
        1,
        "-o",
        d / "p1.safetensors",
        "--merged",
        d / "p1-merged.safetensors",
        "--json",
    )
    return SimpleNamespace(
        doc=json.loads(res.stdout), delta=d / "p1.safetensors", merged=d / "p1-merged.safetensors"
    )


# ----------------------------------------------------------------------------- the short form
def test_short_form_uses_the_recorded_data_and_prints_one_json_document(
    models: SimpleNamespace, tmp_path: Path
) -> None:
    out = tmp_path / "d.safetensors"
    res = ok(
        "clone",
        "--source",
        models.source,
        "--target",
        models.target,
        "--classes",
        5,
        "-o",
        out,
        *FAST,
        "--json",
    )
    doc = json.loads(res.stdout)  # exactly one document: json.loads refuses trailing text
    assert JSON_KEYS <= set(doc)
    assert "using the source's recorded training data: digits" in res.stderr
    assert "using the target's recorded training data: digits" in res.stderr
    assert doc["data"] == doc["target_data"] == "digits" and doc["classes"] == ["5"]
    for key in ("ori_acc", "tar_acc", "avg_acc", "locality"):
        assert 0.0 <= doc[key] <= 1.0, key
    assert doc["ori_acc"] > 0.5 and doc["tar_acc"] > 0.5  # 1 epoch on tiny models: sanity, not quality
    assert (
        0.0
        < doc["extra_params_ratio"]
        == pytest.approx(doc["extra_params"] / load_model(models.target).network.num_params())
    )
    # the joint head (default) searched every source span [0:E] from the input, pooled to fit
    assert doc["head"] == "joint" and {s["source_end"] for s in doc["search"]} <= {1, 2, 3}
    assert doc["position"] == 0 and doc["mode"] == "offline"
    assert doc["extra_params_ratio"] <= 0.1 + 1e-9  # the default size budget, head included
    delta = read_delta(out)
    assert delta.classes == ["5"] and delta.info["target"]["sha256"] == load_model(models.target).sha256
    assert delta.info["metrics"]["tar_acc"] == pytest.approx(doc["tar_acc"])
    assert any(k.startswith("source.") for k in delta.tensors)


def test_table_output(models: SimpleNamespace, tmp_path: Path) -> None:
    res = ok(
        "clone",
        "-s",
        models.source,
        "-t",
        models.target,
        "-c",
        5,
        *APPEND,
        "--position",
        2,
        "-o",
        tmp_path / "d.safetensors",
        "--quiet",
    )
    for label in (
        "position search",
        "R*",
        "Ori Acc %",
        "Tar Acc %",
        "Avg Acc %",
        "locality %",
        "extra params",
    ):
        assert label in res.stdout, label
    assert res.stderr == ""  # --quiet: no notes, no progress


def test_position_1(at_one: SimpleNamespace) -> None:
    doc = at_one.doc
    assert doc["position"] == 1 and doc["source_position"] == 1
    assert [s["position"] for s in doc["search"]] == [1]
    info = read_delta(at_one.delta).info
    assert info["position"] == {
        "target": 1,
        "source": 1,
        "source_end": 3,
        "target_blocks": 3,
        "source_blocks": 3,
    }
    assert info["head"] == {"kind": "append", "pool": 0}


def test_merged_writes_a_working_cloned_model(models: SimpleNamespace, at_one: SimpleNamespace) -> None:
    assert at_one.doc["merged"] == str(at_one.merged)
    info = json.loads(ok("info", at_one.merged, "--json").stdout)
    assert info["kind"] == "cloned"
    cloned, spec, cf = load_cloned(at_one.merged)
    assert cloned.classes == ["0", "1", "2", "3", "4", "5"] and [d.name for d in cf.deltas] == ["clone-5"]
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        out = cloned(x)
        assert torch.equal(out[:, :5], load_model(models.target).network(x))


def test_link_source_writes_an_online_delta_that_needs_its_source(
    models: SimpleNamespace, at_one: SimpleNamespace, tmp_path: Path, snapshot: Any
) -> None:
    online, cloned = tmp_path / "online.safetensors", tmp_path / "cloned.safetensors"
    ok(
        "clone",
        "-s",
        models.source,
        "-t",
        models.target,
        "-c",
        5,
        *APPEND,
        "--position",
        1,
        "--link-source",
        "-o",
        online,
        "--quiet",
    )
    delta = read_delta(online)
    assert delta.mode == "online" and not any(k.startswith("source.") for k in delta.tensors)
    assert delta.info["source"]["sha256"] == load_model(models.source).sha256
    assert online.stat().st_size < at_one.delta.stat().st_size
    before = snapshot(tmp_path)
    res = run("apply", "-t", models.target, "-d", online, "-o", cloned)
    assert res.exit_code == 2 and res.stdout == "" and "--source" in res.stderr
    assert snapshot(tmp_path) == before
    ok("apply", "-t", models.target, "-d", online, "--source", models.source, "-o", cloned, "--quiet")
    # materialised online == offline: the same seed trained the same branch
    got, offline = load_cloned(cloned)[2].deltas[0], read_delta(at_one.delta)
    assert got.mode == "offline" and set(got.tensors) == set(offline.tensors)
    assert all(torch.equal(got.tensors[k], v) for k, v in offline.tensors.items())


def test_mixed_pair_tiny_cnn_to_lenet5(models: SimpleNamespace, tmp_path: Path) -> None:
    out, cloned = tmp_path / "d.safetensors", tmp_path / "c.safetensors"
    doc = json.loads(
        ok("clone", "-s", models.source, "-t", models.lenet, "-c", 5, *FAST, "-o", out, "--json").stdout
    )
    assert doc["head"] == "joint" and doc["search"]
    info = read_delta(out).info
    assert (info["source"]["arch"], info["target"]["arch"]) == ("tiny_cnn", "lenet5")
    ok("apply", "-t", models.lenet, "-d", out, "-o", cloned, "--quiet")
    model, _, _ = load_cloned(cloned)
    x = torch.rand(4, 1, 16, 16)
    target = load_model(models.lenet)
    with torch.no_grad():
        assert model(x).shape == (4, 6)
        # the joint head reads the target's penultimate features; the target itself is untouched
        assert all(
            torch.equal(v, target.network.state_dict()[k]) for k, v in model.target_model.state_dict().items()
        )


def test_rename_lets_a_colliding_class_in(models: SimpleNamespace, tmp_path: Path) -> None:
    """lenet5 (0-4) as the source of class 2 for a target that already has a '2'."""
    out, cloned = tmp_path / "d.safetensors", tmp_path / "c.safetensors"
    doc = json.loads(
        ok(
            "clone",
            "-s",
            models.lenet,
            "-t",
            models.target,
            "-c",
            2,
            "--rename",
            "2=two",
            *APPEND,
            "--position",
            1,
            "-o",
            out,
            "--json",
        ).stdout
    )
    assert doc["classes"] == ["two"] and read_delta(out).classes == ["two"]
    assert read_delta(out).info["source_class_index"] == [2]
    res = ok("apply", "-t", models.target, "-d", out, "-o", cloned, "--json")
    assert json.loads(res.stdout)["classes"] == ["0", "1", "2", "3", "4", "two"]


def test_search_writes_a_plot_and_a_search_file(models: SimpleNamespace, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "search.safetensors", tmp_path / "p.png"
    doc = json.loads(
        ok(
            "search",
            "-s",
            models.source,
            "-t",
            models.target,
            "-c",
            5,
            *FAST,
            "-o",
            out,
            "--plot",
            png,
            "--json",
        ).stdout
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and doc["plot"] == str(png)
    assert [s["source_end"] for s in doc["search"]] == sf_ends(doc) and JSON_KEYS <= set(doc)
    sf = read_search(out)
    assert sf.curves["source_end"].tolist() == sf_ends(doc)
    assert sf.delta.info["position"]["source_end"] == doc["source_end"] and doc["head"] == "joint"
    assert json.loads(ok("info", out, "--json").stdout)["kind"] == "search"


def sf_ends(doc: dict[str, Any]) -> list[int]:
    """The spans a joint search reports, in order (each source block output, at up to 3 poolings)."""
    ends = [s["source_end"] for s in doc["search"]]
    assert ends == sorted(ends) and set(ends) <= {1, 2, 3}
    return ends


def test_search_then_clone_append_finishes_with_the_searched_settings(
    models: SimpleNamespace, tmp_path: Path
) -> None:
    """An append-head search file finished by `clone --search`: the delta records the settings that
    trained it (the search's), not the finishing command's defaults."""
    sf, out = tmp_path / "s.safetensors", tmp_path / "d.safetensors"
    ok(
        "search",
        "-s",
        models.source,
        "-t",
        models.target,
        "-c",
        5,
        *SEARCH_APPEND,
        "--lr",
        0.02,
        "-o",
        sf,
        "--quiet",
    )
    ok(
        "clone",
        "-s",
        models.source,
        "-t",
        models.target,
        "-c",
        5,
        "--head",
        "append",
        "--search",
        sf,
        "-o",
        out,
        "--quiet",
    )
    clone_cfg = read_delta(out).info["config"]["clone"]
    assert clone_cfg["lr"] == 0.02 and clone_cfg["epochs"] == 1 and clone_cfg["head"] == "append"


# ----------------------------------------------------------------------------- bad input
def _bad(m: SimpleNamespace) -> dict[str, tuple[list[Any], int, str]]:
    s, t = m.source, m.target
    return {
        "class not in the source": (["clone", "-s", s, "-t", t, "-c", 3], 2, "unknown class '3'"),
        "class the target has": (
            ["clone", "-s", m.lenet, "-t", t, "-c", 2],
            2,
            "already has class '2'; pass --rename",
        ),
        "rename onto a target class": (
            ["clone", "-s", s, "-t", t, "-c", 5, "--rename", "5=0"],
            2,
            "already has class '0'; pass --rename 5=NEW_NAME",
        ),
        "rename two onto one name": (
            ["clone", "-s", s, "-t", t, "-c", "5,6", "--rename", "5=x", "--rename", "6=x"],
            2,
            "the same name",
        ),
        "rename without =": (["clone", "-s", s, "-t", t, "-c", 5, "--rename", "5"], 2, "must be OLD=NEW"),
        "data without the classes": (
            ["clone", "-s", s, "-t", t, "-c", 5, "--data", m.low],
            2,
            "cannot supply the cloned classes 5",
        ),
        "input size differs": (["clone", "-s", s, "-t", m.small, "-c", 5], 4, "takes 1x16px inputs"),
        "input channels differ": (["clone", "-s", m.rgb, "-t", t, "-c", 5], 4, "takes 3x16px inputs"),
        "position out of range": (["clone", "-s", s, "-t", t, "-c", 5, "--position", 3], 2, "out of range"),
        "negative position": (["clone", "-s", s, "-t", t, "-c", 5, "--position", -1], 2, "out of range"),
        "position not a number": (
            ["clone", "-s", s, "-t", t, "-c", 5, "--position", "last"],
            2,
            "'auto' or a block index",
        ),
        "search file is a model": (
            ["clone", "-s", s, "-t", t, "-c", 5, "--search", t],
            2,
            "not a search file",
        ),
        "search: class not in the source": (["search", "-s", s, "-t", t, "-c", 3], 2, "unknown class '3'"),
        "search: input size differs": (["search", "-s", s, "-t", m.small, "-c", 5], 4, "takes 1x16px inputs"),
    }


BAD = [
    "class not in the source",
    "class the target has",
    "rename onto a target class",
    "rename two onto one name",
    "rename without =",
    "data without the classes",
    "input size differs",
    "input channels differ",
    "position out of range",
    "negative position",
    "position not a number",
    "search file is a model",
    "search: class not in the source",
    "search: input size differs",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input(models: SimpleNamespace, tmp_path: Path, case: str) -> None:
    args, code, message = _bad(models)[case]
    out = tmp_path / "out.safetensors"
    args = [*args, "-o", out, *FAST]
    if args[0] == "clone":
        args += ["--merged", tmp_path / "merged.safetensors"]
    else:
        args += ["--plot", tmp_path / "p.png"]
    before_models, before_tmp = dir_snapshot(models.dir), dir_snapshot(tmp_path)
    res = run(*args)
    assert res.exit_code == code, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = [line.strip() for line in res.stderr.strip().splitlines()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1] and message in errors[0], res.stderr
    assert all(line.startswith("using the ") for line in lines[:-1]), res.stderr  # only data notes before it
    assert dir_snapshot(tmp_path) == before_tmp and dir_snapshot(models.dir) == before_models


@pytest.mark.parametrize("which", ["target", "source", "merged"])
def test_outputs_never_overwrite_inputs_or_each_other(
    models: SimpleNamespace, tmp_path: Path, which: str
) -> None:
    out = tmp_path / "d.safetensors"
    args = ["clone", "-s", models.source, "-t", models.target, "-c", 5, *FAST, "--force"]
    if which == "merged":
        args += ["-o", out, "--merged", out]
        message = "the output files must differ"
    else:
        args += ["-o", getattr(models, which)]
        message = "is also an input"
    before_models, before_tmp = dir_snapshot(models.dir), dir_snapshot(tmp_path)
    res = run(*args)
    assert res.exit_code == 2 and res.stdout == "", res.stderr
    assert (
        res.stderr.startswith("error:")
        and message in res.stderr
        and len(res.stderr.strip().splitlines()) == 1
    )
    assert dir_snapshot(models.dir) == before_models and dir_snapshot(tmp_path) == before_tmp


def test_clone_onto_a_cloned_model_trains_against_the_stack(
    models: SimpleNamespace, at_one: SimpleNamespace, tmp_path: Path
) -> None:
    """--target may be a cloned model: the new delta is trained with the earlier deltas in place, is
    made for the same base target, stacks with --merged, and the earlier branch is untouched."""
    delta, merged = tmp_path / "d6.safetensors", tmp_path / "c56.safetensors"
    before = {k: v.clone() for k, v in load_cloned(at_one.merged)[0].state_dict().items()}
    doc = json.loads(
        ok(
            "clone",
            "-s",
            models.source,
            "-t",
            at_one.merged,
            "-c",
            "6",
            *APPEND,
            "--position",
            "1",
            "-o",
            delta,
            "--merged",
            merged,
            "--json",
        ).stdout
    )
    assert JSON_KEYS <= set(doc) and doc["classes"] == ["6"]
    d = read_delta(delta)
    assert d.info["target"]["sha256"] == load_model(models.target).sha256
    assert d.info["config"]["stacked_on"] == ["clone-5"]
    cloned, _, cf = load_cloned(merged)
    assert cloned.classes == ["0", "1", "2", "3", "4", "5", "6"] and [x.name for x in cf.deltas] == [
        "clone-5",
        "clone-6",
    ]
    after = load_cloned(at_one.merged)[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    res = run(
        "clone", "-s", models.source, "-t", at_one.merged, "-c", "5", *FAST, "-o", tmp_path / "x.safetensors"
    )
    assert (
        res.exit_code == 2
        and "already has class '5'" in res.stderr
        and not (tmp_path / "x.safetensors").exists()
    )
