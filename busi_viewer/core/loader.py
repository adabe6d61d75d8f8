"""The one entry point for reading an image file, whatever its format: :func:`load_image`.

The format is decided by the file's content (magic bytes), not by its name: a JPEG saved as ``.png`` loads as
JPEG. The extension only matters for DICOM files without the 'DICM' marker (no preamble), which are tried
when they are named ``.dcm``/``.dicom`` or have no extension. Every failure raises ImageLoadError with a reason
a user can act on.
"""

from __future__ import annotations

import codecs
import errno
from pathlib import Path

from .errors import ImageLoadError
from .image_record import ImageRecord
from .raster import load_raster

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")

_SUFFIX_PROMISE = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
    ".pgm": "PGM", ".ppm": "PPM", ".pbm": "PBM", ".dcm": "DICOM", ".dicom": "DICOM",
}
_BMP_DIB_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)  # BITMAPCOREHEADER .. BITMAPV5HEADER: "BM" alone is too weak
_HEAD_BYTES = 132  # enough for every signature below, including 'DICM' at offset 128

# Formats we can describe but do not load, so the error says what the file actually is.
_OTHER_SIGNATURES = (
    (b"GIF87a", "a GIF image (not supported)"),
    (b"GIF89a", "a GIF image (not supported)"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image (not supported outside DICOM)"),
    (b"\xff\x4f\xff\x51", "a raw JPEG 2000 codestream (not supported outside DICOM)"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x7fELF", "an executable program"),
    (b"MZ", "a Windows executable"),
)


def looks_like_dicom(path: Path | str) -> bool:
    """True when the file carries the DICOM 'DICM' marker at byte 128 (reads at most 132 bytes, never raises)."""
    try:
        with Path(path).open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return False
    return len(head) == _HEAD_BYTES and head[128:132] == b"DICM"


def sniff_format(head: bytes) -> str | None:
    """Record format ("PNG", "JPEG", "BMP", "TIFF", "PGM", "PPM", "PBM", "DICOM") from a file's first bytes."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return {b"1": "PBM", b"4": "PBM", b"2": "PGM", b"5": "PGM", b"3": "PPM", b"6": "PPM"}[head[1:2]]
    return None


def load_image(path: Path | str) -> ImageRecord:
    """Load any supported image (PNG, JPEG, BMP, TIFF, PGM/PPM, DICOM) as an :class:`ImageRecord`.

    ``record.pixels`` is frame 0 at native depth, ``record.rgb`` is (H, W, 3) uint8 ready for display and for
    the model. Raises ImageLoadError (only that) with a specific reason for any failure.
    """
    path = Path(path)
    head = _read_head(path)
    kind = sniff_format(head)
    try:
        if kind == "DICOM":
            from .dicom import load_dicom  # pydicom is heavy: imported on the first DICOM, not for rasters

            return load_dicom(path)
        if kind is not None:
            return load_raster(path, kind)
        suffix = path.suffix.lower()
        if suffix in DICOM_SUFFIXES or suffix == "":
            # DICOM written without preamble/File Meta: only pydicom itself can tell.
            ds = _try_raw_dicom(path)
            if ds is not None:
                from .dicom import load_dicom

                return load_dicom(path, force=True)
        raise ImageLoadError(path, _mismatch_reason(path, head))
    except ImageLoadError:
        raise
    except MemoryError as exc:
        raise ImageLoadError(path, "not enough memory to load this image") from exc
    except Exception as exc:  # last resort: never let a library exception escape to the caller
        raise ImageLoadError(path, f"unexpected error while reading ({type(exc).__name__}: {exc})") from exc


def _read_head(path: Path) -> bytes:
    """The first bytes of a readable, non-empty regular file; ImageLoadError otherwise."""
    try:
        if not path.exists():
            raise ImageLoadError(path, _missing_reason(path))
        if path.is_dir():
            raise ImageLoadError(path, "is a folder, not an image file")
        if not path.is_file():
            raise ImageLoadError(path, "is not a regular file")
        if path.stat().st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        with path.open("rb") as fh:
            return fh.read(_HEAD_BYTES)
    except PermissionError as exc:
        raise ImageLoadError(path, "permission denied: the file cannot be read by this user") from exc
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read the file: {exc.strerror or exc}") from exc


def _missing_reason(path: Path) -> str:
    """Why ``path`` does not exist as a file: a symbolic link loop, a broken link, or simply not there."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop this way
            return "a symbolic link loop (the link points back to itself)"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symbolic link loop (the link points back to itself)"
        return "a broken symbolic link: its target does not exist"
    return "file not found"


def _try_raw_dicom(path: Path):
    """The header of a DICOM file without 'DICM' marker, or None when the content is not an image DICOM."""
    from .dicom import has_image_attributes, read_header

    try:
        ds, _ = read_header(path, force=True)
    except ImageLoadError:
        return None
    return ds if has_image_attributes(ds) else None


def _mismatch_reason(path: Path, head: bytes) -> str:
    """Say what the extension promised and what the content looks like."""
    suffix = path.suffix.lower()
    promised = _SUFFIX_PROMISE.get(suffix)
    looks = describe_content(head)
    if promised is None:
        allowed = ", ".join(SUPPORTED_SUFFIXES)
        ext = f"extension '{suffix}'" if suffix else "no extension"
        return f"not a supported image: {ext} (supported: {allowed}) and the content is {looks}"
    if promised == "DICOM":
        return (
            f"the name promises DICOM ('{suffix}') but the content is not DICOM (no 'DICM' marker at byte 128 "
            f"and no readable image header); it is {looks}"
        )
    return f"the name promises {promised} ('{suffix}') but the content is not a supported image; it is {looks}"


def describe_content(head: bytes) -> str:
    """A short phrase for what a file's first bytes look like (for error messages); it quotes none of them."""
    for signature, what in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return what
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP image (not supported)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<svg"):
        return "an XML/SVG document"
    try:
        # Incremental: the 132-byte head may end inside a multi-byte character.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        text = None
    # Never quote the content: error messages reach de-identified reports, and a note may name a patient.
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "plain text"
    return "unrecognised binary data"
