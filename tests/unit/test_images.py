"""Images decoded faithfully: one test per PIL mode; 16-bit and float images by their real range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pnc_cli.io.data import read_raw
from pnc_cli.io.images import decode_image

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, (6, 5), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def _roundtrip(im: Image.Image, tmp_path: Path, suffix: str = ".png") -> Image.Image:
    p = tmp_path / f"img{suffix}"
    im.save(p)
    out = Image.open(p)
    out.load()
    return out


def test_mode_L(tmp_path: Path) -> None:
    x = decode_image(_roundtrip(Image.fromarray(GRAY8), tmp_path))
    assert x.shape == (6, 5, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :, 0], GRAY8 / np.float32(255))


def test_mode_LA_drops_alpha(tmp_path: Path) -> None:
    la = np.stack([GRAY8, np.zeros_like(GRAY8)], axis=2)
    im = _roundtrip(Image.fromarray(la), tmp_path)
    assert im.mode == "LA"
    np.testing.assert_array_equal(decode_image(im)[:, :, 0], GRAY8 / np.float32(255))


def test_mode_RGB(tmp_path: Path) -> None:
    x = decode_image(_roundtrip(Image.fromarray(RGB8), tmp_path))
    assert x.shape == (6, 5, 3)
    np.testing.assert_array_equal(x, RGB8 / np.float32(255))


def test_mode_RGBA_drops_alpha(tmp_path: Path) -> None:
    rgba = np.concatenate([RGB8, np.full((6, 5, 1), 7, np.uint8)], axis=2)
    im = _roundtrip(Image.fromarray(rgba), tmp_path)
    assert im.mode == "RGBA"
    np.testing.assert_array_equal(decode_image(im), RGB8 / np.float32(255))


def test_mode_P_uses_the_palette(tmp_path: Path) -> None:
    im = Image.fromarray(RGB8).quantize(colors=16)
    im = _roundtrip(im, tmp_path)
    assert im.mode == "P"
    expected = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_array_equal(decode_image(im), expected)


def test_mode_I16_is_scaled_by_65535_not_clipped(tmp_path: Path) -> None:
    v = (GRAY8.astype(np.uint16) * 257).astype(np.uint16)  # the same picture in 16 bits
    im = _roundtrip(Image.fromarray(v), tmp_path)
    assert im.mode in ("I;16", "I")
    x = decode_image(im)
    np.testing.assert_allclose(x[:, :, 0], GRAY8 / 255.0, atol=1e-6)  # equals the 8-bit version
    assert (x < 1).mean() > 0.9  # a clip to 255 would have made most pixels 1.0


def test_mode_I_32bit(tmp_path: Path) -> None:
    v = np.array([[0, 1000], [40000, 65535]], dtype=np.int32)
    x = decode_image(Image.fromarray(v))
    np.testing.assert_allclose(x[:, :, 0], v / 65535.0, rtol=1e-6)
    wide = np.array([[-5, 0], [5, 1_000_000]], dtype=np.int32)  # outside 16 bits: its own range
    y = decode_image(Image.fromarray(wide))[:, :, 0]
    assert y.min() == 0 and y.max() == 1 and 0 < y[0, 1] < y[1, 0] < 1


def test_mode_F(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    im = _roundtrip(Image.fromarray(unit), tmp_path, ".tiff")
    assert im.mode == "F"
    np.testing.assert_array_equal(decode_image(im)[:, :, 0], unit)
    wide = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    np.testing.assert_allclose(decode_image(Image.fromarray(wide))[:, :, 0], (wide + 2) / 8)


def test_a_16bit_folder_equals_the_8bit_folder(tmp_path: Path) -> None:
    for bits in (8, 16):
        for cls in ("a", "b"):
            d = tmp_path / f"f{bits}" / cls
            d.mkdir(parents=True)
            for i in range(2):
                g = np.roll(GRAY8, i + ord(cls), axis=0)
                im = Image.fromarray(g) if bits == 8 else Image.fromarray(g.astype(np.uint16) * 257)
                im.save(d / f"{i}.png")
    x8, names8, _ = read_raw(str(tmp_path / "f8"))
    x16, names16, _ = read_raw(str(tmp_path / "f16"))
    assert names8 == names16
    np.testing.assert_allclose(x16.numpy(), x8.numpy(), atol=1e-6)


def test_mixed_gray_and_colour_folder_becomes_rgb(tmp_path: Path) -> None:
    d = tmp_path / "mix" / "a"
    d.mkdir(parents=True)
    Image.fromarray(GRAY8).save(d / "g.png")
    Image.fromarray(RGB8).save(d / "c.png")
    x, _, _ = read_raw(str(tmp_path / "mix"))
    assert tuple(x.shape) == (2, 3, 6, 5)
    np.testing.assert_allclose(x[1, 0].numpy(), GRAY8 / 255.0, atol=1e-6)  # c.png sorts before g.png


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_predict_decodes_the_same_way(mode: str, tmp_path: Path) -> None:
    from pnc_cli.api.models import _read_image

    arr = GRAY8 if mode == "L" else RGB8
    p = tmp_path / "x.png"
    Image.fromarray(arr).save(p)
    t = _read_image(p)  # noqa: SLF001
    assert tuple(t.shape) == (1, 1 if mode == "L" else 3, 6, 5)
