"""Training one branch: adapter A, selector M and head F_c on a frozen source and target
(docs/method-spec.md §4).

Layer method (torch). Loss: L_cls + α·L_loc + β·L_ins + γ·‖M‖₁ where
- L_cls: cross-entropy of M_c over C_t ∪ C_f on the training data (cloned classes carry their label,
  target-domain samples carry the target's own prediction);
- L_loc: Π_b-weighted squared error between the masked source path M_s^[0:R_s] ∘ M_f ∘ F_c on b·x_i
  and the local model g_i(b) restricted to C_f;
- L_ins: the same for M_c's new-class logits z_f (before the calibration with ``ins_logits="raw"``);
- ‖M‖₁: the selector penalty (``mask_penalty``; "params": expected kept share of maskable parameters).
Schedule (docs/cloning.md "Training details"): the selector temperature is annealed geometrically from
``temperature`` to ``temperature_end`` over the ``epochs``; in the last ``straight_through_epochs`` of
them the forward pass uses the hard 0/1 mask, trimmed to the size budget ``max_extra_ratio`` when one is
set (gradients through the soft mask). Then the mask is binarised and trimmed to the budget, the adapter
and head are fine-tuned with the hard mask for ``finetune_epochs``, and the dropped filters are zeroed
in the branch's own copy of the source blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.config import CloneConfig
from ..core.distributed import is_distributed, rank, world_size
from ..core.errors import RuntimeFailure
from ..core.progress import NullProgress, Progress
from ..nets.network import Network
from .cloned_model import Branch, ClonedModel
from .selector import ChannelSelector, bake_masks, count_kept_params
from .surrogate import SurrogateResult, perturb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalTargets:
    """The local model set restricted to the cloned classes, with the images it was fitted on."""

    images: torch.Tensor  # [N, C, H, W] in [0, 1]
    surrogate: SurrogateResult
    columns: list[int]  # source class indices of C_f

    def batch(
        self, k_samples: int, k_masks: int, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Perturbed images [k·m, C, H, W], targets g_i(b) [k·m, |C_f|] and weights Π_b [k·m]."""
        s = self.surrogate
        si = torch.randint(len(self.images), (k_samples,), generator=g)
        bi = torch.randint(len(s.masks), (k_masks,), generator=g)
        masks = s.masks[bi]
        x = perturb(self.images[si], masks, s.config.grid).flatten(0, 1)
        cols = torch.tensor(self.columns)
        theta = s.theta[si][:, :, cols]  # [k, P, |C_f|]
        target = torch.einsum("mp,kpc->kmc", masks, theta) + s.intercept[si][:, None, cols]
        w = s.weights[bi].expand(k_samples, -1)
        return x, target.flatten(0, 1), w.flatten()


@dataclass
class BranchTrainResult:
    position: int
    source_position: int
    epoch_losses: list[float] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    kept_fraction: float = 1.0

    @property
    def final_loss(self) -> float:
        return self.epoch_losses[-1] if self.epoch_losses else float("nan")


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * (pred - target).pow(2).mean(dim=1)).sum() / weights.sum().clamp_min(1e-12)


class _TrainSelector(ChannelSelector):
    """A selector whose forward mask can be the straight-through estimate of a hard mask.

    In straight-through mode the forward pass uses ``st_masks`` (the budget-fitted hard masks) when
    set, else ``soft >= 0.5``; gradients flow through the soft mask either way.
    """

    straight_through = False
    st_masks: dict[str, torch.Tensor] | None = None

    def mask(self, name: str) -> torch.Tensor:
        if self.straight_through and not self.is_hard:
            soft = self.soft_mask(name)
            hard = self.st_masks[name].to(soft.device) if self.st_masks is not None else soft >= 0.5
            return hard.to(soft.dtype) + soft - soft.detach()
        return super().mask(name)


def _temperature(config: CloneConfig, epoch: int) -> float:
    """Geometric annealing from ``temperature`` (first epoch) to ``temperature_end`` (last epoch, if not
    the first)."""
    return config.temperature * (config.temperature_end / config.temperature) ** (
        epoch / max(config.epochs - 1, 1)
    )


def _branch(cloned: ClonedModel, name: str) -> Branch:
    branch = cloned.branches[name]
    assert isinstance(branch, Branch)
    return branch


class _Losses(torch.nn.Module):
    """``_Step.losses`` as a module's forward, so that ``DistributedDataParallel`` can wrap it: the
    trainable parameters are the branch's and the selector's (the target and source are frozen)."""

    def __init__(self, step: _Step, selector: ChannelSelector | None) -> None:
        super().__init__()
        self.step = step
        self.cloned = step.cloned
        self.selector = selector

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        return self.step.losses(x, y, g, device)


def _distributed(module: _Losses, device: torch.device) -> torch.nn.Module:
    """Under torchrun: DDP over the trainable parameters (gradients averaged across processes)."""
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def _shard(idx: torch.Tensor) -> torch.Tensor:
    """This process's part of a batch (the whole batch when it has fewer samples than processes)."""
    w = world_size()
    return idx.tensor_split(w)[rank()] if w > 1 and len(idx) >= w else idx


class _Step:
    """One optimisation step's losses for a branch (shared by the main and fine-tune phases)."""

    def __init__(
        self, cloned: ClonedModel, name: str, source: Network, local: LocalTargets | None, config: CloneConfig
    ) -> None:
        self.cloned, self.name, self.source, self.local, self.config = cloned, name, source, local, config
        self.branch = _branch(cloned, name)
        ratio = config.max_extra_ratio
        self.budget = None if ratio is None else int(ratio * cloned.target.num_params())
        self.offset = len(cloned.classes) - len(self.branch.classes)

    def losses(
        self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, device: torch.device
    ) -> dict[str, torch.Tensor]:
        out = {"cls": F.cross_entropy(self.cloned(x), y)}
        c = self.config
        if self.local is not None and (c.alpha > 0 or c.beta > 0):
            xb, target, w = (t.to(device) for t in self.local.batch(c.loc_samples, c.loc_masks, g))
            br = self.branch
            if c.alpha > 0:
                with torch.no_grad():
                    h_src = self.source.features(xb, br.source_position)
                out["loc"] = _weighted_mse(br.source_logits(h_src), target, w)
            if c.beta > 0:
                with torch.no_grad():
                    h_t = self.cloned.target.features(xb, br.position)
                # "raw": the branch's logits before the calibration, which alone maps them to the target's
                # scale
                z = br(h_t) if c.ins_logits == "calibrated" else br.source_logits(br.adapter(h_t))
                out["ins"] = _weighted_mse(z, target, w)
        return out

    def total(self, parts: dict[str, torch.Tensor], mask_penalty: torch.Tensor | None) -> torch.Tensor:
        c = self.config
        loss = parts["cls"] + c.alpha * parts.get("loc", 0.0) + c.beta * parts.get("ins", 0.0)
        if mask_penalty is not None:
            loss = loss + c.gamma * mask_penalty
        return loss


def _run_epochs(
    step: _Step,
    opt: torch.optim.Optimizer,
    selector: ChannelSelector | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    g: torch.Generator,
    device: torch.device,
    progress: Progress,
    schedule: bool = False,
) -> tuple[list[float], dict[str, float]]:
    """``schedule``: anneal the selector temperature and switch to straight-through masks (main phase).

    Under torchrun every process draws the same batches (same seed) and computes the loss on its
    share of each (``_shard``); ``DistributedDataParallel`` averages the gradients.
    """
    bs = step.config.batch_size
    model = _distributed(_Losses(step, selector), device)
    losses: list[float] = []
    comps: dict[str, float] = {}
    for epoch in range(epochs):
        if schedule and isinstance(selector, _TrainSelector):
            selector.temperature = _temperature(step.config, epoch)
            # never in the first epoch: the scores have not been trained yet
            selector.straight_through = epoch >= max(epochs - step.config.straight_through_epochs, 1)
            if selector.straight_through and step.budget is not None:
                selector.st_masks, _ = budget_masks(selector, step.branch, step.budget)
        sums: dict[str, float] = {}
        total_sum, n = 0.0, 0
        for idx in torch.randperm(len(labels), generator=g).split(bs):
            mine = _shard(idx)
            x, y = images[mine].to(device), labels[mine].to(device)
            parts = model(x, y, g, device)
            penalty = (
                selector.penalty(step.config.mask_penalty)
                if selector is not None and not selector.is_hard
                else None
            )
            loss = step.total(parts, penalty)
            if not torch.isfinite(loss):
                raise RuntimeFailure(
                    "cloning diverged (non-finite loss); lower lr or the loss weights", options=("lr",)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_sum += (
                (loss - step.config.gamma * penalty).item() * len(idx)
                if penalty is not None
                else loss.item() * len(idx)
            )
            n += len(idx)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
            if penalty is not None:
                sums["mask"] = sums.get("mask", 0.0) + penalty.item() * len(idx)
        losses.append(total_sum / n)
        comps = {k: v / n for k, v in sums.items()}
        progress.advance(1, loss=losses[-1])
    return losses, comps


def train_branch(
    cloned: ClonedModel,
    name: str,
    source: Network,
    images: torch.Tensor,
    labels: torch.Tensor,
    local: LocalTargets | None,
    config: CloneConfig,
    *,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> BranchTrainResult:
    """Train branch ``name`` of ``cloned`` in place; returns the loss curve and the binary masks.

    Only the branch's adapter, head, calibration and the selector scores receive gradients; the
    target, the source and the branch's copy of the source blocks stay frozen (eval mode).
    """
    progress = progress or NullProgress()
    device = device or torch.device("cpu")
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    branch = _branch(cloned, name)
    selector = _TrainSelector(branch.module, temperature=config.temperature, init_score=config.init_score).to(
        device
    )
    trainable = [p for n, p in branch.named_parameters() if not n.startswith("module.")]
    opt = torch.optim.Adam(
        [{"params": trainable, "lr": config.lr}, {"params": selector.parameters(), "lr": config.mask_lr}]
    )
    step = _Step(cloned, name, source, local, config)
    result = BranchTrainResult(branch.position, branch.source_position)
    progress.start(f"train R={branch.position}", total=config.epochs + config.finetune_epochs)
    cloned.train()
    try:
        result.epoch_losses, result.components = _run_epochs(
            step, opt, selector, images, labels, config.epochs, g, device, progress, schedule=True
        )
        selector.binarize()
        if step.budget is not None:
            fit_budget(selector, branch, step.budget)
        result.masks = {k: v.cpu() for k, v in selector.hard_masks().items()}
        result.kept_fraction = selector.kept_fraction()
        if config.finetune_epochs:
            ft = torch.optim.Adam(trainable, lr=config.lr * config.finetune_lr_scale)
            ft_losses, _ = _run_epochs(
                step, ft, selector, images, labels, config.finetune_epochs, g, device, progress
            )
            result.epoch_losses += ft_losses  # the converged loss is that of the branch actually kept
    finally:
        selector.remove()
        cloned.eval()
        progress.finish()
    bake_masks(branch.module, result.masks)
    return result


def branch_params(branch: Branch, masks: dict[str, torch.Tensor]) -> int:
    """Parameters the branch adds to the target once sliced: kept source filters + adapter, head,
    calibration."""
    own = sum(p.numel() for n, p in branch.named_parameters() if not n.startswith("module."))
    return own + count_kept_params(branch.module, masks, branch.adapter.out_shape)


def budget_masks(
    selector: ChannelSelector, branch: Branch, budget: int
) -> tuple[dict[str, torch.Tensor], bool]:
    """The selector's hard masks, minus the lowest-scoring kept filters until the branch fits ``budget``
    parameters; and whether it fits.

    Kept filters are ranked by score over all layers (ties: layer order, then index) and the fewest
    lowest-ranked ones are dropped (bisection). Every layer keeps at least its top-ranked filter; where
    even that minimum does not fit, the minimum is returned.
    """
    masks = selector.hard_masks()
    if branch_params(branch, masks) <= budget:
        return masks, True
    scores = {n: selector.score(n).detach().cpu().tolist() for n in selector.names}
    cand = [
        (scores[n][i], li, i, n)
        for li, n in enumerate(selector.names)
        for i in torch.nonzero(masks[n]).flatten().tolist()
    ]
    cand.sort()  # ascending score; ties by layer order, then index
    last = {}
    for _, _, i, n in cand:
        last[n] = i  # each layer's top-ranked kept filter: never dropped

    def drop(k: int) -> dict[str, torch.Tensor]:
        out = {n: m.clone() for n, m in masks.items()}
        for _, _, i, n in cand[:k]:
            if i != last[n]:
                out[n][i] = False
        return out

    lo, hi = 1, len(cand)  # drop(0) does not fit; drop(len) is the minimum
    while lo < hi:
        mid = (lo + hi) // 2
        if branch_params(branch, drop(mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    final = drop(lo)
    return final, branch_params(branch, final) <= budget


def fit_budget(selector: ChannelSelector, branch: Branch, budget: int) -> bool:
    """Switch the selector to :func:`budget_masks`; log a warning where the budget cannot be met."""
    masks, ok = budget_masks(selector, branch, budget)
    selector.set_hard_masks(masks)
    if not ok:
        log.warning(
            "branch at R=%d keeps one filter per layer and still exceeds the extra-params budget (%d params)",
            branch.position,
            budget,
        )
    return ok
