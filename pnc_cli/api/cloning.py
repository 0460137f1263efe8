"""Orchestration of ``pnc clone`` and ``pnc search``: the method end to end (method spec §3-5, §7).

Layer L4. ``clone`` reads like Alg. 1: load and check the models → gather the data (cloned classes,
target-domain samples with pseudo-labels, a validation split) → local model set G → position search
→ binarised branch → metrics on the held-out test split → delta file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import CloneConfig, SurrogateConfig
from ..core.device import resolve_device, seed_everything
from ..core.errors import DataError, IncompatibleError, UsageError
from ..core.progress import NullProgress, Progress
from ..io.data import ImageSet, conform_set, load_data, parse_classes, read_raw
from ..io.delta_file import KIND_CLONED, DeltaFile, file_kind, write_delta
from ..io.model_file import LoadedModel, load_model
from ..io.safetensors_io import check_output, content_sha256
from ..io.search_file import CURVE_FIELDS, SearchFile, check_inputs, read_search, write_search
from ..method.clone_training import LocalTargets
from ..method.cloned_model import Branch, ClonedModel, new_branch
from ..method.metrics import cloning_metrics, zest_locality
from ..method.search import PositionScore, SearchOutcome, search_positions
from ..method.selector import count_kept_params
from ..nets.training import predict_logits
from .branches import branch_from_delta, branch_tensors, load_cloned, source_info, target_info
from .deltas import apply_delta
from .models import recorded_data
from .plots import plot_search
from .surrogates import load_or_compute

log = logging.getLogger(__name__)


@dataclass
class CloneInputs:
    """Everything the training needs, resolved and checked."""

    source: LoadedModel
    target: LoadedModel
    source_classes: list[str]  # the cloned classes as the source names them
    new_classes: list[str]  # their names in the cloned model (after --rename)
    class_index: list[int]
    data: str
    target_data: str | None
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    test: tuple[torch.Tensor, torch.Tensor]
    clone_set: ImageSet  # the cloned-class training samples (validation rows removed)
    clone_pool: ImageSet  # every train-split sample of the cloned classes (where a given G may come from)
    existing: dict[str, Branch]  # deltas already on the target (a cloned model given as --target), frozen


def _renames(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--rename {item!r} must be OLD=NEW")
        out[old] = new
    return out


def _check_pair(src: LoadedModel, tgt: LoadedModel) -> None:
    s, t = src.spec, tgt.spec
    if (s.in_channels, s.input_size) != (t.in_channels, t.input_size):
        raise IncompatibleError(
            f"source {src.path} takes {s.in_channels}x{s.input_size}px inputs, target {tgt.path} takes "
            f"{t.in_channels}x{t.input_size}px; retrain one of them with the other's input size/channels"
        )


def _stratified_val(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask of a stratified, seeded validation split."""
    g = torch.Generator().manual_seed(seed + 7919)
    val = torch.zeros(len(labels), dtype=torch.bool)
    if fraction <= 0:
        return val
    for c in labels.unique():
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=g)]
        k = int(round(fraction * len(rows))) if len(rows) > 2 else 0
        val[rows[:k]] = True
    return val


def _target_domain(
    tgt: LoadedModel,
    target_data: str | None,
    exclude: list[str],
    split: str,
    fraction: float,
    split_seed: int,
    stacked: list[str] | None = None,
) -> ImageSet | None:
    """Target-domain samples (minus the cloned classes): the target's recorded training classes when the
    data is its recorded training data, every sample of a user-given --target-data otherwise."""
    if target_data is None:
        return None
    spec = tgt.spec
    training = spec.training or {}
    classes = training.get("classes") if training.get("data") == target_data else None
    if classes is not None and stacked:
        present = set(read_raw(target_data)[1])
        classes = [*classes, *(c for c in stacked if c in present and c not in classes)]
    ds = load_data(target_data, classes=classes, split=split, fraction=fraction, split_seed=split_seed)
    keep = torch.tensor([n not in exclude for n in ds.label_names], dtype=torch.bool)
    if not keep.any():
        raise DataError(f"target data {target_data}: no samples outside the cloned classes")
    return conform_set(ds.subset(keep), spec.in_channels, spec.input_size)


def load_target(target: str | Path) -> tuple[LoadedModel, dict[str, Branch]]:
    """The target as a model, plus its frozen branches when it is a cloned model (stacking, seed Eq. 5)."""
    if file_kind(target) != KIND_CLONED:
        return load_model(target), {}
    cloned, spec, cf = load_cloned(target)
    base = LoadedModel(Path(target), cloned.target, spec, cf.target_sha256, dict(cf.target_metadata))
    return base, dict(cloned.branches.items())  # type: ignore[arg-type]


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
    tgt, existing = load_target(target)
    known = list(tgt.spec.classes) + [c for b in existing.values() for c in b.classes]
    _check_pair(src, tgt)
    positions_for(position, tgt.network.num_blocks)  # a bad --position fails before any data is read
    chosen = parse_classes(classes, list(src.spec.classes))
    if not chosen:
        raise UsageError("--classes is empty; name the source classes to clone")
    renames = _renames(rename)
    new_names = [renames.get(c, c) for c in chosen]
    clash = [(old, new) for old, new in zip(chosen, new_names, strict=True) if new in known]
    if clash:
        old, new = clash[0]
        raise UsageError(f"target {tgt.path} already has class {new!r}; pass --rename {old}=NEW_NAME")
    if len(set(new_names)) < len(new_names):
        raise UsageError(f"--rename gives two cloned classes the same name: {', '.join(new_names)}")
    data = data or recorded_data(src, "source")
    if target_data is None:
        target_data = recorded_data(tgt, "target", required=False)
    spec = tgt.spec
    try:
        clone_train = conform_set(
            load_data(data, classes=chosen, split="train", fraction=config.fraction, split_seed=split_seed),
            spec.in_channels,
            spec.input_size,
        )
    except DataError as exc:
        raise DataError(
            f"data {data} cannot supply the cloned classes {', '.join(chosen)} ({exc}); "
            "pass --data with samples of them"
        ) from None
    clone_test = conform_set(
        load_data(data, classes=chosen, split="test", split_seed=split_seed),
        spec.in_channels,
        spec.input_size,
    )
    n_t = len(known)
    stacked = known[spec.num_classes :]
    images, labels = [clone_train.images], [clone_train.labels + n_t]
    dom = _target_domain(tgt, target_data, chosen, "train", config.fraction, split_seed, stacked)
    net: Any = (
        ClonedModel(tgt.network, list(spec.classes), existing).to_device(device)
        if existing
        else tgt.network.to(device)
    )
    if dom is not None:
        images.append(dom.images)
        labels.append(predict_logits(net, dom.images, device=device).argmax(1))
    x, y = torch.cat(images), torch.cat(labels)
    val_mask = _stratified_val(y, config.val_fraction, config.seed)
    test_x, test_y = [clone_test.images], [clone_test.labels + n_t]
    dom_test = _target_domain(tgt, target_data, chosen, "test", 1.0, split_seed, stacked)
    if dom_test is not None:
        knows = torch.tensor([n in known for n in dom_test.label_names], dtype=torch.bool)
        dom_test = dom_test.subset(knows).relabel(known)
        test_x.append(dom_test.images)
        test_y.append(dom_test.labels)
    val = (x[val_mask], y[val_mask]) if val_mask.any() else None
    return CloneInputs(
        src,
        tgt,
        chosen,
        new_names,
        [list(src.spec.classes).index(c) for c in chosen],
        data,
        target_data,
        (x[~val_mask], y[~val_mask]),
        val,
        (torch.cat(test_x), torch.cat(test_y)),
        clone_train.subset(~val_mask[: len(clone_train)]),
        conform_set(
            load_data(data, classes=chosen, split="train", split_seed=split_seed),
            spec.in_channels,
            spec.input_size,
        ),
        existing,
    )


def local_targets(
    inp: CloneInputs,
    sconfig: SurrogateConfig,
    surrogate: str | Path | None,
    device: torch.device,
    progress: Progress,
) -> LocalTargets:
    """G of the source on cloned-class training images (method spec §2), restricted to C_f.

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
        raise UsageError(f"--position must be 'auto' or a block index, got {position!r}") from None
    if not 0 <= r < num_blocks:
        raise UsageError(
            f"--position {r} is out of range: the target has {num_blocks} blocks, use 0..{num_blocks - 1}"
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
    (method spec §7). "Ori" covers every class the model knew before this clone."""
    spec = inp.target.spec
    net = inp.target.network.to(device)
    before = (
        ClonedModel(net, list(spec.classes), inp.existing).to_device(device).eval() if inp.existing else net
    )
    cloned = ClonedModel(net, list(spec.classes), {**inp.existing, "pnc_new": branch.to(device)}).eval()
    n_known = len(cloned.classes) - len(branch.classes)
    x, y = inp.test
    pred = predict_logits(cloned, x, device=device).argmax(1)
    target_pred = predict_logits(before, x, device=device).argmax(1)
    m = cloning_metrics(pred, y, n_known, target_pred=target_pred)
    m["target_ori_acc"] = cloning_metrics(target_pred, y, n_known)["ori_acc"]
    ori = x[y < n_known]
    m["zest_distance"] = zest_locality(before, cloned, ori) if len(ori) else None
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
        "train_sha256": content_sha256({"x": inp.train[0], "y": inp.train[1]}),
    }


def build_delta(
    inp: CloneInputs,
    branch: Branch,
    masks: dict[str, torch.Tensor],
    scores: list[PositionScore],
    metrics: dict[str, Any],
    *,
    name: str | None,
    online: bool,
    config: CloneConfig,
    sconfig: SurrogateConfig | None,
    split_seed: int,
) -> DeltaFile:
    branch = branch.cpu()
    extra = count_kept_params(branch.module, masks, branch.adapter.out_shape) + sum(
        p.numel() for n, p in branch.named_parameters() if not n.startswith("module.")
    )
    metrics.update(extra_params=extra, extra_params_ratio=extra / inp.target.network.num_params())
    info = {
        "target": target_info(inp.target),
        "source": source_info(inp.source),
        "classes": inp.new_classes,
        "source_class_index": inp.class_index,
        "position": {
            "target": branch.position,
            "source": branch.source_position,
            "target_blocks": inp.target.network.num_blocks,
            "source_blocks": inp.source.network.num_blocks,
        },
        "adapter": branch.adapter.config(),
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
        # per-position timings stay out of the file, so the same seed gives the same delta bytes
        "search": [{k: v for k, v in s.to_dict().items() if k != "seconds"} for s in scores],
    }
    return DeltaFile(
        name or "clone-" + "+".join(inp.new_classes), branch_tensors(branch, masks, online=online), info
    )


def _summary(
    delta: DeltaFile,
    path: Path,
    sha: str,
    metrics: dict[str, Any],
    inp: CloneInputs,
    scores: list[PositionScore],
) -> dict[str, Any]:
    info = delta.info
    return {
        "output": str(path),
        "sha256": sha,
        "name": delta.name,
        "classes": inp.new_classes,
        "position": info["position"]["target"],
        "source_position": info["position"]["source"],
        "search": [s.to_dict() for s in scores],
        "data": inp.data,
        "target_data": inp.target_data,
        "mode": info["mode"],
        "seed": info["seed"],
        **metrics,
    }


def _train(
    inp: CloneInputs,
    positions: list[int],
    config: CloneConfig,
    sconfig: SurrogateConfig,
    surrogate: str | Path | None,
    dev: torch.device,
    progress: Progress,
) -> tuple[SearchOutcome, SurrogateConfig | None]:
    use_local = config.alpha > 0 or config.beta > 0
    if surrogate is not None and not use_local:
        log.warning(
            "--surrogate %s is not used: alpha = beta = 0 turn L_loc and L_ins off (pass --alpha/--beta)",
            surrogate,
        )
    local = local_targets(inp, sconfig, surrogate, dev, progress) if use_local else None
    return run_search(inp, positions, local, config, dev, progress), (
        local.surrogate.config if local else None
    )


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
) -> dict[str, Any]:
    """Clone ``classes`` of ``source`` into ``target``; write the delta (and optionally the merged model).

    Steps (seed Alg. 1): resolve inputs → local model set G → position search (or finish from a
    ``pnc search`` file) → binarised branch → held-out metrics → delta file.
    """
    config, sconfig, dev = _setup(
        config, surrogate_config, [output, merged], force, device, [source, target, surrogate, search]
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
        position=position,
    )
    used_sconfig: SurrogateConfig | None = sconfig
    if search is not None:
        sf = read_search(search)
        check_inputs(sf, fingerprint(inp, config, split_seed), search)
        branch, masks = branch_from_delta(sf.delta), sf.delta.masks()
        scores = [
            PositionScore(
                **{k: (int(v[i]) if "position" in k else float(v[i])) for k, v in sf.curves.items()}
            )
            for i in range(len(sf.curves["position"]))
        ]
        used_sconfig = None
    else:
        outcome, used_sconfig = _train(
            inp,
            positions_for(position, inp.target.network.num_blocks),
            config,
            sconfig,
            surrogate,
            dev,
            progress,
        )
        branch, masks, scores = outcome.branch, outcome.result.masks, outcome.scores
    metrics = evaluate_branch(inp, branch, dev)
    metrics["seconds"] = time.perf_counter() - start
    delta = build_delta(
        inp,
        branch,
        masks,
        scores,
        metrics,
        name=name,
        online=link_source,
        config=config,
        sconfig=used_sconfig,
        split_seed=split_seed,
    )
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
        config, surrogate_config, [output, plot], force, device, [source, target, surrogate]
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
    outcome, used = _train(
        inp, positions_for("auto", inp.target.network.num_blocks), config, sconfig, surrogate, dev, progress
    )
    metrics = evaluate_branch(inp, outcome.branch, dev)
    metrics["seconds"] = time.perf_counter() - start
    delta = build_delta(
        inp,
        outcome.branch,
        outcome.result.masks,
        outcome.scores,
        metrics,
        name=None,
        online=False,
        config=config,
        sconfig=used,
        split_seed=split_seed,
    )
    curves = {
        f: torch.tensor([getattr(s, f) for s in outcome.scores], dtype=torch.float64) for f in CURVE_FIELDS
    }
    sha = write_search(output, SearchFile(delta, curves, fingerprint(inp, config, split_seed)), force=force)
    doc = _summary(delta, Path(output), sha, metrics, inp, outcome.scores)
    if plot is not None:
        doc["plot"] = str(
            plot_search(
                outcome.scores, plot, title=f"{inp.source.path.name} → {inp.target.path.name}", force=force
            )
        )
    return doc
