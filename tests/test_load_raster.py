"""Plain image files through load_image: every format and Pillow mode the loader promises, at native depth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from busi_viewer.core.loader import load_image

RNG = np.random.default_rng(1234)
GREY = RNG.integers(0, 256, (37, 53), dtype=np.uint8)
COLOUR = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
GREY16 = (np.arange(37 * 53, dtype=np.uint32).reshape(37, 53) * 31 + 500).astype(np.uint16)

LOSSLESS = {"png": "PNG", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}


def _save(tmp_path: Path, name: str, image: Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def _check_rgb(record) -> None:
    assert record.rgb.dtype == np.uint8
    assert record.rgb.shape == (*record.shape, 3)
    assert record.rgb.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("ext", [*LOSSLESS, "pgm"])
def test_8bit_greyscale(tmp_path, ext):
    record = load_image(_save(tmp_path, f"grey.{ext}", Image.fromarray(GREY, "L")))
    assert record.format == LOSSLESS.get(ext, "PGM")
    assert record.modality == "OT"
    assert record.pixels.dtype == np.uint8 and record.pixels.shape == GREY.shape
    np.testing.assert_array_equal(record.pixels, GREY)
    _check_rgb(record)
    for channel in range(3):  # 8-bit greyscale is shown as stored, no stretching
        np.testing.assert_array_equal(record.rgb[..., channel], GREY)
    assert record.window is None
    assert record.photometric == "MONOCHROME2" and record.bits_stored == 8
    assert record.n_frames == 1 and record.pixel_spacing_mm is None


@pytest.mark.parametrize("ext", [*LOSSLESS, "ppm"])
def test_8bit_rgb(tmp_path, ext):
    record = load_image(_save(tmp_path, f"colour.{ext}", Image.fromarray(COLOUR, "RGB")))
    assert record.format == LOSSLESS.get(ext, "PPM")
    assert record.pixels.dtype == np.uint8 and record.pixels.shape == COLOUR.shape
    np.testing.assert_array_equal(record.pixels, COLOUR)  # channel order kept: no BGR swap
    np.testing.assert_array_equal(record.rgb, COLOUR)
    assert record.photometric == "RGB"


def test_jpeg_rgb_and_grey(tmp_path):
    smooth = cv2.GaussianBlur(COLOUR, (0, 0), 3)  # JPEG is lossy: compare a smooth image approximately
    record = load_image(_save(tmp_path, "photo.jpg", Image.fromarray(smooth), quality=95))
    assert record.format == "JPEG" and record.pixels.shape == smooth.shape
    assert np.abs(record.rgb.astype(int) - smooth).mean() < 3
    grey = load_image(_save(tmp_path, "grey.jpeg", Image.fromarray(smooth[..., 0], "L"), quality=95))
    assert grey.pixels.shape == smooth.shape[:2] and grey.pixels.dtype == np.uint8


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_rgba_drops_alpha(tmp_path, ext):
    alpha = RNG.integers(0, 256, GREY.shape, dtype=np.uint8)
    rgba = np.dstack([COLOUR, alpha])
    record = load_image(_save(tmp_path, f"rgba.{ext}", Image.fromarray(rgba, "RGBA")))
    assert record.pixels.shape == COLOUR.shape
    np.testing.assert_array_equal(record.pixels, COLOUR)  # not premultiplied, not composited
    np.testing.assert_array_equal(record.rgb, COLOUR)


def test_la_drops_alpha(tmp_path):
    la = Image.merge("LA", [Image.fromarray(GREY), Image.fromarray(255 - GREY)])
    record = load_image(_save(tmp_path, "la.png", la))
    assert record.pixels.shape == GREY.shape
    np.testing.assert_array_equal(record.pixels, GREY)


@pytest.mark.parametrize(("ext", "fmt"), [("png", "PNG"), ("tif", "TIFF"), ("pgm", "PGM")])
def test_16bit_greyscale_kept_native(tmp_path, ext, fmt):
    record = load_image(_save(tmp_path, f"deep.{ext}", Image.fromarray(GREY16)))
    assert record.format == fmt
    assert record.pixels.dtype == np.uint16
    np.testing.assert_array_equal(record.pixels, GREY16)
    assert record.bits_stored == 16
    _check_rgb(record)
    # rgb is stretched over the image's own min..max
    assert record.rgb[..., 0][GREY16 == GREY16.min()].min() == 0
    assert record.rgb[..., 0][GREY16 == GREY16.max()].max() == 255
    assert record.window is not None
    assert record.window.width == pytest.approx(float(GREY16.max()) - float(GREY16.min()) + 1)
    assert np.all(np.diff(record.rgb[..., 0].ravel().astype(int)) >= 0)  # monotonic like the ramp


def test_pgm_with_12bit_maxval_keeps_file_values(tmp_path):
    values = np.array([[0, 1, 2, 4095], [100, 200, 300, 400]], dtype=">u2")
    path = tmp_path / "twelve.pgm"
    path.write_bytes(b"P5\n# comment line\n4 2\n4095\n" + values.tobytes())
    record = load_image(path)
    assert record.pixels.dtype == np.uint16
    np.testing.assert_array_equal(record.pixels, values.astype(np.uint16))  # not Pillow's 0..65535 stretch
    assert record.bits_stored == 12 and record.attributes["MaxVal"] == "4095"
    assert record.rgb[0, 0, 0] == 0 and record.rgb[0, 3, 0] == 255


def test_ascii_pgm(tmp_path):
    path = tmp_path / "plain.pgm"
    path.write_text("P2\n3 2\n255\n0 128 255\n10 20 30\n")
    record = load_image(path)
    np.testing.assert_array_equal(record.pixels, [[0, 128, 255], [10, 20, 30]])


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_1bit_becomes_0_255(tmp_path, ext):
    bits = GREY > 127
    record = load_image(_save(tmp_path, f"mask.{ext}", Image.fromarray(bits).convert("1")))
    assert record.pixels.dtype == np.uint8
    assert set(np.unique(record.pixels)) <= {0, 255}
    np.testing.assert_array_equal(record.pixels == 255, bits)
    np.testing.assert_array_equal(record.rgb[..., 1], record.pixels)


def test_pbm_1bit(tmp_path):
    path = tmp_path / "mask.pbm"
    path.write_text("P1\n3 2\n1 0 1\n0 0 1\n")
    record = load_image(path)
    assert record.format == "PBM"
    np.testing.assert_array_equal(record.pixels, [[0, 255, 0], [255, 255, 0]])  # PBM: 1 is black


@pytest.mark.parametrize("ext", ["png", "bmp", "tif"])
def test_palette_expanded_to_rgb(tmp_path, ext):
    pal = Image.fromarray(COLOUR).quantize(colors=16)
    expected = np.asarray(pal.convert("RGB"))
    record = load_image(_save(tmp_path, f"pal.{ext}", pal))
    assert record.pixels.shape == COLOUR.shape and record.pixels.dtype == np.uint8
    np.testing.assert_array_equal(record.pixels, expected)
    np.testing.assert_array_equal(record.rgb, expected)


def test_palette_with_transparency(tmp_path):
    pal = Image.fromarray(COLOUR).quantize(colors=8)
    record = load_image(_save(tmp_path, "paltrans.png", pal, transparency=0))
    np.testing.assert_array_equal(record.pixels, np.asarray(pal.convert("RGB")))


def test_equal_channel_rgb_stays_rgb(tmp_path):
    grey_rgb = np.dstack([GREY, GREY, GREY])
    record = load_image(_save(tmp_path, "greyrgb.png", Image.fromarray(grey_rgb, "RGB")))
    assert record.pixels.shape == grey_rgb.shape
    np.testing.assert_array_equal(record.rgb, grey_rgb)


def test_48bit_png_keeps_16_bits_in_rgb_order(tmp_path):
    rgb16 = np.zeros((6, 9, 3), np.uint16)
    rgb16[..., 0] = 60000  # red
    rgb16[..., 2] = 1000
    rgb16[0, 0] = (0, 0, 0)
    path = tmp_path / "deep_colour.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))
    record = load_image(path)
    assert record.pixels.dtype == np.uint16 and record.bits_stored == 16
    np.testing.assert_array_equal(record.pixels, rgb16)
    assert record.rgb[3, 3, 0] == 255 and record.rgb[3, 3, 2] < 10  # red stays red


def test_float_tiff(tmp_path):
    data = np.linspace(-1.5, 2.5, 37 * 53, dtype=np.float32).reshape(37, 53)
    record = load_image(_save(tmp_path, "float.tif", Image.fromarray(data, "F")))
    assert record.pixels.dtype == np.float32
    np.testing.assert_allclose(record.pixels, data)
    assert record.rgb[0, 0, 0] == 0 and record.rgb[-1, -1, 0] == 255


def test_multipage_tiff_shows_first_page(tmp_path):
    pages = [Image.fromarray(GREY), Image.fromarray(255 - GREY)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    record = load_image(path)
    np.testing.assert_array_equal(record.pixels, GREY)
    assert record.n_frames == 1 and "FramesInFile" in record.attributes


def test_path_given_as_string(tmp_path):
    path = _save(tmp_path, "grey.png", Image.fromarray(GREY))
    record = load_image(str(path))
    assert record.path == path


def test_mias_pgm_sample(mias_dir):
    pgm_dir = mias_dir / "pgm_samples"
    samples = sorted(pgm_dir.glob("*.pgm"))
    assert samples, f"no PGM samples in {pgm_dir}"
    for pgm in samples:
        record = load_image(pgm)
        assert record.format == "PGM"
        assert record.pixels.shape == (1024, 1024) and record.pixels.dtype == np.uint8
        _check_rgb(record)
        png = mias_dir / "png" / f"{pgm.stem}.png"
        if png.exists():  # the PNG set is a lossless conversion of these PGMs
            np.testing.assert_array_equal(record.pixels, load_image(png).pixels)


def test_arrays_are_writable_and_independent(tmp_path):
    record = load_image(_save(tmp_path, "colour.png", Image.fromarray(COLOUR, "RGB")))
    assert record.pixels.flags["WRITEABLE"] and record.rgb.flags["WRITEABLE"]
    record.rgb[0, 0] = (1, 2, 3)  # drawing on the display image leaves the data alone
    np.testing.assert_array_equal(record.pixels[0, 0], COLOUR[0, 0])
