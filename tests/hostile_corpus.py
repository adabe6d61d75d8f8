"""A folder of hostile inputs, generated on demand (no binary file is committed).

    python tests/hostile_corpus.py OUT_FOLDER [--huge-pngs 3]

Each :class:`Case` names a file (or link) and what a correct run says about it: ``expect`` is a phrase its
``errors.csv`` reason must contain, or None when the file is a valid image that must be predicted. The cases are
the ones a reliability probe found or that guard against them: decompression bombs (a tiny PNG that decodes to
10 900 x 10 900; compressed DICOM streams that claim far more pixels than their header), damaged and mislabelled
files, text carrying identifiers, non-finite rescale values, link loops and broken links.
``tests/test_hostile_corpus.py`` runs it in CI; ``bench/hostile_memory.py`` measures peak memory on it.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IDENTIFYING_TEXT = "Patient: Jane Example, born 1970-01-01, MRN 12345678"
"""Written into a file named like an image: no output may quote it."""

HUGE_SIDE = 10_900  # a 10 900 x 10 900 black PNG: 119 megapixels, within the loader's limit, ~120 KB on disk


@dataclass(frozen=True)
class Case:
    name: str
    expect: str | None  # a phrase of the errors.csv reason; None: a valid image, predicted


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_black_png(path: Path, side: int) -> None:
    """An 8-bit greyscale side x side black PNG, compressed row by row (never holds the image in memory)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte 0, then the row's pixels
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over one tiny compressed row (a bomb's header, without its data)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _small_png() -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (64, 80), dtype=np.uint8))
    assert ok
    return data.tobytes()


def _pydicom_test_file(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    return Path(found) if found else None


def _first_fragment_offset(data: bytes) -> int:
    """Byte offset of the first fragment's content inside an encapsulated DICOM file (after the offset table)."""
    pixel_tag = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010), little endian
    item = data.index(b"\xfe\xff\x00\xe0", pixel_tag)  # the basic offset table item
    table_length = struct.unpack("<I", data[item + 4:item + 8])[0]
    first = item + 8 + table_length
    assert data[first:first + 4] == b"\xfe\xff\x00\xe0", "no fragment after the offset table"
    return first + 8


def _patched_dicom(name: str, patch) -> bytes | None:
    """A pydicom test file with ``patch(data, fragment_start)`` applied, or None when pydicom lacks the file."""
    source = _pydicom_test_file(name)
    if source is None:
        return None
    data = bytearray(source.read_bytes())
    patch(data, _first_fragment_offset(bytes(data)))
    return bytes(data)


def _patch_jpeg_sof(data: bytearray, start: int, height: int = 20_000, width: int = 20_000) -> None:
    """Set the frame size of the first JPEG / JPEG-LS start-of-frame marker in the codestream."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc3", b"\xff\xf7"):
        at = data.find(marker, start)
        if at >= 0:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)  # length (2), precision (1), Y, X
            return
    raise ValueError("no start-of-frame marker found")


def _patch_j2k_siz(data: bytearray, start: int, side: int = 65_535) -> None:
    """Set Xsiz / Ysiz of the JPEG 2000 size marker (SIZ, FF51) to ``side``."""
    at = data.index(b"\xff\x51", start)
    data[at + 6:at + 14] = struct.pack(">II", side, side)  # Lsiz (2), Rsiz (2), then Xsiz, Ysiz


def _patch_rle_segments(data: bytearray, start: int) -> None:
    """An RLE header claiming 15 segments whose offsets point far beyond the fragment."""
    data[start:start + 4] = struct.pack("<I", 15)
    for index in range(1, 16):
        data[start + 4 * index:start + 4 * index + 4] = struct.pack("<I", 0x7FFF0000 + index)


def _dicom_with(path: Path, **elements) -> None:
    import warnings

    from tests.helpers.dicom import write_dicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns that "NaN" is no valid DS: that is the point
        write_dicom(path, np.full((32, 48), 100, np.uint16), **elements)


def build(folder: Path, huge_pngs: int = 1) -> list[Case]:
    """Write the corpus into ``folder`` (created); returns its cases (links included, where the OS allows)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, content: bytes, expect: str | None) -> None:
        (folder / name).write_bytes(content)
        cases.append(Case(name, expect))

    for index in range(huge_pngs):
        write_black_png(folder / f"black-{HUGE_SIDE}-{index}.png", HUGE_SIDE)
        cases.append(Case(f"black-{HUGE_SIDE}-{index}.png", None))
    add("valid.png", _small_png(), None)
    add("too-large.png", _png_claiming(40_000, 40_000), "too large to open safely")
    add("truncated.png", _small_png()[:200], "")
    add("empty.png", b"", "empty")
    add("identifiers.png", IDENTIFYING_TEXT.encode() + b"\n" * 50, "")
    add("random.dcm", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "")
    for name, source, patch, expect in (
        ("jpeg-sof-bomb.dcm", "SC_rgb_jpeg_gdcm.dcm", _patch_jpeg_sof, "20000"),
        ("jpegls-sof-bomb.dcm", "MR_small_jpeg_ls_lossless.dcm", _patch_jpeg_sof, "20000"),
        ("j2k-siz-bomb.dcm", "MR_small_jp2klossless.dcm", _patch_j2k_siz, "65535"),
        ("rle-bad-segments.dcm", "MR_small_RLE.dcm", _patch_rle_segments, "segment"),
    ):
        content = _patched_dicom(source, patch)
        if content is not None:
            add(name, content, expect)
    _dicom_with(folder / "nan-slope.dcm", RescaleSlope="NaN")
    cases.append(Case("nan-slope.dcm", "rescale"))
    _dicom_with(folder / "bogus-transfer-syntax.dcm")
    raw = bytearray((folder / "bogus-transfer-syntax.dcm").read_bytes())
    at = raw.index(b"1.2.840.10008.1.2.1")
    raw[at:at + 19] = b"1.2.3.4.5.6.7.8.9.0"  # same length: the header stays well formed
    (folder / "bogus-transfer-syntax.dcm").write_bytes(bytes(raw))
    cases.append(Case("bogus-transfer-syntax.dcm", "not a DICOM transfer syntax"))
    _dicom_with(folder / "huge-header.dcm", Rows=60_000, Columns=60_000)
    cases.append(Case("huge-header.dcm", "too large"))
    if hasattr(os, "symlink"):
        try:
            os.symlink("no-such-file.png", folder / "dangling.png")
            cases.append(Case("dangling.png", "broken link"))
            (folder / "sub").mkdir(exist_ok=True)
            os.symlink("..", folder / "sub" / "loop")
            cases.append(Case("sub/loop", "reached again through a link"))
        except OSError:  # no right to make links here (Windows without developer mode)
            pass
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the corpus into")
    parser.add_argument("--huge-pngs", type=int, default=1, help=f"how many {HUGE_SIDE}-pixel black PNGs (default 1)")
    args = parser.parse_args(argv)
    cases = build(args.out, args.huge_pngs)
    for case in cases:
        print(f"{case.name}\t{'predicted' if case.expect is None else 'error: ' + (case.expect or '(any reason)')}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers, when run as a script
    raise SystemExit(main())
