"""Millimetres from DICOM files made here (no shared data needed): unequal ΔX / ΔY, cm regions and mm pixel
spacing, two regions, through the loader, the viewer's ruler and the report's scale bar.

The ultrasound file is 300 rows x 400 columns with two calibrated regions (units: cm per pixel):
    A: columns 0-149,   ΔX 0.01 cm, ΔY 0.02 cm -> (row, col) = (0.2, 0.1) mm per pixel
    B: columns 150-399, ΔX = ΔY = 0.015 cm      -> 0.15 mm per pixel, the larger region
By hand: 50 px along a row in A = 50 x 0.1 = 5.0 mm; 50 px down a column in A = 50 x 0.2 = 10.0 mm;
40 px along a row in B = 40 x 0.15 = 6.0 mm; the report's 10 mm bar in B is 10 / 0.15 = 66.7 -> 67 px long.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from busi_viewer.core.loader import load_image
from busi_viewer.core.measure import measure_length
from busi_viewer.core.report_data import scale_for
from tests.helpers.dicom import write_dicom
from tests.helpers.gui import open_window

CM = 3  # PhysicalUnitsX/YDirection code for centimetres


def _region(x0: int, x1: int, delta_x_cm: float, delta_y_cm: float) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionDataType = 1
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, 0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, 299
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = CM
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta_x_cm, delta_y_cm
    return item


@pytest.fixture
def two_region_us(tmp_path) -> Path:
    pixels = np.random.default_rng(0).integers(0, 200, size=(300, 400), dtype=np.uint8)
    folder = tmp_path / "study"
    folder.mkdir()
    return write_dicom(folder / "two_regions.dcm", pixels, Modality="US",
                       SequenceOfUltrasoundRegions=Sequence([_region(0, 149, 0.01, 0.02),
                                                             _region(150, 399, 0.015, 0.015)]))


def test_loader_reads_each_region_s_row_and_column_spacing_in_mm(two_region_us):
    record = load_image(two_region_us)
    spacings = [region.spacing_mm for region in record.ultrasound_regions]
    assert spacings[0] == pytest.approx((0.2, 0.1))  # (row = ΔY, column = ΔX), cm -> mm
    assert spacings[1] == pytest.approx((0.15, 0.15))


def test_lengths_along_each_axis_and_in_each_region(two_region_us):
    record = load_image(two_region_us)
    assert measure_length(record, (10, 100), (60, 100)).millimetres == pytest.approx(5.0)
    assert measure_length(record, (100, 10), (100, 60)).millimetres == pytest.approx(10.0)
    assert measure_length(record, (220, 100), (260, 100)).millimetres == pytest.approx(6.0)


def test_file_wide_pixel_spacing_is_row_then_column_in_mm(tmp_path):
    pixels = np.zeros((120, 160), np.uint16)
    record = load_image(write_dicom(tmp_path / "mg.dcm", pixels, PixelSpacing=[0.2, 0.1]))
    assert measure_length(record, (10, 10), (60, 10)).millimetres == pytest.approx(5.0)  # along a row: column
    assert measure_length(record, (10, 10), (10, 60)).millimetres == pytest.approx(10.0)  # down a column: row


def test_viewer_ruler_shows_millimetres_of_the_region_under_it(qtbot, tiny_bundle, two_region_us):
    window = open_window(qtbot, tiny_bundle)
    try:
        window.open_folder(two_region_us.parent)
        qtbot.waitUntil(lambda: window.record is not None, timeout=30_000)
        window.view.set_measure_mode(True)
        shown = window.display.measure_label
        window.view.set_measurement((100, 10), (100, 60))  # down a column of region A
        assert shown.text() == "10.0 mm"
        window.view.set_measurement((10, 100), (60, 100))  # along a row of region A
        assert shown.text() == "5.0 mm"
        window.view.set_measurement((220, 100), (260, 100))  # region B
        assert shown.text() == "6.0 mm"
        window.view.set_measurement((100, 100), (200, 100))  # across the two pictures
        assert shown.text() == "100.0 px (uncalibrated) — endpoints in different calibrated regions"
    finally:
        window.close()


def test_report_scale_bar_is_10_mm_long_in_the_larger_square_pixel_region(two_region_us):
    from busi_viewer.reports.pdf import _with_scale_bar

    record = load_image(two_region_us)
    scale = scale_for(record)
    assert scale is not None and scale.mm_per_pixel == pytest.approx(0.15) and scale.region == (150, 0, 399, 299)
    drawn = _with_scale_bar(np.zeros((300, 400, 3), np.uint8), scale)
    white_columns = np.flatnonzero((drawn == 255).all(axis=2).any(axis=0))
    bar_row = np.flatnonzero((drawn == 255).all(axis=2).sum(axis=1) >= 60)
    assert bar_row.size and white_columns.min() >= 150  # inside region B
    bar = np.flatnonzero((drawn[bar_row[0]] == 255).all(axis=1))
    assert bar.max() - bar.min() == pytest.approx(67, abs=2)  # 10 mm / 0.15 mm per pixel, line caps allowed


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # "inf" and "NaN" break the DS rules: files do it
@pytest.mark.parametrize("bad", ["inf", "NaN", "0", "-0.01"])
def test_spacing_that_is_not_a_positive_finite_number_is_no_calibration(tmp_path, bad):
    # a millimetre value computed from it would be infinite, NaN, zero or negative: the ruler says pixels instead
    pixels = np.zeros((300, 400), np.uint8)
    us = load_image(write_dicom(tmp_path / "us.dcm", pixels, Modality="US",
                                SequenceOfUltrasoundRegions=Sequence([_region(0, 399, float(bad), 0.01)])))
    assert [region.spacing_mm for region in us.ultrasound_regions] == [None]
    assert measure_length(us, (10, 10), (60, 10)).millimetres is None
    assert load_image(write_dicom(tmp_path / "us_y.dcm", pixels, Modality="US", SequenceOfUltrasoundRegions=Sequence(
        [_region(0, 399, 0.01, float(bad))]))).ultrasound_regions[0].spacing_mm is None  # ΔY bad instead
    mg = load_image(write_dicom(tmp_path / "mg.dcm", pixels, PixelSpacing=[bad, 0.1]))
    assert mg.pixel_spacing_mm is None
    assert measure_length(mg, (10, 10), (60, 10)).millimetres is None
    assert load_image(write_dicom(tmp_path / "mg_col.dcm", pixels, PixelSpacing=[0.1, bad])).pixel_spacing_mm is None


def test_region_needs_centimetres_in_both_directions_and_bounds(tmp_path):
    no_bounds = _region(0, 149, 0.01, 0.01)
    del no_bounds.RegionLocationMaxX1  # unusable: skipped, and the regions after it still count
    seconds_down = _region(150, 249, 0.01, 0.01)
    seconds_down.PhysicalUnitsYDirection = 4  # seconds (a Doppler strip): no millimetres from it
    seconds_down.RegionSpatialFormat, seconds_down.RegionDataType = 3, 3  # spectral, PW Doppler
    kept = _region(250, 399, 0.02, 0.03)
    del kept.RegionDataType  # optional here: read as unknown
    unformatted = _region(0, 99, 0.01, 0.01)
    del unformatted.RegionSpatialFormat  # likewise
    record = load_image(write_dicom(tmp_path / "us.dcm", np.zeros((300, 400), np.uint8), Modality="US",
                                    SequenceOfUltrasoundRegions=Sequence([no_bounds, seconds_down, kept, unformatted])))
    assert [(r.x0, r.spacing_mm) for r in record.ultrasound_regions] == [
        (150, None), (250, pytest.approx((0.3, 0.2))), (0, pytest.approx((0.1, 0.1)))]
    assert [(r.spatial_format, r.data_type) for r in record.ultrasound_regions] == [(3, 3), (1, None), (None, 1)]


@pytest.mark.parametrize("x1, y1, flagged", [(449, 299, True), (399, 349, True), (400, 300, False)])
def test_region_past_the_image_is_flagged(tmp_path, x1, y1, flagged):
    # 400 x 300 image: a region reaching column 449 or row 349 was calibrated on a larger picture; bounds equal to
    # Columns / Rows are a common off-by-one and are not flagged
    region = _region(0, x1, 0.01, 0.01)
    region.RegionLocationMaxY1 = y1
    record = load_image(write_dicom(tmp_path / "us.dcm", np.zeros((300, 400), np.uint8), Modality="US",
                                    SequenceOfUltrasoundRegions=Sequence([region])))
    assert ("CalibrationWarning" in record.attributes) == flagged
