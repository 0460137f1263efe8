"""Selector mask ``M`` over the transferable source module (docs/method-spec.md §3, seed Alg. 1 line 21).

Layer method: pure torch + stdlib (+ ``pnc_cli.core.errors``). Must not import typer, rich or any
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

import copy
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from pnc_cli.core.errors import ConfigError, IncompatibleError

MASKED_TYPES = (nn.Conv2d, nn.Linear)


def _key(name: str) -> str:
    """ParameterDict key for a layer name (dots are not allowed in parameter names)."""
    return name.replace(".", "__") if name else "__root__"


def maskable_layers(module: nn.Module) -> dict[str, nn.Conv2d | nn.Linear]:
    """Every ``Conv2d`` / ``Linear`` inside ``module`` in ``named_modules()`` order, keyed by name."""
    return {name: m for name, m in module.named_modules() if isinstance(m, MASKED_TYPES)}


def _num_outputs(layer: nn.Conv2d | nn.Linear) -> int:
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
        self._row_cost = {
            n: float(m.weight[0].numel() + (1 if m.bias is not None else 0)) for n, m in layers.items()
        }
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
        kept = sum(
            (m.sum() * self._row_cost[n] for n, m in zip(self.names, masks, strict=True)), torch.zeros(())
        )
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


def _check_masks(module: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, nn.Conv2d | nn.Linear]:
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


def zero_inputs(
    module: nn.Module, masks: Mapping[str, torch.Tensor], in_shape: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Input columns of each layer that are zero for every input once the masked filters are dropped.

    Structural, weight-free analysis: a copy of the module whose every parameter, buffer and input is
    NaN, and whose masked layers output NaN on kept channels and exactly 0 on dropped ones. An input
    column of a later ``Linear`` (or ungrouped ``Conv2d``) that comes out exactly 0 was computed from
    dropped filters alone through zero-preserving ops (ReLU, pooling, flatten), so it is 0 for any
    weights and any input, and its weight columns can be cut too. Returns ``{layer: bool keep-in}``
    for the layers where something can be cut (deterministic: the same on writing and reading).
    """
    layers = _check_masks(module, masks)
    probe = copy.deepcopy(module).cpu().eval()  # a weight-free analysis: on the CPU wherever the module is
    with torch.no_grad():
        for t in [*probe.parameters(), *probe.buffers()]:
            if t.is_floating_point():
                t.fill_(float("nan"))
    seen: dict[str, torch.Tensor] = {}
    handles = []
    probe_layers = maskable_layers(probe)
    for name, layer in probe_layers.items():
        if name in masks:
            keep = masks[name].to(torch.bool).flatten().cpu()
            handles.append(layer.register_forward_hook(_ProbeHook(keep, isinstance(layer, nn.Linear))))
        if isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d) and layer.groups == 1):
            handles.append(
                layer.register_forward_pre_hook(_record_input(seen, name, isinstance(layer, nn.Linear)))
            )
    try:
        with torch.no_grad():
            x = torch.full((1, *in_shape), float("nan"))
            for block in probe if isinstance(probe, nn.ModuleList) else [probe]:
                x = block(x)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, zero in seen.items():
        if zero.any() and name in layers:
            out[name] = ~zero
    return out


class _ProbeHook:
    def __init__(self, keep: torch.Tensor, linear: bool) -> None:
        self.keep, self.linear = keep, linear

    def __call__(self, layer: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        value = torch.where(self.keep, torch.tensor(float("nan")), torch.tensor(0.0))
        return _broadcast(value, out, self.linear).expand_as(out).clone()


def _record_input(seen: dict[str, torch.Tensor], name: str, linear: bool) -> Callable[..., None]:
    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        zero = x == 0
        seen[name] = (
            zero.reshape(-1, x.shape[-1]).all(0) if linear else zero.transpose(0, 1).flatten(1).all(1)
        )

    return hook


def _cut_in(t: torch.Tensor, keep_in: torch.Tensor | None) -> torch.Tensor:
    return t if keep_in is None else t[:, keep_in.to(t.device)]


def slice_state(
    module: nn.Module, masks: Mapping[str, torch.Tensor], in_shape: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with only the kept filters of every masked layer.

    ``<layer>.weight`` / ``<layer>.bias`` become ``weight[keep]`` / ``bias[keep]`` (same keys, smaller
    first dim). With ``in_shape`` (the module's input shape, no batch) the weight columns that only
    ever see zeros (:func:`zero_inputs`) are cut as well (smaller second dim). Every other entry is
    the module's detached tensor, unchanged.

    Raises:
        IncompatibleError: a mask names an unknown layer or has the wrong length.
    """
    _check_masks(module, masks)
    rows = _sliced_keys(masks)
    cols = zero_inputs(module, masks, in_shape) if in_shape is not None else {}
    state = module.state_dict()
    out = {}
    for k, v in state.items():
        if k in rows:
            v = v[rows[k].to(v.device)]
            if k.endswith("weight"):
                v = _cut_in(v, cols.get(k[: -len("weight")].rstrip(".")))
            v = v.clone()
        out[k] = v
    return out


def unslice_state(
    sliced: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    template_module: nn.Module,
    in_shape: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Rebuild full-size tensors from :func:`slice_state` output, zeros in the dropped rows (and columns).

    Args:
        sliced: the sliced state dict.
        masks: the bool masks it was sliced with.
        template_module: a module of the same structure, giving the full shapes.
        in_shape: the same ``in_shape`` given to :func:`slice_state` (None: rows only).

    Raises:
        IncompatibleError: masks or sliced shapes do not fit the template.
    """
    _check_masks(template_module, masks)
    rows = _sliced_keys(masks)
    cols = zero_inputs(template_module, masks, in_shape) if in_shape is not None else {}
    full = template_module.state_dict()
    out = dict(sliced)
    for key, keep in rows.items():
        if key not in sliced:
            continue
        part, shape = sliced[key], full[key].shape
        keep_in = cols.get(key[: -len("weight")].rstrip(".")) if key.endswith("weight") else None
        want = [int(keep.sum()), *shape[1:]]
        if keep_in is not None:
            want[1] = int(keep_in.sum())
        if list(part.shape) != want:
            raise IncompatibleError(
                f"sliced tensor {key!r} has shape {list(part.shape)}, expected {want} for its mask"
            )
        rows_full = torch.zeros((want[0], *shape[1:]), dtype=part.dtype, device=part.device)
        if keep_in is not None:
            rows_full[:, keep_in.to(part.device)] = part
        else:
            rows_full = part
        tensor = torch.zeros(shape, dtype=part.dtype, device=part.device)
        tensor[keep.to(part.device)] = rows_full
        out[key] = tensor
    return out


def count_kept_params(
    module: nn.Module, masks: Mapping[str, torch.Tensor], in_shape: Sequence[int] | None = None
) -> int:
    """Parameters left after slicing: kept rows (and columns, with ``in_shape``) plus all other params."""
    sliced = slice_state(module, masks, in_shape)
    names = {k for k, _ in module.named_parameters()}
    return sum(v.numel() for k, v in sliced.items() if k in names)


@torch.no_grad()
def bake_masks(module: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the dropped output rows in place, so the module without hooks equals the hard-masked one."""
    state = unslice_state(slice_state(module, masks), masks, module)
    module.load_state_dict(state)
