"""The joint head fitted in closed form, and the search of the transferable module (docs/method-spec.md §3-5).

Layer: method (pure torch). The project's reading of seed Alg. 1 l.13: one head ``F_c`` over both
branches, ``M_c(x) = F_c([f_t ; f_m])``, where ``f_t`` is what the target's own classifier reads (plus
the features of every branch already stacked on it) and ``f_m`` the output of a source span
``M_s^[0:E]`` run on the input image normalised the source's way (R = 0, the adapter is a fixed
re-normalisation), average-pooled to at most ``max_features`` numbers. ``F_c`` predicts every class of
``C_t ∪ C_f``; it is fitted by ridge regression on one-hot labels (cloned-class samples with their
labels, target-domain samples with the target's own predictions) from sufficient statistics.

Both networks are frozen, so each candidate ``(E, pool)`` costs one forward pass over the data (all
candidates share it: the source runs once and every block output is read) plus one eigendecomposition;
no epochs. A candidate over the size budget chooses what its head reads (``_prune``): it drops the
columns of the features below it (the target's and every earlier branch's: the *read index*) and the
output channels of the span's last layer whose removal raises the ridge objective least per
parameter, refitting on the kept columns (a sub-block of the same statistics) in a few rounds. The
candidate with the best validation accuracy wins (ties: the lower validation squared error, then the
smaller delta); its head is refitted on training plus validation data with the chosen ridge term.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..core.progress import NullProgress, Progress
from ..nets.network import Network
from .adapter import Renorm
from .augment import auto_shifts, forward_macs, with_shifts
from .cloned_model import Branch, ClonedModel, pool_features
from .metrics import cloning_metrics
from .random_features import RandomFeatures
from .ridge import DEFAULT_GRID, RidgeStats, centre, choose_lambda, removal_costs, ridge_inverse, ridge_path
from .selector import bake_masks, count_kept_params, maskable_layers

log = logging.getLogger(__name__)

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class JointSettings:
    """What the closed-form fit needs from ``CloneConfig`` (kept small so the method reads on its own)."""

    max_features: int = 1024
    standardize: bool = True
    ridge_grid: tuple[float, ...] = DEFAULT_GRID
    budget: int | None = None  # extra parameters the delta may store (None: no limit)
    online: bool = False  # the delta will not store the source filters: they do not count
    refit_on_val: bool = True
    random_features: int = 0  # RanPAC option: N random ReLU features of what the head reads (0: off)
    random_seed: int = 0  # the seed of their projection
    shifts: int = 0  # shifted copies of each training image the statistics also see (method.augment)


@dataclass(frozen=True)
class Candidate:
    """A transferable module read by the joint head: source blocks ``[0:end]``, pooled to ``pool``."""

    end: int
    pool: int  # 0: flat features, never pooled
    shape: tuple[int, ...]  # block output shape (no batch)

    @property
    def dim(self) -> int:
        if len(self.shape) == 3 and self.pool:
            c, h, w = self.shape
            return c * min(self.pool, h) * min(self.pool, w)
        return math.prod(self.shape)

    @property
    def group(self) -> int:
        """Feature columns per output channel (pooled positions), 1 for flat features."""
        return self.dim // self.shape[0] if len(self.shape) == 3 else 1


@dataclass(frozen=True)
class CandidateScore:
    position: int
    source_position: int
    source_end: int
    pool: int
    features: int
    ridge: float
    loss: float  # validation squared error of the ridge head (per sample)
    val_ori_acc: float
    val_tar_acc: float
    val_avg_acc: float
    kept_fraction: float
    extra_params: int
    seconds: float
    read_features: int = -1  # columns of the features below (target and earlier branches) the head reads

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class JointOutcome:
    scores: list[CandidateScore]
    best: int
    branch: Branch
    masks: dict[str, torch.Tensor]


def default_shifts(
    base: ClonedModel, source: Network, image_shape: tuple[int, ...], images: int, max_features: int
) -> int:
    """``augment.auto_shifts`` for this pair: the cost per image of the feature pass (the target with its
    branches, and the source up to its deepest candidate), probed with one blank image on the networks'
    device."""
    cands = candidates(source, image_shape, max_features)
    if not cands:
        return 0  # nothing to fit: fit_joint says why
    device = next(iter(base.parameters())).device
    x = torch.zeros(1, *image_shape, device=device)
    renorm = Renorm.between(image_shape, (base.target_mean, base.target_std), (source.mean, source.std))
    macs = forward_macs([base, source.model], lambda: _features(base, renorm.to(device), source, x, cands))
    return auto_shifts(macs, images)


def candidates(source: Network, image_shape: tuple[int, ...], max_features: int) -> list[Candidate]:
    """Every source block output, each at up to three pooling levels that fit ``max_features``
    (halving the side: full, /2, /4, …, down to 1×1)."""
    shapes = source.block_shapes(image_shape[0], image_shape[1])[1:]
    out: list[Candidate] = []
    for end, shape in enumerate(shapes, start=1):
        if len(shape) != 3:
            out.append(Candidate(end, 0, tuple(shape)))
            continue
        c, h, w = shape
        sides, s = [], max(h, w)
        while True:
            if c * min(s, h) * min(s, w) <= max_features:
                sides.append(s)
            if s == 1:
                break
            s = max(1, s // 2)
        for side in sides[:3] or [1]:
            out.append(Candidate(end, 0 if side >= max(h, w) else side, tuple(shape)))
    return out


def _head_params(d_in: int, k: int) -> int:
    return d_in * k + k


def module_params(module: nn.Module, masks: dict[str, torch.Tensor], image_shape: tuple[int, ...]) -> int:
    """Parameters the kept source filters of a span add (zero-input columns cut, as the delta stores them)."""
    return (
        count_kept_params(module, masks, image_shape)
        if masks
        else sum(p.numel() for p in module.parameters())
    )


class _Fit:
    """Statistics, validation features and the solution of one candidate."""

    def __init__(self, cand: Candidate, d_base: int, k: int) -> None:
        self.cand = cand
        self.d_base = d_base
        self.stats = RidgeStats.zeros(d_base + cand.dim, k)
        self.val_x: list[torch.Tensor] = []

    def val(self, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if y is None or not self.val_x:
            return None
        return torch.cat(self.val_x).to(torch.float64), y


def _features(
    base: ClonedModel, renorm: Renorm, source: Network, x: torch.Tensor, cands: list[Candidate]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``F_base [N, d_base]`` and, per candidate, ``f_m [N, dim]`` from one pass of each network."""
    f_base = torch.cat(base.features(x), 1)
    h = renorm(base.normalize(x))
    outs: list[torch.Tensor] = []
    for block in source.blocks[: max(c.end for c in cands)]:
        h = block(h)
        outs.append(h)
    return f_base, [pool_features(outs[c.end - 1], c.pool) for c in cands]


@torch.no_grad()
def joint_features(
    base: ClonedModel, source: Network, x: torch.Tensor, cands: list[Candidate], image_shape: tuple[int, ...]
) -> list[torch.Tensor]:
    """For each candidate, the features its joint head would read, ``[F_base ; f_m]`` ``[N, d]``, for
    images ``x`` in [0, 1] (one pass of each network; used by ranking, LogME)."""
    renorm = Renorm.between(image_shape, (base.target_mean, base.target_std), (source.mean, source.std))
    f_base, f_m = _features(base, renorm.to(x.device), source, x, cands)
    return [torch.cat([f_base, f], 1) for f in f_m]


@torch.no_grad()
def _accumulate(
    base: ClonedModel,
    renorm: Renorm,
    source: Network,
    cands: list[Candidate],
    train: Batches,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    k: int,
    device: torch.device,
    progress: Progress,
    reduce: Callable[[torch.Tensor], object] | None,
) -> tuple[list[_Fit], int]:
    fits: list[_Fit] | None = None
    d_base = 0
    progress.start("features", total=None)
    for x, y in train():
        f_base, f_m = _features(base, renorm, source, x.to(device), cands)
        if fits is None:
            d_base = f_base.shape[1]
            fits = [_Fit(c, d_base, k) for c in cands]
        for fit, f in zip(fits, f_m, strict=True):
            fit.stats.add(torch.cat([f_base, f], 1), y)
        progress.advance(len(y))
    if fits is None:
        raise ValueError("no training data for the joint head")
    if reduce is not None:
        for fit in fits:
            fit.stats.reduce_(reduce)
    if val is not None and len(val[1]):
        for i in range(0, len(val[1]), 512):
            f_base, f_m = _features(base, renorm, source, val[0][i : i + 512].to(device), cands)
            for fit, f in zip(fits, f_m, strict=True):
                fit.val_x.append(torch.cat([f_base, f], 1).cpu())
    progress.finish()
    return fits, d_base


def _columns(d_base: int, cand: Candidate, read: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Feature columns (base first) of the read base columns (bool ``[d_base]``) and the kept channels
    (bool ``[C]``) of the span."""
    own = torch.arange(cand.dim).reshape(cand.shape[0], cand.group)[keep].flatten()
    return torch.cat([torch.nonzero(read).flatten(), d_base + own])


@dataclass
class _Solution:
    lam: float
    score: float
    keep: torch.Tensor | None  # kept output channels of the span's last layer, bool (None: all)
    read: torch.Tensor | None  # base columns the head reads, bool [d_base] (None: all)
    masks: dict[str, torch.Tensor]
    extra: int
    columns: torch.Tensor


PRUNE_ROUNDS = 4  # the excess over the budget is removed in this many steps, refitting in between


@dataclass
class _Pruning:
    """What the read-index selection needs: sizes of a choice, and the cost of each unit dropped."""

    fit: _Fit
    lam: float
    k: int
    budget: int
    column_cost: int  # parameters one column of the features below costs (its head weights, ...)
    size: Callable[[torch.Tensor, torch.Tensor], int]  # (read, keep) -> extra parameters
    channel_cost: int | None  # parameters one span channel costs besides its head columns (None: fixed)
    standardize: bool


def _prune(p: _Pruning) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Choose the head's read index under the budget: ``(read [d_base], keep [C])`` as bool masks.

    Units are the base columns (the target's penultimate features and every earlier branch's: one
    column, ``k`` head parameters each) and the span's output channels (``group`` columns, their head
    parameters and their filter). In ``PRUNE_ROUNDS`` steps, the units whose removal raises the ridge
    objective least per parameter saved (``ridge.removal_costs``) are dropped and the head refitted on
    the sub-block of the same statistics, until the delta fits; None when it cannot (one span channel
    and nothing else left)."""
    cand, d_base, k = p.fit.cand, p.fit.d_base, p.k
    read = torch.ones(d_base, dtype=torch.bool)
    keep = torch.ones(cand.shape[0], dtype=torch.bool)
    size = full = p.size(read, keep)
    ch_cost = None if p.channel_cost is None else cand.group * k + p.channel_cost
    for r in range(PRUNE_ROUNDS):
        if size <= p.budget:
            break
        goal = full - (full - p.budget) * (r + 1) / PRUNE_ROUNDS
        cols = _columns(d_base, cand, read, keep)
        wz, inv = ridge_inverse(p.fit.stats.select(cols), p.lam, standardize=p.standardize)
        nb, nk = int(read.sum()), int(keep.sum())
        loss_base = removal_costs(wz, inv, torch.arange(nb)[:, None])
        loss_ch = removal_costs(wz, inv, nb + torch.arange(nk * cand.group).reshape(nk, cand.group))
        base_idx = torch.nonzero(read).flatten()
        ch_idx = torch.nonzero(keep).flatten()
        cc = p.column_cost
        units = [(float(e) / cc, 0, int(i), cc) for e, i in zip(loss_base, base_idx, strict=True)]
        if ch_cost is not None:
            units += [(float(e) / ch_cost, 1, int(i), ch_cost) for e, i in zip(loss_ch, ch_idx, strict=True)]
        units.sort()
        channels_left = len(ch_idx)
        for _, kind, i, cost in units:
            if size <= goal:
                break
            if kind == 1:
                if channels_left <= 1:
                    continue  # the span keeps at least one channel
                keep[i] = False
                channels_left -= 1
            else:
                read[i] = False
            size -= cost
        size = p.size(read, keep)
    return (read, keep) if size <= p.budget else None


def _solve(
    fit: _Fit,
    module: nn.ModuleList,
    settings: JointSettings,
    val_y: torch.Tensor | None,
    k: int,
    image_shape: tuple[int, ...],
) -> _Solution | None:
    """λ by validation accuracy; then, over the budget, choose what the head reads and refit."""
    cand, d_base = fit.cand, fit.d_base
    path = ridge_path(fit.stats, standardize=settings.standardize)
    val = fit.val(val_y)
    lam, score = choose_lambda(path, val, settings.ridge_grid)
    renorm_params = 2 * image_shape[0]
    layers = maskable_layers(module)
    last_name, last = list(layers.items())[-1] if layers else ("", None)
    prunable = last is not None and _n_out(last) == cand.shape[0]  # channels = the last layer's outputs

    def masks_of(keep: torch.Tensor) -> dict[str, torch.Tensor]:
        if bool(keep.all()):
            return {}
        masks = {name: torch.ones(_n_out(layer), dtype=torch.bool) for name, layer in layers.items()}
        masks[last_name] = keep.clone()
        return masks

    def extra(read: torch.Tensor, keep: torch.Tensor) -> int:
        source = 0 if settings.online else module_params(module, masks_of(keep), image_shape)
        n_cols = int(read.sum()) + int(keep.sum()) * cand.group
        rf = settings.random_features
        return source + renorm_params + _head_params(n_cols + rf, k) + (2 * n_cols if rf else 0)

    read = torch.ones(d_base, dtype=torch.bool)
    keep = torch.ones(cand.shape[0], dtype=torch.bool)
    full = extra(read, keep)
    if settings.budget is None or full <= settings.budget:
        return _Solution(lam, score, None, None, {}, full, torch.arange(d_base + cand.dim))
    channel_cost = None
    if prunable and cand.shape[0] > 1:
        one_less = keep.clone()
        one_less[0] = False
        channel_cost = extra(read, keep) - extra(read, one_less) - cand.group * k
    column_cost = k + (2 if settings.random_features else 0)  # random features: its mean and scale too
    chosen = _prune(
        _Pruning(fit, lam, k, settings.budget, column_cost, extra, channel_cost, settings.standardize)
    )
    if chosen is None:
        return None
    read, keep = chosen
    cols = _columns(d_base, cand, read, keep)
    path = ridge_path(fit.stats.select(cols), standardize=settings.standardize)
    lam, score = choose_lambda(path, None if val is None else (val[0][:, cols], val[1]), settings.ridge_grid)
    return _Solution(
        lam,
        score,
        None if bool(keep.all()) else keep,
        None if bool(read.all()) else read,
        masks_of(keep),
        extra(read, keep),
        cols,
    )


def _n_out(layer: nn.Module) -> int:
    if isinstance(layer, nn.Conv2d):
        return int(layer.out_channels)
    assert isinstance(layer, nn.Linear)
    return int(layer.out_features)


def _val_metrics(
    w: torch.Tensor, b: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor] | None, n_known: int
) -> tuple[dict[str, float], float]:
    nan = float("nan")
    if val is None:
        return {"ori_acc": nan, "tar_acc": nan, "avg_acc": nan}, nan
    x, y = val
    z = x @ w.T + b
    onehot = torch.nn.functional.one_hot(y.long(), z.shape[1]).to(z.dtype)
    loss = float((z - onehot).pow(2).sum(1).mean())
    return cloning_metrics(z.argmax(1), y, n_known), loss


def fit_joint(
    *,
    base: ClonedModel,
    source: Network,
    new_classes: list[str],
    image_shape: tuple[int, ...],
    train: Batches,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    settings: JointSettings,
    ends: list[int] | None = None,
    device: torch.device | None = None,
    progress: Progress | None = None,
    reduce: Callable[[torch.Tensor], object] | None = None,
) -> JointOutcome:
    """Search the transferable module and fit the joint head (see the module docstring).

    Args:
        base: the target (with the branches already stacked on it), frozen.
        source: the source network, frozen.
        new_classes: the cloned classes' names, in label order after ``base.classes``.
        image_shape: ``(C, H, W)`` of the inputs.
        train: a callable returning an iterable of ``(images in [0, 1], labels)`` batches; labels index
            ``base.classes + new_classes``. Called once (streamed).
        val: validation images and labels (held in memory), or None.
        ends: the source block counts ``E`` to consider (default: all).
        reduce: sums a tensor across processes in place (``torch.distributed.all_reduce``), or None.
    """
    progress = progress or NullProgress()
    device = device or torch.device("cpu")
    k = len(base.classes) + len(new_classes)
    n_known = len(base.classes)
    renorm = Renorm.between(image_shape, (base.target_mean, base.target_std), (source.mean, source.std)).to(
        device
    )
    cands = [
        c for c in candidates(source, image_shape, settings.max_features) if ends is None or c.end in ends
    ]
    if not cands:
        raise ValueError("no candidate module: check the source's blocks and max_features")
    train = with_shifts(train, settings.shifts)
    start = time.perf_counter()
    fits, d_base = _accumulate(base, renorm, source, cands, train, val, k, device, progress, reduce)
    feature_seconds = time.perf_counter() - start
    val_y = None if val is None else val[1].cpu()
    scores: list[CandidateScore] = []
    solutions: list[_Solution | None] = []
    progress.start("fit heads", total=len(fits))
    for fit in fits:
        t0 = time.perf_counter()
        module = nn.ModuleList(source.blocks[: fit.cand.end])
        sol = _solve(fit, module, settings, val_y, k, image_shape)
        solutions.append(sol)
        if sol is None:
            log.info("candidate E=%d pool=%d does not fit the size budget", fit.cand.end, fit.cand.pool)
        else:
            path = ridge_path(fit.stats.select(sol.columns), standardize=settings.standardize)
            w, b = path.solve(sol.lam)
            v = fit.val(val_y)
            m, loss = _val_metrics(w, b, None if v is None else (v[0][:, sol.columns], v[1]), n_known)
            kept = 1.0 if sol.keep is None else float(sol.keep.double().mean())
            seconds = time.perf_counter() - t0 + feature_seconds / len(fits)
            scores.append(
                CandidateScore(
                    0,
                    0,
                    fit.cand.end,
                    fit.cand.pool,
                    len(sol.columns) - (d_base if sol.read is None else int(sol.read.sum())),
                    sol.lam,
                    loss,
                    m["ori_acc"],
                    m["tar_acc"],
                    m["avg_acc"],
                    kept,
                    sol.extra,
                    seconds,
                    d_base if sol.read is None else int(sol.read.sum()),
                )
            )
        progress.advance(1)
    progress.finish()
    if not scores:
        raise BudgetError(
            f"no candidate module fits the size budget (the head alone reads {d_base} features below it for "
            f"{k} classes: {_head_params(d_base, k)} parameters); raise the budget or lower max_features"
        )
    best = best_candidate(scores)
    chosen = scores[best]
    i = next(j for j, f in enumerate(fits) if f.cand.end == chosen.source_end and f.cand.pool == chosen.pool)
    fit, sol = fits[i], solutions[i]
    assert sol is not None
    branch = _build_branch(fit, sol, source, renorm, new_classes, k, val, base, device, settings)
    if settings.random_features:
        branch = _with_random_features(
            branch, fit, sol, source, renorm, train, val, base, device, settings, reduce
        )
    return JointOutcome(scores, best, branch, sol.masks)


class BudgetError(ValueError):
    """No candidate fits the size budget."""


def best_candidate(scores: list[CandidateScore]) -> int:
    """Index of the winner: validation accuracy first; ties (small validation splits often tie) by the
    lower validation squared error, then the smaller delta (then the first)."""
    return max(
        range(len(scores)),
        key=lambda i: (_nan_low(scores[i].val_avg_acc), -_nan_high(scores[i].loss), -scores[i].extra_params),
    )


def _nan_low(v: float) -> float:
    return -1.0 if math.isnan(v) else v


def _nan_high(v: float) -> float:
    return math.inf if math.isnan(v) else v


def _build_branch(
    fit: _Fit,
    sol: _Solution,
    source: Network,
    renorm: Renorm,
    new_classes: list[str],
    k: int,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    base: ClonedModel,
    device: torch.device,
    settings: JointSettings,
) -> Branch:
    stats = fit.stats
    if settings.refit_on_val and val is not None and len(val[1]):
        extra = RidgeStats.zeros(stats.dim, k)
        for x, y in zip(fit.val_x, val[1].split([len(v) for v in fit.val_x]), strict=True):
            extra.add(x, y)
        stats = stats + extra
    path = ridge_path(stats.select(sol.columns), standardize=settings.standardize)
    w, b = path.solve(sol.lam)
    module = copy.deepcopy(nn.ModuleList(source.blocks[: fit.cand.end])).cpu()
    if sol.masks:
        bake_masks(module, sol.masks)
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w.float())
        head.bias.copy_(b.float())
    n_read = fit.d_base if sol.read is None else int(sol.read.sum())
    keep = None if sol.keep is None else (sol.columns[n_read:] - fit.d_base).to(torch.int64)
    read = None if sol.read is None else sol.columns[:n_read].to(torch.int64)
    branch = Branch(
        adapter=copy.deepcopy(renorm).cpu(),
        module=module,
        head=head,
        position=0,
        source_position=0,
        source_end=fit.cand.end,
        classes=new_classes,
        head_kind="joint",
        pool=fit.cand.pool,
        keep=keep,
        read=read,
    )
    for p in branch.parameters():
        p.requires_grad_(False)
    return branch.eval()


def _with_random_features(
    branch: Branch,
    fit: _Fit,
    sol: _Solution,
    source: Network,
    renorm: Renorm,
    train: Batches,
    val: tuple[torch.Tensor, torch.Tensor] | None,
    base: ClonedModel,
    device: torch.device,
    settings: JointSettings,
    reduce: Callable[[torch.Tensor], object] | None,
) -> Branch:
    """The chosen branch with its head refitted on ``[x ; ReLU(z P)]`` (``method.random_features``): one
    more pass over the training data (the random features are not linear in the statistics), λ chosen
    on the validation split, then refitted on training plus validation data like the linear head."""
    k, cols = branch.head.out_features, sol.columns
    c = centre(fit.stats.select(cols))  # the standardisation the random features apply
    rf = RandomFeatures(
        c.mean.float(), c.scale.float(), features=settings.random_features, seed=settings.random_seed
    ).to(device)
    total = RidgeStats.zeros(len(cols) + rf.features, k)
    with torch.no_grad():
        for x, y in train():
            f_base, (f_m,) = _features(base, renorm, source, x.to(device), [fit.cand])
            total.add(rf(torch.cat([f_base, f_m], 1)[:, cols.to(device)].float()), y)
    if reduce is not None:
        total.reduce_(reduce)
    val_rf = None
    if val is not None and fit.val_x:
        with torch.no_grad():
            val_rf = (rf.cpu()(torch.cat(fit.val_x)[:, cols].float()).double(), val[1].cpu())
    lam, _ = choose_lambda(ridge_path(total, standardize=settings.standardize), val_rf, settings.ridge_grid)
    if settings.refit_on_val and val_rf is not None:
        total.add(val_rf[0], val_rf[1])
    w, b = ridge_path(total, standardize=settings.standardize).solve(lam)
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w.float())
        head.bias.copy_(b.float())
    branch.head = head
    branch.random = rf.cpu()
    for p in branch.parameters():
        p.requires_grad_(False)
    return branch.eval()


def batches(x: torch.Tensor, y: torch.Tensor, size: int) -> Batches:
    """In-memory tensors as a re-iterable source of batches."""

    def gen() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(y), size):
            yield x[i : i + size], y[i : i + size]

    return gen
