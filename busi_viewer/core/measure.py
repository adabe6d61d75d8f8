"""Length measurement that gives millimetres only where the file calibrates them, and says why otherwise."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .image_record import ImageRecord, UltrasoundRegion

NO_CALIBRATION = "image has no calibration"
OUTSIDE_REGION = "outside the calibrated region"
DIFFERENT_REGIONS = "endpoints in different calibrated regions"


@dataclass(frozen=True)
class Measurement:
    """A straight-line length: always in image pixels, in millimetres only when calibrated."""

    pixels: float  # Euclidean length in image pixels
    millimetres: float | None
    reason: str | None  # why there is no mm value (one of the module constants); None when calibrated

    @property
    def calibrated(self) -> bool:
        return self.millimetres is not None

    def text(self) -> str:
        """"12.3 mm" when calibrated, else "85.0 px (uncalibrated)"."""
        if self.millimetres is not None:
            return f"{self.millimetres:.1f} mm"
        return f"{self.pixels:.1f} px (uncalibrated)"


def _calibrated_region(record: ImageRecord, x: float, y: float) -> int | None:
    """Index of the calibrated ultrasound region that ``spacing_at`` uses at (x, y), or None."""
    for index, region in enumerate(record.ultrasound_regions):
        if region.spacing_mm is not None and region.contains(x, y):
            return index
    return None


def _has_any_calibration(record: ImageRecord) -> bool:
    regions: tuple[UltrasoundRegion, ...] = record.ultrasound_regions
    if regions:  # regions win over a file-wide spacing, exactly as ImageRecord.spacing_at decides
        return any(region.spacing_mm is not None for region in regions)
    return record.pixel_spacing_mm is not None


def measure_length(record: ImageRecord, start: tuple[float, float], end: tuple[float, float]) -> Measurement:
    """Length from ``start`` to ``end``, points given as (x, y) = (column, row) in image pixel coordinates.

    Millimetres only when both endpoints are calibrated (``record.spacing_at``) and lie in the same ultrasound
    region, or the file-wide pixel spacing applies; then mm = hypot(dx * col_mm, dy * row_mm). A region is a
    rectangle, so a segment whose two ends lie in it lies wholly in it.
    """
    (x0, y0), (x1, y1) = (float(v) for v in start), (float(v) for v in end)
    dx, dy = x1 - x0, y1 - y0
    length_px = math.hypot(dx, dy)

    def uncalibrated(reason: str) -> Measurement:
        return Measurement(pixels=length_px, millimetres=None, reason=reason)

    if not _has_any_calibration(record):
        return uncalibrated(NO_CALIBRATION)
    spacing_start, spacing_end = record.spacing_at(x0, y0), record.spacing_at(x1, y1)
    if spacing_start is None or spacing_end is None:
        return uncalibrated(OUTSIDE_REGION)
    if record.ultrasound_regions and _calibrated_region(record, x0, y0) != _calibrated_region(record, x1, y1):
        # Two regions are two different pictures (dual view, or B-mode beside M-mode): a line across the gap
        # between them measures nothing real, even when both regions share the same spacing.
        return uncalibrated(DIFFERENT_REGIONS)
    row_mm, col_mm = spacing_start
    return Measurement(pixels=length_px, millimetres=math.hypot(dx * col_mm, dy * row_mm), reason=None)
