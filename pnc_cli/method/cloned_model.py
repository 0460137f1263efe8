"""The cloned model M_c: the frozen target plus stacked branches (docs/method-spec.md §3, seed Alg. 1
l.13/24).

Layer: method (torch; uses the adapter and the ``Network`` structure). A branch reads the target's
features after block R (R = 0: the input image), maps them with the adapter A to what the source's
block R_s expects, and runs the source span ``M_s^[R_s:E_s]``, whose output, pooled to at most
``pool × pool`` positions and restricted to the columns in ``keep``, is the branch's *feature* vector.
Two heads read it:

- ``joint`` (default): one linear head over ``[f_t ; f_1 ; … ; f_k]`` (the target's penultimate
  features, every earlier branch's features and this branch's) giving logits for *every* class so far;
  it replaces the logits of everything below it. Joint branches therefore come off last-in-first-out.
- ``append`` (the seed-faithful alternative): a head on the branch's own features with a scalar
  calibration; its logits are appended beside the logits of everything below it, so such branches
  are independent of each other.

The target's network is a real child module (``target_model``), so ``state_dict``, ``.to``,
``.double`` and tracing see it; its parameters are frozen and it always runs in eval mode.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nets.network import Network
from .adapter import Adapter, Renorm, build_adapter
from .random_features import RandomFeatures

HEAD_KINDS = ("joint", "append")


def source_position(target_position: int, target_blocks: int, source_blocks: int) -> int:
    """R_s = ceil(R_t · L_s / L_t) (seed §3.2), clipped so at least one source block remains."""
    return min(math.ceil(target_position * source_blocks / target_blocks), source_blocks - 1)


def last_linear(module: nn.Module) -> nn.Linear:
    if isinstance(module, nn.Linear):
        return module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the classifier has no Linear layer")
    return linears[-1]


def split_classifier(classifier: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(pre, last)`` with ``classifier(h) == last(pre(h))``; ``pre(h)`` is flat and is the target's
    *penultimate features*: the input of its final Linear layer when the classifier is one or an
    ``nn.Sequential`` ending in one, else the flattened block output (``last`` is then the classifier)."""
    if isinstance(classifier, nn.Sequential) and len(classifier) and isinstance(classifier[-1], nn.Linear):
        return nn.Sequential(*classifier[:-1], nn.Flatten(1)), classifier[-1]
    return nn.Flatten(1), classifier


def pool_features(h: torch.Tensor, pool: int) -> torch.Tensor:
    """Flatten a block output: feature maps ``[N, C, H, W]`` are average-pooled to ``pool × pool``
    first when they are larger (``pool = 0``: never pooled); flat features pass unchanged."""
    if h.dim() == 4 and pool > 0 and (h.shape[2] > pool or h.shape[3] > pool):
        h = F.adaptive_avg_pool2d(h, (min(pool, h.shape[2]), min(pool, h.shape[3])))
    return h.flatten(1)


class Branch(nn.Module):
    """Adapter → source span ``[R_s:E_s]`` (frozen, maskable) → pooled features → head.

    ``head`` has ``in_features`` = the branch's own feature width (append) or the width of every
    feature it reads (joint). ``keep`` (int64 buffer, optional) lists the feature columns the branch
    exposes; ``None`` means all of them. ``read`` (joint head, int64 buffer, optional) is the head's
    read index: the columns of ``[f_t ; f_1 ; … ; f_k]`` (the features below the branch) it reads
    before its own features; ``None`` means all of them. ``random`` (joint head, optional) appends
    fixed random ReLU features of those columns before the head (``method.random_features``).
    """

    def __init__(
        self,
        *,
        adapter: Adapter | Renorm,
        module: nn.ModuleList,
        head: nn.Linear,
        position: int,
        source_position: int,
        classes: list[str],
        source_end: int | None = None,
        head_kind: str = "append",
        pool: int = 0,
        keep: torch.Tensor | None = None,
        read: torch.Tensor | None = None,
        random: RandomFeatures | None = None,
    ) -> None:
        super().__init__()
        if head_kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {head_kind!r}")
        self.adapter = adapter
        self.module = module
        self.head = head
        self.calibration = nn.Parameter(torch.tensor([1.0, 0.0]), requires_grad=head_kind == "append")
        self.position = position
        self.source_position = source_position
        self.source_end = source_position + len(module) if source_end is None else source_end
        self.head_kind = head_kind
        self.pool = pool
        self.classes = list(classes)
        self.keep: torch.Tensor | None
        self.register_buffer("keep", None if keep is None else keep.to(torch.int64))
        self.read: torch.Tensor | None
        self.register_buffer("read", None if read is None else read.to(torch.int64))
        self.random: RandomFeatures | None = random  # joint head: random ReLU features (RanPAC option)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> Branch:
        super().train(mode)
        self.module.eval()  # frozen source filters: BatchNorm statistics never move
        return self

    def run_module(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.module:
            h = block(h)
        return h

    def features(self, h_target: torch.Tensor) -> torch.Tensor:
        """The branch's feature vector ``f_m`` from the target's features after block ``position``."""
        f = pool_features(self.run_module(self.adapter(h_target)), self.pool)
        return f if self.keep is None else f.index_select(1, self.keep)

    def source_logits(self, h_source: torch.Tensor) -> torch.Tensor:
        """Append head only: uncalibrated new-class logits from the source's own features after block
        R_s (the L_loc path)."""
        return self.head(pool_features(self.run_module(h_source), self.pool))

    def joint_logits(self, below: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Joint head: logits of every class from the features below (read through ``read``) and ``f``."""
        if self.read is not None:
            below = below.index_select(1, self.read)
        x = torch.cat([below, f], dim=1)
        return self.head(x if self.random is None else self.random(x))

    def append_logits(self, f: torch.Tensor) -> torch.Tensor:
        z = self.head(f)
        return z * self.calibration[0] + self.calibration[1]

    def forward(self, h_target: torch.Tensor) -> torch.Tensor:
        """Append head: calibrated new-class logits. (A joint head needs every feature: see ClonedModel.)"""
        return self.append_logits(self.features(h_target))


def new_branch(
    target: Network,
    source: Network,
    *,
    position: int,
    class_index: list[int],
    classes: list[str],
    in_channels: int,
    input_size: int,
) -> Branch:
    """A fresh append-head branch at target position R (seed §3.2): identity-initialised adapter, the
    source suffix ``[R_s:L_s]``, head initialised from the source classifier's rows of the cloned
    classes. (Joint-head branches are built by ``method.joint``.)"""
    rs = source_position(position, target.num_blocks, source.num_blocks)
    t_shapes = target.block_shapes(in_channels, input_size)
    s_shapes = source.block_shapes(in_channels, input_size)
    src_head = last_linear(source.classifier)
    module = copy.deepcopy(nn.ModuleList(source.blocks[rs:]))
    head = nn.Linear(src_head.in_features, len(class_index))
    with torch.no_grad():
        head.weight.copy_(src_head.weight[class_index])
        head.bias.copy_(src_head.bias[class_index])
    adapter = build_adapter(t_shapes[position], s_shapes[rs])
    return Branch(
        adapter=adapter,
        module=module,
        head=head,
        position=position,
        source_position=rs,
        source_end=source.num_blocks,
        classes=classes,
    )


class ClonedModel(nn.Module):
    """The target (frozen, a child module) with branches stacked in order (see the module docstring)."""

    target_pre: nn.Module
    target_last: nn.Module
    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self, target: Network, target_classes: Sequence[str], branches: dict[str, Branch] | None = None
    ) -> None:
        super().__init__()
        self.target = target  # the Network view (blocks, classifier); its model is the child below
        self.target_model = target.model
        self.target_classes = list(target_classes)
        self.register_buffer("target_mean", target.mean.detach().clone().reshape(-1))
        self.register_buffer("target_std", target.std.detach().clone().reshape(-1))
        # views into target_model, kept out of the module tree so state_dict has no duplicate keys
        self.__dict__["target_pre"], self.__dict__["target_last"] = split_classifier(target.classifier)
        self.branches = nn.ModuleDict(branches or {})
        for p in self.target_model.parameters():
            p.requires_grad_(False)
        self.target_model.eval()

    @property
    def classes(self) -> list[str]:
        return self.target_classes + [c for b in self._branches() for c in b.classes]

    def _branches(self) -> list[Branch]:
        return [b for b in self.branches.values() if isinstance(b, Branch)]

    def train(self, mode: bool = True) -> ClonedModel:
        """Only branches with trainable parameters enter train mode; the target and frozen
        (already cloned) branches stay in eval, so no BatchNorm statistic of theirs moves."""
        super().train(mode)
        self.target_model.eval()
        for branch in self._branches():
            if not any(p.requires_grad for p in branch.parameters()):
                branch.eval()
        return self

    def to_device(self, device: torch.device) -> ClonedModel:
        self.target.to(device)
        return self.to(device)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.target_mean.to(x.dtype).view(1, -1, 1, 1)
        std = self.target_std.to(x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The target's penultimate features and its features before each block a branch reads."""
        wanted = {b.position for b in self._branches()}
        feats: dict[int, torch.Tensor] = {}
        h = self.normalize(x)
        for i, block in enumerate(self.target.blocks):
            if i in wanted:
                feats[i] = h
            h = block(h)
        return self.target_pre(h), feats

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[f_t, f_1, …, f_k]``: what a new joint head on top of this model reads."""
        f_t, feats = self.trunk(x)
        return [f_t, *(b.features(feats[b.position]) for b in self._branches())]

    def stage_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the target alone, then after each branch in order, from one pass over ``x``:
        ``[z_0, z_1, …, z_k]`` (``z_k`` is ``forward(x)``; ``z_{k-1}`` is the model the last branch was
        cloned onto)."""
        f_t, feats = self.trunk(x)
        z = self.target_last(f_t)
        stages = [z]
        read = [f_t]
        for b in self._branches():
            f = b.features(feats[b.position])
            z = (
                b.joint_logits(torch.cat(read, dim=1), f)
                if b.head_kind == "joint"
                else torch.cat([z, b.append_logits(f)], 1)
            )
            read.append(f)
            stages.append(z)
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_logits(x)[-1]
