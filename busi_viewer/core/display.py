"""How an image's pixels become what the screen shows: window/level, brightness/contrast, invert.

Display only: the model always sees ``record.rgb`` / ``record.rgb_frame``, never what these functions return,
and nothing here modifies a record's arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .image_record import ImageRecord

DRAG_PIXELS_PER_SPAN = 512.0
"""Screen pixels of mouse drag that move the window width (or level) by the whole data span."""

_PERCENTILE_SAMPLES = 1_000_000  # percentiles of a 14-megapixel mammogram from a strided subsample: ~instant


@dataclass(frozen=True)
class DisplayAdjust:
    """Display settings for one image.

    ``window_center`` / ``window_width`` are in modality units (the native pixel values); both None means the
    record's own rendering (the file's window, or what the loader chose). ``brightness`` in -1..1 is added as
    ``brightness * 255`` after windowing; ``contrast`` > 0 scales around mid-grey 127.5; ``invert`` flips the
    result (applied last).
    """

    window_center: float | None = None
    window_width: float | None = None
    brightness: float = 0.0
    contrast: float = 1.0
    invert: bool = False

    def __post_init__(self) -> None:
        if (self.window_center is None) != (self.window_width is None):
            raise ValueError("give both window_center and window_width, or neither")
        if self.window_width is not None and not (self.window_width > 0 and math.isfinite(self.window_width)):
            raise ValueError(f"window_width must be a positive number, not {self.window_width!r}")
        if self.window_center is not None and not math.isfinite(self.window_center):
            raise ValueError(f"window_center must be finite, not {self.window_center!r}")
        if not -1.0 <= self.brightness <= 1.0:
            raise ValueError(f"brightness must be in -1..1, not {self.brightness!r}")
        if not (self.contrast > 0 and math.isfinite(self.contrast)):
            raise ValueError(f"contrast must be a positive number, not {self.contrast!r}")

    @property
    def windowed(self) -> bool:
        """True when an explicit window replaces the record's own rendering."""
        return self.window_center is not None


def _is_grey_frame(record: ImageRecord, frame: int) -> bool:
    """Greyscale data, or colour whose three channels are equal everywhere in this frame."""
    if record.pixels.ndim == 2:
        return True
    rgb = record.rgb_frame(frame)
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def _native_grey(record: ImageRecord, frame: int) -> np.ndarray:
    """Native (H, W) values of a greyscale frame (channel 0 of grey-looking colour data)."""
    native = record.frame(frame)
    return native if native.ndim == 2 else native[..., 0]


def is_windowable(record: ImageRecord) -> bool:
    """True when window/level makes sense: greyscale data deeper than 8 bits, or any greyscale DICOM."""
    if record.pixels.ndim != 2:
        return False
    deep = record.bits_stored > 8 or record.pixels.dtype != np.uint8
    return deep or record.format == "DICOM"


def _window_for(lo: float, hi: float) -> tuple[float, float]:
    """(center, width) with apply_window's LINEAR mapping lo -> 0 and hi -> 255 (as the DICOM loader does)."""
    return (lo + hi + 1.0) / 2.0, max(hi - lo + 1.0, 1.0)


def window_presets(record: ImageRecord, frame: int = 0) -> list[tuple[str, float, float]]:
    """Window presets as (label, center, width) in modality units; empty for colour images.

    "File" (the record's window, when it has a centre and width), "Full range" (the frame's native
    minimum..maximum) and "Auto 1–99 %" (its 1st..99th percentiles, which ignore a few extreme pixels).
    """
    if not _is_grey_frame(record, frame):
        return []
    presets: list[tuple[str, float, float]] = []
    win = record.window
    if win is not None and win.center is not None and win.width is not None:
        presets.append(("File", float(win.center), float(win.width)))
    values = _native_grey(record, frame)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return presets
    lo, hi = float(values.min()), float(values.max())
    presets.append(("Full range", *_window_for(lo, hi)))
    flat = values.reshape(-1)
    step = max(1, flat.size // _PERCENTILE_SAMPLES)
    p1, p99 = (float(v) for v in np.percentile(flat[::step], [1.0, 99.0]))
    presets.append(("Auto 1–99 %", *_window_for(p1, p99)))
    return presets


def _adjust_lut(adjust: DisplayAdjust) -> np.ndarray | None:
    """256-entry uint8 table doing brightness, contrast and invert; None when they change nothing."""
    if adjust.brightness == 0.0 and adjust.contrast == 1.0 and not adjust.invert:
        return None
    levels = np.arange(256, dtype=np.float64)
    out = (levels - 127.5) * adjust.contrast + 127.5 + adjust.brightness * 255.0
    out = np.clip(np.rint(out), 0, 255)
    if adjust.invert:
        out = 255.0 - out
    return out.astype(np.uint8)


def _windowed_grey(native: np.ndarray, center: float, width: float, monochrome1: bool, lut: np.ndarray | None):
    """apply_window (then MONOCHROME1 inversion, then ``lut``) on (H, W) native values -> (H, W) uint8.

    8/16-bit integer data goes through one lookup table of every possible value, the same numbers as
    apply_window pixel by pixel but several times faster: dragging the window over a 14-megapixel mammogram
    must keep up with the mouse.
    """
    from .dicom import apply_window  # pydicom is heavy: only windowed images need it

    if native.dtype in (np.uint8, np.uint16, np.int16):
        unsigned = np.uint8 if native.dtype == np.uint8 else np.uint16
        # index i of the table holds the value whose bits are i, so native.view(unsigned) indexes it directly
        values = np.arange(np.iinfo(unsigned).max + 1, dtype=unsigned).view(native.dtype)
        table = apply_window(values, center, width)
        if monochrome1:
            table = 255 - table
        if lut is not None:
            table = lut[table]
        return np.ascontiguousarray(table[native.view(unsigned)])
    base = apply_window(native, center, width)
    if monochrome1:
        base = 255 - base
    return np.ascontiguousarray(lut[base] if lut is not None else base)


def render_display(record: ImageRecord, frame: int = 0, adjust: DisplayAdjust = DisplayAdjust()) -> np.ndarray:
    """The frame as the screen should show it: (H, W) uint8 for greyscale, (H, W, 3) uint8 for colour.

    Greyscale (2-D data, or colour with equal channels) comes from ``rgb_frame(frame)[..., 0]`` unless
    ``adjust`` gives a window, which is then applied to the native frame (MONOCHROME1 inverted afterwards, as
    the loader does). Colour images ignore the window. Brightness/contrast, then invert, follow. Always a new
    array: the record is never modified and the result shares no memory with it.
    """
    lut = _adjust_lut(adjust)
    if not _is_grey_frame(record, frame):
        base = record.rgb_frame(frame)
    elif adjust.windowed:
        assert adjust.window_center is not None and adjust.window_width is not None
        native = _native_grey(record, frame)
        monochrome1 = record.photometric == "MONOCHROME1"
        return _windowed_grey(native, adjust.window_center, adjust.window_width, monochrome1, lut)
    else:
        base = record.rgb_frame(frame)[..., 0]
    if lut is None:
        return np.array(base, dtype=np.uint8, order="C", copy=True)
    return np.ascontiguousarray(lut[base])


def window_from_drag(
    center: float, width: float, dx: float, dy: float, span: float
) -> tuple[float, float]:
    """New (center, width) after a mouse drag of (dx, dy) screen pixels (x right, y down).

    Right widens and left narrows the window; down raises and up lowers the level (darker / brighter image).
    :data:`DRAG_PIXELS_PER_SPAN` pixels move either by ``span`` (the data range, e.g. max - min; at least 1).
    The width never drops below 1.
    """
    scale = max(float(span), 1.0) / DRAG_PIXELS_PER_SPAN
    return float(center) + float(dy) * scale, max(1.0, float(width) + float(dx) * scale)
