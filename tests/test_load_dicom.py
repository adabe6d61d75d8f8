"""DICOM through load_image: every real test file in ../shared/data/dicom, plus synthetic files for edge cases."""

from __future__ import annotations


import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from busi_viewer.core.dicom import IDENTIFYING_KEYWORDS, _text, apply_window
from busi_viewer.core.errors import ImageLoadError
from busi_viewer.core.loader import load_image, looks_like_dicom
from tests.helpers.dicom import write_dicom

REAL_FILES = [
    "us/OBXXXX1A.dcm",
    "us/OBXXXX1A_rle.dcm",
    "us/gdcm-US-ALOKA-16.dcm",
    "us/US1_UNCR.dcm",
    "us/US_Explicit_Big_RGB.dcm",
    "us/JPEGLosslessP14SV1_1s_1f_u_08_08.dcm",
    "us/JPEGExtended_3s_1f_u_08_08.dcm",
    "us/examples_ybr_color.dcm",
    "us/examples_palette.dcm",
    "mg/MG1_J2KI.dcm",
    "mg/MG_Explicit_Little.dcm",
]


def _colourfulness(rgb: np.ndarray) -> float:
    """Fraction of pixels whose channels differ by more than 30 levels."""
    rgb = rgb.astype(int)
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    return float((spread > 30).mean())


# --- every real file -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_real_file_loads(dicom_dir, name):
    path = dicom_dir / name
    header = pydicom.dcmread(path, stop_before_pixels=True)
    record = load_image(path)
    assert record.format == "DICOM"
    assert record.modality == header.Modality
    assert record.shape == (header.Rows, header.Columns)
    assert record.rgb.dtype == np.uint8 and record.rgb.shape == (header.Rows, header.Columns, 3)
    assert record.rgb.flags["C_CONTIGUOUS"]
    assert record.rgb.std() > 5, "a rendered image should not be flat"
    assert record.attributes["TransferSyntaxUID"] == header.file_meta.TransferSyntaxUID
    assert record.photometric == header.PhotometricInterpretation
    assert looks_like_dicom(path)
    # identifying fields never leak into the display attributes
    assert not set(record.attributes) & set(IDENTIFYING_KEYWORDS)
    patient = str(header.get("PatientName", "") or "")
    if patient:
        assert record.identifiers["PatientName"] == patient
        assert all(patient not in value for value in record.attributes.values())


@pytest.mark.parametrize("name", ["us/OBXXXX1A.dcm", "us/examples_palette.dcm", "us/gdcm-US-ALOKA-16.dcm"])
def test_palette_colour_is_expanded(dicom_dir, name):
    record = load_image(dicom_dir / name)
    assert record.photometric == "PALETTE COLOR"
    assert record.pixels.ndim == 3 and record.pixels.dtype == np.uint16  # 16-bit palette entries kept
    assert _colourfulness(record.rgb) > 0.001, "palette should give coloured overlays (header bar, markers)"
    np.testing.assert_array_equal(record.rgb, (record.pixels >> 8).astype(np.uint8))


def test_obxxxx1a_rle_twin_is_identical(dicom_dir):
    plain = load_image(dicom_dir / "us/OBXXXX1A.dcm")
    rle = load_image(dicom_dir / "us/OBXXXX1A_rle.dcm")
    assert rle.attributes["TransferSyntax"] == "RLE Lossless"
    np.testing.assert_array_equal(plain.pixels, rle.pixels)
    np.testing.assert_array_equal(plain.rgb, rle.rgb)
    # the Philips header bar is dark blue: blue clearly above red
    bar = plain.rgb[5:50, 200:500].reshape(-1, 3).astype(int).mean(axis=0)
    assert bar[2] > bar[0] + 20


def test_examples_palette_is_a_crop_of_obxxxx1a(dicom_dir):
    full = load_image(dicom_dir / "us/OBXXXX1A.dcm")
    crop = load_image(dicom_dir / "us/examples_palette.dcm")
    assert crop.shape == (350, 800)
    np.testing.assert_array_equal(crop.rgb, full.rgb[:350])


def test_aloka_16bit_segmented_palette(dicom_dir):
    record = load_image(dicom_dir / "us/gdcm-US-ALOKA-16.dcm")
    assert record.bits_stored == 16 and record.pixels.max() > 255
    rgb = record.rgb.astype(int)
    green = (rgb[..., 1] > 150) & (rgb[..., 0] < 80) & (rgb[..., 2] < 80)
    assert green.sum() > 100, "the green depth markers must stay green"
    image = rgb[100:400, 60:320]
    assert np.abs(image[..., 0] - image[..., 1]).mean() < 2  # B-mode stays grey


@pytest.mark.parametrize("name", ["us/US1_UNCR.dcm", "us/US_Explicit_Big_RGB.dcm"])
def test_rgb_power_doppler_colours(dicom_dir, name):
    record = load_image(dicom_dir / name)
    assert record.pixels.dtype == np.uint8 and record.pixels.shape == (480, 640, 3)
    np.testing.assert_array_equal(record.rgb, record.pixels)
    rgb = record.rgb.astype(int)
    orange = (rgb[..., 0] > 200) & (rgb[..., 2] < 80)
    blue = (rgb[..., 2] > 200) & (rgb[..., 0] < 80)
    grey = (rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])
    assert orange.mean() > 0.02, "power Doppler is red/orange/yellow"
    assert blue.mean() < 0.001, "no blue: a swapped channel order would turn orange into blue"
    assert grey.mean() > 0.8, "B-mode background has equal channels"


def test_big_endian_matches_expectations(dicom_dir):
    record = load_image(dicom_dir / "us/US_Explicit_Big_RGB.dcm")
    assert record.attributes["TransferSyntax"] == "Explicit VR Big Endian"
    # byte order must be resolved: white annotation text exists and the sector is mid-grey, not noise
    assert (record.rgb == 255).all(axis=2).sum() > 500
    sector = record.rgb[330:380, 280:360].astype(int)  # B-mode speckle below the Doppler box
    assert 5 < sector.mean() < 200 and sector.std() > 2
    assert np.abs(sector[..., 0] - sector[..., 2]).max() == 0


def test_jpeg_lossless_decodes(dicom_dir):
    record = load_image(dicom_dir / "us/JPEGLosslessP14SV1_1s_1f_u_08_08.dcm")
    assert record.pixels.shape == (768, 1024) and record.pixels.dtype == np.uint8
    assert record.window is not None and (record.window.center, record.window.width) == (127.0, 254.0)
    assert record.burned_in_annotation == "NO"
    assert record.ultrasound_regions[0].spacing_mm == pytest.approx((0.25477, 0.25477), abs=1e-5)


def test_ybr_full_jpeg_becomes_sensible_rgb(dicom_dir):
    record = load_image(dicom_dir / "us/JPEGExtended_3s_1f_u_08_08.dcm")
    assert record.photometric == "YBR_FULL"
    image = record.rgb[57:537, 100:580].astype(int)  # the calibrated B-mode region
    # converted once: grey B-mode has near-equal channels (unconverted YCbCr would have G, B ~ 128 everywhere)
    assert np.abs(image[..., 0] - image[..., 1]).mean() < 1.5
    assert np.abs(image[..., 1] - image[..., 2]).mean() < 1.5
    assert image.mean() < 100
    assert record.ultrasound_regions[1].spacing_mm == pytest.approx((0.04175, 0.04175), abs=1e-5)
    assert record.ultrasound_regions[0].spacing_mm is None  # units 0: not calibrated


def test_multiframe_cine(dicom_dir):
    record = load_image(dicom_dir / "us/examples_ybr_color.dcm")
    assert record.n_frames == 30 and record.photometric == "YBR_FULL_422"
    assert record._frame_loader is not None and record._frame_renderer is not None
    first, last = record.frame(0), record.frame(29)
    assert last.shape == first.shape == (240, 320, 3)
    assert np.abs(last.astype(int) - first.astype(int)).mean() > 1
    rgb_last = record.rgb_frame(29)
    assert rgb_last.dtype == np.uint8 and rgb_last.shape == (240, 320, 3)
    np.testing.assert_array_equal(record.rgb_frame(0), record.rgb)
    middle = record.rgb_frame(15).astype(int)
    assert np.abs(middle[..., 0] - middle[..., 1]).mean() < 2  # grey echo stays grey on later frames too
    with pytest.raises(IndexError):
        record.frame(30)
    with pytest.raises(IndexError):
        record.rgb_frame(-1)


def test_regions_and_spacing_obxxxx1a(dicom_dir):
    record = load_image(dicom_dir / "us/OBXXXX1A.dcm")
    b_mode, doppler = record.ultrasound_regions
    assert (b_mode.x0, b_mode.y0, b_mode.x1, b_mode.y1) == (120, 60, 800, 518)
    assert b_mode.spacing_mm == pytest.approx((0.2623, 0.2623), abs=1e-4)
    assert doppler.spacing_mm is None  # seconds x nothing: not a length calibration
    assert record.spacing_at(400, 300) == pytest.approx((0.2623, 0.2623), abs=1e-4)
    assert record.spacing_at(10, 10) is None  # header bar: outside every calibrated region
    assert record.spacing_at(300, 550) is None  # inside the uncalibrated Doppler strip
    assert record.pixel_spacing_mm is None


def test_aloka_three_regions(dicom_dir):
    record = load_image(dicom_dir / "us/gdcm-US-ALOKA-16.dcm")
    assert len(record.ultrasound_regions) == 3
    left, right, icon = record.ultrasound_regions
    assert left.spacing_mm == right.spacing_mm == pytest.approx((0.38265, 0.38265), abs=1e-5)
    assert icon.spacing_mm is None
    assert record.spacing_at(100, 200) == pytest.approx((0.38265, 0.38265), abs=1e-5)
    assert record.spacing_at(500, 200) == pytest.approx((0.38265, 0.38265), abs=1e-5)
    assert record.spacing_at(10, 450) is None


def test_mammogram_jpeg2000(dicom_dir):
    record = load_image(dicom_dir / "mg/MG1_J2KI.dcm")
    assert record.modality == "RG"  # what the file says, even though it is a mammogram
    assert record.attributes["BodyPartExamined"] == "BREAST"
    assert record.bits_stored == 12
    assert record.shape == (4664, 3064)
    assert record.pixels.dtype == np.uint16 and record.pixels.max() <= 4095
    assert record.window is not None and (record.window.center, record.window.width) == (2047.0, 4095.0)
    # not inverted, not black: the breast (left) is brighter than the background (right edge)
    grey = record.rgb[..., 0].astype(float)
    assert grey.mean() > 40
    assert grey[2000:3000, 200:800].mean() > grey[2000:3000, 2600:3000].mean() + 50


def test_mg_pixel_spacing(dicom_dir):
    record = load_image(dicom_dir / "mg/MG_Explicit_Little.dcm")
    assert record.modality == "MG"
    assert record.pixel_spacing_mm == (0.25, 0.25) and record.spacing_source == "PixelSpacing"
    assert record.spacing_at(1, 1) == (0.25, 0.25)
    assert record.burned_in_annotation == "NO"


# --- synthetic files -----------------------------------------------------------------------------------------


def test_monochrome1_is_inverted(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", ramp, "MONOCHROME1", BitsStored=12))
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", ramp, "MONOCHROME2", BitsStored=12))
    np.testing.assert_array_equal(mono1.pixels, ramp)  # pixels stay as stored
    np.testing.assert_array_equal(mono1.rgb, 255 - mono2.rgb)
    assert mono1.rgb[0, 0, 0] == 255 and mono1.rgb[0, -1, 0] == 0  # lowest value is white
    assert mono1.window is not None and "minimum..maximum" in mono1.window.explanation


def test_rescale_and_window(tmp_path):
    stored = np.array([[0, 1000], [2000, 3000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=[500, 40],
        WindowWidth=[1000, 400],
    )
    record = load_image(path)
    assert record.pixels.dtype == np.int16
    np.testing.assert_array_equal(record.pixels, stored.astype(int) - 1024)
    assert (record.window.center, record.window.width) == (500.0, 1000.0)  # first of multi-valued window
    # PS3.3 C.11.2.1.2: -1024 and -24 are below the window, 1976 above it, 976 just inside the top
    assert record.rgb[0, 0, 0] == 0 and record.rgb[0, 1, 0] == 0 and record.rgb[1, 1, 0] == 255
    assert record.rgb[1, 0, 0] == round(((976 - 499.5) / 999 + 0.5) * 255)


def test_voi_lut_sequence_wins(tmp_path):
    stored = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    path = _with_lut(write_dicom(tmp_path / "voi.dcm", stored, WindowCenter=128, WindowWidth=256), "VOILUTSequence",
                     [256, 0, 12], "US", [(255 - i) * 16 for i in range(256)],  # an inverting 12-bit table
                     LUTExplanation="INVERT")
    record = load_image(path)
    assert record.window is not None and record.window.lut_description == "INVERT"
    assert record.rgb[0, 0, 0] == 255 and record.rgb[1, 1, 0] == 0


def _with_lut(path, sequence, descriptor, vr, data, **item_elements):
    """Re-save ``path`` with a one-item LUT ``sequence`` (e.g. "VOILUTSequence") whose LUT Data (0028,3006) has the
    given VR."""
    item = Dataset()
    item.LUTDescriptor = descriptor
    for keyword, value in item_elements.items():
        setattr(item, keyword, value)
    item.add_new(0x00283006, vr, data)
    ds = pydicom.dcmread(path)
    setattr(ds, sequence, [item])
    ds.save_as(path, enforce_file_format=True)
    return path


def _with_modality_lut(path, descriptor, data):
    return _with_lut(path, "ModalityLUTSequence", descriptor, "US", data, ModalityLUTType="US")  # unspecified units


def test_modality_lut_sequence_maps_stored_values(tmp_path):
    # a 4-entry table starting at stored value 1: 0 is below it (-> first entry), 5 above it (-> last entry)
    stored = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    path = _with_modality_lut(write_dicom(tmp_path / "mlut.dcm", stored), [4, 1, 16], [1000, 2000, 3000, 4000])
    np.testing.assert_array_equal(load_image(path).pixels, [[1000, 1000, 2000], [3000, 4000, 4000]])


def test_damaged_modality_lut_is_a_specific_error(tmp_path):
    stored = np.array([[0, 1]], dtype=np.uint8)
    path = _with_modality_lut(write_dicom(tmp_path / "bad.dcm", stored), [4, 0], [1000, 2000, 3000, 4000])
    with pytest.raises(ImageLoadError, match="unusable Modality LUT Sequence"):
        load_image(path)


def _with_voi_lut(path, descriptor, vr, data):
    return _with_lut(path, "VOILUTSequence", descriptor, vr, data)


# A decreasing 12-bit table whose largest entry, 4000, is below the 4095 its depth allows: the output is
# scaled by the table's own maximum. Pixel 64 -> 4000 - 15 * 64 = 3040 -> 3040 * 255 / 4000 = 193.8 -> 194
# (scaled by 4095 it would be 189); pixel 200 -> 1000 -> 63.75 -> 64; pixel 255 -> 175 -> 11.2 -> 11.
VOI_TABLE = [4000 - 15 * i for i in range(256)]
VOI_PIXELS = np.array([[0, 64], [200, 255]], dtype=np.uint8)
VOI_EXPECTED = [[255, 194], [64, 11]]


@pytest.mark.parametrize("depth", [12, 16])  # 16: a descriptor claiming more bits than the table uses
def test_voi_lut_scaled_by_its_largest_entry(tmp_path, depth):
    path = _with_voi_lut(write_dicom(tmp_path / "voi.dcm", VOI_PIXELS), [256, 0, depth], "US", VOI_TABLE)
    np.testing.assert_array_equal(load_image(path).rgb[..., 0], VOI_EXPECTED)


def test_voi_lut_as_ow_bytes_in_either_byte_order(tmp_path):
    little = _with_voi_lut(
        write_dicom(tmp_path / "le.dcm", VOI_PIXELS), [256, 0, 12], "OW", np.array(VOI_TABLE, "<u2").tobytes()
    )
    np.testing.assert_array_equal(load_image(little).rgb[..., 0], VOI_EXPECTED)
    # The same file in Explicit VR Big Endian, where OW words are stored high byte first (8-bit pixels read alike)
    ds = pydicom.dcmread(little)
    ds.VOILUTSequence[0].LUTData = np.array(VOI_TABLE, ">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    big = tmp_path / "be.dcm"
    pydicom.dcmwrite(big, ds, little_endian=False, implicit_vr=False, force_encoding=True)
    assert pydicom.dcmread(big).file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    np.testing.assert_array_equal(load_image(big).rgb[..., 0], VOI_EXPECTED)


def test_voi_lut_of_65536_entries_and_of_two_levels(tmp_path):
    # a descriptor's first value 0 means 65536 entries (PS3.3 C.11.2.1.1): the identity table's top is 65535, so
    # 0 -> 0, 32768 -> 32768 * 255 / 65535 = 127.5 -> 128, 65535 -> 255
    wide = np.array([[0, 32768, 65535]], dtype=np.uint16)
    path = _with_voi_lut(write_dicom(tmp_path / "wide.dcm", wide), [0, 0, 16], "OW",
                         np.arange(65536, dtype="<u2").tobytes())
    np.testing.assert_array_equal(load_image(path).rgb[..., 0], [[0, 128, 255]])
    # a table of 0 and 1 (its top is 1, not the 4095 of 12 bits): 1 -> 255
    path = _with_voi_lut(write_dicom(tmp_path / "two.dcm", VOI_PIXELS), [256, 0, 12], "US", [0] * 128 + [1] * 128)
    np.testing.assert_array_equal(load_image(path).rgb[..., 0], [[0, 0], [255, 255]])


def test_voi_lut_of_zeros_is_black_not_an_error(tmp_path):
    path = _with_voi_lut(write_dicom(tmp_path / "zero.dcm", VOI_PIXELS), [256, 0, 12], "US", [0] * 256)
    record = load_image(path)
    assert record.window.lut_description == "VOI LUT Sequence" and not record.rgb.any()  # no LUTExplanation
    assert record.window.explanation == "VOI LUT Sequence (first item)"


def test_voi_lut_starting_above_zero_is_scaled_by_its_last_entry(tmp_path):
    # 4 entries from stored value 100: 99 is below the table (-> 1000), 100 -> 1000, 101 -> 2000, 103 -> 4000; the
    # top is the last entry, 4000: 1000 * 255 / 4000 = 63.75 -> 64, 2000 -> 127.5 -> 128 (rint: to even), 4000 -> 255
    pixels = np.array([[99, 100], [101, 103]], dtype=np.uint8)
    path = _with_voi_lut(write_dicom(tmp_path / "offset.dcm", pixels), [4, 100, 16], "US", [1000, 2000, 3000, 4000])
    np.testing.assert_array_equal(load_image(path).rgb[..., 0], [[64, 64], [128, 255]])


def test_voi_lut_wins_over_a_window_in_the_same_file(tmp_path):
    # PS3.3 C.11.2: a window and a VOI LUT may both be present; the viewer applies the table (the first item)
    path = _with_voi_lut(write_dicom(tmp_path / "both.dcm", VOI_PIXELS, WindowCenter=20, WindowWidth=10),
                         [256, 0, 12], "US", VOI_TABLE)
    record = load_image(path)
    np.testing.assert_array_equal(record.rgb[..., 0], VOI_EXPECTED)
    assert record.window.lut_description == "VOI LUT Sequence" and record.window.center is None


def test_damaged_voi_lut_is_a_specific_error(tmp_path):
    path = _with_voi_lut(write_dicom(tmp_path / "bad.dcm", VOI_PIXELS), [256, 0], "US", VOI_TABLE)
    with pytest.raises(ImageLoadError, match=r"unusable VOI LUT Sequence \(ValueError: "):
        load_image(path)


def test_16_bit_colour_is_brought_to_8_bits_by_its_stored_depth(tmp_path):
    # 12 bits stored in 16: shift right by 4 (4095 -> 255, 2048 -> 128, 17 -> 1, 4000 -> 250)
    pixels = np.array([[[4095, 2048, 17], [0, 16, 4000]]], dtype=np.uint16)
    path = write_dicom(tmp_path / "rgb12.dcm", pixels, photometric="RGB", BitsStored=12)
    record = load_image(path)
    assert record.pixels.dtype == np.uint16 and record.rgb.dtype == np.uint8
    np.testing.assert_array_equal(record.rgb, [[[255, 128, 1], [0, 1, 250]]])


def _palette(depth: int, red, green, blue) -> dict:
    """Palette Color Lookup Table elements: 256 entries of ``depth`` bits each, as OW words."""
    elements = {}
    for colour, entries in (("Red", red), ("Green", green), ("Blue", blue)):
        elements[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, depth]
        elements[f"{colour}PaletteColorLookupTableData"] = np.asarray(entries, "<u2").tobytes()
    return elements


INDICES = np.array([[0, 1], [128, 255]], dtype=np.uint8)
RAMP = np.arange(256)


def test_16_bit_palette_entries_keep_their_high_byte(tmp_path):
    # entries i * 257 (0x0000, 0x0101 ... 0xFFFF) keep their high byte i; 0x12FF -> 0x12 = 18
    path = write_dicom(
        tmp_path / "pal16.dcm", INDICES, photometric="PALETTE COLOR",
        **_palette(16, RAMP * 257, (255 - RAMP) * 257, np.full(256, 0x12FF)),
    )
    rgb = load_image(path).rgb
    np.testing.assert_array_equal(rgb[..., 0], INDICES)
    np.testing.assert_array_equal(rgb[..., 1], 255 - INDICES)
    assert (rgb[..., 2] == 18).all()


def test_8_bit_palette_entries_are_not_shifted(tmp_path):
    # pydicom returns 8-bit entries in a uint16 array: they are already display values
    path = write_dicom(
        tmp_path / "pal8.dcm", INDICES, photometric="PALETTE COLOR", **_palette(8, RAMP, 255 - RAMP, np.full(256, 18))
    )
    record = load_image(path)
    assert record.pixels.dtype == np.uint16
    np.testing.assert_array_equal(record.rgb[..., 0], INDICES)
    np.testing.assert_array_equal(record.rgb[..., 1], 255 - INDICES)
    assert (record.rgb[..., 2] == 18).all()


def test_8_bit_palette_entries_above_255_are_held_at_white_not_wrapped(tmp_path):
    # a damaged 8-bit palette: entries 256 and 300 would wrap to 0 and 44 as uint8; they show as 255
    red = RAMP.copy()
    red[0], red[1] = 256, 300
    path = write_dicom(tmp_path / "hot.dcm", INDICES, photometric="PALETTE COLOR",
                       **_palette(8, red, 255 - RAMP, np.full(256, 18)))
    np.testing.assert_array_equal(load_image(path).rgb[..., 0], [[255, 255], [128, 255]])


@pytest.mark.filterwarnings("ignore:The value length")  # a Manufacturer longer than LO allows, on purpose
def test_display_attributes_as_text(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint8), ImageType=["ORIGINAL", "PRIMARY", ""],
                       Manufacturer="M" * 300)
    attributes = load_image(path).attributes
    assert attributes["ImageType"] == "ORIGINAL\\PRIMARY\\"  # values joined by DICOM's backslash
    assert attributes["Manufacturer"] == "M" * 256  # cut at 256 characters
    assert attributes["SOPClass"] == "Secondary Capture Image Storage"
    assert attributes["TransferSyntax"] == "Explicit VR Little Endian"


def test_text_of_binary_data_and_sequences_is_none():
    assert _text(b"\x00\x01") is None and _text(bytearray(b"ab")) is None
    assert _text(pydicom.Sequence([Dataset()])) is None and _text("  ") is None and _text(None) is None
    assert _text(" x ") == "x"


def test_identifiers_kept_apart(tmp_path):
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = write_dicom(
        tmp_path / "patient.dcm", pixels, PatientName="Doe^Jane", PatientID="MRN-12345",
        PatientBirthDate="19700101", InstitutionName="General Hospital", Manufacturer="Acme",
        BurnedInAnnotation="YES",
    )
    record = load_image(path)
    assert record.identifiers["PatientName"] == "Doe^Jane"
    assert record.identifiers["PatientID"] == "MRN-12345"
    assert record.identifiers["PatientBirthDate"] == "19700101"
    assert record.identifiers["InstitutionName"] == "General Hospital"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
        assert keyword not in record.attributes
    text = " ".join(record.attributes.values())
    assert "Doe" not in text and "MRN-12345" not in text and "19700101" not in text
    assert record.attributes["Manufacturer"] == "Acme"
    assert record.burned_in_annotation == "YES"
    assert record.window is None  # 8-bit without a window is shown as stored
    np.testing.assert_array_equal(record.rgb[..., 2], pixels)


def test_imager_pixel_spacing_fallback(tmp_path):
    pixels = np.zeros((4, 4), np.uint8)
    record = load_image(write_dicom(tmp_path / "imager.dcm", pixels, ImagerPixelSpacing=[0.1, 0.085]))
    assert record.pixel_spacing_mm == (0.1, 0.085) and record.spacing_source == "ImagerPixelSpacing"


def test_dicom_without_preamble_and_extension(tmp_path):
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    source = write_dicom(tmp_path / "source.dcm", pixels)
    ds = pydicom.dcmread(source)
    del ds.file_meta
    ds.preamble = None
    for name in ("raw.dcm", "IM0001"):
        path = tmp_path / name
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        assert not looks_like_dicom(path)
        record = load_image(path)
        assert record.format == "DICOM"
        np.testing.assert_array_equal(record.pixels, pixels)


def test_apply_window_follows_the_standard():
    values = np.array([0, 2046, 2047, 4093, 4094, 4095])
    out = apply_window(values, 2047, 4095)
    assert out[0] == 0 and out[-1] == 255 and out[-2] == 255
    assert 126 <= out[1] <= 128
    assert list(apply_window(np.array([99, 100, 101]), 100, 1)) == [0, 255, 255]  # width 1: a threshold
    assert apply_window(np.array([0.0]), 0, 10, "SIGMOID")[0] == 128


def test_voi_lut_functions_by_hand():
    values = np.array([80, 90, 100, 110, 130])
    # SIGMOID (PS3.3 C.11.2.1.3.1), centre 100, width 40: 255 / (1 + exp(-4 (x - 100) / 40))
    #   80 -> 255 / (1 + e^2) = 30.40; 90 -> 255 / (1 + e) = 68.58; 100 -> 127.5; 110 -> 186.42; 130 -> 242.91
    assert list(apply_window(values, 100, 40, "SIGMOID")) == [30, 69, 128, 186, 243]
    # LINEAR_EXACT (C.11.2.1.3.2): ((x - 100) / 40 + 0.5) * 255 -> 0, 63.75, 127.5, 191.25, 318.75 (clipped)
    assert list(apply_window(values, 100, 40, "LINEAR_EXACT")) == [0, 64, 128, 191, 255]
    # LINEAR, also the default: ((x - 99.5) / 39 + 0.5) * 255 -> 0.0, 65.4, 130.8, 196.2, 326.9 (clipped)
    assert list(apply_window(values, 100, 40, "LINEAR")) == [0, 65, 131, 196, 255]
    assert list(apply_window(values, 100, 40)) == [0, 65, 131, 196, 255]


def test_linear_window_of_width_1_is_a_threshold_at_centre_minus_half():
    # width 1: x <= c - 0.5 -> 0, else 255; width 2 is already a ramp: ((99.5 - 99.5) / 1 + 0.5) * 255 = 127.5
    assert list(apply_window(np.array([99.0, 99.5, 99.6, 100.0]), 100, 1)) == [0, 0, 255, 255]
    assert list(apply_window(np.array([99.0, 99.5, 100.0]), 100, 2)) == [0, 128, 255]


def test_file_window_explanation_is_its_first_value(tmp_path):
    stored = np.array([[0, 255]], dtype=np.uint8)
    named = write_dicom(tmp_path / "named.dcm", stored, WindowCenter=[128, 60], WindowWidth=[256, 40],
                        WindowCenterWidthExplanation=["SOFT", "DENSE"])
    assert load_image(named).window.explanation == "SOFT"
    plain = write_dicom(tmp_path / "plain.dcm", stored, WindowCenter=128, WindowWidth=256, VOILUTFunction="SIGMOID")
    assert load_image(plain).window.explanation == "file window (SIGMOID)"


def test_regions_beyond_the_image_are_flagged(dicom_dir):
    # examples_ybr_color is a 320x240 cine whose calibrated region reaches x=595, y=414: resized after calibration
    cine = load_image(dicom_dir / "us/examples_ybr_color.dcm")
    assert cine.ultrasound_regions[0].spacing_mm == pytest.approx((0.5105, 0.5105), abs=1e-4)  # kept as stored
    assert "beyond the 320x240 image" in cine.attributes["CalibrationWarning"]
    assert "CalibrationWarning" not in load_image(dicom_dir / "us/OBXXXX1A.dcm").attributes  # x1 == Columns


def test_rgb_is_not_a_view_of_pixels(dicom_dir):
    record = load_image(dicom_dir / "us/US1_UNCR.dcm")
    assert not np.shares_memory(record.rgb, record.pixels)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_window_that_is_not_a_finite_number_is_ignored(tmp_path):
    # a NaN centre would paint every pixel the same: the frame's own range is used, as when no window is given
    stored = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    record = load_image(write_dicom(tmp_path / "nan.dcm", stored, WindowCenter="NaN", WindowWidth=400))
    assert record.window.explanation == "frame minimum..maximum (the file defines no window)"
    assert (record.window.center, record.window.width) == (2000.5, 4001.0)  # (0 + 4000 + 1) / 2, 4000 - 0 + 1
    assert record.rgb[0, 0, 0] == 0 and record.rgb[1, 1, 0] == 255


# Rescale Slope / Intercept (PS3.3 C.11.1.1.2): value = stored x slope + intercept, each case worked by hand, in
# the narrowest dtype that holds the result (uint8 only for uint8 data), float32 for non-integer slopes.
RESCALE_CASES = [
    # stored, dtype, slope, intercept, expected pixels, expected dtype
    ([0, 100], np.uint8, 2, 0, [0, 200], np.uint8),  # slope alone (intercept 0 is no shortcut)
    ([0, 254], np.uint8, 1, 1, [1, 255], np.uint8),  # intercept alone; 255 is the top of uint8
    ([0, 100], np.uint16, 1, 5, [5, 105], np.uint16),  # fits uint8, but 16-bit data stays 16-bit
    ([0, 100], np.uint16, 1, -32768, [-32768, -32668], np.int16),  # -32768 is the bottom of int16
    ([1, 3], np.uint8, 0.5, 0, [0.5, 1.5], np.float32),  # a fractional slope keeps the fractions
    ([0, 60000], np.uint16, 100000, 0, [0, 6e9], np.float32),  # past int32
    ([7, 9], np.uint8, 0, 0, [7, 9], np.uint8),  # slope 0 would erase the image: read as absent (1)
]


@pytest.mark.parametrize("stored, dtype, slope, intercept, expected, expected_dtype", RESCALE_CASES)
def test_rescale_by_hand(tmp_path, stored, dtype, slope, intercept, expected, expected_dtype):
    pixels = np.array([stored], dtype=dtype)
    record = load_image(write_dicom(tmp_path / "r.dcm", pixels, RescaleSlope=slope, RescaleIntercept=intercept))
    assert record.pixels.dtype == expected_dtype
    np.testing.assert_array_equal(record.pixels, np.array([expected], dtype=expected_dtype))


def test_file_window_is_used_alone_and_down_to_width_1(tmp_path):
    stored = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    # a centre without a width is no window: the frame's own range (centre (0 + 4000 + 1) / 2) is used
    centre_only = load_image(write_dicom(tmp_path / "c.dcm", stored, WindowCenter=1000))
    assert centre_only.window.center == 2000.5 and "minimum..maximum" in centre_only.window.explanation
    # width 1 is a valid LINEAR window, a threshold at 1999.5: 0 and 1000 black, 2000 and 4000 white
    threshold = load_image(write_dicom(tmp_path / "t.dcm", stored, WindowCenter=2000, WindowWidth=1))
    assert (threshold.window.center, threshold.window.width) == (2000.0, 1.0)
    np.testing.assert_array_equal(threshold.rgb[..., 0], [[0, 0], [255, 255]])
    # the file's VOI LUT Function is applied: SIGMOID, centre 2000, width 4000 -> 255 / (1 + exp(-(x - 2000) / 1000))
    #   0 -> 255 / (1 + e^2) = 30.4; 1000 -> 255 / (1 + e) = 68.6; 2000 -> 127.5; 4000 -> 255 / (1 + e^-2) = 224.6
    sigmoid = load_image(write_dicom(tmp_path / "s.dcm", stored, WindowCenter=2000, WindowWidth=4000,
                                     VOILUTFunction="SIGMOID"))
    np.testing.assert_array_equal(sigmoid.rgb[..., 0], [[30, 69], [128, 225]])
    for function in ({}, {"VOILUTFunction": ""}):  # absent or empty: LINEAR
        assert load_image(write_dicom(tmp_path / "l.dcm", stored, WindowCenter=2000, WindowWidth=4000, **function)
                          ).window.explanation == "file window (LINEAR)"


def test_frame_range_window_by_hand(tmp_path):
    # 16-bit data 1..4 and no window: centre (1 + 4 + 1) / 2 = 3, width 4 - 1 + 1 = 4, LINEAR:
    # ((x - 2.5) / 3 + 0.5) * 255 -> 0, 85, 170, 255
    record = load_image(write_dicom(tmp_path / "m.dcm", np.array([[1, 2, 3, 4]], dtype=np.uint16)))
    assert (record.window.center, record.window.width) == (3.0, 4.0)
    np.testing.assert_array_equal(record.rgb[..., 0], [[0, 85, 170, 255]])


def test_8_bit_data_is_shown_as_stored_unless_fewer_bits_are_used(tmp_path):
    full = load_image(write_dicom(tmp_path / "8.dcm", np.array([[10, 20]], dtype=np.uint8)))
    assert full.window is None and full.rgb[..., 0].tolist() == [[10, 20]]
    # 6 bits stored (0..63): the range is stretched, centre 15.5, width 11: ((x - 15) / 10 + 0.5) * 255 -> 0, 255
    six = load_image(write_dicom(tmp_path / "6.dcm", np.array([[10, 20]], dtype=np.uint8), BitsStored=6))
    assert six.window is not None and six.rgb[..., 0].tolist() == [[0, 255]]


def test_deflated_file_frames_are_read_from_the_inflated_dataset(tmp_path):
    # Deflated Explicit VR Little Endian: the whole dataset is inflated once, then each frame is taken from it
    frames = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = write_dicom(tmp_path / "plain.dcm", frames[0])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated = tmp_path / "deflated.dcm"
    ds.save_as(deflated, enforce_file_format=True)
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    record = load_image(deflated)
    assert record.n_frames == 2
    np.testing.assert_array_equal(record.pixels, frames[0])
    np.testing.assert_array_equal(record.frame(1), frames[1])
    # The same without the 128-byte preamble and "DICM" (file meta kept): a file the loader opens only with force,
    # so the frames must be inflated with force too
    ds = pydicom.dcmread(deflated)
    ds.preamble = None
    bare = tmp_path / "deflated_bare"
    ds.save_as(bare, enforce_file_format=False)
    assert not looks_like_dicom(bare) and bare.read_bytes()[:2] == b"\x02\x00"
    record = load_image(bare)
    np.testing.assert_array_equal(record.pixels, frames[0])
    np.testing.assert_array_equal(record.frame(1), frames[1])


def test_header_helpers_on_empty_and_partial_values():
    from busi_viewer.core.dicom import _first_number, _first_text, has_image_attributes

    assert _first_number([]) is None and _first_text([]) is None  # an empty multi-value: no number, no crash
    assert _first_number(["12.5", "3"]) == 12.5 and _first_text([" a ", "b"]) == "a"
    image = Dataset()
    image.Rows, image.Columns = 5, 1
    assert has_image_attributes(image)
    for rows, columns in ((0, 5), (5, 0)):
        image.Rows, image.Columns = rows, columns
        assert not has_image_attributes(image)
    assert not has_image_attributes(Dataset()) and not has_image_attributes(Dataset(Columns=5))
    assert not has_image_attributes(Dataset(Rows=5))
    image.Rows = [4, 5]  # two values where one belongs: not an image rather than an exception
    assert not has_image_attributes(image)


def test_8_bit_colour_is_shown_as_stored(tmp_path):
    colour = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    record = load_image(write_dicom(tmp_path / "rgb.dcm", colour, photometric="RGB"))
    np.testing.assert_array_equal(record.rgb, colour)


def test_a_flat_frame_without_a_window_is_black_not_grey(tmp_path):
    # minimum = maximum = 500 (16-bit): window centre 500.5, width 1, a threshold at 500 -> everything black
    record = load_image(write_dicom(tmp_path / "flat.dcm", np.full((3, 4), 500, dtype=np.uint16)))
    assert (record.window.center, record.window.width) == (500.5, 1.0) and not record.rgb.any()


@pytest.mark.parametrize("little", [True, False])
def test_a_dataset_without_file_meta_is_read_in_its_own_explicit_encoding(tmp_path, little):
    pixels = np.arange(16, dtype=np.uint16).reshape(4, 4) * 1000
    ds = pydicom.dcmread(write_dicom(tmp_path / "source.dcm", pixels))
    del ds.file_meta
    ds.preamble = None
    if not little:
        ds.PixelData = pixels.astype(">u2").tobytes()
    raw = tmp_path / "raw"
    pydicom.dcmwrite(raw, ds, implicit_vr=False, little_endian=little, force_encoding=True)
    record = load_image(raw)
    assert record.attributes["TransferSyntax"] == ("Explicit VR Little Endian" if little else "Explicit VR Big Endian")
    np.testing.assert_array_equal(record.pixels, pixels)


def test_a_damaged_palette_is_named_with_its_file(tmp_path):
    path = write_dicom(tmp_path / "palette.dcm", INDICES, photometric="PALETTE COLOR",
                       **_palette(8, RAMP, RAMP, RAMP))
    ds = pydicom.dcmread(path)
    ds.RedPaletteColorLookupTableData = ds.RedPaletteColorLookupTableData[:10]  # 5 of 256 entries
    ds.save_as(path)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == path and info.value.reason.startswith("PALETTE COLOR image with an unusable palette (")
