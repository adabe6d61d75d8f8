"""The size inside compressed pixel data is checked against the DICOM header before anything is decoded.

Hostile files are made here from pydicom's real compressed test files by patching the codestream (JPEG / JPEG-LS
frame header, JPEG 2000 SIZ, RLE header); no binary file is committed. A refusal whose reason quotes both sizes
can only come from the pre-decode check: a decoder would have allocated the claimed size first, and pydicom's own
errors say nothing of the codestream's size. While a hostile file loads, the address space is capped near its
current size, so that if the check ever breaks the huge allocation fails at once instead of exhausting the machine.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels.decoders.base import get_decoder

from busi_viewer.core.codestreams import CodestreamError, StreamSize, j2k_size, jpeg_size, rle_offsets
from busi_viewer.core.dicom import load_dicom
from busi_viewer.core.errors import ImageLoadError

JPEG_LOSSLESS = "JPGLosslessP14SV1_1s_1f_8b.dcm"  # 768 x 1024, 8-bit, SOF3, 215 KB
JPEG_LS = "MR_small_jpeg_ls_lossless.dcm"  # 64 x 64, SOF55
JPEG_LS_NEAR = "JPEGLSNearLossless_16.dcm"  # 50 x 10, SOF55
J2K = "MR_small_jp2klossless.dcm"  # 64 x 64, 1 component
J2K_COLOUR = "US1_J2KR.dcm"  # 480 x 640, 3 components, one frame in 3 fragments
JP2 = "GDCMJ2K_TextGBR.dcm"  # a JP2 file (boxes around the codestream) inside the DICOM
RLE = "MR_small_RLE.dcm"  # 64 x 64, 16-bit: 2 segments
RLE_RGB = "SC_rgb_rle.dcm"  # 100 x 100, RGB 8-bit: 3 segments
CINE_JLS = "emri_small_jpeg_ls_lossless.dcm"  # 10 frames of 64 x 64
CINE_J2K = "emri_small_jpeg_2k_lossless.dcm"
CINE_RLE = "emri_small_RLE.dcm"
CINE_JPEG = "examples_ybr_color.dcm"  # 30 frames of 240 x 320 colour, JPEG Baseline


def _testfile(name: str) -> Path:
    found = pydicom.data.get_testdata_file(name)
    if found is None:
        pytest.skip(f"pydicom test file {name} is not installed (pydicom / pydicom-data)")
    return Path(found)


def _needs_decoder(path: Path) -> None:
    tsyntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not get_decoder(tsyntax).is_available:
        pytest.skip(f"no decoder plugin for {tsyntax.name} is installed")


@contextmanager
def _memory_capped(extra: int = 1 << 30) -> Iterator[None]:
    """Cap the address space at its current size + ``extra`` bytes (Linux only; elsewhere no cap)."""
    try:
        import resource

        with open("/proc/self/statm") as fh:
            current = int(fh.read().split()[0]) * resource.getpagesize()
    except (ImportError, OSError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + extra if hard == resource.RLIM_INFINITY else min(current + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _refusal(path: Path) -> str:
    with _memory_capped(), pytest.raises(ImageLoadError) as info:
        load_dicom(path)
    return info.value.reason


def _patched(tmp_path: Path, name: str, patch: Callable[[bytearray], None]) -> Path:
    """A copy of pydicom test file ``name`` with its bytes changed in place by ``patch``."""
    data = bytearray(_testfile(name).read_bytes())
    patch(data)
    out = tmp_path / f"patched_{name}"
    out.write_bytes(bytes(data))
    return out


def _sof_at(data: bytearray | bytes, marker: int, rows: int, cols: int, nth: int = 0) -> int:
    """Offset of the ``nth`` JPEG frame header (0xFF ``marker``, Lf, P, Y, X) that says rows x cols."""
    pattern = re.compile(re.escape(bytes([0xFF, marker])) + b"..." + re.escape(struct.pack(">HH", rows, cols)), re.S)
    hits = [m.start() for m in pattern.finditer(bytes(data))]
    assert len(hits) > nth, f"no frame header 0xFF{marker:02X} saying {rows}x{cols}"
    return hits[nth]


def _set_sof(
    data: bytearray, marker: int, rows: int, cols: int, new_rows: int, new_cols: int, nth: int = 0
) -> None:
    at = _sof_at(data, marker, rows, cols, nth)
    data[at + 5:at + 9] = struct.pack(">HH", new_rows, new_cols)


def _siz_at(data: bytearray | bytes) -> int:
    at = bytes(data).find(b"\xff\x4f\xff\x51")
    assert at >= 0, "no JPEG 2000 SOC + SIZ"
    return at


def _set_siz(data: bytearray, new_rows: int, new_cols: int, components: int | None = None) -> None:
    at = _siz_at(data) + 4  # Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz ... Csiz
    xo, yo = struct.unpack(">II", data[at + 12:at + 20])
    data[at + 4:at + 12] = struct.pack(">II", xo + new_cols, yo + new_rows)
    if components is not None:
        data[at + 36:at + 38] = struct.pack(">H", components)


def _rle_header_at(data: bytearray | bytes, segments: int) -> int:
    at = bytes(data).find(struct.pack("<LL", segments, 64))
    assert at >= 0, "no RLE header"
    return at


# --- parsers on hand-made codestreams --------------------------------------------------------------------------


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _sof_body(rows: int, cols: int, components: int, precision: int = 8) -> bytes:
    return struct.pack(">BHHB", precision, rows, cols, components) + b"\x01\x11\x00" * components


def test_jpeg_size_walks_segments_to_the_frame_header():
    stream = (
        b"\xff\xd8"
        + _segment(0xE0, b"JFIF\x00" + bytes(9))  # APP0
        + _segment(0xDB, bytes(65))  # DQT
        + b"\xff\xff"  # a fill byte before the next marker
        + _segment(0xC3, _sof_body(300, 200, 1, 12))  # SOF3: Y = 300 rows, X = 200 columns
        + _segment(0xDA, bytes(8))
    )
    assert jpeg_size(stream) == StreamSize("JPEG Lossless (SOF3)", 300, 200, 1)
    baseline = b"\xff\xd8" + _segment(0xC0, _sof_body(0x0102, 0x0304, 3)) + b"\xff\xd9"
    assert jpeg_size(baseline) == ("JPEG Baseline (SOF0)", 258, 772, 3)


def test_jpeg_ls_size_after_an_lse_segment():
    stream = b"\xff\xd8" + _segment(0xF8, b"\x01" + bytes(10)) + _segment(0xF7, _sof_body(50, 10, 1, 16))
    assert jpeg_size(stream) == StreamSize("JPEG-LS (SOF55)", 50, 10, 1)


def test_jpeg_size_refuses_what_it_cannot_measure():
    with pytest.raises(CodestreamError, match="start-of-image"):
        jpeg_size(b"\x00\x00" + _segment(0xC0, _sof_body(8, 8, 1)))
    with pytest.raises(CodestreamError, match="does not give its size.*0 rows x 640 columns"):
        jpeg_size(b"\xff\xd8" + _segment(0xC3, _sof_body(0, 640, 1)))  # height deferred to a DNL marker
    with pytest.raises(CodestreamError, match="scan data without a JPEG frame header"):
        jpeg_size(b"\xff\xd8" + _segment(0xDA, bytes(8)) + _segment(0xC0, _sof_body(8, 8, 1)))
    with pytest.raises(CodestreamError, match="ends"):
        jpeg_size(b"\xff\xd8" + _segment(0xE0, bytes(20))[:10])
    with pytest.raises(CodestreamError, match="no JPEG marker at byte 2"):
        jpeg_size(b"\xff\xd8\x12\x34")


def _siz(cols: int, rows: int, x0: int = 0, y0: int = 0, components: int = 1) -> bytes:
    body = struct.pack(">HIIIIIIIIH", 0, cols, rows, x0, y0, cols, rows, 0, 0, components)
    body += b"\x07\x01\x01" * components
    return b"\xff\x4f\xff\x51" + struct.pack(">H", len(body) + 2) + body


def _box(kind: bytes, body: bytes, xl: bool = False) -> bytes:
    if xl:  # 64-bit box length
        return struct.pack(">L", 1) + kind + struct.pack(">Q", len(body) + 16) + body
    return struct.pack(">L", len(body) + 8) + kind + body


def test_j2k_size_subtracts_the_image_offset():
    # Xsiz 1000, XOsiz 10 -> 990 columns; Ysiz 700, YOsiz 100 -> 600 rows
    assert j2k_size(_siz(1000, 700, 10, 100, 3)) == StreamSize("JPEG 2000", 600, 990, 3)


def test_j2k_size_follows_a_jp2_wrapper():
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    codestream = _siz(640, 480, components=3) + b"\xff\x90"
    wrapped = signature + _box(b"ftyp", b"jp2 " + bytes(8)) + _box(b"jp2h", bytes(30), xl=True)
    assert j2k_size(wrapped + _box(b"jp2c", codestream)) == StreamSize("JPEG 2000 (JP2 file)", 480, 640, 3)
    with pytest.raises(CodestreamError, match="'jp2c'"):
        j2k_size(wrapped)


def test_j2k_size_refuses_other_starts():
    with pytest.raises(CodestreamError, match="SOC"):
        j2k_size(b"\xff\xd8" + _siz(8, 8))
    with pytest.raises(CodestreamError, match="SIZ"):
        j2k_size(b"\xff\x4f\xff\x52" + bytes(40))
    with pytest.raises(CodestreamError, match="empty image"):
        j2k_size(_siz(100, 100, 100, 0))


def _rle(count: int, offsets: list[int]) -> bytes:
    return struct.pack("<16L", count, *offsets, *[0] * (15 - len(offsets)))


def test_rle_offsets():
    assert rle_offsets(_rle(3, [64, 100, 150]) + bytes(136)) == (64, 100, 150)  # 200-byte frame
    with pytest.raises(CodestreamError, match="16 segments"):
        rle_offsets(_rle(16, [64] + [0] * 14) + bytes(100))
    with pytest.raises(CodestreamError, match="0 segments"):
        rle_offsets(_rle(0, []) + bytes(100))
    with pytest.raises(CodestreamError, match="do not increase"):
        rle_offsets(_rle(3, [64, 150, 100]) + bytes(136))
    with pytest.raises(CodestreamError, match="inside the 64-byte header"):
        rle_offsets(_rle(1, [32]) + bytes(136))
    with pytest.raises(CodestreamError, match="past the frame's 200 bytes"):
        rle_offsets(_rle(2, [64, 200]) + bytes(136))
    with pytest.raises(CodestreamError, match="shorter than the 64-byte RLE header"):
        rle_offsets(_rle(1, [64])[:40])


# --- real files, unchanged: they still load ---------------------------------------------------------------------

VALID = [JPEG_LOSSLESS, JPEG_LS, JPEG_LS_NEAR, J2K, J2K_COLOUR, JP2, RLE, RLE_RGB, CINE_JLS, CINE_J2K, CINE_RLE]


@pytest.mark.parametrize("name", VALID)
def test_unpatched_files_load_every_frame(name):
    path = _testfile(name)
    _needs_decoder(path)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    record = load_dicom(path)
    assert record.shape == (header.Rows, header.Columns)
    for index in range(1, record.n_frames):
        assert record.frame(index).shape[:2] == (header.Rows, header.Columns)


# --- real files, patched: refused before decoding ---------------------------------------------------------------


@pytest.mark.parametrize("claim", [(20000, 20000), (65535, 65535), (768, 1025)])
def test_jpeg_lossless_size_mismatch(tmp_path, claim):
    path = _patched(tmp_path, JPEG_LOSSLESS, lambda d: _set_sof(d, 0xC3, 768, 1024, *claim))
    reason = _refusal(path)
    assert f"JPEG Lossless (SOF3) codestream says {claim[0]}x{claim[1]} pixels" in reason
    assert "DICOM header says 768x1024 (Rows x Columns): refusing to decode a mismatched stream" in reason
    assert ("beyond this app's limits" in reason) == (claim[0] * claim[1] > 120_000_000)


def test_jpeg_height_left_to_a_dnl_marker_is_refused(tmp_path):
    path = _patched(tmp_path, JPEG_LOSSLESS, lambda d: _set_sof(d, 0xC3, 768, 1024, 0, 1024))
    reason = _refusal(path)
    assert "does not give its size in its JPEG Lossless (SOF3) frame header (0 rows x 1024 columns" in reason


def test_jpeg_without_start_of_image_is_refused(tmp_path):
    def patch(data: bytearray) -> None:
        at = _sof_at(data, 0xC3, 768, 1024)
        soi = bytes(data).rfind(b"\xff\xd8\xff", 0, at)
        data[soi:soi + 2] = b"\x00\x00"

    reason = _refusal(_patched(tmp_path, JPEG_LOSSLESS, patch))
    assert "does not start with a JPEG start-of-image (SOI) marker" in reason


@pytest.mark.parametrize("name, rows, cols", [(JPEG_LS, 64, 64), (JPEG_LS_NEAR, 50, 10)])
def test_jpeg_ls_size_mismatch(tmp_path, name, rows, cols):
    path = _patched(tmp_path, name, lambda d: _set_sof(d, 0xF7, rows, cols, 65535, 65535))
    reason = _refusal(path)
    assert "JPEG-LS (SOF55) codestream says 65535x65535 pixels" in reason
    assert f"DICOM header says {rows}x{cols}" in reason


@pytest.mark.parametrize("name, rows, cols", [(J2K, 64, 64), (J2K_COLOUR, 480, 640), (JP2, 400, 400)])
def test_j2k_size_mismatch(tmp_path, name, rows, cols):
    path = _patched(tmp_path, name, lambda d: _set_siz(d, 50000, 50000))
    reason = _refusal(path)
    assert re.search(r"JPEG 2000( \(JP2 file\))? codestream says 50000x50000 pixels", reason), reason
    assert f"DICOM header says {rows}x{cols}" in reason
    assert ("JP2 file" in reason) == (name == JP2)


def test_j2k_component_mismatch(tmp_path):
    path = _patched(tmp_path, J2K, lambda d: _set_siz(d, 64, 64, components=3))
    reason = _refusal(path)
    assert "JPEG 2000 codestream has 3 component(s) per pixel but the DICOM header says 1 (Samples per Pixel)" in reason


def test_j2k_unknown_start_is_refused(tmp_path):
    def patch(data: bytearray) -> None:
        at = _siz_at(data)
        data[at:at + 2] = b"\xff\xd8"

    reason = _refusal(_patched(tmp_path, J2K, patch))
    assert "does not start with a JPEG 2000 codestream (SOC marker) or a JP2 file signature" in reason


def test_rle_segment_count_mismatch(tmp_path):
    def patch(data: bytearray) -> None:
        at = _rle_header_at(data, 2)
        data[at:at + 4] = struct.pack("<L", 1)

    reason = _refusal(_patched(tmp_path, RLE, patch))
    assert "the RLE header declares 1 segment(s) but the DICOM header needs 2 (1 sample(s) per pixel x 2 byte(s)" \
        in reason


@pytest.mark.parametrize("fields, expected", [
    ((16,), "declaring 16 segments"),
    ((3, 64, 40), "offsets do not increase"),
    ((3, 64, 100, 10**8), "RLE segment 3 starts at byte 100000000, past the frame's"),
])
def test_rle_header_damage(tmp_path, fields, expected):
    def patch(data: bytearray) -> None:
        at = _rle_header_at(data, 3)
        data[at:at + 4 * len(fields)] = struct.pack(f"<{len(fields)}L", *fields)

    assert expected in _refusal(_patched(tmp_path, RLE_RGB, patch))


def test_rle_segments_longer_than_the_frame_needs(tmp_path):
    ds = pydicom.dcmread(_testfile(RLE))  # 64 x 64 frame whose header now says 8 x 8
    ds.Rows, ds.Columns = 8, 8
    path = tmp_path / "rle_small_header.dcm"
    ds.save_as(path)
    reason = _refusal(path)
    assert re.search(r"RLE segment 1 holds \d+ bytes, more than any encoding of a 8x8 frame \(Rows x Columns\) needs "
                     r"\(at most 130\)", reason), reason


# --- multi-frame: each frame is checked before it is decoded, wherever its fragments lie -----------------------


def _cine_frames(name: str) -> tuple[pydicom.Dataset, list[bytes]]:
    ds = pydicom.dcmread(_testfile(name))
    return ds, list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))


def _write_cine(path: Path, ds: pydicom.Dataset, frames: list[bytes], layout: str) -> Path:
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    if layout == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        per_frame = {"one": 1, "two": 2, "tiny": 1000}[layout.split("-")[1]]  # tiny: ~4 bytes per fragment
        ds.PixelData = encapsulate(frames, fragments_per_frame=per_frame, has_bot=layout.startswith("bot"))
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)
    return path


LAYOUTS = ["bot-one", "bot-two", "bot-tiny", "nobot-one", "nobot-two", "extended"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_frame_checked_on_demand(tmp_path, layout):
    ds, frames = _cine_frames(CINE_JLS)
    _needs_decoder(_testfile(CINE_JLS))
    good = load_dicom(_testfile(CINE_JLS))
    patched = bytearray(frames[3])
    _set_sof(patched, 0xF7, 64, 64, 30000, 64)
    frames[3] = bytes(patched)
    record = load_dicom(_write_cine(tmp_path / f"{layout}.dcm", ds, frames, layout))
    np.testing.assert_array_equal(record.pixels, good.pixels)
    for index in (1, 2, 4, 9):
        np.testing.assert_array_equal(record.frame(index), good.frame(index))
    with _memory_capped(), pytest.raises(ImageLoadError) as info:
        record.frame(3)
    assert "JPEG-LS (SOF55) codestream of frame 3 says 30000x64 pixels but the DICOM header says 64x64" \
        in info.value.reason
    with pytest.raises(ImageLoadError, match="of frame 3"):
        record.frame(3)  # a refused frame stays refused


@pytest.mark.parametrize("layout", ["bot-one", "nobot-two", "extended"])
def test_a_hostile_first_frame_is_refused_at_load(tmp_path, layout):
    ds, frames = _cine_frames(CINE_J2K)
    patched = bytearray(frames[0])
    _set_siz(patched, 64, 40000)
    frames[0] = bytes(patched)
    reason = _refusal(_write_cine(tmp_path / f"{layout}.dcm", ds, frames, layout))
    assert "JPEG 2000 codestream of frame 0 says 64x40000 pixels but the DICOM header says 64x64" in reason


def test_rle_cine_frame_checked_on_demand(tmp_path):
    ds, frames = _cine_frames(CINE_RLE)
    _needs_decoder(_testfile(CINE_RLE))
    patched = bytearray(frames[5])
    patched[0:4] = struct.pack("<L", 1)
    frames[5] = bytes(patched)
    record = load_dicom(_write_cine(tmp_path / "rle.dcm", ds, frames, "bot-one"))
    record.frame(4)
    with pytest.raises(ImageLoadError, match="RLE header of frame 5 declares 1 segment"):
        record.frame(5)


def test_jpeg_cine_checked_in_the_original_file(tmp_path):
    """examples_ybr_color.dcm as stored (30 frames, one fragment each): frame 7's header is patched in place."""
    path = _patched(tmp_path, CINE_JPEG, lambda d: _set_sof(d, 0xC0, 240, 320, 240, 20000, nth=7))
    _needs_decoder(path)
    record = load_dicom(path)
    record.frame(6)
    record.frame(8)
    with _memory_capped(), pytest.raises(ImageLoadError, match="JPEG Baseline \\(SOF0\\) codestream of frame 7 says "
                                                                "240x20000 pixels"):
        record.frame(7)
