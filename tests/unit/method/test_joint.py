"""The joint head (pnc_cli.method.joint, docs/method-spec.md §3): one head over both branches, fitted in
closed form; its delta format (version 2), stacking last-in-first-out, and frozen networks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pnc_cli.api import apply_delta, load_cloned, remove_delta
from pnc_cli.api.cloning import clone
from pnc_cli.core.config import CloneConfig
from pnc_cli.core.errors import IncompatibleError, UsageError
from pnc_cli.io.delta_file import count_params, read_delta
from pnc_cli.io.model_file import load_model
from pnc_cli.method.branch_state import branch_extra_params, branch_tensors
from pnc_cli.method.cloned_model import ClonedModel
from pnc_cli.method.joint import (
    Candidate,
    JointSettings,
    _Fit,
    _prune,
    _Pruning,
    batches,
    candidates,
    fit_joint,
)
from pnc_cli.nets import Network, build_network
from tests.data.make_golden import GOLDEN_V2, GOLDEN_V4, GOLDEN_V4_RANDOM, TARGET_CLASSES, tiny_model_file

torch.set_num_threads(1)


def _hashes(net: Network) -> dict[str, str]:
    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in net.model.state_dict().items()}


def _nets(seed: int = 0) -> tuple[Network, Network]:
    torch.manual_seed(seed)
    target = build_network("tiny_cnn", num_classes=3, in_channels=1, input_size=16)
    source = build_network("tiny_cnn", num_classes=4, in_channels=1, input_size=16)
    for net in (target, source):  # non-trivial BatchNorm statistics, which must not move
        for name, buf in net.model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.1 * torch.rand_like(buf))
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
    return target.freeze(), source.freeze()


def _planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy dark images with a bright square whose place is the class: bottom-right (0), centre (1),
    bottom-left (2), top-left (3, the cloned class)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, 16, 16, generator=g)
    for cls, (r, c) in enumerate([(10, 10), (5, 5), (10, 0), (0, 0)]):
        x[y == cls, :, r : r + 6, c : c + 6] += 0.7
    return x, y


def test_candidates_cover_every_block_at_pooling_levels_that_fit() -> None:
    _, source = _nets()
    cands = candidates(source, (1, 16, 16), max_features=256)
    assert {c.end for c in cands} == {1, 2, 3}
    assert all(c.dim <= 256 or c.pool == 1 for c in cands)
    assert len({(c.end, c.pool) for c in cands}) == len(cands)


def test_fit_learns_the_planted_class_and_leaves_both_networks_frozen() -> None:
    target, source = _nets()
    before = (_hashes(target), _hashes(source))
    x, y = _planted(400, 0)
    xv, yv = _planted(200, 1)
    out = fit_joint(
        base=ClonedModel(target, TARGET_CLASSES).eval(),
        source=source,
        new_classes=["3"],
        image_shape=(1, 16, 16),
        train=batches(x, y, 64),
        val=(xv, yv),
        settings=JointSettings(),
    )
    assert (_hashes(target), _hashes(source)) == before  # frozen means frozen, BatchNorm buffers included
    assert not any(p.requires_grad for p in out.branch.parameters())
    best = out.scores[out.best]
    assert best.val_tar_acc >= 0.95 and best.val_avg_acc == max(s.val_avg_acc for s in out.scores)
    model = ClonedModel(target, TARGET_CLASSES, {"clone-3": out.branch}).eval()
    xt, yt = _planted(200, 2)
    with torch.no_grad():
        pred = model(xt).argmax(1)
    assert (pred[yt == 3] == 3).float().mean() >= 0.95 and (pred == yt).float().mean() >= 0.9


def test_the_size_budget_prunes_channels_and_counts_like_the_delta() -> None:
    target, source = _nets()
    x, y = _planted(300, 0)
    budget = 700
    out = fit_joint(
        base=ClonedModel(target, TARGET_CLASSES).eval(),
        source=source,
        new_classes=["3"],
        image_shape=(1, 16, 16),
        train=batches(x, y, 64),
        val=_planted(100, 1),
        settings=JointSettings(budget=budget),
    )
    assert all(s.extra_params <= budget for s in out.scores)
    assert any(s.kept_fraction < 1.0 for s in out.scores)  # at least one candidate had to be pruned
    chosen = out.scores[out.best]
    tensors = branch_tensors(out.branch, out.masks, online=False)
    assert count_params(tensors) == branch_extra_params(out.branch, out.masks) == chosen.extra_params
    if chosen.kept_fraction < 1.0:
        assert "features.keep" in tensors


def test_the_read_index_keeps_the_planted_features_and_drops_the_noise() -> None:
    """Known answer: base columns 0 and 1 tell classes 0 and 1, span channel 0 tells class 2 (class 3 is
    "none of them"); 30 base columns and 3 span channels are noise. A budget that fits exactly those
    three columns keeps them and nothing else."""
    g = torch.Generator().manual_seed(0)
    n, k, d_base = 800, 4, 32
    y = torch.randint(0, k, (n,), generator=g)
    hot = torch.nn.functional.one_hot(y, k).double()
    noise = torch.randn(n, 33, generator=g, dtype=torch.float64)
    base = torch.cat([hot[:, :2] + 0.2 * noise[:, :2], noise[:, 2:32]], 1)
    span = torch.cat(
        [hot[:, 2:3] + 0.2 * noise[:, 32:], torch.randn(n, 3, generator=g, dtype=torch.float64)], 1
    )
    fit = _Fit(Candidate(end=1, pool=0, shape=(4,)), d_base, k)
    fit.stats.add(torch.cat([base, span], 1), y)

    def size(read: torch.Tensor, keep: torch.Tensor) -> int:  # head + 10 filter parameters per channel
        return (int(read.sum()) + int(keep.sum())) * k + k + 10 * int(keep.sum())

    budget = 3 * k + k + 10
    chosen = _prune(_Pruning(fit, 1e-2, k, budget, k, size, channel_cost=10, standardize=True))
    assert chosen is not None
    read, keep = chosen
    assert read.tolist() == [True, True] + [False] * 30
    assert keep.tolist() == [True, False, False, False]
    assert _prune(_Pruning(fit, 1e-2, k, k + 10, k, size, channel_cost=10, standardize=True)) is None


def test_nothing_fits_a_tiny_budget() -> None:
    target, source = _nets()
    x, y = _planted(64, 0)
    with pytest.raises(ValueError, match="budget"):
        fit_joint(
            base=ClonedModel(target, TARGET_CLASSES).eval(),
            source=source,
            new_classes=["3"],
            image_shape=(1, 16, 16),
            train=batches(x, y, 64),
            val=None,
            settings=JointSettings(budget=10),
        )


@pytest.mark.parametrize(
    "golden", [GOLDEN_V2, GOLDEN_V4, GOLDEN_V4_RANDOM], ids=["v2", "v4-read-index", "v4-random-features"]
)
def test_golden_joint_deltas_load_apply_run_and_come_off(golden: Path, tmp_path: Path) -> None:
    delta = read_delta(golden)
    assert delta.spec.head.kind == "joint" and delta.spec.adapter["kind"] == "renorm"
    assert ("features.read" in delta.tensors) == (golden != GOLDEN_V2)
    assert (
        (delta.spec.head.random_features == 8)
        == ("features.mean" in delta.tensors)
        == (golden == GOLDEN_V4_RANDOM)
    )
    target = tmp_path / "t.safetensors"
    tiny_model_file(target, TARGET_CLASSES, seed=0)
    cloned, restored = tmp_path / "c.safetensors", tmp_path / "r.safetensors"
    apply_delta(target=target, deltas=[golden], output=cloned)
    model, _, _ = load_cloned(cloned)
    with torch.no_grad():
        out = model(torch.rand(5, 1, 16, 16))
    assert out.shape == (5, 4) and torch.isfinite(out).all()
    remove_delta(cloned=cloned, output=restored)
    assert restored.read_bytes() == target.read_bytes()


# --- through the API, on the session's tiny digits models ----------------------------------------------
@pytest.fixture(scope="module")
def stacked(
    tiny_target: Path, tiny_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("joint")
    config = CloneConfig(seed=0)
    one = clone(
        source=tiny_source,
        target=tiny_target,
        classes="5",
        output=d / "d5.safetensors",
        merged=d / "c5.safetensors",
        config=config,
        device="cpu",
    )
    two = clone(
        source=tiny_source,
        target=d / "c5.safetensors",
        classes="6",
        output=d / "d6.safetensors",
        merged=d / "c56.safetensors",
        config=config,
        device="cpu",
    )
    return SimpleNamespace(dir=d, one=one, two=two, target=tiny_target)


def test_default_clone_is_joint_within_budget_and_keeps_ori(stacked: SimpleNamespace) -> None:
    doc = stacked.one
    assert doc["head"] == "joint" and doc["position"] == 0 and doc["extra_params_ratio"] <= 0.1
    assert doc["tar_acc"] >= 0.8 and doc["ori_acc"] >= doc["target_ori_acc"] - 0.05
    info = read_delta(stacked.dir / "d5.safetensors").info
    assert info["reads"] == [] and info["head"]["kind"] == "joint"


def test_a_joint_delta_on_a_cloned_model_reads_the_stack(stacked: SimpleNamespace) -> None:
    info = read_delta(stacked.dir / "d6.safetensors").info
    d5 = read_delta(stacked.dir / "d5.safetensors")
    assert info["reads"] == [{"name": "clone-5", "sha256": d5.sha256}]
    model, _, cf = load_cloned(stacked.dir / "c56.safetensors")
    assert model.classes[-2:] == ["5", "6"] and [d.name for d in cf.deltas] == ["clone-5", "clone-6"]
    assert stacked.two["tar_acc"] >= 0.8
    for doc in (stacked.one, stacked.two):
        assert doc["extra_params_ratio"] <= 0.1  # the default budget holds for the stacked delta too


def test_a_stacked_delta_reads_a_chosen_subset_and_applies_runs_and_comes_off(
    stacked: SimpleNamespace, tiny_source: Path, tmp_path: Path
) -> None:
    """A budget of 0.05× does not hold every feature below the second head on the tiny nets: its read
    index picks some columns of [target penultimate ; clone-5's features]."""
    c56 = tmp_path / "c56.safetensors"
    doc = clone(
        source=tiny_source,
        target=stacked.dir / "c5.safetensors",
        classes="6",
        output=tmp_path / "d6.safetensors",
        merged=c56,
        config=CloneConfig(seed=0, max_extra_ratio=0.05),
        device="cpu",
    )
    assert doc["extra_params_ratio"] <= 0.05  # the budget holds for the stacked delta too
    d6 = read_delta(tmp_path / "d6.safetensors")
    c5, _, _ = load_cloned(stacked.dir / "c5.safetensors")
    x = torch.rand(7, 1, 16, 16)
    with torch.no_grad():
        below = sum(f.shape[1] for f in c5.features(x))
    read, head = d6.tensors["features.read"], d6.tensors["head.weight"]
    assert 0 < len(read) < below and int(read.max()) < below and bool((read.diff() > 0).all())
    own = head.shape[1] - len(read)
    assert own > 0 and head.shape[0] == len(c5.classes) + 1
    applied = tmp_path / "c56-applied.safetensors"
    apply_delta(target=stacked.dir / "c5.safetensors", deltas=[tmp_path / "d6.safetensors"], output=applied)
    model, _, _ = load_cloned(applied)
    merged, _, _ = load_cloned(c56)
    with torch.no_grad():
        assert torch.equal(model(x), merged(x))
        f = model.features(x)
        branch = model.branches["clone-6"]
        by_hand = branch.head(torch.cat([torch.cat(f[:-1], 1)[:, read], f[-1]], 1))
        assert torch.allclose(model(x), by_hand)
    remove_delta(cloned=applied, names=["clone-6"], output=tmp_path / "c5.safetensors")
    assert (tmp_path / "c5.safetensors").read_bytes() == (stacked.dir / "c5.safetensors").read_bytes()


def test_a_joint_delta_fitted_on_a_stack_needs_that_stack(stacked: SimpleNamespace) -> None:
    # a joint delta fitted on the stack does not apply to the bare target
    with pytest.raises(IncompatibleError, match="fitted on top of deltas"):
        apply_delta(
            target=stacked.target,
            deltas=[stacked.dir / "d6.safetensors"],
            output=stacked.dir / "x.safetensors",
        )


def test_joint_deltas_come_off_last_in_first_out(stacked: SimpleNamespace, tmp_path: Path) -> None:
    c56 = stacked.dir / "c56.safetensors"
    with pytest.raises(IncompatibleError, match="remove clone-6 first"):
        remove_delta(cloned=c56, names=["clone-5"], output=tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()
    remove_delta(cloned=c56, names=["clone-6"], output=tmp_path / "c5.safetensors")
    assert (tmp_path / "c5.safetensors").read_bytes() == (stacked.dir / "c5.safetensors").read_bytes()
    remove_delta(cloned=c56, all=True, output=tmp_path / "t.safetensors")
    assert (tmp_path / "t.safetensors").read_bytes() == Path(stacked.target).read_bytes()


def test_joint_head_rejects_a_position(tiny_target: Path, tiny_source: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="append head"):
        clone(
            source=tiny_source,
            target=tiny_target,
            classes="5",
            output=tmp_path / "d.safetensors",
            position=1,
            device="cpu",
        )
    assert not (tmp_path / "d.safetensors").exists()
    assert load_model(tiny_target).spec.classes  # the target is still readable


def test_candidate_ties_go_to_the_lower_validation_error_then_the_smaller_delta() -> None:
    from pnc_cli.method.joint import CandidateScore, best_candidate

    def score(end: int, acc: float, loss: float, extra: int) -> CandidateScore:
        return CandidateScore(0, 0, end, 0, 8, 1.0, loss, acc, acc, acc, 1.0, extra, 0.0)

    small_but_worse_fit = score(1, 1.0, 0.30, 100)
    better_fit = score(2, 1.0, 0.10, 900)
    less_accurate = score(3, 0.9, 0.01, 10)
    assert best_candidate([small_but_worse_fit, better_fit, less_accurate]) == 1
    same_fit_smaller = score(4, 1.0, 0.10, 500)
    assert best_candidate([better_fit, same_fit_smaller]) == 1
    assert best_candidate([score(5, float("nan"), 0.0, 1), less_accurate]) == 1
