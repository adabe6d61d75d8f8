"""Lengths are in millimetres only where the file calibrates them; otherwise pixels, with the reason."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from busi_viewer.core.image_record import ImageRecord, UltrasoundRegion
from busi_viewer.core.loader import load_image
from busi_viewer.core.measure import (
    DIFFERENT_REGIONS,
    NO_CALIBRATION,
    OUTSIDE_REGION,
    Measurement,
    measure_length,
)


def record(spacing=None, regions=()) -> ImageRecord:
    pixels = np.zeros((600, 800), np.uint8)
    return ImageRecord(
        path=Path("m.dcm"), format="DICOM", modality="US", pixels=pixels,
        rgb=np.zeros((600, 800, 3), np.uint8), pixel_spacing_mm=spacing, ultrasound_regions=tuple(regions),
    )


def region(x0, y0, x1, y1, spacing=(0.2, 0.2)) -> UltrasoundRegion:
    return UltrasoundRegion(x0=x0, y0=y0, x1=x1, y1=y1, spacing_mm=spacing)


def test_no_calibration():
    m = measure_length(record(), (10, 10), (70, 90))
    assert m.pixels == pytest.approx(100.0)
    assert m.millimetres is None and not m.calibrated and m.reason == NO_CALIBRATION
    assert m.text() == "100.0 px (uncalibrated)"


def test_file_wide_spacing():
    m = measure_length(record(spacing=(0.5, 0.5)), (0, 0), (30, 40))
    assert m.pixels == pytest.approx(50.0) and m.millimetres == pytest.approx(25.0)
    assert m.calibrated and m.reason is None and m.text() == "25.0 mm"


def test_anisotropic_spacing_uses_row_for_y_and_column_for_x():
    rec = record(spacing=(0.1, 0.3))  # (row mm, col mm)
    assert measure_length(rec, (0, 0), (10, 0)).millimetres == pytest.approx(3.0)  # along a row: column spacing
    assert measure_length(rec, (0, 0), (0, 10)).millimetres == pytest.approx(1.0)  # along a column: row spacing
    diagonal = measure_length(rec, (5, 5), (15, 15))
    assert diagonal.millimetres == pytest.approx(math.hypot(3.0, 1.0))
    assert diagonal.pixels == pytest.approx(math.hypot(10, 10))


def test_inside_one_region():
    rec = record(spacing=(9.0, 9.0), regions=[region(100, 50, 500, 450, (0.25, 0.4))])
    m = measure_length(rec, (100, 50), (500, 450))  # region bounds are inclusive
    assert m.millimetres == pytest.approx(math.hypot(400 * 0.4, 400 * 0.25))  # the region wins over file-wide
    assert measure_length(rec, (120.5, 60.25), (130.5, 60.25)).millimetres == pytest.approx(4.0)  # sub-pixel


@pytest.mark.parametrize(("start", "end"), [((10, 10), (200, 200)), ((200, 200), (600, 200)), ((5, 5), (6, 6))])
def test_outside_the_calibrated_region(start, end):
    rec = record(regions=[region(100, 50, 500, 450), region(0, 500, 799, 599, spacing=None)])
    m = measure_length(rec, start, end)
    assert m.millimetres is None and m.reason == OUTSIDE_REGION
    assert m.pixels == pytest.approx(math.dist(start, end))


def test_uncalibrated_region_is_outside():
    rec = record(regions=[region(100, 50, 500, 450), region(0, 500, 799, 599, spacing=None)])
    assert measure_length(rec, (300, 520), (300, 580)).reason == OUTSIDE_REGION  # e.g. a Doppler strip


def test_regions_without_any_calibration_mean_no_calibration():
    # regions win over a file-wide spacing (ImageRecord.spacing_at): none calibrated -> nothing is
    rec = record(spacing=(0.5, 0.5), regions=[region(0, 0, 799, 599, spacing=None)])
    assert measure_length(rec, (10, 10), (20, 20)).reason == NO_CALIBRATION


def test_two_regions_even_with_equal_spacing():
    rec = record(regions=[region(0, 0, 399, 599), region(400, 0, 799, 599)])  # dual view, same spacing
    across = measure_length(rec, (300, 100), (500, 100))
    assert across.millimetres is None and across.reason == DIFFERENT_REGIONS
    assert across.text() == "200.0 px (uncalibrated)"
    assert measure_length(rec, (450, 100), (500, 100)).millimetres == pytest.approx(10.0)


def test_text_rounding():
    assert Measurement(pixels=12.0, millimetres=12.34, reason=None).text() == "12.3 mm"
    assert Measurement(pixels=84.96, millimetres=None, reason=NO_CALIBRATION).text() == "85.0 px (uncalibrated)"


def test_real_ultrasound_regions(dicom_dir):
    rec = load_image(dicom_dir / "us" / "OBXXXX1A.dcm")  # B-mode region (120,60)-(800,518), 0.2623 mm
    inside = measure_length(rec, (200, 100), (200, 300))
    assert inside.millimetres == pytest.approx(200 * 0.2623, abs=0.05)
    assert measure_length(rec, (10, 10), (200, 300)).reason == OUTSIDE_REGION  # from the header bar
    dual = load_image(dicom_dir / "us" / "gdcm-US-ALOKA-16.dcm")  # left and right B-mode, same spacing
    assert measure_length(dual, (100, 200), (500, 200)).reason == DIFFERENT_REGIONS
