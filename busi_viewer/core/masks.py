"""Lesion masks: finding them beside an image (BUSI naming), reading them as one boolean array, outlining them.

BUSI names the masks of ``benign (12).png`` ``benign (12)_mask.png`` and, for images with several lesions,
``benign (12)_mask_1.png``, ``_mask_2.png``; all masks of one image are merged with a logical OR. The files
come in three encodings (1-bit, RGBA 0/255 with opaque alpha, all-zero RGB for normal images): every one is
read as "any non-zero colour value is lesion", alpha ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from busi_viewer.core.errors import MaskLoadError

__all__ = ["find_mask_files", "load_mask", "mask_for_image", "mask_outline"]

# Modes whose pixel values are not colour intensities (palette indices, other colour spaces): converted to
# RGB(A) first so that "non-zero" means "not black".
_CONVERT_TO_RGB = {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


def _mask_name_pattern(stem: str) -> re.Pattern[str]:
    # The stem is matched literally (BUSI stems hold spaces and parentheses); the suffix case-insensitively
    # because masks saved on Windows or macOS may be "_MASK.PNG".
    return re.compile(re.escape(stem) + r"(?i:_mask(?:_(\d+))?\.png)")


def _list_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [entry.name for entry in entries if entry.is_file()]
    except OSError:  # missing or unreadable folder: no masks there
        return []


def find_mask_files(image_path: Path | str, mask_dir: Path | str | None = None) -> list[Path]:
    """Mask files of one image, in merge order: ``<stem>_mask.png``, then ``<stem>_mask_<n>.png`` by n.

    Without ``mask_dir`` the masks are looked for beside the image; with it, only inside ``mask_dir``, where a
    mask named exactly ``<stem>.png`` (a separate mask folder mirroring image names) is accepted too and comes
    first. Only names are inspected; nothing is opened. Returns ``[]`` when the image has no mask.
    """
    image_path = Path(image_path)
    stem = image_path.stem
    folder = Path(mask_dir) if mask_dir is not None else image_path.parent
    pattern = _mask_name_pattern(stem)

    found: list[tuple[int, Path]] = []
    for name in _list_names(folder):
        match = pattern.fullmatch(name)
        if match:
            # "_mask" sorts before "_mask_0", "_mask_1", ...
            found.append((-1 if match.group(1) is None else int(match.group(1)), folder / name))
        elif mask_dir is not None and name.casefold() == f"{stem}.png".casefold():
            candidate = folder / name
            if not _same_file(candidate, image_path):  # mask_dir may be the image folder itself
                found.append((-2, candidate))
    found.sort(key=lambda item: (item[0], item[1].name))
    return [path for _, path in found]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _read_one(path: Path) -> np.ndarray:
    """One mask file as bool (H, W): any non-zero colour channel is lesion, alpha ignored."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _CONVERT_TO_RGB:
                has_alpha = image.mode in {"PA"} or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            bands = image.getbands()
            array = np.asarray(image)
    except FileNotFoundError:
        raise MaskLoadError(path, "mask file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MaskLoadError(path, f"cannot read the mask as an image ({exc})") from exc

    if array.ndim == 2:
        return array != 0
    # BUSI's RGBA masks are opaque everywhere: counting alpha would make the whole image "lesion".
    colour = [i for i, band in enumerate(bands) if band not in ("A", "a")]
    if not colour:
        raise MaskLoadError(path, f"mask has no colour channel (mode {image.mode})")
    return np.any(array[..., colour] != 0, axis=-1)


def _size_text(shape: tuple[int, int]) -> str:
    return f"{shape[1]}×{shape[0]} (width×height)"


def load_mask(
    paths: Path | str | Sequence[Path | str], shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Read one or several mask files and merge them with a logical OR.

    ``paths``: one path or a non-empty sequence of paths. ``shape``: the image's (height, width); when given,
    every mask must have exactly that size. Returns a bool array (H, W), True = lesion.
    Raises :class:`MaskLoadError` for an unreadable file or a size that differs from ``shape`` (or between
    the masks), naming both sizes; ``ValueError`` for an empty ``paths``.
    """
    path_list = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not path_list:
        raise ValueError("load_mask needs at least one mask file")
    expected = None if shape is None else (int(shape[0]), int(shape[1]))

    merged: np.ndarray | None = None
    for path in path_list:
        mask = _read_one(path)
        if expected is not None and mask.shape != expected:
            raise MaskLoadError(
                path, f"mask is {_size_text(mask.shape)} but the image is {_size_text(expected)}"
            )
        if merged is None:
            merged = mask
        elif mask.shape != merged.shape:
            raise MaskLoadError(
                path,
                f"mask is {_size_text(mask.shape)} but {path_list[0].name} is {_size_text(merged.shape)}",
            )
        else:
            merged |= mask
    assert merged is not None
    return merged


def mask_for_image(
    image_path: Path | str,
    shape: tuple[int, int],
    mask_path: Path | str | Iterable[Path | str] | None = None,
    mask_dir: Path | str | None = None,
) -> np.ndarray | None:
    """The merged lesion mask of an image as bool (H, W), or None when it has none.

    An explicit ``mask_path`` (one path or several) wins over the search of :func:`find_mask_files`;
    ``shape`` is the image's (height, width) and is enforced (see :func:`load_mask`).
    """
    if mask_path is not None:
        paths = [Path(mask_path)] if isinstance(mask_path, (str, os.PathLike)) else [Path(p) for p in mask_path]
    else:
        paths = find_mask_files(image_path, mask_dir)
    if not paths:
        return None
    return load_mask(paths, shape)


def mask_outline(mask: np.ndarray) -> list[np.ndarray]:
    """Outlines of a bool (H, W) mask for drawing: a list of (N, 2) int32 arrays of (x, y) pixel coordinates.

    Holes get their own outline (so a ring-shaped lesion is drawn as two rings). An empty mask gives ``[]``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    contours, _ = cv2.findContours(
        np.ascontiguousarray(mask != 0, dtype=np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
    )
    return [contour.reshape(-1, 2).astype(np.int32, copy=False) for contour in contours]
