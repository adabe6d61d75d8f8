"""List the images of a folder, in natural order, saying why every other file was left out.

Scanning looks at names only (plus 132 bytes of files without an image suffix, to recognise DICOM): nothing
is decoded, so ten thousand images list in a fraction of a second and a corrupt file cannot stop the scan.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import NamedTuple

from busi_viewer.core.errors import BusiViewerError

__all__ = ["ScanError", "ScanResult", "SkippedFile", "natural_key", "scan_folder"]

_DIGITS = re.compile(r"(\d+)")
_MASK_NAME = re.compile(r"(.+)_mask(?:_\d+)?\.png", re.IGNORECASE)
# macOS zip archives carry a metadata folder full of "._name.png" resource forks that are not images.
_METADATA_FOLDERS = {"__MACOSX"}


class ScanError(BusiViewerError, ValueError):
    """The folder to scan does not exist, is not a folder or cannot be read."""


MASK_REASON = "lesion mask"  # how a skipped mask's reason starts


class SkippedFile(NamedTuple):
    """A file (or folder) the scan left out, and why, in words for the user."""

    path: Path
    reason: str


@dataclass
class ScanResult:
    """Images found, in natural order of their path relative to the scanned folder, and what was skipped."""

    images: list[Path] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def masks(self) -> int:
        """How many of the skipped files are lesion masks (read beside their images, not images themselves)."""
        return sum(skip.reason.startswith(MASK_REASON) for skip in self.skipped)


def _part_key(part: str) -> tuple:
    # Text and number chunks alternate (re.split with a group always starts with text), so equal positions
    # always hold equal types; the original spelling breaks ties ("a" vs "A", "01" vs "1") deterministically.
    chunks = _DIGITS.split(part.casefold())
    return tuple(int(chunk) if i % 2 else chunk for i, chunk in enumerate(chunks)), part


def natural_key(path: PurePath | str) -> tuple:
    """Sort key: path parts compared one by one, case-insensitively, digit runs as numbers.

    ``benign (2).png`` < ``benign (10).png``; ``B/x.png`` sorts with ``b/...``. Pass paths relative to a
    common folder so that the folder's own name does not matter.
    """
    return tuple(_part_key(part) for part in PurePath(path).parts)


def _is_unsuffixed(suffix: str) -> bool:
    # DICOM files are often stored without a suffix, or named by their UID ("1.2.840.113619.2.55.320"),
    # whose last component looks like a numeric suffix.
    return suffix == "" or suffix[1:].isdigit()


def _classify(directory: Path, names: list[str]) -> list[tuple[str, str | None]]:
    """(name, None) for each image among ``names``, (name, reason) for each file left out."""
    # Imported here: the loader pulls in pydicom and the decoders, which listing a folder does not need.
    from busi_viewer.core.loader import SUPPORTED_SUFFIXES, looks_like_dicom

    out: list[tuple[str, str | None]] = []
    image_names = {}  # casefolded stem -> name, to say whose mask a mask is
    masks: list[tuple[str, str]] = []
    for name in names:
        base, suffix = os.path.splitext(name)
        suffix = suffix.lower()
        mask = _MASK_NAME.fullmatch(name)
        if mask:
            masks.append((name, mask.group(1)))
        elif suffix in SUPPORTED_SUFFIXES:
            out.append((name, None))
            image_names.setdefault(base.casefold(), name)
        elif _is_unsuffixed(suffix):
            if name.upper() == "DICOMDIR":
                out.append((name, "DICOMDIR index file (lists a disc's DICOM files, no image)"))
            elif looks_like_dicom(os.path.join(directory, name)):
                out.append((name, None))
            else:
                what = "no file extension" if suffix == "" else f"not an image file ({suffix})"
                out.append((name, f"{what} and no DICOM signature"))
        else:
            out.append((name, f"not an image file ({suffix})"))
    for name, stem in masks:
        image = image_names.get(stem.casefold())
        reason = f"{MASK_REASON} of {image}" if image else f"{MASK_REASON} (no image named {stem!r} beside it)"
        out.append((name, reason))
    return out


def _identity(directory: Path) -> tuple[int, int] | str:
    stat = directory.stat()
    # st_ino is 0 on file systems that do not provide one; the resolved path is the fallback identity.
    return (stat.st_dev, stat.st_ino) if stat.st_ino else str(directory.resolve())


def scan_folder(folder: Path | str, recursive: bool = True) -> ScanResult:
    """Find the images in ``folder`` (and its sub-folders when ``recursive``) without decoding any.

    Images: files with a suffix in the loader's ``SUPPORTED_SUFFIXES`` (any case), and files without a suffix (or with a
    numeric one, as DICOM UID names have) that carry the DICOM signature. Skipped, each with a reason: lesion
    masks (``*_mask.png``, ``*_mask_<n>.png``), other files, hidden (dot) files and folders, sub-folders when
    not recursive, unreadable sub-folders, and folders reached a second time through a link (so link loops end).
    Raises :class:`ScanError` (a ``ValueError``) when ``folder`` is missing, not a folder or unreadable.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise ScanError(f"Folder not found: {root}")
    if not root.is_dir():
        raise ScanError(f"Not a folder: {root} (choose the folder that holds the images)")

    keyed_images: list[tuple[tuple, Path]] = []
    keyed_skipped: list[tuple[tuple, SkippedFile]] = []
    visited: set = set()
    # Each folder carries the sort key of its path relative to root, so a file's key costs one _part_key.
    stack: list[tuple[Path, tuple]] = [(root, ())]
    while stack:
        directory, prefix = stack.pop()
        try:
            identity = _identity(directory)
            if identity in visited:
                reason = "folder already scanned (reached again through a link)"
                keyed_skipped.append((prefix, SkippedFile(directory, reason)))
                continue
            visited.add(identity)
            with os.scandir(directory) as iterator:
                entries = list(iterator)
        except OSError as exc:
            if not prefix:
                raise ScanError(f"Cannot read folder {root}: {exc.strerror or exc}") from exc
            reason = f"folder could not be read ({exc.strerror or exc})"
            keyed_skipped.append((prefix, SkippedFile(directory, reason)))
            continue

        names: list[str] = []
        subfolders: list[tuple[tuple, Path]] = []
        results: list[tuple[str, str | None]] = []
        for entry in entries:
            name = entry.name
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if name.startswith("."):
                results.append((name, "hidden folder" if is_dir else "hidden file"))
            elif is_dir and name in _METADATA_FOLDERS:
                results.append((name, "macOS archive metadata folder"))
            elif is_dir and not recursive:
                results.append((name, "sub-folder (recursive scan is off)"))
            elif is_dir:
                subfolders.append((prefix + (_part_key(name),), directory / name))
            elif not is_file:
                results.append((name, "broken link or special file"))
            else:
                names.append(name)
        # Depth-first in natural order, so that when two links reach one folder the result does not depend on
        # the file system's listing order: the first path in natural order gets the images.
        stack.extend((path, key) for key, path in sorted(subfolders, key=lambda item: item[0], reverse=True))
        results.extend(_classify(directory, names))
        for name, reason in results:
            key = prefix + (_part_key(name),)
            if reason is None:
                keyed_images.append((key, directory / name))
            else:
                keyed_skipped.append((key, SkippedFile(directory / name, reason)))

    keyed_images.sort(key=lambda item: item[0])
    keyed_skipped.sort(key=lambda item: item[0])
    return ScanResult(images=[p for _, p in keyed_images], skipped=[s for _, s in keyed_skipped])
