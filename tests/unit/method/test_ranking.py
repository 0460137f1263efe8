"""Tests of source ranking (pnc_cli.method.ranking, pnc_cli.api.ranking; docs/method-spec.md §6, seed Eq.
6-8)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from pnc_cli.api import rank_sources
from pnc_cli.api import ranking as api_ranking
from pnc_cli.core.config import CloneConfig, SurrogateConfig, TrainConfig
from pnc_cli.core.errors import ConfigError, IncompatibleError, UsageError
from pnc_cli.io.model_file import load_model, save_model
from pnc_cli.method.ranking import class_evidence, rank_scores, restrict_columns, score_sources
from pnc_cli.method.zest import align_columns

torch.set_num_threads(1)
FAST = SurrogateConfig(samples=12, masks=16, grid=4, seed=0)


def _theta(n: int = 5, p: int = 16, c: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, p, c, generator=torch.Generator().manual_seed(seed))


def _permuted_copy(path: Path, out: Path, perm: list[int]) -> Path:
    """The same model with its classes (classifier output rows and class names) permuted."""
    loaded = load_model(path)
    net = loaded.network
    last = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.copy_(last.weight[perm].clone())
        last.bias.copy_(last.bias[perm].clone())
    spec = replace(loaded.spec, classes=tuple(loaded.spec.classes[i] for i in perm))
    save_model(out, net, spec)
    return out


@pytest.fixture(scope="module")
def models(make_tiny_model: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ranking")
    source = make_tiny_model("5-9")
    bad = root / "broken.safetensors"
    bad.write_bytes(b"not a model")
    return {
        "target": make_tiny_model("0-4"),
        "source": source,
        "weak": make_tiny_model("5-9", config=TrainConfig(epochs=1, lr=1e-3, seed=1), fraction=0.2),
        "wide": make_tiny_model("5-9", input_size=12),  # another input size: compared on the same patch grid
        "permuted": _permuted_copy(source, root / "permuted.safetensors", [3, 0, 4, 1, 2]),
        "broken": bad,
    }


# --------------------------------------------------------------------------- L3 algorithm


def test_alignment_recovers_permutation_of_identical_columns() -> None:
    theta = _theta(c=6)
    perm = [4, 2, 0, 5, 1, 3]
    assert sorted(align_columns(theta, theta[:, :, perm])) == sorted((perm[j], j) for j in range(6))
    ranked = score_sources(
        theta, {"same": theta, "permuted": theta[:, :, perm], "other": _theta(c=6, seed=9)}
    )
    assert [name for name, _ in ranked][2] == "other"
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-9) and ranked[1][1] == pytest.approx(1.0, abs=1e-9)


def test_ties_break_by_name_and_scores_sort_descending() -> None:
    t = _theta()
    ranked = score_sources(t, {"b": t, "a": t.clone(), "c": -t, "d": t + 0.5 * _theta(seed=1)})
    assert [n for n, _ in ranked] == ["a", "b", "d", "c"]
    assert ranked[0][1] == ranked[1][1] == pytest.approx(1.0, abs=1e-9) and ranked[-1][1] < 0.5


def test_restrict_columns_and_cloned_mode() -> None:
    t = _theta(c=5)
    src = torch.cat([t[:, :, [2]], _theta(c=3, seed=4)], dim=2)  # column 0 of src = column 2 of t
    assert restrict_columns(src, [0]).shape == (5, 16, 1)
    assert score_sources(t, {"s": src}, source_columns={"s": [0]})[0][1] == pytest.approx(1.0, abs=1e-9)
    assert score_sources(t, {"s": src})[0][1] < 0.99
    with pytest.raises(ConfigError):
        restrict_columns(src, [7])


def test_class_evidence_uses_each_class_column_on_its_own_samples() -> None:
    theta = torch.zeros(4, 3, 2)
    theta[:2, :, 0] = 1.0  # samples 0, 1 (class 0): column 0 sums to 3 over the patches
    theta[2:, :, 1] = 2.0  # samples 2, 3 (class 1): column 1 sums to 6
    theta[:2, :, 1] = 100.0  # column 1 on class-0 samples: not counted
    labels = torch.tensor([0, 0, 1, 1])
    assert class_evidence(theta, [0, 1], labels) == pytest.approx(4.5)
    assert class_evidence(theta, [1], torch.zeros(4, dtype=torch.long)) == pytest.approx(
        (300 + 300 + 6 + 6) / 4
    )
    assert rank_scores({"b": 1.0, "a": 1.0, "c": 2.0}) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]
    with pytest.raises(ConfigError):
        class_evidence(theta, [0], torch.full((4,), 5))


def test_different_samples_are_incompatible() -> None:
    with pytest.raises(IncompatibleError):
        score_sources(_theta(n=5), {"s": _theta(n=4)})


# --------------------------------------------------------------------------- L4 orchestration


def _rank(models: dict[str, Path], names: list[str], **kw: object) -> dict:
    opts: dict = {
        "classes": "5",
        "data": "digits",
        "config": FAST,
        "device": "cpu",
        "score": "similarity",
        **kw,
    }
    return rank_sources(
        target=models.get("as_target", models["target"]), sources=[models[n] for n in names], **opts
    )


def test_self_and_class_permuted_copy_score_one(models: dict[str, Path]) -> None:
    for columns in ("all", "cloned"):
        doc = rank_sources(
            target=models["source"],
            sources=[models["source"], models["permuted"]],
            classes="5",
            data="digits",
            config=FAST,
            device="cpu",
            columns=columns,
            score="similarity",
        )
        assert doc["failed"] == 0
        assert [r["score"] for r in doc["ranking"]] == pytest.approx([1.0, 1.0], abs=1e-5)
        assert [r["rank"] for r in doc["ranking"]] == [1, 2]


def test_ranking_is_deterministic_for_a_seed(models: dict[str, Path]) -> None:
    names = ["source", "weak", "wide"]
    a, b = _rank(models, names), _rank(models, names)
    assert [(r["source"], r["score"]) for r in a["ranking"]] == [
        (r["source"], r["score"]) for r in b["ranking"]
    ]
    assert a["samples"] == 12 and a["masks"] == 16 and a["classes"] == ["5"] and a["failed"] == 0
    assert {r["arch"] for r in a["ranking"]} == {"tiny_cnn"} and all(
        -1 <= r["score"] <= 1 for r in a["ranking"]
    )
    c = _rank(models, names, config=replace(FAST, seed=1))
    assert [r["score"] for r in c["ranking"]] != [r["score"] for r in a["ranking"]]


def test_evidence_mode_ranks_by_evidence_and_rows_carry_both(models: dict[str, Path]) -> None:
    sim = _rank(models, ["source", "weak", "wide"])
    evi = _rank(models, ["source", "weak", "wide"], score="evidence")
    assert evi["score"] == "evidence" and sim["score"] == "similarity"
    values = [r["evidence"] for r in evi["ranking"]]
    assert [r["score"] for r in evi["ranking"]] == values == sorted(values, reverse=True)
    by_source = {r["source"]: r for r in sim["ranking"]}
    for r in evi["ranking"]:
        assert r["similarity"] == pytest.approx(by_source[r["source"]]["similarity"])
        assert r["evidence"] == pytest.approx(by_source[r["source"]]["evidence"])


def test_unreadable_and_classless_sources_are_reported_the_rest_ranked(models: dict[str, Path]) -> None:
    doc = _rank(models, ["broken", "source", "target", "weak"])
    rows = doc["ranking"]
    assert [r["eligible"] for r in rows] == [True, True, False, False]
    assert [r["rank"] for r in rows[:2]] == [1, 2]
    bad = {Path(r["source"]).name: r for r in rows[2:]}
    assert "broken.safetensors" in bad and bad["broken.safetensors"]["arch"] is None
    assert "safetensors" in bad["broken.safetensors"]["reason"]
    assert "lacks class 5" in bad[models["target"].name]["reason"]
    assert doc["failed"] == 2 and all(r["score"] is None and r["rank"] is None for r in rows[2:])


def test_surrogates_dir_is_reused(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = api_ranking.surrogate_for

    def counting(loaded, *args, **kwargs):  # noqa: ANN001, ANN202
        calls.append(str(loaded.path))
        return real(loaded, *args, **kwargs)

    monkeypatch.setattr(api_ranking, "surrogate_for", counting)
    first = _rank(models, ["source", "weak"], surrogates_dir=tmp_path / "G")
    files = sorted((tmp_path / "G").glob("*.safetensors"))
    assert len(calls) == 3 and len(files) == 3
    stamps = {f: f.stat().st_mtime_ns for f in files}
    second = _rank(models, ["source", "weak"], surrogates_dir=tmp_path / "G")
    assert len(calls) == 3, "the second run computed a local model set"
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert second["target"]["cached"] and all(r["cached"] for r in second["ranking"])
    assert [r["score"] for r in second["ranking"]] == pytest.approx(
        [r["score"] for r in first["ranking"]], abs=1e-6
    )
    _rank(models, ["source"], surrogates_dir=tmp_path / "G", config=replace(FAST, masks=17))
    assert len(calls) == 5  # other settings: new files, nothing stale reused


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        rank_sources(target="t", sources=[], classes="5", data="digits")
    with pytest.raises(UsageError):
        rank_sources(target="t", sources=["s"], classes="5", data="digits", columns="some")
    with pytest.raises(UsageError):
        rank_sources(target="t", sources=["s"], classes="5", data="digits", score="accuracy")
    with pytest.raises(UsageError):
        rank_sources(target="t", sources=["s"], classes="", data="digits")


def test_rank_and_clone_reuses_the_winners_surrogate(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "delta.safetensors"
    doc = api_ranking.rank_and_clone(
        target=models["target"],
        sources=[models["weak"], models["source"]],
        classes="5",
        data="digits",
        output=out,
        config=FAST,
        surrogates_dir=tmp_path / "G",
        device="cpu",
        score="similarity",
        clone_kwargs={
            "config": CloneConfig(head="append", epochs=1, alpha=0.01, beta=0.01, max_ori_drop=None),
            "position": 2,
        },
    )
    best = doc["ranking"][0]
    assert out.exists() and doc["clone"]["source"] == best["source"]
    assert best["surrogate"] and Path(best["surrogate"]).parent == tmp_path / "G"
    assert {"tar_acc", "avg_acc"} <= set(doc["clone"])
