"""Display rendering: window/level on native values, brightness/contrast, invert; the record is never touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from busi_viewer.core.dicom import apply_window
from busi_viewer.core.display import (
    DRAG_PIXELS_PER_SPAN,
    DisplayAdjust,
    is_windowable,
    render_display,
    window_from_drag,
    window_presets,
)
from busi_viewer.core.image_record import ImageRecord, Window
from busi_viewer.core.loader import load_image
from busi_viewer.core.raster import grey_to_rgb


def grey_record(pixels: np.ndarray, photometric="MONOCHROME2", fmt="DICOM", bits=12, window=None, frames=None):
    """A greyscale record rendered like the DICOM loader does without a file window (min..max)."""

    def render(arr: np.ndarray) -> np.ndarray:
        lo, hi = float(arr.min()), float(arr.max())
        grey = apply_window(arr, (lo + hi + 1) / 2, max(hi - lo + 1, 1.0))
        return grey_to_rgb(255 - grey if photometric == "MONOCHROME1" else grey)

    return ImageRecord(
        path=Path("synthetic.dcm"), format=fmt, modality="MG" if fmt == "DICOM" else "OT", pixels=pixels,
        rgb=render(pixels), n_frames=len(frames) if frames else 1, bits_stored=bits, photometric=photometric,
        window=window, _frame_loader=(lambda i: frames[i]) if frames else None,
        _frame_renderer=render if frames else None,
    )


def colour_record(rgb: np.ndarray) -> ImageRecord:
    return ImageRecord(path=Path("c.png"), format="PNG", modality="OT", pixels=rgb.copy(), rgb=rgb.copy())


RAMP = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))  # 8 x 256, 12-bit values 0..4080


def snapshot(record: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
    return record.pixels.copy(), record.rgb.copy()


# --- DisplayAdjust -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_center": 100.0},
        {"window_width": 100.0},
        {"window_center": 10.0, "window_width": 0.0},
        {"window_center": float("nan"), "window_width": 10.0},
        {"brightness": 1.5},
        {"contrast": 0.0},
        {"contrast": -1.0},
    ],
)
def test_invalid_adjustments_are_refused(kwargs):
    with pytest.raises(ValueError):
        DisplayAdjust(**kwargs)


# --- greyscale -----------------------------------------------------------------------------------------------


def test_default_greyscale_is_the_records_own_rendering_as_2d():
    record = grey_record(RAMP)
    before = snapshot(record)
    out = render_display(record)
    assert out.shape == RAMP.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, record.rgb[..., 0])
    assert not np.shares_memory(out, record.rgb)
    out[:] = 7  # the caller may draw on the result
    np.testing.assert_array_equal(record.rgb, before[1])
    np.testing.assert_array_equal(record.pixels, before[0])


def test_window_applies_to_native_values():
    record = grey_record(RAMP)
    before = snapshot(record)
    out = render_display(record, adjust=DisplayAdjust(window_center=1024.0, window_width=512.0))
    np.testing.assert_array_equal(out, apply_window(RAMP, 1024.0, 512.0))
    row = out[0]
    assert row[RAMP[0] < 768].max() == 0 and row[RAMP[0] >= 1280].min() == 255  # outside the window: clipped
    inside = row[(RAMP[0] > 768) & (RAMP[0] < 1280)]
    assert 0 < inside.min() and inside.max() < 255 and np.all(np.diff(inside.astype(int)) > 0)
    np.testing.assert_array_equal(record.pixels, before[0])
    np.testing.assert_array_equal(record.rgb, before[1])


def test_monochrome1_window_is_inverted_afterwards():
    mono1 = grey_record(RAMP, photometric="MONOCHROME1")
    mono2 = grey_record(RAMP)
    adjust = DisplayAdjust(window_center=2048.0, window_width=4096.0)
    np.testing.assert_array_equal(render_display(mono1, adjust=adjust), 255 - render_display(mono2, adjust=adjust))
    out = render_display(mono1, adjust=adjust)
    assert out[0, 0] == 255 and out[0, -1] < 10  # lowest stored value is white
    # and the default rendering (no window) keeps the record's own inversion
    np.testing.assert_array_equal(render_display(mono1), mono1.rgb[..., 0])
    assert render_display(mono1)[0, 0] == 255


def test_brightness_contrast_invert_order():
    record = grey_record(RAMP)
    base = record.rgb[..., 0].astype(float)
    bright = render_display(record, adjust=DisplayAdjust(brightness=0.2))
    np.testing.assert_array_equal(bright, np.clip(np.rint(base + 51), 0, 255).astype(np.uint8))
    contrast = render_display(record, adjust=DisplayAdjust(contrast=2.0))
    np.testing.assert_array_equal(contrast, np.clip(np.rint((base - 127.5) * 2 + 127.5), 0, 255).astype(np.uint8))
    both_inverted = render_display(record, adjust=DisplayAdjust(brightness=0.1, contrast=0.5, invert=True))
    expected = 255 - np.clip(np.rint((base - 127.5) * 0.5 + 127.5 + 25.5), 0, 255)
    np.testing.assert_array_equal(both_inverted, expected.astype(np.uint8))
    assert render_display(record, adjust=DisplayAdjust(brightness=-1.0)).max() == 0


def test_window_then_brightness():
    record = grey_record(RAMP)
    adjust = DisplayAdjust(window_center=2048.0, window_width=1024.0, brightness=-0.1, invert=True)
    windowed = apply_window(RAMP, 2048.0, 1024.0).astype(float)
    expected = 255 - np.clip(np.rint(windowed - 25.5), 0, 255)
    np.testing.assert_array_equal(render_display(record, adjust=adjust), expected.astype(np.uint8))


def test_cine_frames_use_their_own_native_values():
    frames = [RAMP, (4095 - RAMP).astype(np.uint16)]
    record = grey_record(frames[0], frames=frames)
    adjust = DisplayAdjust(window_center=2048.0, window_width=4096.0)
    np.testing.assert_array_equal(render_display(record, 1, adjust), apply_window(frames[1], 2048.0, 4096.0))
    np.testing.assert_array_equal(render_display(record, 1), record.rgb_frame(1)[..., 0])
    with pytest.raises(IndexError):
        render_display(record, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32])
@pytest.mark.parametrize(("center", "width"), [(0.0, 100.0), (-500.0, 2000.0), (100.0, 1.0), (30000.0, 70000.0)])
def test_window_matches_apply_window_for_every_native_type(dtype, center, width):
    rng = np.random.default_rng(1)
    lo, hi = (-40000, 40000) if dtype in (np.int32, np.float32) else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    values = rng.integers(lo, hi, (64, 80), endpoint=True).astype(dtype)
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        record = grey_record(values, photometric=photometric, bits=values.dtype.itemsize * 8)
        expected = apply_window(values, center, width)
        if photometric == "MONOCHROME1":
            expected = 255 - expected
        adjust = DisplayAdjust(window_center=center, window_width=width)
        np.testing.assert_array_equal(render_display(record, adjust=adjust), expected)


# --- colour --------------------------------------------------------------------------------------------------


def test_colour_image_stays_colour_and_ignores_the_window():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    record = colour_record(rgb)
    out = render_display(record, adjust=DisplayAdjust(window_center=10.0, window_width=5.0))
    assert out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out, rgb)
    assert not np.shares_memory(out, record.rgb)
    inverted = render_display(record, adjust=DisplayAdjust(invert=True))
    np.testing.assert_array_equal(inverted, 255 - rgb)
    np.testing.assert_array_equal(record.rgb, rgb)
    assert window_presets(record) == [] and not is_windowable(record)


def test_rgb_with_equal_channels_is_greyscale():
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (5, 1))
    record = colour_record(np.repeat(grey[..., None], 3, axis=2))
    out = render_display(record)
    assert out.shape == grey.shape
    np.testing.assert_array_equal(out, grey)
    windowed = render_display(record, adjust=DisplayAdjust(window_center=128.0, window_width=64.0))
    np.testing.assert_array_equal(windowed, apply_window(grey, 128.0, 64.0))
    assert [label for label, _, _ in window_presets(record)] == ["Full range", "Auto 1–99 %"]


# --- windowability and presets -------------------------------------------------------------------------------


def test_is_windowable():
    assert is_windowable(grey_record(RAMP))  # 12-bit DICOM
    assert is_windowable(grey_record(RAMP, fmt="PNG", bits=16))  # 16-bit PNG
    eight = np.zeros((4, 4), np.uint8)
    assert is_windowable(grey_record(eight, bits=8))  # 8-bit greyscale DICOM ultrasound
    assert not is_windowable(grey_record(eight, fmt="PNG", bits=8))  # plain 8-bit PNG: brightness/contrast only
    assert not is_windowable(colour_record(np.zeros((4, 4, 3), np.uint8)))


def test_presets_file_full_range_and_percentiles():
    values = np.full((100, 100), 1000, np.uint16)
    values[0, :50] = 0  # a few extreme pixels, below 1 % of the image
    values[1, :50] = 4095
    values[2:, :] = np.linspace(1000, 3000, 98 * 100).reshape(98, 100).astype(np.uint16)
    record = grey_record(values, window=Window(center=2047.0, width=4095.0, explanation="file window"))
    presets = window_presets(record)
    labels = [label for label, _, _ in presets]
    assert labels == ["File", "Full range", "Auto 1–99 %"]
    assert presets[0][1:] == (2047.0, 4095.0)
    _, center, width = presets[1]
    np.testing.assert_array_equal(apply_window(np.array([0, 4095]), center, width), [0, 255])  # min..max
    _, auto_center, auto_width = presets[2]
    lo, hi = auto_center - auto_width / 2, auto_center + auto_width / 2
    assert 900 < lo < 1100 and 2900 < hi < 3100  # the outliers at 0 and 4095 are ignored


def test_presets_without_a_file_window():
    record = grey_record(RAMP, window=Window(lut_description="VOI LUT"))  # a LUT, no centre/width
    assert [label for label, _, _ in window_presets(record)] == ["Full range", "Auto 1–99 %"]


# --- drag ----------------------------------------------------------------------------------------------------


def test_window_from_drag():
    span = 4096.0
    step = span / DRAG_PIXELS_PER_SPAN
    assert window_from_drag(2048, 1000, 10, 0, span) == (2048, 1000 + 10 * step)  # right widens
    assert window_from_drag(2048, 1000, -10, 0, span) == (2048, 1000 - 10 * step)  # left narrows
    assert window_from_drag(2048, 1000, 0, 5, span) == (2048 + 5 * step, 1000)  # down raises the level
    assert window_from_drag(2048, 1000, 0, -5, span) == (2048 - 5 * step, 1000)  # up lowers it
    assert window_from_drag(2048, 1000, -10_000, 0, span)[1] == 1.0  # width never below 1
    # scaled to the data span: the same drag moves an 8-bit image's window 16x less than a 12-bit one's
    assert window_from_drag(128, 256, 32, 0, 256)[1] - 256 == pytest.approx((1000 + 32 * step - 1000) / 16)
    assert window_from_drag(0, 10, 0, 1, 0) == (1 / DRAG_PIXELS_PER_SPAN, 10)  # a flat image still moves


# --- a real file ---------------------------------------------------------------------------------------------


def test_real_ultrasound_dicom(dicom_dir):
    record = load_image(dicom_dir / "us" / "JPEGLosslessP14SV1_1s_1f_u_08_08.dcm")  # 8-bit grey, window 127/254
    assert is_windowable(record)
    before = snapshot(record)
    np.testing.assert_array_equal(render_display(record), record.rgb[..., 0])
    presets = window_presets(record)
    assert [label for label, _, _ in presets] == ["File", "Full range", "Auto 1–99 %"]
    _, center, width = presets[0]
    # the file's own window applied by the display reproduces the loader's rendering exactly
    out = render_display(record, adjust=DisplayAdjust(window_center=center, window_width=width))
    np.testing.assert_array_equal(out, record.rgb[..., 0])
    narrow = render_display(record, adjust=DisplayAdjust(window_center=center, window_width=width / 8))
    clipped = (narrow == 0).mean() + (narrow == 255).mean()
    assert clipped > (out == 0).mean() + (out == 255).mean() + 0.05
    np.testing.assert_array_equal(record.pixels, before[0])
    np.testing.assert_array_equal(record.rgb, before[1])
