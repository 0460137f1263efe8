"""The cloned model M_c: the frozen target plus one or more branches (method spec §3, seed Alg. 1 l.13/24).

Layer L3 (torch; uses adapter and the Network structure). A branch reads the target's features after
block R, maps them with the adapter A to what the source's block R_s expects, runs the (masked) source
blocks R_s..L_s-1 and a new head F_c with a scalar calibration, and appends its logits to the
target's untouched logits:  M_c(x) = [head_t(M_t^[R:L](h)) ; F_c(M ⊙ M_s^[R_s:L_s](A(h)))],
h = M_t^[0:R](x). The target is never an nn.Module child, so ``ClonedModel.parameters()`` are the
branches' own parameters only.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..nets.registry import Network
from .adapter import Adapter, build_adapter


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


class Branch(nn.Module):
    """Adapter → source blocks (frozen, maskable) → head with calibration (scale, bias)."""

    def __init__(
        self,
        *,
        adapter: Adapter,
        module: nn.ModuleList,
        head: nn.Linear,
        position: int,
        source_position: int,
        classes: list[str],
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.module = module
        self.head = head
        self.calibration = nn.Parameter(torch.tensor([1.0, 0.0]))
        self.position = position
        self.source_position = source_position
        self.classes = list(classes)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> Branch:
        super().train(mode)
        self.module.eval()  # frozen source filters: BatchNorm statistics never move
        return self

    def features(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.module:
            h = block(h)
        return h

    def source_logits(self, h_source: torch.Tensor) -> torch.Tensor:
        """Uncalibrated new-class logits from the source's own features after block R_s (L_loc path)."""
        return self.head(self.features(h_source))

    def forward(self, h_target: torch.Tensor) -> torch.Tensor:
        z = self.head(self.features(self.adapter(h_target)))
        return z * self.calibration[0] + self.calibration[1]


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
    """A fresh branch at target position R: identity-initialised adapter, copied source blocks, head
    initialised from the source classifier's rows of the cloned classes."""
    rs = source_position(position, target.num_blocks, source.num_blocks)
    t_shapes = target.block_shapes(in_channels, input_size)
    s_shapes = source.block_shapes(in_channels, input_size)
    module = copy.deepcopy(nn.ModuleList(source.blocks[rs:]))
    src_head = last_linear(source.classifier)
    head = nn.Linear(src_head.in_features, len(class_index))
    with torch.no_grad():
        head.weight.copy_(src_head.weight[class_index])
        head.bias.copy_(src_head.bias[class_index])
    adapter = build_adapter(t_shapes[position], s_shapes[rs])
    return Branch(
        adapter=adapter, module=module, head=head, position=position, source_position=rs, classes=classes
    )


class ClonedModel(nn.Module):
    """The target (frozen, not a child module) with branches whose logits are appended in order."""

    def __init__(
        self, target: Network, target_classes: list[str], branches: dict[str, Branch] | None = None
    ) -> None:
        super().__init__()
        self.target = target
        self.target_classes = list(target_classes)
        self.branches = nn.ModuleDict(branches or {})

    @property
    def classes(self) -> list[str]:
        return self.target_classes + [c for b in self.branches.values() for c in b.classes]  # type: ignore[union-attr]

    def train(self, mode: bool = True) -> ClonedModel:
        """Only branches with trainable parameters enter train mode; the target and frozen
        (already cloned) branches stay in eval, so no BatchNorm statistic of theirs moves."""
        super().train(mode)
        self.target.model.eval()
        for branch in self.branches.values():
            if not any(p.requires_grad for p in branch.parameters()):
                branch.eval()
        return self

    def to_device(self, device: torch.device) -> ClonedModel:
        self.target.to(device)
        return self.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wanted = {int(b.position) for b in self.branches.values()}  # type: ignore[union-attr]
        feats: dict[int, torch.Tensor] = {}
        h = self.target.normalize(x)
        for i, block in enumerate(self.target.blocks):
            if i in wanted:
                feats[i] = h
            h = block(h)
        outs = [self.target.classifier(h)]
        outs += [b(feats[b.position]) for b in self.branches.values()]  # type: ignore[operator, union-attr]
        return torch.cat(outs, dim=1)
