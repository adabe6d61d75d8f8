"""Image sizes claimed inside compressed DICOM pixel data, read before anything is decoded.

A decoder allocates what the codestream says, not what the DICOM header says: a 200 KB JPEG whose frame header
claims 65535 x 65535 pixels makes the decoder allocate gigabytes before pydicom notices that the result does not
fit Rows / Columns. So the start of each frame's codestream (JPEG / JPEG-LS frame header, JPEG 2000 SIZ, the RLE
header) is parsed here and compared with the header before the frame reaches a decoder. Only a few small reads per
frame: the compressed data itself is never read.

Parsers take the codestream as ``bytes`` or as a ``read(offset, n)`` function and raise :class:`CodestreamError`;
:func:`frame_checker` ties them to a DICOM file and raises ImageLoadError.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple, NoReturn

from pydicom.dataset import Dataset
from pydicom.uid import UID, JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes, RLELossless

from .errors import ImageLoadError
from .raster import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE

Reader = Callable[[int, int], bytes]
"""read(offset, n) -> up to n bytes of one frame's codestream from ``offset`` (fewer at its end)."""

MAX_HEADER_STEPS = 10_000
"""Marker segments, fill bytes or JP2 boxes walked before giving up on finding the size (real files need < 30)."""

_SOF_NAMES = {
    0xC0: "JPEG Baseline (SOF0)", 0xC1: "JPEG Extended (SOF1)", 0xC2: "JPEG Progressive (SOF2)",
    0xC3: "JPEG Lossless (SOF3)", 0xC5: "JPEG Differential Sequential (SOF5)",
    0xC6: "JPEG Differential Progressive (SOF6)", 0xC7: "JPEG Differential Lossless (SOF7)",
    0xC9: "JPEG Extended Arithmetic (SOF9)", 0xCA: "JPEG Progressive Arithmetic (SOF10)",
    0xCB: "JPEG Lossless Arithmetic (SOF11)", 0xCD: "JPEG Differential Sequential Arithmetic (SOF13)",
    0xCE: "JPEG Differential Progressive Arithmetic (SOF14)", 0xCF: "JPEG Differential Lossless Arithmetic (SOF15)",
    0xF7: "JPEG-LS (SOF55)",
    0xDE: "hierarchical JPEG (DHP)",  # DHP has the SOF layout and gives the size of the whole hierarchy
}
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class CodestreamError(ValueError):
    """The start of a codestream is damaged, truncated or of a kind not supported; str() says why."""


class StreamSize(NamedTuple):
    """What a codestream says it will decode to: pixels per column / row and components per pixel."""

    kind: str
    rows: int
    columns: int
    samples: int


def _reader(data: bytes | Reader) -> Reader:
    if isinstance(data, (bytes, bytearray, memoryview)):
        buffer = bytes(data)
        return lambda offset, n: buffer[offset:offset + n]
    return data


# --- parsers -------------------------------------------------------------------------------------------------


def jpeg_size(data: bytes | Reader) -> StreamSize:
    """(kind, rows, columns, components) from the frame header of a JPEG (SOF0-3, 5-7, 9-11, 13-15, DHP) or
    JPEG-LS (SOF55) codestream, walking the marker segments from SOI with 4-byte reads."""
    read = _reader(data)
    if read(0, 2) != b"\xff\xd8":
        raise CodestreamError("does not start with a JPEG start-of-image (SOI) marker")
    pos = 2
    for _ in range(MAX_HEADER_STEPS):
        head = read(pos, 4)
        if len(head) < 2:
            raise CodestreamError(f"ends after {pos} bytes, before its JPEG frame header (SOF)")
        if head[0] != 0xFF:
            raise CodestreamError(f"is damaged: no JPEG marker at byte {pos}, before the frame header (SOF)")
        marker = head[1]
        if marker == 0xFF:  # fill byte: any number may precede a marker (T.81 B.1.1.2)
            pos += 1
            continue
        if marker in _SOF_NAMES:
            return _sof_size(read, pos, marker)
        if marker in (0xDA, 0xD9):
            raise CodestreamError("reaches its scan data without a JPEG frame header (SOF)")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM and RSTn stand alone, without a length
            pos += 2
            continue
        if marker in (0x00, 0xD8):
            raise CodestreamError(f"is damaged: unexpected JPEG marker 0xFF{marker:02X} at byte {pos}")
        if len(head) < 4:
            raise CodestreamError(f"ends after {pos + len(head)} bytes, before its JPEG frame header (SOF)")
        (length,) = struct.unpack(">H", head[2:4])
        if length < 2:
            raise CodestreamError(f"is damaged: JPEG marker segment at byte {pos} has length {length}")
        pos += 2 + length
    raise CodestreamError(f"has no JPEG frame header (SOF) within its first {MAX_HEADER_STEPS} marker segments")


def _sof_size(read: Reader, pos: int, marker: int) -> StreamSize:
    kind = _SOF_NAMES[marker]
    seg = read(pos + 2, 8)  # Lf(2) P(1) Y(2) X(2) Nf(1)
    if len(seg) < 8:
        raise CodestreamError(f"ends inside its {kind} frame header")
    length, _precision, rows, columns, components = struct.unpack(">HBHHB", seg)
    if rows == 0 or columns == 0:
        # Y = 0 means "height given by a DNL marker after the first scan" (JPEG-LS also allows X = 0 with an LSE
        # segment): the size cannot be known without decoding, so it cannot be checked.
        raise CodestreamError(
            f"does not give its size in its {kind} frame header ({rows} rows x {columns} columns: the size "
            "would only be known after decoding), which is not supported"
        )
    if components == 0 or length < 8 + 3 * components:
        raise CodestreamError(f"is damaged: its {kind} frame header lists {components} components in {length} bytes")
    return StreamSize(kind, rows, columns, components)


def j2k_size(data: bytes | Reader) -> StreamSize:
    """(kind, rows, columns, components) from the SIZ marker of a JPEG 2000 (or HTJ2K) codestream: rows is
    Ysiz - YOsiz, columns Xsiz - XOsiz, components Csiz. A JP2 file wrapper is followed to its 'jp2c' box."""
    read = _reader(data)
    start, kind = 0, "JPEG 2000"
    if read(0, 12) == _JP2_SIGNATURE:
        start, kind = _jp2_codestream(read), "JPEG 2000 (JP2 file)"
    head = read(start, 42)  # SOC(2) SIZ(2) Lsiz(2) Rsiz(2) Xsiz..YTOsiz(8 x 4) Csiz(2)
    if head[:2] != b"\xff\x4f":
        raise CodestreamError("does not start with a JPEG 2000 codestream (SOC marker) or a JP2 file signature")
    if head[2:4] != b"\xff\x51":
        raise CodestreamError("is damaged: its JPEG 2000 codestream has no size marker (SIZ) right after its start")
    if len(head) < 42:
        raise CodestreamError("ends inside its JPEG 2000 size marker (SIZ)")
    _lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz, *_tiles, csiz = struct.unpack(">HHIIIIIIIIH", head[4:42])
    if xosiz >= xsiz or yosiz >= ysiz or csiz == 0:
        raise CodestreamError(
            f"is damaged: its JPEG 2000 size marker (SIZ) describes an empty image ({ysiz - yosiz} rows x "
            f"{xsiz - xosiz} columns, {csiz} components)"
        )
    return StreamSize(kind, ysiz - yosiz, xsiz - xosiz, csiz)


def _jp2_codestream(read: Reader) -> int:
    """Offset of the codestream inside a JP2 file: the contents of its first 'jp2c' box."""
    pos = len(_JP2_SIGNATURE)
    for _ in range(MAX_HEADER_STEPS):
        head = read(pos, 16)
        if len(head) < 8:
            raise CodestreamError("is a JP2 file without a codestream box ('jp2c')")
        (length,), box = struct.unpack(">L", head[:4]), head[4:8]
        header = 8
        if length == 1:  # 64-bit length follows the type
            if len(head) < 16:
                raise CodestreamError("ends inside a JP2 box header")
            (length,), header = struct.unpack(">Q", head[8:16]), 16
        if box == b"jp2c":
            return pos + header
        if length == 0:  # "to the end of the file": only legal for the last box, and this one is not 'jp2c'
            raise CodestreamError("is a JP2 file without a codestream box ('jp2c')")
        if length < header:
            raise CodestreamError(f"is damaged: a JP2 box at byte {pos} has length {length}")
        pos += length
    raise CodestreamError(f"is a JP2 file without a codestream box ('jp2c') within its first {MAX_HEADER_STEPS} boxes")


def rle_offsets(data: bytes | Reader, length: int | None = None) -> tuple[int, ...]:
    """Start offsets (bytes from the frame start) of the segments listed in a 64-byte RLE header (DICOM PS3.5
    Annex G), checked to be 1-15 segments, increasing, after the header and inside the frame's ``length`` bytes
    (default: ``len(data)``)."""
    read = _reader(data)
    if length is None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("rle_offsets needs the frame length when given a reader")
        length = len(data)
    header = read(0, 64)
    if len(header) < 64:
        raise CodestreamError(f"is {len(header)} bytes long, shorter than the 64-byte RLE header")
    count, *fields = struct.unpack("<16L", header)
    if not 1 <= count <= 15:
        raise CodestreamError(f"has an RLE header declaring {count} segments (1 to 15 are possible)")
    offsets = tuple(fields[:count])
    if offsets[0] < 64:
        raise CodestreamError(f"is damaged: RLE segment 1 starts at byte {offsets[0]}, inside the 64-byte header")
    for k in range(1, count):
        if offsets[k] <= offsets[k - 1]:
            raise CodestreamError(
                f"is damaged: RLE segment offsets do not increase (segment {k} at byte {offsets[k - 1]}, "
                f"segment {k + 1} at byte {offsets[k]})"
            )
    if offsets[-1] >= length:
        raise CodestreamError(f"is damaged: RLE segment {count} starts at byte {offsets[-1]}, past the frame's "
                              f"{length} bytes")
    return offsets


# --- DICOM frames --------------------------------------------------------------------------------------------


def walk_fragments(path: Path, fh: BinaryIO, pos: int, size: int) -> list[tuple[int, int]]:
    """(file offset of the data, length) of every item of encapsulated pixel data, Basic Offset Table first,
    following the item headers from ``pos`` up to the sequence delimiter (only the 8-byte headers are read)."""
    items: list[tuple[int, int]] = []
    while True:
        fh.seek(pos)
        head = fh.read(8)
        if len(head) < 8:
            raise ImageLoadError(
                path,
                f"file is truncated: compressed pixel data ends after {len(items)} fragment(s) without its delimiter",
            )
        group, elem, length = struct.unpack("<HHL", head)
        if (group, elem) == (0xFFFE, 0xE0DD):
            return items
        if (group, elem) != (0xFFFE, 0xE000):
            raise ImageLoadError(path, f"compressed pixel data is corrupt: unexpected tag ({group:04X},{elem:04X})")
        if pos + 8 + length > size:
            raise ImageLoadError(
                path,
                f"file is truncated: compressed pixel data fragment {len(items)} needs {pos + 8 + length - size} "
                "bytes more than the file holds",
            )
        items.append((pos + 8, length))
        pos += 8 + length


def frame_checker(
    path: Path, ds: Dataset, tsyntax: UID, items: list[tuple[int, int]] | None, shape: tuple[int, int, int, int]
) -> Callable[[int], None]:
    """A function index -> None that raises ImageLoadError when frame ``index``'s codestream start is damaged or
    claims another size than the header's ``shape`` (rows, columns, samples, frames). Each frame is checked once;
    transfer syntaxes without a known codestream (native, deflated, video) are not checked."""
    if tsyntax in JPEGTransferSyntaxes or tsyntax in JPEGLSTransferSyntaxes:
        family = "jpeg"
    elif tsyntax in JPEG2000TransferSyntaxes:
        family = "j2k"
    elif tsyntax == RLELossless:
        family = "rle"
    else:
        return lambda index: None
    if items is None:
        return lambda index: None
    rows, cols, samples, frames = shape
    locate = _FrameLocator(path, ds, items, frames)
    checked: set[int] = set()

    def check(index: int) -> None:
        if index in checked:
            return
        where = "" if frames == 1 else f" of frame {index}"
        try:
            with path.open("rb") as fh:
                spans = locate(fh, index)
                read = _span_reader(fh, spans)
                if family == "rle":
                    length = sum(n for _, n in spans)
                    reason = _rle_mismatch(rle_offsets(read, length), length, where, (rows, cols, samples), ds)
                else:
                    size = jpeg_size(read) if family == "jpeg" else j2k_size(read)
                    reason = _size_mismatch(size, where, rows, cols, samples)
        except CodestreamError as exc:
            raise ImageLoadError(
                path, f"the compressed data{where} {exc} (transfer syntax '{tsyntax.name}'): refusing to decode it"
            ) from exc
        except OSError as exc:  # e.g. the file was removed or moved after loading: later frames cannot be read
            raise ImageLoadError(path, f"cannot read frame {index}: {exc.strerror or exc}") from exc
        except struct.error as exc:  # an offset table read short: the file shrank since it was loaded
            raise ImageLoadError(path, f"cannot read frame {index}: the file changed since it was opened") from exc
        if reason:
            raise ImageLoadError(path, reason)
        checked.add(index)

    return check


def _size_mismatch(size: StreamSize, where: str, rows: int, cols: int, samples: int) -> str | None:
    if (size.rows, size.columns) != (rows, cols):
        beyond = ""
        if max(size.rows, size.columns) > MAX_IMAGE_SIDE or size.rows * size.columns > MAX_IMAGE_PIXELS:
            beyond = (f" (that size is also beyond this app's limits of {MAX_IMAGE_SIDE} per side and "
                      f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels)")
        return (
            f"the {size.kind} codestream{where} says {size.rows}x{size.columns} pixels but the DICOM header says "
            f"{rows}x{cols} (Rows x Columns): refusing to decode a mismatched stream{beyond}"
        )
    if size.samples != samples:
        return (
            f"the {size.kind} codestream{where} has {size.samples} component(s) per pixel but the DICOM header says "
            f"{samples} (Samples per Pixel): refusing to decode a mismatched stream"
        )
    return None


def _rle_mismatch(
    offsets: tuple[int, ...], length: int, where: str, shape: tuple[int, int, int], ds: Dataset
) -> str | None:
    rows, cols, samples = shape
    bits = int(ds.get("BitsAllocated") or 8)
    planes = samples * (bits // 8)
    if bits % 8 == 0 and len(offsets) != planes:  # other depths: pydicom refuses them before decoding
        return (
            f"the RLE header{where} declares {len(offsets)} segment(s) but the DICOM header needs {planes} ({samples} "
            f"sample(s) per pixel x {bits // 8} byte(s) per sample): refusing to decode a mismatched stream"
        )
    # A segment holds one byte plane of rows x cols bytes; even the worst valid encoding (every byte a literal run
    # of one) needs only 2 bytes per byte, plus an even-length pad. Longer segments would decode past the frame.
    plane = rows * cols
    ends = offsets[1:] + (length,)
    for k, (start, end) in enumerate(zip(offsets, ends), start=1):
        if end - start > 2 * plane + 2:
            return (
                f"RLE segment {k}{where} holds {end - start} bytes, more than any encoding of a {rows}x{cols} frame "
                f"(Rows x Columns) needs (at most {2 * plane + 2}): refusing to decode a mismatched stream"
            )
    return None


def _span_reader(fh: BinaryIO, spans: list[tuple[int, int]]) -> Reader:
    """A Reader over a frame made of several fragments: offsets run on across fragment boundaries."""

    def read(offset: int, n: int) -> bytes:
        out = bytearray()
        for start, length in spans:
            if n <= 0:
                break
            if offset >= length:
                offset -= length
                continue
            want = min(n, length - offset)
            fh.seek(start + offset)
            chunk = fh.read(want)
            out += chunk
            if len(chunk) < want:
                break  # the file ends here
            n -= want
            offset = 0
        return bytes(out)

    return read


class _FrameLocator:
    """Finds the fragments of frame ``index`` the way pydicom's ``encaps.get_frame`` does: Extended Offset Table,
    else Basic Offset Table, else one fragment per frame, else fragments ending in an EOI/EOC marker."""

    def __init__(self, path: Path, ds: Dataset, items: list[tuple[int, int]], frames: int):
        self.path, self.items, self.frames = path, items, frames
        self.first_tag = items[1][0] - 8 if len(items) > 1 else None  # offsets in the tables count from here
        self.extended = ds.get("ExtendedOffsetTable") if "ExtendedOffsetTable" in ds else None
        self.extended_lengths = ds.get("ExtendedOffsetTableLengths")
        self.eoi_starts: list[int] | None = None
        # item index (in items) by offset of its tag from the first fragment's tag, as the Basic Offset Table counts
        self.by_offset = {pos - 8 - self.first_tag: k for k, (pos, _) in enumerate(items[1:], start=1)} \
            if self.first_tag is not None else {}

    def __call__(self, fh: BinaryIO, index: int) -> list[tuple[int, int]]:
        """(file offset, length) of each fragment of frame ``index``."""
        if self.extended is not None:
            return self._extended(index)
        bot_pos, bot_len = self.items[0]
        if bot_len % 4:
            self._fail(index, f"its Basic Offset Table is {bot_len} bytes long, not a multiple of 4")
        if bot_len:
            return self._basic(fh, index, bot_pos, bot_len // 4)
        fragments = self.items[1:]
        if not fragments:
            self._fail(index, "the encapsulated pixel data holds no fragments")
        if len(fragments) == 1 or len(fragments) == self.frames:
            if index >= len(fragments):
                self._fail(index, f"there are only {len(fragments)} fragment(s)")
            return [fragments[index]]
        if self.frames == 1:
            return fragments if index == 0 else self._fail(index, "the file has one frame")
        if len(fragments) < self.frames:
            self._fail(index, f"there are fewer fragments ({len(fragments)}) than frames ({self.frames})")
        starts = self._eoi_starts(fh)
        if index >= len(starts):
            self._fail(index, f"only {len(starts)} frame(s) end with a JPEG end marker")
        end = starts[index + 1] if index + 1 < len(starts) else len(fragments)
        return fragments[starts[index]:end]

    def _extended(self, index: int) -> list[tuple[int, int]]:
        try:
            offsets = struct.unpack(f"<{len(self.extended) // 8}Q", self.extended)
            lengths = struct.unpack(f"<{len(self.extended_lengths) // 8}Q", self.extended_lengths)
        except (TypeError, struct.error):
            self._fail(index, "its Extended Offset Table (or its lengths) is missing or unreadable")
        if index >= min(len(offsets), len(lengths)) or self.first_tag is None:
            self._fail(index, f"its Extended Offset Table lists {min(len(offsets), len(lengths))} frame(s)")
        return [(self.first_tag + offsets[index] + 8, lengths[index])]

    def _basic(self, fh: BinaryIO, index: int, bot_pos: int, count: int) -> list[tuple[int, int]]:
        if index >= count:
            self._fail(index, f"its Basic Offset Table lists {count} frame(s)")
        fh.seek(bot_pos + 4 * index)
        first, *following = struct.unpack(f"<{min(2, count - index)}L", fh.read(4 * min(2, count - index)))
        if first not in self.by_offset:
            self._fail(index, f"its Basic Offset Table points to byte {first}, where no fragment starts")
        spans = []
        for pos, length in self.items[self.by_offset[first]:]:
            if following and pos - 8 - self.first_tag >= following[0]:
                break  # the next frame starts here
            spans.append((pos, length))
        return spans

    def _eoi_starts(self, fh: BinaryIO) -> list[int]:
        """Index of each frame's first fragment when a frame ends at a fragment whose last 10 bytes hold 0xFFD9."""
        if self.eoi_starts is None:
            starts, begin = [], 0
            for k, (pos, length) in enumerate(self.items[1:]):
                fh.seek(pos + max(length - 10, 0))
                if b"\xff\xd9" in fh.read(min(length, 10)):
                    starts.append(begin)
                    begin = k + 1
            if begin < len(self.items) - 1:
                starts.append(begin)  # trailing fragments without an end marker: pydicom still returns them
            self.eoi_starts = starts
        return self.eoi_starts

    def _fail(self, index: int, why: str) -> NoReturn:
        raise ImageLoadError(self.path, f"cannot find frame {index} in the compressed pixel data: {why}")
