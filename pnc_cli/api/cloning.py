"""Orchestration of ``pnc clone`` and ``pnc search``: the method end to end (docs/method-spec.md §3-5, §7).

Layer api. ``clone`` reads like Alg. 1: load and check the models → gather the data (cloned classes,
target-domain samples with pseudo-labels, a validation split) → local model set G → position search
→ binarised branch → metrics on the held-out test split → delta file.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..core.config import CloneConfig, SurrogateConfig
from ..core.device import autocast, is_main_process, resolve_device, seed_everything
from ..core.distributed import all_reduce_sum, is_distributed
from ..core.errors import DataError, IncompatibleError, UsageError, VerificationError
from ..core.progress import NullProgress, Progress
from ..io.data import ImageSet, Selection, conform_set, parse_classes, select_data, source_names
from ..io.delta_file import KIND_CLONED, DeltaFile, count_params, file_kind, write_delta
from ..io.model_file import LoadedModel, load_model
from ..io.safetensors_io import check_output
from ..io.search_file import SearchFile, check_inputs, read_search, write_search
from ..io.stream import ImageDataset, content_sha256
from ..method.branch_state import branch_info, branch_tensors
from ..method.clone_training import LocalTargets
from ..method.cloned_model import Branch, ClonedModel, new_branch
from ..method.joint import BudgetError, CandidateScore, JointSettings, default_shifts, fit_joint
from ..method.metrics import LOCALITY_SURROGATE, cloning_metrics, zest_locality
from ..method.search import PositionScore, SearchOutcome, search_positions
from .branches import branch_from_delta, load_cloned, source_info, target_info
from .deltas import apply_delta
from .models import recorded_data
from .plots import plot_search
from .streaming import StagePair, predict_labels, train_batches
from .surrogates import load_or_compute

log = logging.getLogger(__name__)

Score = PositionScore | CandidateScore


@dataclass
class CloneInputs:
    """Everything the training needs, resolved and checked.

    The training and test samples are streamed (``io.stream.ImageDataset``: decoded one batch at a
    time, docs/scale.md); the validation split is held in memory. ``train``, ``test``, ``clone_set``
    and ``clone_pool`` decode their samples on first use (the append head trains for several epochs
    on tensors; G needs a few images).
    """

    source: LoadedModel
    target: LoadedModel
    source_classes: list[str]  # the cloned classes as the source names them
    new_classes: list[str]  # their names in the cloned model (after --rename)
    class_index: list[int]
    data: str
    target_data: str | None
    train_set: ImageDataset  # cloned-class samples, then target-domain ones with pseudo-labels (no val rows)
    val: tuple[torch.Tensor, torch.Tensor] | None
    test_set: ImageDataset
    clone_rows: Selection  # the cloned-class training samples (validation rows removed)
    pool_rows: Selection  # every train-split sample of the cloned classes (where a given G may come from)
    existing: dict[str, Branch]  # deltas already on the target (a cloned model given as --target), frozen
    stack: list[dict[str, str]]  # their {name, sha256}, in order
    _decoded: dict[str, Any] = field(default_factory=dict, repr=False)

    def _once(self, key: str, make: Any) -> Any:
        if key not in self._decoded:
            self._decoded[key] = make()
        return self._decoded[key]

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples in memory (decoded once)."""
        ds = self.train_set
        return self._once("train", lambda: (ds.images(range(len(ds))), ds.labels))

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        ds = self.test_set
        return self._once("test", lambda: (ds.images(range(len(ds))), ds.labels))

    def _conformed(self, sel: Selection) -> ImageSet:
        spec = self.target.spec
        return conform_set(sel.decode(), spec.in_channels, spec.input_size)

    @property
    def clone_set(self) -> ImageSet:
        return self._once("clone_set", lambda: self._conformed(self.clone_rows))

    @property
    def clone_pool(self) -> ImageSet:
        return self._once("clone_pool", lambda: self._conformed(self.pool_rows))


def _renames(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"rename {item!r} must be OLD=NEW", options=("rename",))
        out[old] = new
    return out


def _check_pair(src: LoadedModel, tgt: LoadedModel) -> None:
    s, t = src.spec, tgt.spec
    if (s.in_channels, s.input_size) != (t.in_channels, t.input_size):
        raise IncompatibleError(
            f"source {src.path} takes {s.in_channels}x{s.input_size}px inputs, target {tgt.path} takes "
            f"{t.in_channels}x{t.input_size}px; retrain one of them with the other's input size/channels"
        )


def _stratified_val(labels: torch.Tensor, fraction: float, seed: int, cap: int | None = None) -> torch.Tensor:
    """Boolean mask of a stratified, seeded validation split of at most ``cap`` samples.

    The validation images are held in memory (their features are scored for every candidate), so
    ``cap`` bounds that memory whatever the data size: past it every class keeps the same share of
    the cap as of the split, and the samples left out of validation stay in training.
    """
    g = torch.Generator().manual_seed(seed + 7919)
    val = torch.zeros(len(labels), dtype=torch.bool)
    if fraction <= 0:
        return val
    picks = []
    for c in labels.unique():
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=g)]
        picks.append((rows, int(round(fraction * len(rows))) if len(rows) > 2 else 0))
    total = sum(k for _, k in picks)
    for rows, k in picks:
        val[rows[: k if cap is None or total <= cap else int(k * cap / total)]] = True
    return val


def _target_domain(
    tgt: LoadedModel,
    target_data: str | None,
    exclude: list[str],
    split: str,
    fraction: float,
    split_seed: int,
    stacked: list[str] | None = None,
) -> Selection | None:
    """Target-domain samples (minus the cloned classes): the target's recorded training classes when the
    data is its recorded training data, every sample of a user-given --target-data otherwise."""
    if target_data is None:
        return None
    training = tgt.spec.training or {}
    classes = training.get("classes") if training.get("data") == target_data else None
    if classes is not None and stacked:
        present = set(source_names(target_data))
        classes = [*classes, *(c for c in stacked if c in present and c not in classes)]
    sel = select_data(target_data, classes=classes, split=split, fraction=fraction, split_seed=split_seed)
    keep = torch.tensor([n not in exclude for n in sel.label_names], dtype=torch.bool)
    if not keep.any():
        raise DataError(f"target data {target_data}: no samples outside the cloned classes")
    return sel.subset(keep)


def load_target(target: str | Path) -> tuple[LoadedModel, dict[str, Branch], list[dict[str, str]]]:
    """The target as a model, plus its frozen branches and their ``{name, sha256}`` when it is a cloned
    model (stacking, seed Eq. 5)."""
    if file_kind(target) != KIND_CLONED:
        return load_model(target), {}, []
    cloned, spec, cf = load_cloned(target)
    base = LoadedModel(Path(target), cloned.target, spec, cf.target_sha256, dict(cf.target_metadata))
    branches = {name: b for name, b in cloned.branches.items() if isinstance(b, Branch)}
    return base, branches, [{"name": d.name, "sha256": d.sha256} for d in cf.deltas]


def gather_inputs(
    *,
    source: str | Path,
    target: str | Path,
    classes: str,
    data: str | None,
    target_data: str | None,
    rename: list[str] | None,
    config: CloneConfig,
    split_seed: int,
    device: torch.device,
    position: str | int = "auto",
) -> CloneInputs:
    src = load_model(source)
    tgt, existing, stack = load_target(target)
    known = list(tgt.spec.classes) + [c for b in existing.values() for c in b.classes]
    _check_pair(src, tgt)
    positions_for(position, tgt.network.num_blocks)  # a bad --position fails before any data is read
    chosen = parse_classes(classes, list(src.spec.classes))
    if not chosen:
        raise UsageError("classes is empty; name the source classes to clone", options=("classes",))
    renames = _renames(rename)
    new_names = [renames.get(c, c) for c in chosen]
    clash = [(old, new) for old, new in zip(chosen, new_names, strict=True) if new in known]
    if clash:
        old, new = clash[0]
        raise UsageError(
            f"target {tgt.path} already has class {new!r}; pass rename {old}=NEW_NAME", options=("rename",)
        )
    if len(set(new_names)) < len(new_names):
        raise UsageError(
            f"rename gives two cloned classes the same name: {', '.join(new_names)}", options=("rename",)
        )
    data = data or recorded_data(src, "source")
    assert data is not None  # recorded_data raises when there is none
    if target_data is None:
        target_data = recorded_data(tgt, "target", required=False)
    if target_data is None:  # a branch never shown the target's domain never learns to stay silent
        raise UsageError(
            f"target {tgt.path} records no usable training data, so the clone would have no target-domain "
            "samples and silently break the target's classes; pass target_data (e.g. the target's data)",
            options=("target_data",),
        )
    spec = tgt.spec
    c, size = spec.in_channels, spec.input_size
    try:
        clone_train = select_data(
            data, classes=chosen, split="train", fraction=config.fraction, split_seed=split_seed
        )
    except DataError as exc:
        raise DataError(
            f"data {data} cannot supply the cloned classes {', '.join(chosen)} ({exc}); "
            "pass data with samples of them",
            options=("data",),
        ) from None
    clone_test = select_data(data, classes=chosen, split="test", split_seed=split_seed)
    n_t = len(known)
    stacked = known[spec.num_classes :]
    full = ImageDataset.of(clone_train, labels=clone_train.labels + n_t, channels=c, size=size)
    dom = _target_domain(tgt, target_data, chosen, "train", config.fraction, split_seed, stacked)
    net: Any = (
        ClonedModel(tgt.network, list(spec.classes), existing).to_device(device)
        if existing
        else tgt.network.to(device)
    )
    if dom is not None:  # pseudo-labels: the target's own predictions, one streamed pass
        (pseudo,) = predict_labels([net], ImageDataset.of(dom, channels=c, size=size), device)
        full = full.concat(ImageDataset.of(dom, labels=pseudo, channels=c, size=size))
    val_mask = _stratified_val(full.labels, config.val_fraction, config.seed, config.max_val_samples)
    test = ImageDataset.of(clone_test, labels=clone_test.labels + n_t, channels=c, size=size)
    dom_test = _target_domain(tgt, target_data, chosen, "test", 1.0, split_seed, stacked)
    if dom_test is not None:
        knows = torch.tensor([n in known for n in dom_test.label_names], dtype=torch.bool)
        test = test.concat(ImageDataset.of(dom_test.subset(knows).relabel(known), channels=c, size=size))
    val = None
    if val_mask.any():
        held = full.subset(val_mask)
        val = (held.images(range(len(held))), held.labels)
    return CloneInputs(
        src,
        tgt,
        chosen,
        new_names,
        [list(src.spec.classes).index(c) for c in chosen],
        data,
        target_data,
        full.subset(~val_mask),
        val,
        test,
        clone_train.subset(~val_mask[: len(clone_train)]),
        select_data(data, classes=chosen, split="train", split_seed=split_seed),
        existing,
        stack,
    )


def local_targets(
    inp: CloneInputs,
    sconfig: SurrogateConfig,
    surrogate: str | Path | None,
    device: torch.device,
    progress: Progress,
) -> LocalTargets:
    """G of the source on cloned-class training images (docs/method-spec.md §2), restricted to C_f.

    A given file may use any train-split samples of the cloned classes (never test ones); computed
    on the fly, G uses the first ``samples`` of a seeded class-balanced draw of the training fraction.
    """
    pool = inp.clone_pool if surrogate is not None else inp.clone_set
    result, images = load_or_compute(inp.source, pool, sconfig, surrogate, device=device, progress=progress)
    return LocalTargets(images, result, inp.class_index)


def positions_for(position: str | int, num_blocks: int) -> list[int]:
    if position == "auto":
        return list(range(num_blocks - 1, -1, -1))
    try:
        r = int(position)
    except ValueError:
        raise UsageError(
            f"position must be 'auto' or a block index, got {position!r}", options=("position",)
        ) from None
    if not 0 <= r < num_blocks:
        raise UsageError(
            f"position {r} is out of range: the target has {num_blocks} blocks, use 0..{num_blocks - 1}",
            options=("position",),
        )
    return [r]


def run_search(
    inp: CloneInputs,
    positions: list[int],
    local: LocalTargets | None,
    config: CloneConfig,
    device: torch.device,
    progress: Progress,
) -> SearchOutcome:
    tgt, src = inp.target, inp.source
    spec = tgt.spec

    def make(pos: int):  # noqa: ANN202
        return new_branch(
            tgt.network,
            src.network,
            position=pos,
            class_index=inp.class_index,
            classes=inp.new_classes,
            in_channels=spec.in_channels,
            input_size=spec.input_size,
        )

    return search_positions(
        target=tgt.network.to(device),
        target_classes=list(spec.classes),
        source=src.network.to(device),
        positions=positions,
        make_branch=make,
        train=inp.train,
        val=inp.val,
        local=local,
        config=config,
        existing=inp.existing,
        device=device,
        progress=progress,
    )


def evaluate_branch(inp: CloneInputs, branch: Branch, device: torch.device) -> dict[str, Any]:
    """Ori/Tar/Avg Acc and locality of target (+ its existing deltas) + branch on the held-out test split
    (docs/method-spec.md §7). "Ori" covers every class the model knew before this clone."""
    spec = inp.target.spec
    net = inp.target.network.to(device)
    cloned = ClonedModel(net, list(spec.classes), {**inp.existing, "pnc_new": branch.to(device)})
    cloned = cloned.to_device(device).eval()
    # the cloned model, and the model it is cloned onto (target + existing deltas), from one pass
    pair = StagePair(cloned, -1, -2)
    n_known = len(cloned.classes) - len(branch.classes)
    y = inp.test_set.labels
    pred, target_pred = predict_labels([pair.first, pair.second], inp.test_set, device)  # one pass
    m: dict[str, Any] = dict(cloning_metrics(pred, y, n_known, target_pred=target_pred))
    m["target_ori_acc"] = cloning_metrics(target_pred, y, n_known)["ori_acc"]
    ori_rows = torch.nonzero(y < n_known).flatten()[: LOCALITY_SURROGATE.samples]
    ori = inp.test_set.images(ori_rows.numpy()).to(device)
    m["zest_distance"] = zest_locality(lambda x: (pair.second(x), pair.first(x)), ori) if len(ori) else None
    return m


def fingerprint(inp: CloneInputs, config: CloneConfig, split_seed: int) -> dict[str, Any]:
    """What a search file must share with a clone that finishes from it."""
    return {
        "source": inp.source.sha256,
        "target": inp.target.sha256,
        "classes": inp.source_classes,
        "new_classes": inp.new_classes,
        "data": inp.data,
        "target_data": inp.target_data,
        "fraction": config.fraction,
        "split_seed": split_seed,
        "stacked_on": list(inp.existing),
        # the digest of {"x": images, "y": labels}, computed one batch at a time
        "train_sha256": content_sha256(inp.train_set),
    }


def build_delta(
    inp: CloneInputs,
    branch: Branch,
    masks: dict[str, torch.Tensor],
    scores: Sequence[Score],
    metrics: dict[str, Any],
    *,
    name: str | None,
    online: bool,
    config: CloneConfig,
    sconfig: SurrogateConfig | None,
    split_seed: int,
) -> DeltaFile:
    """The delta of a trained branch; ``metrics`` gains the delta's parameter count (counted on its
    tensors)."""
    branch = branch.cpu()
    tensors = branch_tensors(branch, masks, online=online)
    extra = count_params(tensors)
    metrics.update(extra_params=extra, extra_params_ratio=extra / inp.target.network.num_params())
    structure = branch_info(branch)
    info = {
        "target": target_info(inp.target),
        "source": source_info(inp.source),
        "classes": inp.new_classes,
        "source_class_index": inp.class_index,
        "position": {
            **structure["position"],
            "target_blocks": inp.target.network.num_blocks,
            "source_blocks": inp.source.network.num_blocks,
        },
        "adapter": structure["adapter"],
        "head": structure["head"],
        "mode": "online" if online else "offline",
        "config": {
            "clone": config.to_dict(),
            "surrogate": sconfig.to_dict() if sconfig else None,
            "split_seed": split_seed,
            "data": inp.data,
            "target_data": inp.target_data,
            "renamed": dict(zip(inp.source_classes, inp.new_classes, strict=True)),
            "stacked_on": list(inp.existing),
        },
        "seed": config.seed,
        "metrics": {k: v for k, v in metrics.items() if k != "seconds"},
        "extra_params": extra,
        # per-candidate timings stay out of the file, so the same seed gives the same delta bytes
        "search": [{k: v for k, v in s.to_dict().items() if k != "seconds"} for s in scores],
    }
    if branch.head_kind == "joint":
        info["reads"] = inp.stack  # a joint head reads every delta below it: apply/remove check this
    return DeltaFile(name or "clone-" + "+".join(inp.new_classes), tensors, info)


def _summary(
    delta: DeltaFile,
    path: Path,
    sha: str,
    metrics: dict[str, Any],
    inp: CloneInputs,
    scores: Sequence[Score],
) -> dict[str, Any]:
    info = delta.info
    return {
        "output": str(path),
        "sha256": sha,
        "name": delta.name,
        "classes": inp.new_classes,
        "head": info["head"]["kind"],
        "position": info["position"]["target"],
        "source_position": info["position"]["source"],
        "source_end": info["position"]["source_end"],
        "pool": info["head"]["pool"],
        "search": [s.to_dict() for s in scores],
        "data": inp.data,
        "target_data": inp.target_data,
        "mode": info["mode"],
        "seed": info["seed"],
        "shifts": info.get("config", {}).get("clone", {}).get("shifts"),  # joint head: copies used
        **metrics,
    }


@dataclass
class Trained:
    """The branch a clone or search keeps, its masks, the search curve and the surrogate config used."""

    branch: Branch
    masks: dict[str, torch.Tensor]
    scores: list[Score]
    sconfig: SurrogateConfig | None
    config: CloneConfig | None = None  # the settings it was trained with, defaults resolved (None: as asked)


def _train_append(
    inp: CloneInputs,
    positions: list[int],
    config: CloneConfig,
    sconfig: SurrogateConfig,
    surrogate: str | Path | None,
    dev: torch.device,
    progress: Progress,
) -> Trained:
    use_local = config.alpha > 0 or config.beta > 0
    if surrogate is not None and not use_local:
        log.warning(
            "surrogate %s is not used: alpha = beta = 0 turn L_loc and L_ins off",
            surrogate,
        )
    local = local_targets(inp, sconfig, surrogate, dev, progress) if use_local else None
    out = run_search(inp, positions, local, config, dev, progress)
    return Trained(out.branch, out.result.masks, list(out.scores), local.surrogate.config if local else None)


def _train_joint(
    inp: CloneInputs,
    position: str | int,
    config: CloneConfig,
    online: bool,
    dev: torch.device,
    progress: Progress,
) -> Trained:
    """The joint head in closed form over every candidate span of the source (docs/method-spec.md §3)."""
    if str(position) not in ("auto", "0"):
        raise UsageError(
            f"position {position}: the joint head reads the source from the input (position 0); "
            "use the append head (head append) for other positions",
            options=("position", "head"),
        )
    spec = inp.target.spec
    base = ClonedModel(inp.target.network, list(spec.classes), inp.existing).to(dev).eval()
    budget = (
        None
        if config.max_extra_ratio is None
        else int(config.max_extra_ratio * inp.target.network.num_params())
    )
    image_shape = (spec.in_channels, spec.input_size, spec.input_size)
    source = inp.source.network.to(dev)
    shifts = config.shifts  # None, the default: as many shifted copies as the networks make cheap
    if shifts is None:
        shifts = default_shifts(base, source, image_shape, len(inp.train_set), config.max_features)
        config = replace(config, shifts=shifts)
    settings = JointSettings(
        max_features=config.max_features,
        standardize=config.standardize,
        budget=budget,
        online=online,
        refit_on_val=config.refit_on_val,
        random_features=config.random_features,
        random_seed=config.seed,
        shifts=shifts,
    )
    try:
        with autocast(dev):  # frozen forward passes at --precision; the statistics stay float64
            out = fit_joint(
                base=base,
                source=source,
                new_classes=inp.new_classes,
                image_shape=image_shape,
                train=train_batches(inp.train_set, dev, batch_size=max(config.batch_size, 256)),
                val=inp.val,
                settings=settings,
                device=dev,
                progress=progress,
                reduce=all_reduce_sum if is_distributed() else None,
            )
    except BudgetError as exc:
        raise UsageError(
            f"{exc} (max_extra_ratio {config.max_extra_ratio})", options=("max_extra_ratio",)
        ) from None
    return Trained(out.branch, out.masks, list(out.scores), None, config)


def _train(
    inp: CloneInputs,
    position: str | int,
    config: CloneConfig,
    sconfig: SurrogateConfig,
    surrogate: str | Path | None,
    online: bool,
    dev: torch.device,
    progress: Progress,
) -> Trained:
    if config.head == "joint":
        if surrogate is not None:
            log.warning("surrogate %s is not used: the joint head is fitted in closed form", surrogate)
        return _train_joint(inp, position, config, online, dev, progress)
    return _train_append(
        inp, positions_for(position, inp.target.network.num_blocks), config, sconfig, surrogate, dev, progress
    )


def _check_ori_drop(metrics: dict[str, Any], config: CloneConfig) -> None:
    """No silent wrong model: refuse a clone that lost more than ``max_ori_drop`` points of Ori Acc on
    the held-out test split, against the target alone (docs/cloning.md)."""
    if config.max_ori_drop is None:
        return
    before, after = metrics.get("target_ori_acc"), metrics.get("ori_acc")
    if before is None or after is None or math.isnan(before) or math.isnan(after):
        return
    drop = 100 * (before - after)
    if drop > config.max_ori_drop:
        raise VerificationError(
            f"the clone loses {drop:.1f} points of accuracy on the target's classes ({100 * before:.1f} -> "
            f"{100 * after:.1f}), more than max_ori_drop {config.max_ori_drop:g}; nothing written "
            "(check the target-domain data, or raise max_ori_drop)"
        )


def scores_from_curves(curves: dict[str, torch.Tensor]) -> list[Score]:
    """The search curve of a search file, as the score records it was written from."""
    cls: type[PositionScore] | type[CandidateScore] = (
        CandidateScore if "source_end" in curves else PositionScore
    )
    names = {f.name: f.type for f in fields(cls)}
    ints = {n for n, t in names.items() if t in ("int", int)}
    n = len(curves["position"])
    return [
        cls(**{k: (int(v[i]) if k in ints else float(v[i])) for k, v in curves.items() if k in names})  # type: ignore[arg-type]
        for i in range(n)
    ]


def curves_of(scores: Sequence[Score]) -> dict[str, torch.Tensor]:
    return {
        f.name: torch.tensor([getattr(s, f.name) for s in scores], dtype=torch.float64)
        for f in fields(scores[0])
    }


def _setup(
    config: CloneConfig | None,
    surrogate_config: SurrogateConfig | None,
    outputs: list[str | Path | None],
    force: bool,
    device: str,
    inputs: list[str | Path | None],
) -> tuple[CloneConfig, SurrogateConfig, torch.device]:
    config = config or CloneConfig()
    given = [Path(o) for o in outputs if o is not None]
    if len({o.resolve() for o in given}) < len(given):
        raise UsageError(f"the output files must differ: {', '.join(map(str, given))}")
    for (
        o
    ) in given:  # an input (source, target, surrogate, search file) is never overwritten, even with --force
        check_output(o, force=force, inputs=[i for i in inputs if i is not None])
    dev = resolve_device(device)
    seed_everything(config.seed)
    return config, surrogate_config or SurrogateConfig(seed=config.seed), dev


def clone(
    *,
    source: str | Path,
    target: str | Path,
    classes: str,
    output: str | Path,
    data: str | None = None,
    target_data: str | None = None,
    position: str | int = "auto",
    config: CloneConfig | None = None,
    surrogate_config: SurrogateConfig | None = None,
    surrogate: str | Path | None = None,
    search: str | Path | None = None,
    link_source: bool = False,
    rename: list[str] | None = None,
    name: str | None = None,
    merged: str | Path | None = None,
    split_seed: int = 0,
    force: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
    inputs: CloneInputs | None = None,
) -> dict[str, Any]:
    """Clone ``classes`` of ``source`` into ``target``; write the delta (and optionally the merged model).

    Steps (seed Alg. 1): resolve inputs → local model set G → position search (or finish from a
    ``pnc search`` file) → binarised branch → held-out metrics → delta file. ``inputs``: the data already
    gathered for this source, target, classes, config and split seed (``pnc rank-sources --clone-best``
    reuses the ranking's); it is not gathered again.
    """
    config, sconfig, dev = _setup(
        config,
        surrogate_config,
        [output, merged],
        force,
        device,
        [source, target, surrogate, search, data, target_data],
    )
    progress = progress or NullProgress()
    start = time.perf_counter()
    inp = inputs or gather_inputs(
        source=source,
        target=target,
        classes=classes,
        data=data,
        target_data=target_data,
        rename=rename,
        config=config,
        split_seed=split_seed,
        device=dev,
        position=position,
    )
    if search is not None:
        sf = read_search(search)
        check_inputs(sf, fingerprint(inp, config, split_seed), search)
        trained = Trained(branch_from_delta(sf.delta), sf.delta.masks(), scores_from_curves(sf.curves), None)
        recorded = sf.delta.info.get("config", {}).get("clone")
        if isinstance(recorded, dict):  # record the settings that trained it, not this command's
            # files older than a setting record none: append head, and joint heads without shifted copies
            older = {"head": "append", "shifts": 0 if recorded.get("head") == "joint" else None}
            config = CloneConfig.from_dict({**older, **recorded}, strict=False)
    else:
        trained = _train(inp, position, config, sconfig, surrogate, link_source, dev, progress)
        config = trained.config or config
    branch, masks, scores = trained.branch, trained.masks, trained.scores
    metrics = evaluate_branch(inp, branch, dev)
    metrics["seconds"] = time.perf_counter() - start
    _check_ori_drop(metrics, config)
    delta = build_delta(
        inp,
        branch,
        masks,
        scores,
        metrics,
        name=name,
        online=link_source,
        config=config,
        sconfig=trained.sconfig,
        split_seed=split_seed,
    )
    if not is_main_process():  # under torchrun every process holds the same delta; rank 0 writes it
        return _summary(delta, Path(output), "", metrics, inp, scores)
    sha = write_delta(output, delta, force=force)
    doc = _summary(delta, Path(output), sha, metrics, inp, scores)
    if merged is not None:
        doc["merged"] = apply_delta(
            target=target, deltas=[output], sources=[source], output=merged, force=force
        )["output"]
    return doc


def search(
    *,
    source: str | Path,
    target: str | Path,
    classes: str,
    output: str | Path,
    data: str | None = None,
    target_data: str | None = None,
    config: CloneConfig | None = None,
    surrogate_config: SurrogateConfig | None = None,
    surrogate: str | Path | None = None,
    plot: str | Path | None = None,
    rename: list[str] | None = None,
    split_seed: int = 0,
    force: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train every insertion position, report the curve, keep R*'s branch in a search file."""
    config, sconfig, dev = _setup(
        config,
        surrogate_config,
        [output, plot],
        force,
        device,
        [source, target, surrogate, data, target_data],
    )
    progress = progress or NullProgress()
    start = time.perf_counter()
    inp = gather_inputs(
        source=source,
        target=target,
        classes=classes,
        data=data,
        target_data=target_data,
        rename=rename,
        config=config,
        split_seed=split_seed,
        device=dev,
    )
    trained = _train(inp, "auto", config, sconfig, surrogate, False, dev, progress)
    config = trained.config or config
    metrics = evaluate_branch(inp, trained.branch, dev)
    metrics["seconds"] = time.perf_counter() - start
    delta = build_delta(
        inp,
        trained.branch,
        trained.masks,
        trained.scores,
        metrics,
        name=None,
        online=False,
        config=config,
        sconfig=trained.sconfig,
        split_seed=split_seed,
    )
    sf = SearchFile(delta, curves_of(trained.scores), fingerprint(inp, config, split_seed))
    if not is_main_process():  # under torchrun rank 0 writes
        return _summary(delta, Path(output), "", metrics, inp, trained.scores)
    sha = write_search(output, sf, force=force)
    doc = _summary(delta, Path(output), sha, metrics, inp, trained.scores)
    if plot is not None:
        title = f"{inp.source.path.name} → {inp.target.path.name}"
        doc["plot"] = str(plot_search(trained.scores, plot, title=title, force=force))
    return doc
