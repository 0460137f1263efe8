"""Decoding one image file into float32 pixels in [0, 1], faithful to its bit depth.

Layer io (numpy, PIL). ``decode_image`` is a small pure function (a PIL image in, an ``[H, W, C]``
array out) so that any loader (ImageFolder, ``pnc predict``, a streamed Dataset) decodes the same way:

| PIL mode | channels | scaling |
|---|---|---|
| ``1`` | 1 | 0 or 1 |
| ``L``, ``LA`` (alpha dropped) | 1 | / 255 |
| ``I;16``, ``I;16B``, ``I;16L``, ``I;16N`` | 1 | / 65535 |
| ``I`` (32-bit int) | 1 | / 65535 when all values are in [0, 65535] (16-bit PNGs), else own min..max |
| ``F`` (32-bit float) | 1 | unchanged when every value is in [0, 1], else by the image's own min..max |
| ``RGB``, ``RGBA`` (alpha dropped), ``P`` (palette → RGB), ``CMYK``, ``YCbCr``... | 3 | / 255 |

Nothing is clipped: 16-bit and float images keep their full range. NaN or infinite float pixels are
refused by the data loaders.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N")


def _by_range(x: np.ndarray) -> np.ndarray:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return x  # all NaN/inf: the loader's NaN check reports it
    lo, hi = float(finite.min()), float(finite.max())
    if hi == lo:
        return np.zeros_like(x) if lo < 0 or lo > 1 else x
    return (x - lo) / (hi - lo)


def decode_image(im: Any) -> np.ndarray:
    """A PIL image as float32 ``[H, W, C]`` in [0, 1] (C = 1 or 3), scaled by its real range."""
    mode = im.mode
    x: np.ndarray
    if mode == "1":
        x = np.asarray(im, dtype=np.float32)
    elif mode in ("L", "LA"):
        x = np.asarray(im.getchannel(0), dtype=np.float32) / 255.0
    elif mode in _SIXTEEN:
        x = np.asarray(im).astype(np.float32) / 65535.0
    elif mode == "I":
        raw = np.asarray(im).astype(np.float64)
        x = raw / 65535.0 if raw.size and raw.min() >= 0 and raw.max() <= 65535 else _by_range(raw)
    elif mode == "F":
        raw = np.asarray(im).astype(np.float64)
        finite = raw[np.isfinite(raw)]
        in_unit = finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)
        x = raw if in_unit else _by_range(raw)
    else:
        if mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        x = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    x = np.asarray(x, dtype=np.float32)
    return x[:, :, None] if x.ndim == 2 else x


def resize_pixels(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``[H, W, C]`` float pixels to ``size`` = (width, height), channel by channel
    in float (mode F), so no precision is lost to 8 bits."""
    from PIL import Image

    if (x.shape[1], x.shape[0]) == tuple(size):
        return x
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(x[:, :, c]), mode="F").resize(
                size, Image.Resampling.BILINEAR
            )
        )
        for c in range(x.shape[2])
    ]
    return np.stack(chans, axis=2).astype(np.float32)


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """1 → 3 channels by repetition; 3 → 3 unchanged (``[H, W, C]``)."""
    return np.repeat(x, 3, axis=2) if channels == 3 and x.shape[2] == 1 else x
