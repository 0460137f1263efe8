# Third-party models: torch types every submodule attribute as ``Tensor | Module`` (``__getattr__``),
# so attribute access on torchvision/timm models needs these codes off in this file only.
# mypy: disable-error-code="union-attr,operator,list-item,assignment,arg-type,index"
"""Architectures by their ecosystem names: ``torchvision:<name>`` and ``timm:<name>`` (docs/architectures.md).

Layer L1 (torch, torchvision; timm when installed). These names are handled by the registry, not
imported: ``<name>`` must be one of torchvision's classification builders
(``torchvision.models.list_models``) or one of ``timm.list_models()``, and the model is built with
``weights=None`` / ``pretrained=False`` — user weights only, nothing is downloaded, and options that
would load or fetch weights (``weights``, ``pretrained``, ``checkpoint_path``, ...) are refused.

Each family gets an automatic split into blocks (glue such as pooling, flattening and the layers
before the final ``Linear`` go into the last block, so running the blocks then the classifier equals
``model(x)``; tests check it per family):

- ``features`` families (MobileNetV2/V3, EfficientNet, ConvNeXt): a new block starts at every child of
  ``features`` that downsamples (contains a convolution with stride > 1);
- ResNet, RegNet, ShuffleNetV2: stem, then one block per stage;
- ViT (torchvision): patch embedding + class token + position embedding, then the encoder layers in
  four groups; tokens travel between blocks as ``[N, D, T, 1]`` feature maps so that adapters treat
  the embedding as channels (a 1x1 convolution is a per-token linear map).

Stems: the standard (ImageNet) stem unless ``small_input=true`` is given, which replaces the first
convolution with a 3x3 stride-1 one and drops the stem max-pool: the choice is explicit, because it
changes the weight shapes a checkpoint must have. ``in_channels`` other than 3 replace the first
convolution with one of the same kernel and stride taking that many channels.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any

import torch
from torch import nn

from ..core.errors import UnknownArchitectureError
from .registry import ArchInfo, Built, register_namespace

ECOSYSTEM_INPUT_SIZE = 224
REFUSED_KWARGS = (
    "weights",
    "pretrained",
    "checkpoint_path",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "cache_dir",
    "progress",
)


class Stage(nn.Sequential):
    """A run of a model's own submodules (a view: parameters keep the model's state-dict names)."""


class TokensIn(nn.Module):
    """ViT patch embedding, class token and position embedding; tokens out as ``[N, D, T, 1]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv_proj = model.conv_proj
        self.class_token = model.class_token
        self.pos_embedding = model.encoder.pos_embedding
        self.dropout = model.encoder.dropout
        self.patch_size = int(model.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x)  # [N, D, H/p, W/p]
        x = x.reshape(n, x.shape[1], -1).permute(0, 2, 1)  # [N, T, D]
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.dropout(x + self.pos_embedding)
        return x.transpose(1, 2).unsqueeze(-1)


class TokenLayers(nn.Module):
    """Encoder layers applied to ``[N, D, T, 1]`` token maps (``final``: layer norm, then the class token)."""

    def __init__(self, layers: Sequence[nn.Module], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x.squeeze(-1).transpose(1, 2))
        if self.norm is None:
            return x.transpose(1, 2).unsqueeze(-1)
        return self.norm(x)[:, 0]


# --- stems ---------------------------------------------------------------------------------------------


def _conv_like(conv: nn.Module, in_channels: int, small: bool) -> nn.Conv2d:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(
            f"the first layer is a {type(conv).__name__}, not a Conv2d; small_input is not available"
        )
    if small:
        return nn.Conv2d(in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


def _restem(owner: nn.Module, attr: str | int, in_channels: int, small: bool) -> None:
    """Replace ``owner[attr]`` (the first conv) for a small stem or another channel count."""
    conv = owner[attr] if isinstance(attr, int) else getattr(owner, attr)  # type: ignore[index]
    if not small and in_channels == getattr(conv, "in_channels", 3):
        return
    new = _conv_like(conv, in_channels, small)
    if isinstance(attr, int):
        owner[attr] = new  # type: ignore[index]
    else:
        setattr(owner, attr, new)


def _downsamples(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in module.modules())  # type: ignore[arg-type]


def _split_features(features: Sequence[nn.Module]) -> list[nn.Module]:
    """Cut a ``features`` list before every child (other than the first) that downsamples."""
    blocks: list[list[nn.Module]] = [[features[0]]]
    for child in features[1:]:
        if _downsamples(child):
            blocks.append([])
        blocks[-1].append(child)
    return [Stage(*b) for b in blocks]


def _head(seq: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """The modules of a classifier head before its last Linear, and that Linear."""
    if isinstance(seq, nn.Linear):
        return [], seq
    children = list(seq.children())
    idx = max(i for i, m in enumerate(children) if isinstance(m, nn.Linear))
    if idx != len(children) - 1:
        raise TypeError("the classifier head does not end with a Linear layer")
    return children[:idx], children[idx]


def _finish(model: nn.Module, blocks: list[nn.Module], tail: Sequence[nn.Module], fc: nn.Module) -> Built:
    last = blocks[-1]
    blocks[-1] = Stage(*(list(last) if isinstance(last, Stage) else [last]), *tail)
    return model, blocks, fc


# --- torchvision -----------------------------------------------------------------------------------------


def _tv_family(model: nn.Module) -> str:
    from torchvision import models as tvm

    families: list[tuple[type, str]] = [
        (tvm.ResNet, "resnet"),
        (tvm.MobileNetV2, "features"),
        (tvm.MobileNetV3, "features"),
        (tvm.EfficientNet, "features"),
        (tvm.ConvNeXt, "convnext"),
        (tvm.ShuffleNetV2, "shufflenet"),
        (tvm.RegNet, "regnet"),
        (tvm.VisionTransformer, "vit"),
    ]
    for cls, fam in families:
        if isinstance(model, cls):
            return fam
    raise TypeError(
        f"no automatic block split for {type(model).__name__}; supported: ResNet/ResNeXt/Wide ResNet, "
        "MobileNetV2/V3, EfficientNet, ConvNeXt, ShuffleNetV2, RegNet, ViT (or write a custom architecture)"
    )


def _tv_split(model: nn.Module, in_channels: int, small: bool) -> Built:
    fam = _tv_family(model)
    m: Any = model
    if fam == "resnet":
        _restem(m, "conv1", in_channels, small)
        if small:
            m.maxpool = nn.Identity()
        blocks: list[nn.Module] = [
            Stage(m.conv1, m.bn1, m.relu, m.maxpool),
            m.layer1,
            m.layer2,
            m.layer3,
            m.layer4,
        ]
        return _finish(m, blocks, [m.avgpool, nn.Flatten(1)], m.fc)
    if fam == "shufflenet":
        _restem(m.conv1, 0, in_channels, small)
        if small:
            m.maxpool = nn.Identity()
        blocks = [Stage(m.conv1, m.maxpool), m.stage2, m.stage3, m.stage4, m.conv5]
        return _finish(m, blocks, [_GlobalMean()], m.fc)
    if fam == "regnet":
        _restem(m.stem, 0, in_channels, small)
        blocks = [m.stem, *m.trunk_output.children()]
        return _finish(m, blocks, [m.avgpool, nn.Flatten(1)], m.fc)
    if fam == "vit":
        if small:
            raise TypeError("ViT has no small-input stem; choose image_size and patch_size instead")
        if in_channels != 3:
            old = m.conv_proj
            m.conv_proj = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride)
        layers = list(m.encoder.layers)
        groups = [layers[i * len(layers) // 4 : (i + 1) * len(layers) // 4] for i in range(4)]
        blocks = [TokensIn(m), *(TokenLayers(g) for g in groups[:-1]), TokenLayers(groups[-1], m.encoder.ln)]
        pre, fc = _head(m.heads)
        return _finish(m, blocks, pre, fc)
    # "features" families and ConvNeXt
    _restem(m.features[0], 0, in_channels, small)
    blocks = _split_features(list(m.features))
    pre, fc = _head(m.classifier)
    pool = getattr(m, "avgpool", None) or nn.AdaptiveAvgPool2d(1)  # MobileNetV2 pools in forward()
    tail = [pool, *pre] if fam == "convnext" else [pool, nn.Flatten(1), *pre]
    return _finish(m, blocks, tail, fc)


class _GlobalMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean([2, 3])


@cache
def _tv_names() -> frozenset[str]:
    from torchvision import models

    return frozenset(models.list_models(module=models))


def _check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    refused = [k for k in kwargs if k in REFUSED_KWARGS]
    if refused:
        raise TypeError(
            f"{refused[0]!r} is not accepted: pnc builds {name} with random weights and never downloads any; "
            "bring your own with pnc import"
        )


def _tv_build(
    name: str, num_classes: int, in_channels: int, input_size: int, small_input: bool = False, **kwargs: Any
) -> Built:
    from torchvision import models

    _check_kwargs(name, kwargs)
    if name.startswith("vit_"):
        kwargs.setdefault("image_size", input_size)
    model = models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    return _tv_split(model, in_channels, bool(small_input))


def torchvision_architecture(full: str) -> ArchInfo:
    name = full.partition(":")[2]
    if name not in _tv_names():
        close = sorted(n for n in _tv_names() if n.startswith(name[:4]))[:6]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownArchitectureError(
            f"unknown architecture {full!r}: not a torchvision classification model{hint}"
        )
    return ArchInfo(full, partial(_tv_build, name), -1, f"torchvision {name}", ECOSYSTEM_INPUT_SIZE)


# --- timm ------------------------------------------------------------------------------------------------


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def _timm_split(model: nn.Module, in_channels: int, small: bool) -> Built:
    from timm.models.convnext import ConvNeXt
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.resnet import ResNet

    m: Any = model
    drop = [nn.Dropout(float(m.drop_rate))] if float(getattr(m, "drop_rate", 0) or 0) > 0 else []
    if isinstance(m, ResNet):
        if small:
            _restem(m, "conv1", in_channels, True)
            m.maxpool = nn.Identity()
        blocks: list[nn.Module] = [
            Stage(m.conv1, m.bn1, m.act1, m.maxpool),
            m.layer1,
            m.layer2,
            m.layer3,
            m.layer4,
        ]
        return _finish(m, blocks, [m.global_pool, *drop], m.fc)
    if isinstance(m, EfficientNet | MobileNetV3):
        if small:
            _restem(m, "conv_stem", in_channels, True)
        stages = list(m.blocks)
        blocks = _split_features([Stage(m.conv_stem, m.bn1), *stages])
        if isinstance(m, EfficientNet):
            tail = [m.conv_head, m.bn2, m.global_pool, *drop]
        else:
            tail = [m.global_pool, m.conv_head, m.norm_head, m.act2, m.flatten, *drop]
        return _finish(m, blocks, tail, m.classifier)
    if isinstance(m, ConvNeXt):
        if small:
            _restem(m.stem, 0, in_channels, True)
        blocks = [Stage(m.stem, m.stages[0]), *list(m.stages)[1:]]
        h = m.head
        return _finish(m, blocks, [m.norm_pre, h.global_pool, h.norm, h.flatten, h.pre_logits, h.drop], h.fc)
    raise TypeError(
        f"no automatic block split for timm {type(m).__name__}; supported: ResNet family, EfficientNet/"
        "MobileNetV2/MNASNet family, MobileNetV3, ConvNeXt (or write a custom architecture)"
    )


def _timm_build(
    name: str, num_classes: int, in_channels: int, input_size: int, small_input: bool = False, **kwargs: Any
) -> Built:
    import timm

    _check_kwargs(name, kwargs)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    return _timm_split(model, in_channels, bool(small_input))


def timm_architecture(full: str) -> ArchInfo:
    name = full.partition(":")[2]
    if not timm_available():
        raise UnknownArchitectureError(
            f"architecture {full!r} needs timm, which is not installed; pip install 'pnc-cli[timm]'"
        )
    import timm

    if not name or name not in set(timm.list_models()):
        raise UnknownArchitectureError(
            f"unknown architecture {full!r}: not a timm model name (timm.list_models())"
        )
    return ArchInfo(full, partial(_timm_build, name), -1, f"timm {name}", ECOSYSTEM_INPUT_SIZE)


NAMESPACES: dict[str, Callable[[str], ArchInfo]] = {
    "torchvision": torchvision_architecture,
    "timm": timm_architecture,
}
for _prefix, _resolver in NAMESPACES.items():
    register_namespace(_prefix, _resolver)
