"""``rank_sources(score="logme")`` (the default) and ``rank_and_clone`` reusing the ranking's data
(pnc_cli.api.ranking, pnc_cli.api.ranking_logme, pnc_cli.method.transfer; docs/ranking.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pnc_cli.api import cloning, rank_sources, ranking_logme
from pnc_cli.api import ranking as api_ranking
from pnc_cli.core.config import CloneConfig, SurrogateConfig, TrainConfig
from pnc_cli.io.model_file import load_model
from pnc_cli.method.cloned_model import ClonedModel
from pnc_cli.method.joint import candidates, joint_features
from pnc_cli.method.logme import logme, prepare
from pnc_cli.method.transfer import span_scores

torch.set_num_threads(1)
CFG = CloneConfig(max_ori_drop=None)


def broken_metadata_copy(path: Path, out: Path) -> Path:
    """A copy of a model file whose class list in the metadata is not JSON."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["pnc.classes"] = "[5, 6, 7"
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.fixture(scope="module")
def models(make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rank-logme")
    good = make_tiny_model("5-9")
    target = make_tiny_model("0-4")
    g = root / "G"
    rank_sources(  # leaves a surrogate file (a pnc file of another kind) for the "glob" case
        target=target,
        sources=[good],
        classes="5",
        data="digits",
        score="similarity",
        config=SurrogateConfig(samples=4, masks=4),
        surrogates_dir=g,
        device="cpu",
    )
    return {
        "target": target,
        "good": good,
        "weak": make_tiny_model("5-9", config=TrainConfig(epochs=1, lr=1e-3, seed=1), fraction=0.2),
        "other_arch": make_tiny_model("5-9", arch="plaincnn"),
        "wide": make_tiny_model("5-9", input_size=12),
        "surrogate": sorted(g.glob("*.safetensors"))[0],
        "meta": broken_metadata_copy(good, root / "bad-meta.safetensors"),
    }


def _rank(models: dict[str, Path], names: list[str], **kw: object) -> dict:
    return rank_sources(
        target=models["target"],
        sources=[models[n] for n in names],
        classes="5-9",
        data="digits",
        clone_config=CFG,
        device="cpu",
        **kw,  # type: ignore[arg-type]
    )


def test_span_scores_are_logme_of_the_joint_features(models: dict[str, Path]) -> None:
    tgt, src = load_model(models["target"]), load_model(models["good"])
    shape = (tgt.spec.in_channels, tgt.spec.input_size, tgt.spec.input_size)
    base = ClonedModel(tgt.network, list(tgt.spec.classes)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, *shape, generator=g)
    y = torch.arange(60) % 10
    scores = span_scores(
        base, src.network, x, y, num_known=5, num_classes=10, image_shape=shape, max_features=64
    )
    cands = candidates(src.network, shape, 64)
    assert [(s.end, s.pool) for s in scores] == [(c.end, c.pool) for c in cands]
    feats = joint_features(base, src.network, x, cands, shape)
    for s, f in zip(scores, feats, strict=True):
        assert s.logme == pytest.approx(logme(prepare(f), y, 10), rel=1e-9)


def test_default_score_is_logme_and_ranks_heterogeneous_sources(models: dict[str, Path]) -> None:
    doc = _rank(models, ["weak", "other_arch", "good"])
    assert doc["score"] == "logme" and doc["failed"] == 0 and doc["eligible"] == 3
    rows = doc["ranking"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert {r["arch"] for r in rows} == {"tiny_cnn", "plaincnn"}
    for r in rows:
        assert r["score"] == r["logme"] == max(s["logme"] for s in r["spans"])
        assert r["span"]["end"] >= 1 and r["similarity"] is None
    by = {Path(r["source"]): r for r in rows}
    assert by[models["good"]]["score"] > by[models["weak"]]["score"]  # 1 epoch, lr 1e-3, 20 % of the data
    assert doc["classes"] == ["5", "6", "7", "8", "9"] and doc["samples"] > 0
    again = _rank(models, ["weak", "other_arch", "good"])["ranking"]  # deterministic (but for the timings)
    assert [(r["source"], r["score"], r["span"]) for r in again] == [
        (r["source"], r["score"], r["span"]) for r in rows
    ]


def test_bad_candidates_are_listed_never_sink_the_ranking(models: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a model")
    models = {**models, "junk": junk, "missing": tmp_path / "absent.safetensors"}
    doc = _rank(models, ["surrogate", "good", "meta", "wide", "junk", "missing", "target"])
    rows = doc["ranking"]
    assert doc["eligible"] == 1 and doc["failed"] == 6
    assert rows[0]["source"] == str(models["good"]) and rows[0]["rank"] == 1
    reasons = {Path(r["source"]).name: r["reason"] for r in rows[1:]}
    assert [Path(r["source"]).name for r in rows[1:]] == [
        models[n].name for n in ["surrogate", "meta", "wide", "junk", "missing", "target"]
    ]
    assert all(reasons.values()) and all(r["rank"] is None and r["score"] is None for r in rows[1:])
    assert "pnc clone cannot pair them" in reasons[models["wide"].name]
    assert "lacks classes 5" in reasons[models["target"].name]
    json.dumps(doc)  # plain JSON-able


def test_no_eligible_source_is_a_document_not_an_exception(models: dict[str, Path]) -> None:
    doc = _rank(models, ["surrogate", "wide"])
    assert doc["eligible"] == 0 and doc["failed"] == 2 and all(not r["eligible"] for r in doc["ranking"])


def test_rank_and_clone_reuses_the_gathered_data(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = cloning.gather_inputs

    def counting(**kwargs):  # noqa: ANN003, ANN202
        calls.append(str(kwargs["source"]))
        return real(**kwargs)

    monkeypatch.setattr(cloning, "gather_inputs", counting)
    monkeypatch.setattr(ranking_logme, "gather_inputs", counting)
    out = tmp_path / "best.safetensors"
    doc = api_ranking.rank_and_clone(
        target=models["target"],
        sources=[models["weak"], models["good"]],
        classes="5-9",
        data="digits",
        output=out,
        device="cpu",
        clone_kwargs={"config": CFG},
    )
    assert len(calls) == 1, "the clone gathered its data again"
    best = doc["ranking"][0]["source"]
    assert out.exists() and doc["clone"]["source"] == best
    alone = cloning.clone(
        source=best,
        target=models["target"],
        classes="5-9",
        data="digits",
        output=tmp_path / "alone.safetensors",
        config=CFG,
        device="cpu",
    )
    assert alone["sha256"] == doc["clone"]["sha256"]  # the same delta, byte for byte


def test_strict_clones_nothing_when_a_source_is_ineligible(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "best.safetensors"
    doc = api_ranking.rank_and_clone(
        target=models["target"],
        sources=[models["good"], models["wide"]],
        classes="5-9",
        data="digits",
        output=out,
        device="cpu",
        strict=True,
        clone_kwargs={"config": CFG},
    )
    assert "clone" not in doc and not out.exists() and doc["failed"] == 1
