"""Every way a file can fail to load ends in ImageLoadError with a reason a user can act on."""

from __future__ import annotations

import io
import os
import shutil
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import busi_viewer.core.dicom as dicom_module
import busi_viewer.core.loader as loader_module
from busi_viewer.core.errors import ImageLoadError
from busi_viewer.core.loader import SUPPORTED_SUFFIXES, load_image, looks_like_dicom

GREY = np.random.default_rng(7).integers(0, 256, (120, 160), dtype=np.uint8)


def _reason(path: Path) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == path
    assert info.value.reason and str(info.value).startswith(path.name)
    return info.value.reason


def _png_bytes(array: np.ndarray = GREY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height 8-bit greyscale (correct CRCs, almost no data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _dicom(path: Path, rows: int = 64, cols: int = 64, pixels: bool = True, **elements) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = elements.pop("TransferSyntaxUID", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = "Doe^Jane"
    if rows:
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if pixels and "PixelData" not in ds:
        ds.PixelData = np.arange(rows * cols, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# --- the file system -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["empty.png", "empty.dcm", "EMPTY"])
def test_zero_byte_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    assert _reason(path) == "empty file (0 bytes)"


def test_missing_file(tmp_path):
    assert "not found" in _reason(tmp_path / "nowhere.png")


@pytest.mark.skipif(os.name != "posix", reason="symbolic links as POSIX makes them")
def test_broken_links_and_link_loops_say_so(tmp_path):
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    assert _reason(broken) == "a broken symbolic link: its target does not exist"
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    assert _reason(loop) == "a symbolic link loop (the link points back to itself)"
    assert _reason(tmp_path / "never.png") == "file not found"


def test_directory(tmp_path):
    folder = tmp_path / "scan.dcm"
    folder.mkdir()
    assert "folder" in _reason(folder)


_LOAD_IN_CHILD = """
import sys
from busi_viewer.core.errors import ImageLoadError
from busi_viewer.core.loader import load_image
try:
    load_image(sys.argv[1])
except ImageLoadError as exc:
    print(exc.reason)
"""


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_permission_denied(tmp_path):
    """An unreadable file. Root reads anything, so as root the load runs in a child process that has lost the
    capabilities to override file modes (util-linux setpriv): the kernel then refuses root as it refuses a user."""
    import subprocess
    import sys

    path = tmp_path / "locked.png"
    path.write_bytes(_png_bytes())
    path.chmod(0)
    try:
        if os.geteuid() != 0:
            assert "permission denied" in _reason(path)
            return
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux setpriv: cannot make a file unreadable to root")
        done = subprocess.run([setpriv, "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c",
                               _LOAD_IN_CHILD, str(path)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "permission denied" in done.stdout
    finally:
        path.chmod(0o644)


def test_looks_like_dicom_reads_only_the_marker(tmp_path, dicom_dir):
    assert looks_like_dicom(dicom_dir / "us/OBXXXX1A.dcm")
    png = tmp_path / "a.dcm"
    png.write_bytes(_png_bytes())
    assert not looks_like_dicom(png)
    assert not looks_like_dicom(tmp_path / "missing.dcm")
    assert ".dcm" in SUPPORTED_SUFFIXES and ".png" in SUPPORTED_SUFFIXES


# --- content versus name -------------------------------------------------------------------------------------


def test_jpeg_saved_as_png_still_loads(tmp_path):
    path = tmp_path / "really_a_jpeg.png"
    Image.fromarray(GREY).save(path, "JPEG", quality=95)
    record = load_image(path)
    assert record.format == "JPEG" and record.shape == GREY.shape


def test_png_saved_as_dcm_loads_as_png(tmp_path):
    path = tmp_path / "image.dcm"
    path.write_bytes(_png_bytes())
    record = load_image(path)
    assert record.format == "PNG"
    np.testing.assert_array_equal(record.pixels, GREY)


def test_text_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("Patient: Jane Doe, seen on Monday, scan to follow.\n")
    reason = _reason(path)
    assert "promises PNG" in reason and "plain text" in reason
    assert "Jane" not in reason and "Patient" not in reason  # the content is never quoted (de-identified reports)


def test_garbage_named_dcm(tmp_path):
    path = tmp_path / "scan.dcm"
    path.write_bytes(bytes(range(256)) * 4)
    reason = _reason(path)
    assert "promises DICOM" in reason and "no 'DICM' marker" in reason and "binary data" in reason


def test_gif_named_png(tmp_path):
    path = tmp_path / "animated.png"
    Image.fromarray(GREY).save(path, "GIF")
    reason = _reason(path)
    assert "promises PNG" in reason and "GIF" in reason


def test_unsupported_extension(tmp_path):
    path = tmp_path / "readme.txt"
    path.write_text("hello")
    assert "not a supported image" in _reason(path)


def test_png_with_damaged_header(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dJUNK" + b"\x00" * 40)
    assert "PNG" in _reason(path)


# --- truncated and corrupt data ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "ext"), [("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp")])
def test_truncated_raster(tmp_path, fmt, ext):
    buffer = io.BytesIO()
    Image.fromarray(GREY).save(buffer, fmt)
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    assert "truncated" in _reason(path)


def test_truncated_png_refused_even_if_someone_enabled_truncated_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "cut.png"
    path.write_bytes(_png_bytes()[:-300])
    assert "truncated" in _reason(path)


def test_corrupt_png_data(tmp_path):
    data = bytearray(_png_bytes())
    data[200:260] = bytes(60)  # wipe part of the compressed stream
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    assert "PNG" in _reason(path)


def test_truncated_native_dicom(tmp_path):
    path = _dicom(tmp_path / "cut.dcm")
    path.write_bytes(path.read_bytes()[:-1000])
    reason = _reason(path)
    assert "truncated" in reason and "pixel data declares 8192 bytes" in reason


def test_truncated_dicom_header(tmp_path, dicom_dir):
    path = tmp_path / "header_cut.dcm"
    path.write_bytes((dicom_dir / "us/OBXXXX1A.dcm").read_bytes()[:1500])
    assert "truncated" in _reason(path)


def test_truncated_compressed_cine(tmp_path, dicom_dir):
    data = (dicom_dir / "us/examples_ybr_color.dcm").read_bytes()
    path = tmp_path / "cine_cut.dcm"
    path.write_bytes(data[: len(data) * 6 // 10])
    reason = _reason(path)
    assert "truncated" in reason and "fragment" in reason


def test_cine_frame_unreadable_after_file_removed(tmp_path, dicom_dir):
    path = tmp_path / "cine.dcm"
    shutil.copy(dicom_dir / "us/examples_ybr_color.dcm", path)
    record = load_image(path)
    path.unlink()
    with pytest.raises(ImageLoadError):
        record.frame(5)
    with pytest.raises(IndexError):
        record.frame(99)


# --- DICOM specifics -----------------------------------------------------------------------------------------


def test_undecodable_transfer_syntax_names_it_and_the_missing_decoder(dicom_dir):
    path = dicom_dir / "negative/MG1_JPLY.dcm"
    reason = _reason(path)
    assert "JPEG Extended (Process 2 and 4)" in reason
    assert "1.2.840.10008.1.2.4.51" in reason
    assert "12-bit" in reason
    assert "pylibjpeg" in reason and "pillow" in reason  # what was tried
    assert "gdcm" in reason and "pip install python-gdcm" in reason  # what is missing


def test_transfer_syntax_pydicom_cannot_decode(tmp_path):
    mpeg4 = UID("1.2.840.10008.1.2.4.102")
    path = _dicom(tmp_path / "video.dcm", TransferSyntaxUID=mpeg4, PixelData=encapsulate([b"\x00" * 64]))
    reason = _reason(path)
    assert "no decoder" in reason and "1.2.840.10008.1.2.4.102" in reason and "MPEG-4" in reason


def test_missing_decoder_plugin_is_named(tmp_path, monkeypatch):
    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"]

    monkeypatch.setattr(dicom_module, "get_decoder", lambda uid: Unavailable())
    reason = _reason(_dicom(tmp_path / "x.dcm"))
    assert "no decoder is installed" in reason and "Explicit VR Little Endian" in reason
    assert "pylibjpeg-libjpeg" in reason and "pip install pylibjpeg" in reason


class _TriedDecoder:  # stands in for pydicom's decoder of a transfer syntax: usable, with some plugins missing
    is_available = True
    missing_dependencies = [
        "gdcm - requires python-gdcm>=3.0.10",
        "pyjpegls - requires pyjpegls>=1.2 - optional",  # a second " - " belongs to the text, not the plugin
        "acme - requires acme-codec",  # a plugin this project has no pip name for: its own name is used
    ]


def _decode_fails_with(monkeypatch, message: str, decoder=_TriedDecoder) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(dicom_module, "get_decoder", lambda uid: decoder())
    monkeypatch.setattr(dicom_module.pxl, "pixel_array", fail)


def test_decoders_that_all_failed_are_listed_with_what_is_missing(tmp_path, monkeypatch):
    # pydicom's message: a first line, then one indented line per plugin tried (blank lines between are dropped)
    _decode_fails_with(
        monkeypatch,
        "Unable to decode as none of the plugins succeeded:\n  pillow: broken stream\n\n  pylibjpeg: bad marker\n",
    )
    assert _reason(_dicom(tmp_path / "x.dcm")) == (
        "cannot decode the pixel data ('Explicit VR Little Endian' (1.2.840.10008.1.2.1), 16-bit): every installed "
        "decoder failed [pillow: broken stream; pylibjpeg: bad marker]. Missing decoder that may read it: "
        "gdcm - requires python-gdcm>=3.0.10 (pip install python-gdcm); "
        "pyjpegls - requires pyjpegls>=1.2 - optional (pip install pyjpegls); "
        "acme - requires acme-codec (pip install acme)"
    )


def test_one_line_decoder_failure_and_nothing_missing(tmp_path, monkeypatch):
    class NothingMissing:
        is_available = True
        missing_dependencies = []

    _decode_fails_with(monkeypatch, "the only plugin crashed", NothingMissing)
    assert _reason(_dicom(tmp_path / "x.dcm", BitsStored=None)) == (
        "cannot decode the pixel data ('Explicit VR Little Endian' (1.2.840.10008.1.2.1)): every installed decoder "
        "failed [the only plugin crashed]. Missing decoder that may read it: nothing pydicom knows of (no other "
        "decoding plugin exists for it)"
    )


def test_dicom_without_pixel_data(tmp_path):
    reason = _reason(_dicom(tmp_path / "nopix.dcm", pixels=False))
    assert reason.startswith("has no pixel data (")


def test_dicom_that_is_not_an_image(tmp_path):
    reason = _reason(_dicom(tmp_path / "report.dcm", rows=0, pixels=False))
    assert reason.startswith("has no pixel data (") and "Secondary Capture" in reason


def test_dicom_bomb_refused_before_decoding(tmp_path):
    huge = _dicom(tmp_path / "huge.dcm", rows=40000, cols=40000, PixelData=b"\x00" * 16)
    assert "too large" in _reason(huge)
    cine = _dicom(tmp_path / "cine.dcm", rows=1024, cols=1024, NumberOfFrames=5000, PixelData=b"\x00" * 16)
    reason = _reason(cine)
    assert "too large" in reason and "5000 frame(s)" in reason


def test_dicom_pixel_data_shorter_than_header(tmp_path):
    path = _dicom(tmp_path / "short.dcm", PixelData=b"\x00" * 100)
    assert "too short" in _reason(path)


def _raw_dataset(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(_dicom's file, the same dataset saved at ``name`` without preamble and file meta, implicit VR)."""
    path = _dicom(tmp_path / "a.dcm")
    ds = pydicom.dcmread(path)
    del ds.file_meta
    ds.preamble = None
    raw = tmp_path / name
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path, raw


def test_raw_dataset_named_png_is_not_guessed(tmp_path):
    assert "promises PNG" in _reason(_raw_dataset(tmp_path, "raw.png")[1])


# --- decompression bombs -------------------------------------------------------------------------------------


def test_png_claiming_50000_squared_is_refused_fast(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(50000, 50000))
    assert path.stat().st_size < 200
    start = time.perf_counter()
    reason = _reason(path)
    assert time.perf_counter() - start < 1.0
    assert "too large" in reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("width", "height"), [(12000, 12000), (31000, 10), (10, 31000)])
def test_png_over_our_limits_refused(tmp_path, width, height):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(width, height))
    reason = _reason(path)
    assert "too large" in reason and f"{width}x{height}" in reason


# --- nothing escapes -----------------------------------------------------------------------------------------


def test_unexpected_library_error_is_wrapped(tmp_path, monkeypatch):
    def broken(path, kind):
        raise KeyError("internal")

    monkeypatch.setattr(loader_module, "load_raster", broken)
    path = tmp_path / "ok.png"
    path.write_bytes(_png_bytes())
    assert "unexpected error" in _reason(path)


def test_a_uid_that_is_no_transfer_syntax_is_named(tmp_path):
    path = _dicom(tmp_path / "ts.dcm")  # pydicom will not write a bogus syntax: patch the file meta afterwards
    data = path.read_bytes()
    assert data.count(ExplicitVRLittleEndian.encode()) == 1
    path.write_bytes(data.replace(ExplicitVRLittleEndian.encode(), b"1.2.3.4.5.6.7.8.9.1"))  # same length
    assert _reason(path) == ("the header names 1.2.3.4.5.6.7.8.9.1 as the transfer syntax, which is not a DICOM "
                             "transfer syntax: the pixel data cannot be interpreted")


@pytest.mark.parametrize(("slope", "intercept"), [("NaN", "0"), ("1", "inf"), ("-inf", "0")])
def test_non_finite_rescale_values_are_a_load_error_not_a_black_image(tmp_path, slope, intercept):
    with pytest.warns(UserWarning):  # pydicom warns that these are invalid DS values, and reads them anyway
        reason = _reason(_dicom(tmp_path / "rescale.dcm", RescaleSlope=slope, RescaleIntercept=intercept))
    assert reason == (f"unusable RescaleSlope / RescaleIntercept ({float(slope):g} / {float(intercept):g}): "
                      "not finite numbers, so no pixel value can be computed")


# --- DICOM: the exact reason for each damaged header or pixel element ------------------------------------------
# Each reason is spelled out in full, with every number in it worked out from the file the test writes: a user
# reads these words to decide whether the file, the disk or the scanner export is at fault.


def _dicom_reason(path: Path, force: bool = False) -> str:
    with pytest.raises(ImageLoadError) as info:
        dicom_module.load_dicom(path, force)
    assert info.value.path == path
    return info.value.reason


def _pixel_tag_at(data: bytes, little: bool = True) -> int:
    """Byte offset of the (7FE0,0010) Pixel Data tag in a file written by _dicom."""
    offset = data.rfind(b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10")
    assert offset > 0
    return offset


ENCODINGS = ["ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "ExplicitVRBigEndian"]


def _encoded(path: Path, syntax: str) -> tuple[Path, bool]:
    """_dicom's 64 x 64 16-bit file re-written in transfer syntax ``syntax``; (path, little endian)."""
    _dicom(path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = getattr(pydicom.uid, syntax)
    little, implicit = syntax != "ExplicitVRBigEndian", syntax.startswith("Implicit")
    if not little:
        ds.PixelData = np.arange(64 * 64, dtype=">u2").tobytes()
    pydicom.dcmwrite(path, ds, implicit_vr=implicit, little_endian=little, force_encoding=True)
    return path, little


def test_header_reasons_say_which_failure_it_was(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"hello" * 100)
    with pytest.raises(pydicom.errors.InvalidDicomError) as pydicom_says:
        pydicom.dcmread(garbage)
    assert _dicom_reason(garbage) == f"not a DICOM file ({pydicom_says.value})"
    assert _dicom_reason(tmp_path) == "cannot read the file: Is a directory"  # an OSError with an errno

    # pydicom raises a bare OSError (no errno) when a sequence of undefined length stops where an item should be
    cut = _dicom(tmp_path / "cut.dcm")
    ds = pydicom.dcmread(cut)
    ds.ReferencedImageSequence = [Dataset(ReferencedSOPInstanceUID="1.2.3")]
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.save_as(cut)
    data = cut.read_bytes()
    cut.write_bytes(data[:data.find(b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff") + 15])  # 3 bytes of the item tag
    with pytest.raises(OSError) as pydicom_says:
        pydicom.dcmread(cut, stop_before_pixels=True)
    assert pydicom_says.value.errno is None
    assert _dicom_reason(cut) == f"DICOM header is truncated or damaged ({pydicom_says.value})"

    def damaged(*args, **kwargs):
        raise KeyError("(0028,0010)")

    monkeypatch.setattr(pydicom, "dcmread", damaged)
    assert _dicom_reason(garbage) == "DICOM header is damaged or truncated (KeyError: '(0028,0010)')"


def test_force_reads_a_dataset_without_the_file_format_and_the_offset_is_where_pixel_data_starts(tmp_path):
    path, raw = _raw_dataset(tmp_path, "raw.dcm")
    assert _dicom_reason(raw).startswith("not a DICOM file (")
    for without_force in (dicom_module.load_dicom, dicom_module.read_header):  # unless asked
        with pytest.raises(ImageLoadError, match="not a DICOM file"):
            without_force(raw)
    record = dicom_module.load_dicom(raw, force=True)
    np.testing.assert_array_equal(record.pixels.ravel(), np.arange(64 * 64))
    assert dicom_module.read_header(path)[1] == _pixel_tag_at(path.read_bytes())


def test_objects_that_are_not_images_are_named(tmp_path):
    report = _dicom(tmp_path / "report.dcm", rows=0, pixels=False)
    assert _dicom_reason(report) == (
        "has no pixel data (SOP class 'Secondary Capture Image Storage': this DICOM object is not an image)"
    )
    anonymous = _dicom(tmp_path / "anonymous.dcm", rows=0, pixels=False, SOPClassUID=None)
    assert _dicom_reason(anonymous) == "has no pixel data (no Rows/Columns: this DICOM object is not an image)"


def test_number_of_frames_that_is_not_a_number_is_named(tmp_path):
    path = _dicom(tmp_path / "frames.dcm", NumberOfFrames="1")
    data = path.read_bytes()
    at = data.find(b"\x28\x00\x08\x00IS\x02\x00")  # (0028,0008) IS, 2 bytes: "1 " becomes "x "
    path.write_bytes(data[:at + 8] + b"x " + data[at + 10:])
    with pytest.warns(UserWarning, match="Invalid value for VR IS"):
        reason = _dicom_reason(path)
    assert reason == ("invalid NumberOfFrames/SamplesPerPixel in the DICOM header "
                      "(invalid literal for int() with base 10: 'x')")


@pytest.mark.filterwarnings("ignore:A value of '0' for \\(0028,0008\\)")  # pydicom, too, reads 0 frames as 1
def test_zero_frames_is_read_as_one(tmp_path):
    record = dicom_module.load_dicom(_dicom(tmp_path / "zero.dcm", NumberOfFrames=0))
    assert record.n_frames == 1
    np.testing.assert_array_equal(record.pixels.ravel(), np.arange(64 * 64))


@pytest.mark.parametrize(("rows", "cols"), [(10, 31000), (31000, 10)])
def test_frame_size_is_checked_as_columns_by_rows(tmp_path, rows, cols):
    reason = _dicom_reason(_dicom(tmp_path / "wide.dcm", rows=rows, cols=cols, PixelData=b"\x00" * 16))
    assert reason.startswith(f"DICOM frame is too large to open safely: {cols}x{rows} pixels (limit ")


def test_total_samples_limit_is_two_billion_counting_frames_and_samples(tmp_path):
    # 800 x 1000 x 1 sample x 2500 frames = 2.0e9 samples exactly: allowed (the file is then too short for it:
    # 2.0e9 x 16 bits = 4,000,000,000 bytes); one frame more is refused. With 3 samples per pixel
    # 834 frames are 800 x 1000 x 3 x 834 = 2.0016e9 > 2e9, and 833 frames (1.9992e9) are allowed.
    def reason(**elements):
        return _dicom_reason(_dicom(tmp_path / "big.dcm", rows=1000, cols=800, PixelData=b"\x00" * 16, **elements))

    assert reason(NumberOfFrames=2500) == "pixel data is too short: 16 bytes, the header's image size needs 4000000000"
    assert reason(NumberOfFrames=2501) == (
        "DICOM pixel data is too large to open safely: 2501 frame(s) of 800x1000x1 = 2.0 G samples (limit 2.0 G)"
    )
    assert reason(NumberOfFrames=833, SamplesPerPixel=3).startswith("pixel data is too short: 16 bytes")
    assert reason(NumberOfFrames=834, SamplesPerPixel=3) == (
        "DICOM pixel data is too large to open safely: 834 frame(s) of 800x1000x3 = 2.0 G samples (limit 2.0 G)"
    )
    assert reason(NumberOfFrames=40000) == (  # 800 x 1000 x 40000 = 32.0e9
        "DICOM pixel data is too large to open safely: 40000 frame(s) of 800x1000x1 = 32.0 G samples (limit 2.0 G)"
    )


def test_pixel_element_missing_or_displaced_is_named(tmp_path):
    bare = _dicom(tmp_path / "bare.dcm", pixels=False)
    size = bare.stat().st_size
    assert _dicom_reason(bare) == (
        f"has no pixel data (the file ends after {size} bytes without a Pixel Data element; it may be truncated)"
    )
    # An item delimiter at the top level ends pydicom's header early: what follows it is not pixel data
    path = _dicom(tmp_path / "displaced.dcm")
    data = path.read_bytes()
    at = _pixel_tag_at(data)
    patient_position = struct.pack("<HH", 0x0018, 0x5100) + b"CS" + struct.pack("<H", 4) + b"HFS "
    path.write_bytes(data[:at] + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + patient_position + data[at:])
    assert _dicom_reason(path) == "has no pixel data (element (0018,5100) found where it should be)"
    # A group above 7FFF (Data Set Trailing Padding), in both byte orders: tags are read unsigned
    for syntax in ("ExplicitVRLittleEndian", "ExplicitVRBigEndian"):
        path, little = _encoded(tmp_path / "padded.dcm", syntax)
        data = path.read_bytes()
        at = _pixel_tag_at(data, little)
        order = "<" if little else ">"
        padding = struct.pack(order + "HH", 0xFFFC, 0xFFFC) + b"OB\x00\x00" + struct.pack(order + "L", 4) + bytes(4)
        delimiter = struct.pack(order + "HHL", 0xFFFE, 0xE00D, 0)
        path.write_bytes(data[:at] + delimiter + padding + data[at:])
        assert _dicom_reason(path) == "has no pixel data (element (FFFC,FFFC) found where it should be)"


@pytest.mark.parametrize("syntax", ENCODINGS)
def test_truncated_pixel_data_counts_the_bytes_left_in_every_encoding(tmp_path, syntax):
    # 64 x 64 x 16 bits = 8192 bytes declared; 1000 cut off the end leave 7192 after the element's header
    # (8 bytes implicit, 12 explicit: counted from the element's own length field in the file's byte order)
    path, _ = _encoded(tmp_path / "cut.dcm", syntax)
    np.testing.assert_array_equal(dicom_module.load_dicom(path).pixels.ravel(), np.arange(64 * 64))
    path.write_bytes(path.read_bytes()[:-1000])
    assert _dicom_reason(path) == "file is truncated: pixel data declares 8192 bytes but only 7192 remain"


@pytest.mark.parametrize("syntax", ENCODINGS)
def test_a_declared_length_of_over_two_gigabytes_is_read_unsigned(tmp_path, syntax):
    path, little = _encoded(tmp_path / "huge.dcm", syntax)
    data = path.read_bytes()
    at = _pixel_tag_at(data, little) + (4 if syntax.startswith("Implicit") else 8)  # the 4-byte length field
    assert data[at:at + 4] == struct.pack("<L" if little else ">L", 8192)
    path.write_bytes(data[:at] + struct.pack("<L" if little else ">L", 0xF0000000) + data[at + 4:])
    assert _dicom_reason(path) == "file is truncated: pixel data declares 4026531840 bytes but only 8192 remain"


def test_a_file_that_ends_right_after_the_pixel_element_header(tmp_path):
    path, _ = _encoded(tmp_path / "header_only.dcm", "ImplicitVRLittleEndian")
    data = path.read_bytes()
    path.write_bytes(data[:_pixel_tag_at(data) + 8])  # tag and length (implicit VR): 8 bytes, no value
    assert _dicom_reason(path) == "file is truncated: pixel data declares 8192 bytes but only 0 remain"


@pytest.mark.parametrize("vr", [b"OB", b"OW", b"OF", b"OD", b"UN", b"OL", b"OV"])
def test_every_vr_with_a_four_byte_length_is_read_as_such(tmp_path, vr):
    # Explicit VR: these VRs have 2 reserved bytes, then a 4-byte length (PS3.5 7.1.2); read as a 2-byte one,
    # the length would be the reserved 0
    path = _dicom(tmp_path / "vr.dcm")
    data = path.read_bytes()
    at = _pixel_tag_at(data)
    path.write_bytes((data[:at + 4] + vr + data[at + 6:])[:-1000])
    assert _dicom_reason(path) == "file is truncated: pixel data declares 8192 bytes but only 7192 remain"


def test_pixel_data_shorter_than_the_image_is_measured_in_bits(tmp_path):
    short = _dicom(tmp_path / "short.dcm", PixelData=b"\x00" * 100)  # 64 x 64 x 16 bits = 8192 bytes
    assert _dicom_reason(short) == "pixel data is too short: 100 bytes, the header's image size needs 8192"
    # 1 bit per pixel: 8 x 8 pixels fill exactly 8 bytes (a rounding that adds a byte would refuse them)
    bits = dict(rows=8, cols=8, BitsAllocated=1, BitsStored=1, HighBit=0)
    packed = np.packbits(np.eye(8, dtype=np.uint8), bitorder="little").tobytes()
    record = dicom_module.load_dicom(_dicom(tmp_path / "bits.dcm", PixelData=packed, **bits))
    np.testing.assert_array_equal(record.pixels, np.eye(8))
    assert _dicom_reason(_dicom(tmp_path / "bits_short.dcm", PixelData=packed[:6], **bits)) == (
        "pixel data is too short: 6 bytes, the header's image size needs 8"
    )


@pytest.mark.parametrize("syntax", ["ExplicitVRLittleEndian", "ExplicitVRBigEndian"])
def test_pixel_element_with_a_two_byte_length_is_measured_by_it(tmp_path, syntax):
    # An explicit VR that is not OB/OW/...: its length is the 2 bytes after the VR, in the file's byte order,
    # unsigned: 100, and 40000 (above 32767), where 8192 + 4 bytes follow the 8-byte header
    path, little = _encoded(tmp_path / "us_vr.dcm", syntax)
    data = path.read_bytes()
    at = _pixel_tag_at(data, little)
    order = "<" if little else ">"
    assert data[at + 4:at + 12] == b"OW\x00\x00" + struct.pack(order + "L", 8192)
    for length, reason in [(100, "pixel data is too short: 100 bytes, the header's image size needs 8192"),
                           (40000, "file is truncated: pixel data declares 40000 bytes but only 8196 remain")]:
        path.write_bytes(data[:at + 4] + b"US" + struct.pack(order + "H", length) + data[at + 8:])
        assert _dicom_reason(path) == reason


def _frame_fails(monkeypatch, error: Exception, on_index: int = 1) -> None:
    """pydicom's pixel_array raises ``error`` for frame ``on_index`` and decodes the others."""
    real = dicom_module.pxl.pixel_array

    def pixel_array(source, *args, index=None, **kwargs):
        if index == on_index:
            raise error
        return real(source, *args, index=index, **kwargs)

    monkeypatch.setattr(dicom_module.pxl, "pixel_array", pixel_array)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MemoryError(), "not enough memory to decode frame 1"),
        (OSError(5, "Input/output error"), "cannot read frame 1: Input/output error"),
        (OSError("stream ended"), "cannot read frame 1: stream ended"),
        (ValueError("odd layout"), "cannot decode frame 1 of transfer syntax 'Explicit VR Little Endian' "
                                   "(1.2.840.10008.1.2.1): ValueError: odd layout"),
        (ImageLoadError(Path("elsewhere.dcm"), "said by the codestream check"), "said by the codestream check"),
    ],
)
def test_a_frame_that_fails_to_decode_names_the_frame_and_the_cause(tmp_path, monkeypatch, error, reason):
    frames = np.arange(2 * 8 * 8, dtype="<u2")
    path = _dicom(tmp_path / "cine.dcm", rows=8, cols=8, NumberOfFrames=2, PixelData=frames.tobytes())
    _frame_fails(monkeypatch, error)
    record = dicom_module.load_dicom(path)
    np.testing.assert_array_equal(record.pixels.ravel(), frames[:64])
    with pytest.raises(ImageLoadError) as info:
        record.frame(1)
    assert info.value.reason == reason


def test_frames_of_a_native_cine_are_its_own(tmp_path):
    frames = np.arange(3 * 8 * 8, dtype="<u2")
    record = dicom_module.load_dicom(
        _dicom(tmp_path / "cine.dcm", rows=8, cols=8, NumberOfFrames=3, PixelData=frames.tobytes())
    )
    assert record.n_frames == 3
    np.testing.assert_array_equal(record.frame(2).ravel(), frames[128:])
    np.testing.assert_array_equal(record.frame(1).ravel(), frames[64:128])


def test_record_defaults_when_the_header_leaves_fields_out(tmp_path):
    sparse = dicom_module.load_dicom(_dicom(tmp_path / "sparse.dcm", Modality=None))
    assert sparse.modality == "OT" and sparse.photometric == "MONOCHROME2" and sparse.bits_stored == 16
    no_modality = pydicom.dcmread(tmp_path / "sparse.dcm")
    del no_modality.Modality
    no_modality.save_as(tmp_path / "no_modality.dcm")
    assert dicom_module.load_dicom(tmp_path / "no_modality.dcm").modality == "OT"
    assert sparse.burned_in_annotation is None and sparse.format == "DICOM" and sparse.n_frames == 1
    assert set(sparse.identifiers) == {"PatientName", "SOPInstanceUID"} and sparse.identifiers["PatientName"] == "Doe^Jane"
    assert not set(sparse.identifiers) & set(sparse.attributes)
    stated = dicom_module.load_dicom(_dicom(tmp_path / "stated.dcm", Modality="US ", BurnedInAnnotation="NO ",
                                            PhotometricInterpretation="MONOCHROME1 ", BitsStored=12, HighBit=11))
    assert stated.modality == "US" and stated.photometric == "MONOCHROME1" and stated.bits_stored == 12
    assert stated.burned_in_annotation == "NO"


@pytest.mark.parametrize(("keyword", "name"), [("PhotometricInterpretation", "(0028,0004) 'Photometric Interpretation'"),
                                               ("BitsStored", "(0028,0101) 'Bits Stored'"),
                                               ("SamplesPerPixel", "(0028,0002) 'Samples per Pixel'")])
def test_elements_the_decoder_needs_are_named_when_missing(tmp_path, keyword, name):
    path = _dicom(tmp_path / "missing.dcm")
    ds = pydicom.dcmread(path)
    delattr(ds, keyword)
    ds.save_as(path)
    assert _dicom_reason(path) == ("cannot decode frame 0 of transfer syntax 'Explicit VR Little Endian' "
                                   f"(1.2.840.10008.1.2.1): AttributeError: Missing required element: {name}")


def test_a_missing_bits_allocated_is_named_not_guessed(tmp_path):
    # Without Bits Allocated the length check assumes 8 bits (64 x 64 -> 4096 bytes, which the file holds), and
    # pydicom then names the element: a guessed larger depth would call the same file too short
    path = _dicom(tmp_path / "no_bits.dcm", PixelData=bytes(4096))
    ds = pydicom.dcmread(path)
    del ds.BitsAllocated
    ds.save_as(path)
    assert _dicom_reason(path) == ("cannot decode frame 0 of transfer syntax 'Explicit VR Little Endian' "
                                   "(1.2.840.10008.1.2.1): AttributeError: Missing required element: "
                                   "(0028,0100) 'Bits Allocated'")
