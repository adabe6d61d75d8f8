"""Plain image files (PNG, JPEG, BMP, TIFF, PGM/PPM/PBM) read with Pillow, kept at their native bit depth.

``pixels`` keeps what the file stores: (H, W) uint8 for 8-bit greyscale and 1-bit images (0/255), (H, W) uint16
for 16-bit greyscale (PNG, TIFF, PGM; a PGM whose maxval is not 255/65535 keeps its own values, not Pillow's
rescaled ones), (H, W, 3) uint8 for colour (alpha dropped, palettes expanded), (H, W, 3) uint16 for 48/64-bit
PNG. An RGB file whose three channels happen to be equal stays (H, W, 3).

``rgb`` is always (H, W, 3) uint8. Data that is not plain 8-bit (16-bit, float, or PGM with a small maxval) is
scaled linearly from the image's own minimum..maximum to 0..255; ``record.window`` says which range was used.

EXIF orientation is deliberately not applied: lesion masks are drawn on the stored pixel grid.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile

from .errors import ImageLoadError
from .image_record import ImageRecord, Window

MAX_IMAGE_PIXELS = 120_000_000
"""Largest image (width x height, one frame) this app decodes; bigger files are refused before decoding."""
MAX_IMAGE_SIDE = 30_000
"""Largest width or height accepted, whatever the pixel count."""

# Pillow's own decompression-bomb guard (raised in Image.open for > 2x this value) then agrees with ours, and
# Pillow never warns about an image we accept.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# Record format label -> Pillow format name used to open it (netpbm files are all "PPM" to Pillow).
_PILLOW_FORMAT = {"PNG": "PNG", "JPEG": "JPEG", "BMP": "BMP", "TIFF": "TIFF", "PGM": "PPM", "PPM": "PPM", "PBM": "PPM"}


def check_image_size(path: Path, width: int, height: int, what: str = "image") -> None:
    """Refuse (ImageLoadError) a frame larger than MAX_IMAGE_SIDE per side or MAX_IMAGE_PIXELS in total.

    Called with header dimensions only, so a decompression bomb is refused before anything is allocated.
    """
    if width <= 0 or height <= 0:
        raise ImageLoadError(path, f"{what} has an invalid size {width}x{height} in its header")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ImageLoadError(
            path, f"{what} is too large to open safely: {width}x{height} pixels (limit {MAX_IMAGE_SIDE} per side)"
        )
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageLoadError(
            path,
            f"{what} is too large to open safely: {width}x{height} = {width * height / 1e6:.0f} megapixels "
            f"(limit {MAX_IMAGE_PIXELS / 1e6:.0f})",
        )


def minmax_to_uint8(arr: np.ndarray) -> tuple[np.ndarray, Window]:
    """Scale ``arr`` linearly from its own min..max to uint8 0..255 (same shape); a flat image becomes 0.

    NaN/inf in float images are ignored for the range and shown as black.
    """
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        lo = float(arr[finite].min()) if finite.any() else 0.0
        arr = np.where(finite, arr, lo)
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if hi > lo:
        scaled = (arr.astype(np.float32) - lo) * (255.0 / (hi - lo))
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    else:
        out = np.zeros(arr.shape, np.uint8)
    window = Window(center=(lo + hi + 1) / 2, width=hi - lo + 1, explanation="image minimum..maximum")
    return out, window


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8, C-contiguous."""
    return cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2RGB)


def load_raster(path: Path, kind: str) -> ImageRecord:
    """Decode a plain image file whose content was identified as ``kind`` (a key of the record formats).

    Raises ImageLoadError for anything that goes wrong: header Pillow cannot parse, image over the size limits
    (checked on the header, before decoding), truncated or corrupt data.
    """
    pil_format = _PILLOW_FORMAT[kind]
    # A truncated scan must fail loudly, never come back half grey: undo any global opt-in elsewhere.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with path.open("rb") as fh:
            try:
                im = Image.open(fh, formats=[pil_format])  # lazy: reads the header only
            except Image.DecompressionBombError as exc:
                raise ImageLoadError(path, f"{kind} image is too large to open safely ({exc})") from exc
            except (Image.UnidentifiedImageError, SyntaxError, ValueError, OSError) as exc:
                reason = f"content starts like a {kind} file but its header is invalid ({exc})"
                raise ImageLoadError(path, reason) from exc
            with im:
                width, height = im.size
                check_image_size(path, width, height, f"{kind} image")
                n_frames = int(getattr(im, "n_frames", 1) or 1)
                maxval = _netpbm_maxval(im)
                try:
                    im.load()
                except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
                    text = str(exc)
                    reason = "file is truncated" if "truncated" in text else "data could not be decoded (corrupt?)"
                    raise ImageLoadError(path, f"{kind} {reason}: {text}") from exc
                mode = im.mode
                pixels, bits = _native_pixels(path, im, kind, maxval)
    except ImageLoadError:
        raise
    except MemoryError as exc:
        raise ImageLoadError(path, f"not enough memory to decode this {kind} image") from exc
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read the file: {exc.strerror or exc}") from exc

    if pixels.dtype == np.uint8 and maxval in (None, 255):
        # A copy, never a view: drawing on ``rgb`` must not change ``pixels``.
        rgb, window = (grey_to_rgb(pixels) if pixels.ndim == 2 else pixels.copy()), None
    else:
        scaled, window = minmax_to_uint8(pixels)
        rgb = grey_to_rgb(scaled) if scaled.ndim == 2 else scaled
    attributes = {"Format": kind, "Mode": mode, "Size": f"{width}x{height}", "BitDepth": str(bits)}
    if maxval is not None:
        attributes["MaxVal"] = str(maxval)
    if n_frames > 1:
        attributes["FramesInFile"] = f"{n_frames} (only the first is shown)"
    return ImageRecord(
        path=path,
        format=kind,
        modality="OT",
        pixels=pixels,
        rgb=rgb,
        n_frames=1,
        bits_stored=bits,
        photometric="RGB" if pixels.ndim == 3 else "MONOCHROME2",
        window=window,
        attributes=attributes,
    )


def _netpbm_maxval(im: Image.Image) -> int | None:
    """The maxval of a PGM/PPM (Pillow rescales values when it is not 255/65535), None for other formats."""
    if im.format != "PPM" or im.mode == "1":
        return None
    tile = im.tile[0] if im.tile else None  # (codec, extents, offset, args); a plain tuple before Pillow 11
    if tile is not None and tile[0] in ("ppm", "ppm_plain") and isinstance(tile[3], tuple) and len(tile[3]) >= 2:
        return int(tile[3][-1])
    return 65535 if im.mode.startswith("I") else 255


def _native_pixels(path: Path, im: Image.Image, kind: str, maxval: int | None) -> tuple[np.ndarray, int]:
    """(pixels, bits) for a loaded Pillow image, see the module docstring for the layouts."""
    mode = im.mode
    if mode == "1":
        return np.asarray(im, dtype=np.uint8) * np.uint8(255), 8
    if mode == "I;16S":
        return np.asarray(im).astype(np.int16), 16
    if mode == "L":
        arr = np.asarray(im)
    elif mode in ("LA", "La"):
        arr = np.asarray(im.getchannel(0))
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)  # "I;16B" arrives big-endian: make it native
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
    elif mode == "RGB" and kind == "PNG" and _png_is_16bit_colour(path):
        return _png_16bit_colour(path), 16
    elif mode == "RGB":
        arr = np.asarray(im)
    else:  # RGBA, RGBX, RGBa, P, PA, CMYK, YCbCr, LAB, HSV...: Pillow's own conversion, alpha dropped
        arr = np.asarray(im.convert("RGB"))

    if maxval is not None and maxval not in (255, 65535) and arr.dtype != np.float32:
        # Pillow stretched the values to 0..255 or 0..65535: map them back to the file's own 0..maxval.
        out_max = 255.0 if arr.dtype == np.uint8 else 65535.0
        native = np.rint(arr.astype(np.float64) * (maxval / out_max))
        arr = native.astype(np.uint8 if maxval <= 255 else np.uint16)
        return arr, int(maxval).bit_length()
    bits = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(arr.dtype, arr.dtype.itemsize * 8)
    # Pillow's array interface can hand out read-only memory; callers get their own writable copy.
    return np.require(arr, requirements=["C", "W"]), bits


def _png_is_16bit_colour(path: Path) -> bool:
    """True for a 48-bit RGB or 64-bit RGBA PNG, which Pillow would reduce to 8 bits per channel."""
    with path.open("rb") as fh:
        header = fh.read(26)
    return len(header) == 26 and header[24] == 16 and header[25] in (2, 6)


def _png_16bit_colour(path: Path) -> np.ndarray:
    """(H, W, 3) uint16 RGB of a 16-bit colour PNG, decoded by OpenCV (which keeps 16 bits)."""
    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or arr.dtype != np.uint16:
        raise ImageLoadError(path, "16-bit colour PNG data is corrupt or truncated")
    code = cv2.COLOR_BGRA2RGB if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(arr, code)
