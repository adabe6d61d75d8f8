"""Folders of images that are *not* breast ultrasound, assembled offline, for measuring an out-of-scope detector.

``build_out_of_scope_sets(out_dir)`` writes ``out_dir/<set>/*.png`` (8-bit grey or RGB, at least 64 px a side,
exact duplicates dropped) and ``out_dir/sources.csv`` (file, set, origin, licence) for five sets:

* ``photographs``: photos bundled inside installed packages (scikit-image, scikit-learn, matplotlib, pydicom-data);
* ``documents``: seeded rendered pages (:mod:`training.scope_documents`) plus real scanned text pages found offline;
* ``ct_mr``: CT / MR (and a few radiograph / NM) slices from pydicom's and nibabel's test data, matplotlib's MRI
  sample and the CT/MR/DX/CR/OT/NM files of the shared DICOM folder, windowed to their 1st..99th percentiles;
* ``mammograms``: mini-MIAS PNGs and the shared folder's MG DICOMs;
* ``other_ultrasound``: non-breast ultrasound DICOMs (cardiac, obstetric, vascular...), up to 10 frames a file.

A source that is missing (package not installed, folder absent, file undecodable) is skipped with a logged note;
nothing is ever downloaded. More images come with ``pip install -e .[scope-eval]``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from training.scope_sources import (
    SET_NAMES,
    Source,
    read_raster,
    shared_dicom_sources,
    sources_for,
    window_percentiles,
)

log = logging.getLogger(__name__)

SHARED_DATA = Path(os.environ.get("BUSI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MIN_SIDE = 64
MIAS_LICENCE = "mini-MIAS licence: research use only (see its Licence.txt)"


def _as_uint8_image(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8; colour whose channels are all equal becomes grey."""
    if image.dtype != np.uint8:
        image = window_percentiles(image) if image.ndim == 2 else np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3:
        image = image[..., :3]
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
            image = image[..., 0]
    return np.ascontiguousarray(image)


class SetWriter:
    """Writes one set's PNGs into ``out_dir/<name>``, dropping tiny images and exact duplicates."""

    def __init__(self, out_dir: Path, name: str, rows: list[dict[str, str]]):
        self.out_dir, self.name, self.rows = out_dir, name, rows
        self.folder = out_dir / name
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.png"):  # a rebuild replaces the set, never mixes two runs
            stale.unlink()
        self.files: list[Path] = []
        self._seen: set[str] = set()

    def add(self, image: np.ndarray, origin: str, licence: str) -> None:
        image = _as_uint8_image(image)
        if min(image.shape[:2]) < MIN_SIDE:
            log.info("%s: %s is %dx%d, under %d px: skipped", self.name, origin, *image.shape[1::-1], MIN_SIDE)
            return
        if image.max() == image.min():
            log.info("%s: %s is blank: skipped", self.name, origin)
            return
        digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if digest in self._seen:
            log.debug("%s: %s duplicates an image already in the set: skipped", self.name, origin)
            return
        self._seen.add(digest)
        path = self._next_path(origin)
        Image.fromarray(image).save(path)
        self._record(path, origin, licence)

    def copy_png(self, source: Path, origin: str, licence: str) -> None:
        """Copies an 8-bit grey/RGB PNG as it is (no re-encoding); anything else goes through :meth:`add`."""
        with Image.open(source) as im:
            fits = im.format == "PNG" and im.mode in ("L", "RGB") and min(im.size) >= MIN_SIDE
        if not fits:
            for _, image in read_raster(source):
                self.add(image, origin, licence)
            return
        digest = hashlib.sha1(source.read_bytes()).hexdigest()
        if digest not in self._seen:
            self._seen.add(digest)
            path = self._next_path(origin)
            shutil.copyfile(source, path)
            self._record(path, origin, licence)

    def _next_path(self, origin: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", origin).strip("-")[-60:]
        return self.folder / f"{len(self.files):04d}_{slug}.png"

    def _record(self, path: Path, origin: str, licence: str) -> None:
        self.files.append(path)
        self.rows.append({"file": path.relative_to(self.out_dir).as_posix(), "set": self.name,
                          "origin": origin, "licence": licence})


def _copy_mias(writer: SetWriter, folder: Path, notes: list[str]) -> None:
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not pngs:
        notes.append(f"mini-MIAS folder {folder} is absent or holds no PNG: no mini-MIAS mammograms")
    for png in pngs:
        try:
            writer.copy_png(png, f"mini-MIAS:{png.name}", MIAS_LICENCE)
        except Exception as exc:
            notes.append(f"mini-MIAS:{png.name} skipped: {type(exc).__name__}: {exc}")


def _collect(writer: SetWriter, sources: Iterable[Source], notes: list[str]) -> None:
    for source in sources:
        try:
            for suffix, image in source.load():
                writer.add(image, source.origin + suffix, source.licence)
        except Exception as exc:  # one unreadable source never stops the others
            notes.append(f"{source.origin} skipped: {type(exc).__name__}: {exc}")


def build_out_of_scope_sets(out_dir: Path, shared_dicom: Path | None = None, mias: Path | None = None, *,
                            sets: Collection[str] = SET_NAMES) -> dict[str, list[Path]]:
    """Writes the out-of-scope sets (see the module docstring) and ``sources.csv``; returns set -> files.

    ``shared_dicom`` / ``mias`` default to the shared data folder ($BUSI_SHARED_DATA or ../shared/data);
    ``sets`` restricts the build to some of :data:`SET_NAMES`. Missing sources are logged, never fatal.
    """
    unknown = set(sets) - set(SET_NAMES)
    if unknown:
        raise ValueError(f"unknown set(s) {sorted(unknown)}; choose from {SET_NAMES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shared_dicom = Path(shared_dicom) if shared_dicom is not None else SHARED_DATA / "dicom"
    mias = Path(mias) if mias is not None else SHARED_DATA / "mini-mias" / "png"
    notes: list[str] = []
    needs_shared = bool(set(sets) - {"photographs"})
    shared = shared_dicom_sources(shared_dicom, notes) if needs_shared else {}
    rows: list[dict[str, str]] = []
    result: dict[str, list[Path]] = {}
    for set_name in (name for name in SET_NAMES if name in sets):
        writer = SetWriter(out_dir, set_name, rows)
        if set_name == "mammograms":
            _copy_mias(writer, mias, notes)
        _collect(writer, sources_for(set_name, shared, notes), notes)
        result[set_name] = writer.files
    with (out_dir / "sources.csv").open("w", newline="", encoding="utf-8") as fh:
        table = csv.DictWriter(fh, fieldnames=["file", "set", "origin", "licence"])
        table.writeheader()
        table.writerows(rows)
    for note in notes:
        log.info("note: %s", note)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.scope_sets", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--shared-dicom", type=Path, help="shared DICOM folder (default: shared data folder)")
    parser.add_argument("--mias", type=Path, help="mini-MIAS PNG folder (default: shared data folder)")
    parser.add_argument("--sets", nargs="+", choices=SET_NAMES, default=list(SET_NAMES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pydicom import config as pydicom_config  # its import sets its logger's level: quieten it after

    # pydicom logs every oddity of its test files and each failed decoder; the notes say what was skipped
    pydicom_config.logger.setLevel(logging.CRITICAL)
    result = build_out_of_scope_sets(args.out_dir, args.shared_dicom, args.mias, sets=args.sets)
    with (args.out_dir / "sources.csv").open(encoding="utf-8") as fh:
        origins = Counter((row["set"], row["origin"].split(":")[0]) for row in csv.DictReader(fh))
    for set_name, files in result.items():
        detail = ", ".join(f"{origin} {n}" for (name, origin), n in sorted(origins.items()) if name == set_name)
        print(f"{set_name}: {len(files)} images ({detail or 'none'})")


if __name__ == "__main__":
    main()
