"""``pnc export``: a model or cloned model as TorchScript or ONNX, verified against PyTorch.

Layer L4. Export formats are for deployment and are *not* pnc files: they are not safetensors, pnc
does not read them back (except here, to verify), and they hold code (a TorchScript program, an ONNX
graph) next to the weights. The exported program takes images in [0, 1], ``[N, C, S, S]`` (any batch
size), normalises them itself and returns the logits over ``classes`` (the target's classes, then each
delta's). After writing, the file is loaded back (``torch.jit.load`` / onnxruntime) and run on sample
images; the largest absolute difference from the PyTorch logits is reported and an export that differs
by more than the tolerance is refused (exit 3, nothing written).

ONNX needs the optional extra ``onnx`` (``pip install 'pnc-cli[onnx]'``: onnx + onnxruntime); it uses
PyTorch's TorchScript-based exporter (``dynamo=False``, opset 17).
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UsageError, VerificationError
from ..core.provenance import record, to_json
from ..core.version import __version__
from ..io.data import conform
from ..io.delta_file import KIND_CLONED, file_kind
from ..io.model_file import load_model
from ..io.safetensors_io import atomic_write_bytes, check_output, file_sha256
from .branches import load_cloned

FORMATS = ("torchscript", "onnx")
OPSET = 17


class Normalized(nn.Module):
    """A classifier on images in [0, 1]: per-channel normalisation (buffers), then the model."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def runnable(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model or cloned model in a file as one eval-mode ``nn.Module`` on images in [0, 1]."""
    if file_kind(path) == KIND_CLONED:
        cloned, spec, _ = load_cloned(path)
        module: nn.Module = cloned  # the target network is a child: traced as parameters
        classes = list(cloned.classes)
        kind = "cloned"
    else:
        loaded = load_model(path)
        spec = loaded.spec
        module = Normalized(loaded.network.model, loaded.network.mean, loaded.network.std)
        classes = list(spec.classes)
        kind = "model"
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    info = {
        "kind": kind,
        "classes": classes,
        "input": {"channels": spec.in_channels, "size": spec.input_size},
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "arch": spec.arch,
    }
    return module, info


def sample_images(num: int, channels: int, size: int, images: list[str] | None, seed: int) -> torch.Tensor:
    """The verification batch: the given image files (conformed), or seeded uniform noise in [0, 1]."""
    if images:
        from .models import _read_image

        return torch.cat([conform(_read_image(Path(p)), channels, size) for p in images])
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(num, channels, size, size, generator=gen)


def _torchscript(module: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation notes, and shape checks that are constant per model
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, buf, _extra_files=meta)
    return buf.getvalue()


def _run_torchscript(data: bytes, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.load(io.BytesIO(data), map_location="cpu")(x)


def _need_onnx() -> None:
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"format onnx needs {' and '.join(missing)}, not installed; pip install 'pnc-cli[onnx]'",
            options=("format",),
        )


def _onnx(module: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation note
        torch.onnx.export(
            module,
            (example,),
            buf,  # type: ignore[arg-type]  # file-like objects are accepted
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
        )
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in sorted(meta.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "pnc-cli", __version__
    return bytes(proto.SerializeToString())


def _run_onnx(data: bytes, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def export_model(
    *,
    model: str | Path,
    format: str,
    output: str | Path,
    images: list[str] | None = None,
    num_samples: int = 8,
    seed: int = 0,
    tolerance: float = 1e-4,
    force: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (a model or cloned-model file) to TorchScript or ONNX and verify it.

    Raises:
        UsageError: unknown format, missing onnx extra, bad output (exit 2).
        VerificationError: the exported program's logits differ from PyTorch's by more than
            ``tolerance`` × max(1, largest |logit|) (exit 3; nothing written).
    """
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; use {' or '.join(FORMATS)}")
    if num_samples < 1:
        raise UsageError(f"the number of sample images must be at least 1, got {num_samples}")
    if format == "onnx":
        _need_onnx()
    out = check_output(output, force=force, inputs=[model])
    module, info = runnable(model)
    x = sample_images(num_samples, info["input"]["channels"], info["input"]["size"], images, seed)
    with torch.no_grad():
        expected = module(x)
    provenance = record(
        options={"format": format, "num_samples": len(x), "seed": seed, "tolerance": tolerance}
    )
    meta = {
        "pnc.export": json.dumps(
            {**info, "source_sha256": file_sha256(model), "input_range": [0.0, 1.0]}, sort_keys=True
        ),
        "pnc.provenance": to_json(provenance),
    }
    example = x[:1]  # traced on one image, verified on all: the batch size stays free
    if format == "torchscript":
        data = _torchscript(module, example, meta)
        got = _run_torchscript(data, x)
    else:
        data = _onnx(module, example, meta)
        got = _run_onnx(data, x)
    diff = (
        float((got.float() - expected.float()).abs().max()) if got.shape == expected.shape else float("inf")
    )
    limit = tolerance * max(1.0, float(expected.abs().max()))
    if not diff <= limit:
        raise VerificationError(
            f"{model}: the {format} export differs from PyTorch by {diff:.3g} (limit {limit:.3g}); "
            "nothing written"
        )
    atomic_write_bytes(out, data, force=force)
    return {
        "output": str(out),
        "format": format,
        "kind": info["kind"],
        "classes": info["classes"],
        "input": info["input"],
        "num_samples": len(x),
        "max_abs_diff": diff,
        "tolerance": limit,
        "file_sha256": file_sha256(out),
        "source_file_sha256": file_sha256(model),
    }
