"""DICOM images read with pydicom 3 (+ pylibjpeg for JPEG Lossless / JPEG 2000 / RLE).

What a record holds for a DICOM file:

- ``pixels``: frame 0 at native depth. Greyscale after the Modality LUT (Rescale Slope/Intercept or a
  Modality LUT Sequence): (H, W) uint8/uint16/int16 (int32/float32 when the rescale needs it). Colour is
  (H, W, 3) RGB: YBR data already converted by pydicom, PALETTE COLOR already expanded through its palette
  (uint16 when the palette has 16-bit entries). ``photometric`` keeps what the file says.
- ``rgb``: (H, W, 3) uint8. Greyscale is windowed with the file's VOI LUT Sequence, else its first Window
  Center/Width (PS3.3 C.11.2.1.2, honouring VOI LUT Function), else (data wider than 8 bits) the frame's own
  min..max; MONOCHROME1 is inverted. 16-bit colour is shifted down to 8 bits.
- Other frames are decoded one at a time, on demand, straight from the file.
- Before a compressed frame is decoded, the size its codestream claims must match Rows / Columns / Samples per
  Pixel (:mod:`.codestreams`): decoders allocate what the stream says, whatever the header says.
- Identifying fields go to ``identifiers``, never to ``attributes`` (an allow-list of display fields).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels as pxl
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from .codestreams import frame_checker, walk_fragments
from .errors import ImageLoadError
from .image_record import ImageRecord, UltrasoundRegion, Window
from .raster import check_image_size, grey_to_rgb

MAX_DICOM_TOTAL_SAMPLES = 2_000_000_000
"""Rows x Columns x Samples x Frames limit. Frames are decoded one at a time, so this only stops a header
that claims an absurd cine; each frame also obeys the plain-image limits of :mod:`raster`."""

IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
    "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientNames",
    "IssuerOfPatientID", "MedicalRecordLocator", "AccessionNumber", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "ReferringPhysicianName", "ReferringPhysicianAddress", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "RequestingPhysician", "OperatorsName", "PhysiciansOfRecord", "StudyID",
    "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime",
    "AcquisitionDateTime", "ContentDate", "ContentTime", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "DeviceSerialNumber", "StationName",
)

# Display fields that identify no one. Anything not listed here stays out of ``attributes``.
ATTRIBUTE_KEYWORDS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ImageType", "PhotometricInterpretation",
    "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "Rows", "Columns", "NumberOfFrames",
    "BodyPartExamined", "Laterality", "ImageLaterality", "ViewPosition", "PatientOrientation", "TransducerType",
    "PixelSpacing", "ImagerPixelSpacing", "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "LossyImageCompression", "LossyImageCompressionRatio", "PresentationIntentType",
    "BurnedInAnnotation", "RecognizableVisualFeatures", "FrameTime", "CineRate",
)

_PIXEL_TAGS = {0x7FE00010: "Pixel Data", 0x7FE00008: "Float Pixel Data", 0x7FE00009: "Double Float Pixel Data"}
_PIP_NAMES = {"gdcm": "python-gdcm", "pylibjpeg": "pylibjpeg", "pyjpegls": "pyjpegls", "pillow": "pillow"}


def read_header(path: Path, force: bool = False) -> tuple[Dataset, int]:
    """Read every element before the pixel data: (dataset, byte offset where the pixel data element starts)."""
    try:
        with path.open("rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=force)
            return ds, fh.tell()
    except InvalidDicomError as exc:
        raise ImageLoadError(path, f"not a DICOM file ({exc})") from exc
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error (permission, disk...)
            raise ImageLoadError(path, f"cannot read the file: {exc.strerror or exc}") from exc
        # pydicom raises a bare OSError ("No tag to read at file position ...") when the file stops mid-element
        raise ImageLoadError(path, f"DICOM header is truncated or damaged ({exc})") from exc
    except Exception as exc:  # pydicom raises struct.error, ValueError, KeyError... on damaged headers
        raise ImageLoadError(path, f"DICOM header is damaged or truncated ({type(exc).__name__}: {exc})") from exc


def has_image_attributes(ds: Dataset) -> bool:
    """True when a dataset (e.g. one read with force=True) describes an image: Rows and Columns are present."""
    try:
        return int(ds.get("Rows") or 0) > 0 and int(ds.get("Columns") or 0) > 0
    except (TypeError, ValueError):
        return False


def load_dicom(path: Path, force: bool = False) -> ImageRecord:
    """Load a DICOM file: frame 0 decoded now, other frames on demand. Raises ImageLoadError on any failure."""
    ds, pixel_offset = read_header(path, force)
    tsyntax = _transfer_syntax(ds)
    if not tsyntax.is_transfer_syntax:
        raise ImageLoadError(path, f"the header names {tsyntax} as the transfer syntax, which is not a DICOM "
                                   "transfer syntax: the pixel data cannot be interpreted")
    rows, cols, frames, samples = _geometry(path, ds)
    items = _check_pixel_element(path, ds, tsyntax, pixel_offset, rows * cols * samples * frames)
    # Decoders allocate what the codestream claims: its size is checked before any frame is decoded.
    check_frame = frame_checker(path, ds, tsyntax, items, (rows, cols, samples, frames))
    check_frame(0)
    _check_decoder(path, tsyntax)

    decode = _frame_decoder(path, ds, tsyntax, check_frame)
    first = decode(0)  # pydicom refuses a header without Photometric Interpretation (or Bits Stored), naming it
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    to_native = _native_converter(path, ds, photometric)
    pixels = to_native(first)
    render, window = _renderer(path, ds, photometric, pixels)
    rgb = render(pixels)

    def load_frame(index: int) -> np.ndarray:
        return to_native(decode(index))

    spacing, spacing_source = _pixel_spacing(ds)
    regions = _ultrasound_regions(ds)
    attributes = _attributes(ds, tsyntax)
    warning = _region_warning(regions, rows, cols)
    if warning:
        attributes["CalibrationWarning"] = warning
    burned = str(ds.get("BurnedInAnnotation") or "").strip().upper() or None
    return ImageRecord(
        path=path,
        format="DICOM",
        modality=str(ds.get("Modality") or "").strip() or "OT",
        pixels=pixels,
        rgb=rgb,
        n_frames=frames,
        bits_stored=int(ds.BitsStored),  # frame 0 is decoded: pydicom needed it
        photometric=photometric,
        pixel_spacing_mm=spacing,
        spacing_source=spacing_source,
        ultrasound_regions=regions,
        window=window,
        attributes=attributes,
        identifiers=_fields(ds, IDENTIFYING_KEYWORDS),
        burned_in_annotation=burned,
        _frame_loader=load_frame,
        _frame_renderer=render,
    )


# --- header checks -------------------------------------------------------------------------------------------


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; for files without File Meta, the encoding pydicom found while reading."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(str(uid))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _ts_label(tsyntax: UID) -> str:
    # load_dicom refuses UIDs that are not transfer syntaxes pydicom knows, so every one here has a name
    return f"'{tsyntax.name}' ({tsyntax})"


def _geometry(path: Path, ds: Dataset) -> tuple[int, int, int, int]:
    """(rows, cols, frames, samples), checked against the size limits before anything is decoded."""
    if not has_image_attributes(ds):
        sop = ds.get("SOPClassUID")
        what = f"SOP class '{UID(str(sop)).name}'" if sop else "no Rows/Columns"
        raise ImageLoadError(path, f"has no pixel data ({what}: this DICOM object is not an image)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        frames = max(int(ds.get("NumberOfFrames") or 1), 1)
        samples = max(int(ds.get("SamplesPerPixel") or 1), 1)
    except (TypeError, ValueError) as exc:
        raise ImageLoadError(path, f"invalid NumberOfFrames/SamplesPerPixel in the DICOM header ({exc})") from exc
    check_image_size(path, cols, rows, "DICOM frame")
    total = rows * cols * samples * frames
    if total > MAX_DICOM_TOTAL_SAMPLES:
        raise ImageLoadError(
            path,
            f"DICOM pixel data is too large to open safely: {frames} frame(s) of {cols}x{rows}x{samples} "
            f"= {total / 1e9:.1f} G samples (limit {MAX_DICOM_TOTAL_SAMPLES / 1e9:.1f} G)",
        )
    return rows, cols, frames, samples


def _check_pixel_element(
    path: Path, ds: Dataset, tsyntax: UID, offset: int, n_samples: int
) -> list[tuple[int, int]] | None:
    """Make sure a pixel data element follows the header and that the file holds all of it (not truncated).

    pydicom silently drops an encapsulated pixel element cut short by the end of the file, so the fragment
    headers are walked here (only headers are read, never the compressed data). Returns the (file offset, length)
    of each encapsulated item (Basic Offset Table first), None for native or deflated pixel data.
    """
    if tsyntax == DeflatedExplicitVRLittleEndian:
        return None  # the file offsets refer to deflated bytes; decoding will report any damage
    size = path.stat().st_size
    little = tsyntax.is_little_endian
    with path.open("rb") as fh:
        fh.seek(offset)
        head = fh.read(12)
        if len(head) < 8:
            raise ImageLoadError(
                path,
                f"has no pixel data (the file ends after {size} bytes without a Pixel Data element; "
                "it may be truncated)",
            )
        group, elem = struct.unpack("<HH" if little else ">HH", head[:4])
        tag = (group << 16) | elem
        if tag not in _PIXEL_TAGS:
            raise ImageLoadError(path, f"has no pixel data (element ({group:04X},{elem:04X}) found where it should be)")
        if tsyntax.is_implicit_VR:  # always little endian (no transfer syntax is implicit and big endian)
            (length,) = struct.unpack("<L", head[4:8])
            start = offset + 8
        else:
            vr = head[4:6]
            if vr in (b"OB", b"OW", b"OF", b"OD", b"UN", b"OL", b"OV"):
                (length,) = struct.unpack("<L" if little else ">L", head[8:12])
                start = offset + 12
            else:
                (length,) = struct.unpack("<H" if little else ">H", head[6:8])
                start = offset + 8
        if length != 0xFFFFFFFF:  # native (uncompressed) pixel data
            bits = int(ds.get("BitsAllocated") or 8)
            needed = (n_samples * bits + 7) // 8
            if start + length > size:
                raise ImageLoadError(
                    path, f"file is truncated: pixel data declares {length} bytes but only {size - start} remain"
                )
            if length < needed:
                raise ImageLoadError(
                    path, f"pixel data is too short: {length} bytes, the header's image size needs {needed}"
                )
            return None
        return walk_fragments(path, fh, start, size)


def _check_decoder(path: Path, tsyntax: UID) -> None:
    """Fail early, naming what to install, when no usable decoder exists for the transfer syntax."""
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as exc:
        raise ImageLoadError(
            path, f"cannot decode the pixel data: pydicom has no decoder for transfer syntax {_ts_label(tsyntax)}"
        ) from exc
    if not decoder.is_available:
        raise ImageLoadError(
            path,
            f"cannot decode the pixel data: no decoder is installed for transfer syntax {_ts_label(tsyntax)}; "
            f"missing: {_missing_hint(decoder)}",
        )


def _missing_hint(decoder) -> str:
    missing = list(decoder.missing_dependencies)
    if not missing:
        return "nothing pydicom knows of (no other decoding plugin exists for it)"
    hints = []
    for item in missing:
        plugin = item.partition(" - ")[0].strip()
        pip_name = _PIP_NAMES.get(plugin, plugin)
        hints.append(f"{item} (pip install {pip_name})")
    return "; ".join(hints)


# --- decoding ------------------------------------------------------------------------------------------------


def _frame_decoder(
    path: Path, ds: Dataset, tsyntax: UID, check_frame: Callable[[int], None]
) -> Callable[[int], np.ndarray]:
    """A function index -> decoded frame as pydicom returns it (YBR converted to RGB, palette not applied).

    ``check_frame(index)`` runs first: it refuses a codestream that claims another size than the header.
    """
    full: list[Dataset] = []

    def decode(index: int) -> np.ndarray:
        check_frame(index)
        try:
            if tsyntax == DeflatedExplicitVRLittleEndian:
                # Deflated files must be inflated by dcmread; keep the (compressed-in-memory) dataset once read.
                if not full:
                    full.append(pydicom.dcmread(path, force=True))
                return pxl.pixel_array(full[0], index=index)
            # Straight from the file: only this frame's bytes are read and decoded.
            return pxl.pixel_array(path, index=index, transfer_syntax_uid=tsyntax)
        except ImageLoadError:
            raise
        except MemoryError as exc:
            raise ImageLoadError(path, f"not enough memory to decode frame {index}") from exc
        except RuntimeError as exc:
            raise ImageLoadError(path, _decode_failure(ds, tsyntax, exc)) from exc
        except OSError as exc:
            raise ImageLoadError(path, f"cannot read frame {index}: {exc.strerror or exc}") from exc
        except Exception as exc:  # ValueError on size mismatches, NotImplementedError for odd layouts...
            raise ImageLoadError(
                path,
                f"cannot decode frame {index} of transfer syntax {_ts_label(tsyntax)}: {type(exc).__name__}: {exc}",
            ) from exc

    return decode


def _decode_failure(ds: Dataset, tsyntax: UID, exc: Exception) -> str:
    """Say which decoders were tried, why each failed, and what is missing."""
    decoder = get_decoder(tsyntax)
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
    bits = ds.get("BitsStored")
    depth = f", {bits}-bit" if bits else ""
    return (
        f"cannot decode the pixel data ({_ts_label(tsyntax)}{depth}): every installed decoder failed "
        f"[{'; '.join(lines)}]. Missing decoder that may read it: {_missing_hint(decoder)}"
    )


def _native_converter(path: Path, ds: Dataset, photometric: str) -> Callable[[np.ndarray], np.ndarray]:
    """decoded frame -> ``pixels`` layout: palette expanded, Modality LUT applied to greyscale."""
    if photometric == "PALETTE COLOR":

        def palette(arr: np.ndarray) -> np.ndarray:
            try:
                return np.ascontiguousarray(pxl.apply_color_lut(arr, ds))
            except Exception as exc:  # missing/damaged LUT elements
                raise ImageLoadError(path, f"PALETTE COLOR image with an unusable palette ({exc})") from exc

        return palette
    if photometric.startswith("MONOCHROME"):
        return lambda arr: _modality_lut(path, ds, arr)
    return np.ascontiguousarray


def _modality_lut(path: Path, ds: Dataset, arr: np.ndarray) -> np.ndarray:
    """Apply Rescale Slope/Intercept or a Modality LUT Sequence, keeping an integer dtype where possible."""
    if "ModalityLUTSequence" in ds:
        try:
            return np.ascontiguousarray(pxl.apply_modality_lut(arr, ds))
        except Exception as exc:
            raise ImageLoadError(path, f"unusable Modality LUT Sequence ({exc})") from exc
    try:
        slope = float(ds.get("RescaleSlope") or 1.0)
        intercept = float(ds.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError):
        return arr
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        # NaN or infinity would turn every pixel into the same value: an all-black image, shown as if real
        raise ImageLoadError(path, f"unusable RescaleSlope / RescaleIntercept ({slope:g} / {intercept:g}): "
                                   "not finite numbers, so no pixel value can be computed")
    if slope == 1.0 and intercept == 0.0:
        return arr
    out = arr.astype(np.float64) * slope + intercept
    if not (slope.is_integer() and intercept.is_integer()):
        return out.astype(np.float32)
    lo, hi = float(out.min()), float(out.max())  # frames have at least one pixel (_geometry)
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max and (dtype != np.uint8 or arr.dtype == np.uint8):
            return out.astype(dtype)
    return out.astype(np.float32)


# --- rendering -----------------------------------------------------------------------------------------------


def _renderer(
    path: Path, ds: Dataset, photometric: str, first: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], Window | None]:
    """(function native frame -> (H, W, 3) uint8, the window it uses) decided once from the header and frame 0."""
    if first.ndim == 3:
        shift = _colour_shift(ds, photometric, first)
        return (lambda arr: _colour_to_uint8(arr, shift)), None

    invert = photometric == "MONOCHROME1"
    finish = (lambda y: grey_to_rgb(255 - y)) if invert else grey_to_rgb

    voi_seq = ds.get("VOILUTSequence")
    if voi_seq:
        item = voi_seq[0]
        try:
            top = _lut_max(ds)
        except Exception as exc:  # a descriptor without 3 values, LUT Data too short, an unsupported depth...
            raise ImageLoadError(path, f"unusable VOI LUT Sequence ({type(exc).__name__}: {exc})") from exc
        desc = str(item.get("LUTExplanation") or "").strip() or "VOI LUT Sequence"
        window = Window(lut_description=desc, explanation="VOI LUT Sequence (first item)")

        def voi_lut(arr: np.ndarray) -> np.ndarray:
            out = pxl.apply_voi_lut(arr, ds, index=0, prefer_lut=True).astype(np.float32)
            return finish(np.rint(out * (255.0 / top)).astype(np.uint8))  # 0 <= out <= top: no clipping needed

        return voi_lut, window

    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        explanation = _first_text(ds.get("WindowCenterWidthExplanation")) or f"file window ({function})"
        window = Window(center=center, width=width, explanation=explanation)
        return (lambda arr: finish(apply_window(arr, center, width, function))), window

    bits = int(ds.BitsStored)  # pydicom has decoded frame 0, which needs it
    if first.dtype == np.uint8 and bits >= 8:
        return (lambda arr: finish(arr)), None

    def minmax(arr: np.ndarray) -> np.ndarray:
        lo, hi = float(arr.min()), float(arr.max())
        return finish(apply_window(arr, (lo + hi + 1) / 2, max(hi - lo + 1, 1.0)))

    lo, hi = float(first.min()), float(first.max())
    window = Window(
        center=(lo + hi + 1) / 2, width=hi - lo + 1, explanation="frame minimum..maximum (the file defines no window)"
    )
    return minmax, window


def apply_window(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map modality values to uint8 0..255 (same shape) with a DICOM VOI window (PS3.3 C.11.2.1.2-3).

    ``function`` is the VOI LUT Function: LINEAR (default), LINEAR_EXACT or SIGMOID.
    """
    x = arr.astype(np.float32)
    if function == "SIGMOID":
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = ((x - center) / width + 0.5) * 255.0
    elif width <= 1:  # LINEAR with width 1 is a threshold
        y = np.where(x <= center - 0.5, 0.0, 255.0)
    else:
        y = ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def _colour_shift(ds: Dataset, photometric: str, first: np.ndarray) -> int:
    """Right shift that brings colour samples to 8 bits (palette entries may be 16-bit)."""
    if first.dtype == np.uint8:
        return 0
    # Both are present once frame 0 is decoded: pydicom needs Bits Stored to decode and the palette's descriptors
    # to expand it (a palette without them is refused by _native_converter).
    if photometric == "PALETTE COLOR":
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        bits = int(ds.BitsStored)
    return max(bits - 8, 0)


def _colour_to_uint8(arr: np.ndarray, shift: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.copy(order="C")  # never a view of ``pixels``: drawing on rgb must not change them
    out = np.right_shift(arr.astype(np.uint32), shift)
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))  # clip: 8-bit palettes with wider entries


def _lut_max(ds: Dataset) -> float:
    """Largest output value of the first VOI LUT (descriptors often claim 16 bits for 12-bit tables).

    The table is read by pydicom itself, by mapping every input it covers, so the entries (US or OW, either
    byte order) are decoded exactly as they are when the frame is rendered.
    """
    entries, first_mapped, _ = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
    inputs = np.arange(first_mapped, first_mapped + (entries or 2**16), dtype=np.int64)  # 0 entries: 65536
    top = float(pxl.apply_voi_lut(inputs, ds, index=0, prefer_lut=True).max())
    return max(top, 1.0)  # entries are integers; an all-zero table renders black whatever it is divided by


# --- metadata ------------------------------------------------------------------------------------------------


def _first_number(value) -> float | None:
    """The first of a (multi-)value as a finite float; None when absent, empty, not a number, NaN or infinite."""
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _first_text(value) -> str | None:
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    return str(value).strip() or None if value is not None else None


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """((row, col) mm, source keyword) from PixelSpacing, else ImagerPixelSpacing; (None, None) when absent."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):  # "inf" is valid DS text
            return (row, col), keyword
    return None, None


def _ultrasound_regions(ds: Dataset) -> tuple[UltrasoundRegion, ...]:
    """SequenceOfUltrasoundRegions as records; spacing (cm/px -> mm) only where both directions are in cm."""
    regions = []
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue  # a region without bounds cannot be used
        spacing = None
        if item.get("PhysicalUnitsXDirection") == 3 and item.get("PhysicalUnitsYDirection") == 3:
            dx, dy = _first_number(item.get("PhysicalDeltaX")), _first_number(item.get("PhysicalDeltaY"))
            if dx is not None and dy is not None and dx > 0 and dy > 0:
                spacing = (abs(dy) * 10.0, abs(dx) * 10.0)  # (row, col) in mm
        fmt, dtype = item.get("RegionSpatialFormat"), item.get("RegionDataType")
        regions.append(
            UltrasoundRegion(
                x0=x0, y0=y0, x1=x1, y1=y1, spacing_mm=spacing,
                spatial_format=int(fmt) if fmt is not None else None,
                data_type=int(dtype) if dtype is not None else None,
            )
        )
    return tuple(regions)


def _region_warning(regions: tuple[UltrasoundRegion, ...], rows: int, cols: int) -> str | None:
    """A note when a calibrated region reaches past the image: it was cropped or resized after calibration.

    The regions are kept as the file says (a crop keeps the spacing right; a resize does not), but a user
    measuring on such an image should know. Bounds equal to Columns/Rows are a common off-by-one, not flagged.
    """
    for r in regions:
        if r.spacing_mm is not None and (r.x1 > cols or r.y1 > rows):
            return (
                f"calibrated ultrasound region ({r.x0},{r.y0})-({r.x1},{r.y1}) extends beyond the {cols}x{rows} "
                "image: it may have been cropped or resized after calibration, check distances before trusting them"
            )
    return None


def _text(value) -> str | None:
    """A DICOM value as display text; None for empty values, sequences and binary data."""
    if value is None or isinstance(value, (bytes, bytearray)) or isinstance(value, pydicom.Sequence):
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        parts = [str(v).strip() for v in value]
        text = "\\".join(p for p in parts)
    else:
        text = str(value).strip()
    return text[:256] or None


def _fields(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for keyword in keywords:
        elem = ds.get(keyword)
        text = _text(elem) if elem is not None else None
        if text:
            out[keyword] = text
    return out


def _attributes(ds: Dataset, tsyntax: UID) -> dict[str, str]:
    attrs = _fields(ds, ATTRIBUTE_KEYWORDS)
    attrs["TransferSyntax"] = tsyntax.name
    attrs["TransferSyntaxUID"] = str(tsyntax)
    sop = ds.get("SOPClassUID")
    if sop:
        attrs["SOPClass"] = UID(str(sop)).name
    return attrs
