"""What a loaded image is: pixels, geometry, calibration and (kept apart) identifying metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class UltrasoundRegion:
    """One calibrated (or not) region of a DICOM SequenceOfUltrasoundRegions item.

    Bounds are pixel indices, inclusive, as DICOM defines RegionLocationMin/Max; ``spacing_mm`` is
    (row spacing, column spacing) in millimetres, present only when both directions are in centimetres
    (PhysicalUnits X/Y Direction = 3).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple[float, float] | None
    spatial_format: int | None = None
    data_type: int | None = None

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


@dataclass(frozen=True)
class Window:
    """A VOI window (centre/width, in modality units) or a VOI lookup table, as the file defines it."""

    center: float | None = None
    width: float | None = None
    lut_description: str | None = None
    explanation: str | None = None


@dataclass
class ImageRecord:
    """A decoded image as the rest of the app sees it.

    ``pixels`` holds frame 0 at its native bit depth and layout: (H, W) greyscale or (H, W, 3) colour,
    uint8 / uint16 / int16 as stored (after the modality LUT for DICOM, before any windowing).
    ``rgb`` is frame 0 rendered for the model and for display: (H, W, 3) uint8, windowed, MONOCHROME1
    already inverted. Other frames of a cine are decoded on demand with :meth:`frame` / :meth:`rgb_frame`.
    ``identifiers`` holds patient/institution DICOM fields, kept apart from ``attributes`` so that exports
    can leave them out.
    """

    path: Path
    format: str  # "PNG", "JPEG", "BMP", "TIFF", "PGM", "DICOM"
    modality: str  # DICOM Modality ("US", "MG", ...) or "OT" for plain image files
    pixels: np.ndarray
    rgb: np.ndarray
    n_frames: int = 1
    bits_stored: int = 8
    photometric: str = "MONOCHROME2"
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, col) in mm, file-wide when defined
    spacing_source: str | None = None  # "PixelSpacing" | "ImagerPixelSpacing" | None
    ultrasound_regions: tuple[UltrasoundRegion, ...] = ()
    window: Window | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, str] = field(default_factory=dict)
    burned_in_annotation: str | None = None  # DICOM BurnedInAnnotation ("YES"/"NO") when present
    _frame_loader: Callable[[int], np.ndarray] | None = field(default=None, repr=False, compare=False)
    _frame_renderer: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def laterality_and_view(self) -> str:
        """"L MLO", "R CC", "L" ... from the DICOM attributes (ImageLaterality, else Laterality; ViewPosition);
        "" when the file says neither (rasters never do)."""
        laterality = self.attributes.get("ImageLaterality") or self.attributes.get("Laterality") or ""
        return " ".join(part.strip() for part in (laterality, self.attributes.get("ViewPosition", "")) if part.strip())

    def frame(self, index: int) -> np.ndarray:
        """Native pixels of frame ``index`` (0-based), same layout as ``pixels``."""
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} out of range: {self.path.name} has {self.n_frames} frame(s)")
        if index == 0 or self._frame_loader is None:
            return self.pixels
        return self._frame_loader(index)

    def rgb_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` rendered as (H, W, 3) uint8, like ``rgb``."""
        if index == 0:
            return self.rgb
        pixels = self.frame(index)  # raises IndexError for a frame that does not exist
        assert self._frame_renderer is not None, "multi-frame records carry a renderer"
        return self._frame_renderer(pixels)

    def spacing_at(self, x: float, y: float) -> tuple[float, float] | None:
        """Pixel spacing (row, col) in mm at pixel (x, y), or None where the image is not calibrated.

        Ultrasound regions win over a file-wide spacing; outside every calibrated region the answer is None,
        never a guess.
        """
        if self.ultrasound_regions:
            for region in self.ultrasound_regions:
                if region.spacing_mm is not None and region.contains(x, y):
                    return region.spacing_mm
            return None
        return self.pixel_spacing_mm
