"""Selector mask ``M`` over the transferable source module (method spec §3, seed Alg. 1 line 21).

Layer L2 "algorithm": pure torch + stdlib (+ ``pnc_cli.errors``). Must not import typer, rich or any
other pnc_cli module, must not print and must not touch files.

:class:`ChannelSelector` keeps one learnable score per output channel (``Conv2d``) or unit
(``Linear``) of every such layer inside a frozen module and masks the layer outputs through forward
hooks; it never modifies the module's parameters or buffers and does not own the module (its
``parameters()`` and ``state_dict()`` hold only the scores). Soft mask during training:
``sigmoid(score / temperature)``; after :meth:`ChannelSelector.binarize` a 0/1 mask that keeps at least
one channel per layer.

:func:`slice_state` / :func:`unslice_state` cut the kept filters out of a state dict for storage and put
them back with zeros in the dropped rows; a module loaded with the unsliced state and run without
hooks computes exactly what the original module computes with hard-mask hooks.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pnc_cli.errors import ConfigError, IncompatibleError

MASKED_TYPES = (nn.Conv2d, nn.Linear)


def _key(name: str) -> str:
    """ParameterDict key for a layer name (dots are not allowed in parameter names)."""
    return name.replace(".", "__") if name else "__root__"


def maskable_layers(module: nn.Module) -> dict[str, nn.Module]:
    """Every ``Conv2d`` / ``Linear`` inside ``module`` in ``named_modules()`` order, keyed by name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, MASKED_TYPES)}


def _num_outputs(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _broadcast(mask: torch.Tensor, out: torch.Tensor, linear: bool) -> torch.Tensor:
    """Shape ``mask`` to multiply ``out``: channel dim 1 for conv, last dim for linear."""
    mask = mask.to(device=out.device, dtype=out.dtype)
    if linear or out.dim() < 3:
        return mask
    return mask.view(1, -1, *([1] * (out.dim() - 2)))


class _MaskHook:
    """Forward hook multiplying a layer's output by the selector's current mask for that layer.

    Holds the selector weakly, so dropping the selector lets it be collected (its ``__del__`` removes
    the hooks); a hook whose selector is gone leaves outputs unchanged.
    """

    def __init__(self, selector: ChannelSelector, name: str, linear: bool) -> None:
        self.selector_ref = weakref.ref(selector)
        self.name = name
        self.linear = linear

    def __call__(self, layer: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor | None:
        selector = self.selector_ref()
        if selector is None:
            return None
        return out * _broadcast(selector.mask(self.name), out, self.linear)


class ChannelSelector(nn.Module):
    """Learnable per-channel mask over every ``Conv2d`` / ``Linear`` layer of a frozen module.

    Args:
        module: the (frozen) source module; hooks are registered on its layers at construction.
        temperature: softness of ``sigmoid(score / temperature)``; may be changed later (annealing).
        init_score: initial score of every channel (3.0 -> soft mask ~0.95).

    Raises:
        ConfigError: ``temperature <= 0`` or the module has no ``Conv2d`` / ``Linear`` layer.
    """

    def __init__(self, module: nn.Module, temperature: float = 1.0, init_score: float = 3.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"selector temperature must be > 0, got {temperature}")
        layers = maskable_layers(module)
        if not layers:
            raise ConfigError("selector: the module has no Conv2d or Linear layer to mask")
        self.temperature = float(temperature)
        self.names: list[str] = list(layers)
        if len({_key(n) for n in self.names}) != len(self.names):
            raise ConfigError("selector: layer names collide after replacing '.' by '__'")
        self.scores = nn.ParameterDict(
            {
                _key(n): nn.Parameter(torch.full((_num_outputs(m),), float(init_score)))
                for n, m in layers.items()
            }
        )
        self._row_cost = {n: float(m.weight[0].numel() + (1 if m.bias is not None else 0)) for n, m in layers.items()}
        self._hard: dict[str, torch.Tensor] | None = None
        self._handles: list[RemovableHandle] = []
        for name, layer in layers.items():
            hook = _MaskHook(self, name, isinstance(layer, nn.Linear))
            self._handles.append(layer.register_forward_hook(hook))

    # ----------------------------------------------------------------------------------- masks
    @property
    def is_hard(self) -> bool:
        """True after :meth:`binarize` or :meth:`set_hard_masks`."""
        return self._hard is not None

    def score(self, name: str) -> nn.Parameter:
        """The score vector of the layer called ``name`` (original module name)."""
        return self.scores[_key(name)]

    def soft_mask(self, name: str) -> torch.Tensor:
        """``sigmoid(score / temperature)`` of one layer (differentiable)."""
        return torch.sigmoid(self.score(name) / self.temperature)

    def mask(self, name: str) -> torch.Tensor:
        """The mask the hook applies now: soft, or 0/1 float once binarised."""
        if self._hard is not None:
            return self._hard[name].to(torch.float32)
        return self.soft_mask(name)

    def penalty(self, weighting: str = "channels") -> torch.Tensor:
        """L1 pressure on the soft masks (masks are >= 0).

        ``"channels"``: the mean soft mask over all channels of all layers. ``"params"``: each channel
        weighted by the parameters its filter carries (weight row + bias), so the value is the expected
        fraction of the module's maskable parameters that is kept — pressure where the bytes are.
        """
        masks = [self.soft_mask(n) for n in self.names]
        if weighting == "channels":
            return torch.cat(masks).mean()
        if weighting != "params":
            raise ConfigError(f"unknown mask penalty weighting {weighting!r}; use channels or params")
        kept = sum((m.sum() * self._row_cost[n] for n, m in zip(self.names, masks, strict=True)), torch.zeros(()))
        total = sum(self._row_cost[n] * m.numel() for n, m in zip(self.names, masks, strict=True))
        return kept / total

    def _threshold_masks(self, threshold: float) -> dict[str, torch.Tensor]:
        masks = {}
        with torch.no_grad():
            for name in self.names:
                keep = self.soft_mask(name) >= threshold
                if not bool(keep.any()):
                    keep[int(torch.argmax(self.score(name)))] = True
                masks[name] = keep
        return masks

    def binarize(self, threshold: float = 0.5) -> dict[str, torch.Tensor]:
        """Switch to hard 0/1 masks: keep where ``sigmoid(score / T) >= threshold``.

        At least one channel per layer is kept (the top-scoring one, lowest index on ties).

        Returns:
            The hard masks, as :meth:`hard_masks` gives them.
        """
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"selector threshold must be in (0, 1), got {threshold}")
        self._hard = self._threshold_masks(threshold)
        return self.hard_masks()

    def set_hard_masks(self, masks: Mapping[str, torch.Tensor]) -> None:
        """Switch to the given hard masks (e.g. read back from a delta file).

        Raises:
            IncompatibleError: layer names or lengths do not match the module.
        """
        if set(masks) != set(self.names):
            raise IncompatibleError(
                f"selector masks name layers {sorted(masks)}, the module has {sorted(self.names)}"
            )
        hard = {}
        for name in self.names:
            keep = masks[name].to(torch.bool).flatten().cpu()
            if keep.numel() != self.score(name).numel():
                raise IncompatibleError(
                    f"selector mask of layer {name!r} has {keep.numel()} entries, "
                    f"the layer has {self.score(name).numel()} outputs"
                )
            hard[name] = keep.clone()
        self._hard = hard

    def soften(self) -> None:
        """Go back to soft masks (the scores were kept)."""
        self._hard = None

    def hard_masks(self, threshold: float = 0.5) -> dict[str, torch.Tensor]:
        """Bool mask per layer, keyed by original layer name.

        After :meth:`binarize` these are the stored masks; before, a preview at ``threshold`` that
        does not change the mode.
        """
        source = self._hard if self._hard is not None else self._threshold_masks(threshold)
        return {n: m.detach().cpu().clone() for n, m in source.items()}

    def kept_fraction(self) -> float:
        """Share of all channels kept by :meth:`hard_masks`."""
        masks = self.hard_masks()
        kept = sum(int(m.sum()) for m in masks.values())
        return kept / sum(m.numel() for m in masks.values())

    def num_kept_params(self, module: nn.Module) -> int:
        """Parameters of ``module`` once sliced with :meth:`hard_masks` (see :func:`count_kept_params`)."""
        return count_kept_params(module, self.hard_masks())

    # ----------------------------------------------------------------------------------- hooks
    def remove(self) -> None:
        """Remove the forward hooks from the module (idempotent)."""
        handles = getattr(self, "_handles", [])
        while handles:
            handles.pop().remove()

    def __enter__(self) -> ChannelSelector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __del__(self) -> None:
        try:
            self.remove()
        except Exception:  # never raise from __del__ (e.g. at interpreter shutdown)
            pass

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.scores.values())
        mode = "hard" if self.is_hard else "soft"
        return f"layers={len(self.names)}, channels={n}, temperature={self.temperature}, mode={mode}"


# --------------------------------------------------------------------------------- slicing
def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _check_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, nn.Module]:
    layers = maskable_layers(module)
    for name, keep in masks.items():
        if name not in layers:
            raise IncompatibleError(f"mask names layer {name!r}, which is not a Conv2d/Linear of the module")
        if keep.numel() != _num_outputs(layers[name]):
            raise IncompatibleError(
                f"mask of layer {name!r} has {keep.numel()} entries, "
                f"the layer has {_num_outputs(layers[name])} outputs"
            )
    return layers


def _sliced_keys(masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State-dict key -> bool row mask, for the weight and bias of every masked layer."""
    out = {}
    for name, keep in masks.items():
        keep = keep.to(torch.bool).flatten().cpu()
        out[_prefix(name) + "weight"] = keep
        out[_prefix(name) + "bias"] = keep
    return out


def slice_state(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with only the kept output rows of every masked layer.

    ``<layer>.weight`` / ``<layer>.bias`` become ``weight[keep]`` / ``bias[keep]`` (same keys, smaller
    first dim); every other entry is the module's detached tensor, unchanged (shares storage).

    Raises:
        IncompatibleError: a mask names an unknown layer or has the wrong length.
    """
    _check_masks(module, masks)
    rows = _sliced_keys(masks)
    state = module.state_dict()
    return {k: (v[rows[k].to(v.device)].clone() if k in rows else v) for k, v in state.items()}


def unslice_state(
    sliced: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], template_module: nn.Module
) -> dict[str, torch.Tensor]:
    """Rebuild full-size tensors from :func:`slice_state` output, zeros in the dropped rows.

    Args:
        sliced: the sliced state dict.
        masks: the bool masks it was sliced with.
        template_module: a module of the same structure, giving the full shapes.

    Raises:
        IncompatibleError: masks or sliced shapes do not fit the template.
    """
    _check_masks(template_module, masks)
    rows = _sliced_keys(masks)
    full = template_module.state_dict()
    out = dict(sliced)
    for key, keep in rows.items():
        if key not in sliced:
            continue
        part = sliced[key]
        shape = full[key].shape
        if part.shape != (int(keep.sum()), *shape[1:]):
            raise IncompatibleError(
                f"sliced tensor {key!r} has shape {list(part.shape)}, "
                f"expected {[int(keep.sum()), *shape[1:]]} for its mask"
            )
        tensor = torch.zeros(shape, dtype=part.dtype, device=part.device)
        tensor[keep.to(part.device)] = part
        out[key] = tensor
    return out


def count_kept_params(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> int:
    """Number of parameters left after slicing: kept rows of masked layers plus all other params."""
    _check_masks(module, masks)
    rows = _sliced_keys(masks)
    total = 0
    for key, p in module.named_parameters():
        total += int(rows[key].sum()) * p[0].numel() if key in rows else p.numel()
    return total
