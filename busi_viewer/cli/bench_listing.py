"""Benchmark: how long listing a large folder takes (names only; no image is created or decoded)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from busi_viewer.core.scan import scan_folder

_CLASSES = ("benign", "malignant", "normal")


def _populate(root: Path, n_files: int) -> int:
    """Create ``n_files`` empty BUSI-named images spread over three class folders, each with a mask
    (every 25th with a second one, as BUSI's multi-lesion images). Returns the number of files created."""
    folders = [root / name for name in _CLASSES]
    for folder in folders:
        folder.mkdir()
    created = 0
    for i in range(n_files):
        cls = _CLASSES[i % len(_CLASSES)]
        stem = f"{cls} ({i // len(_CLASSES) + 1})"
        names = [f"{stem}.png", f"{stem}_mask.png"] + ([f"{stem}_mask_1.png"] if i % 25 == 0 else [])
        for name in names:
            (folders[i % len(_CLASSES)] / name).touch()
        created += len(names)
    return created


def time_listing(n_files: int = 10_000, tmp_root: Path | str | None = None, repeats: int = 3) -> dict:
    """Time :func:`scan_folder` on a synthetic folder of ``n_files`` images plus their masks.

    The folder is created under ``tmp_root`` (default: the system temp folder) and removed afterwards.
    Returns ``{"n_images", "n_files", "images_found", "skipped", "median_s", "runs_s"}``; times in seconds,
    median of ``repeats`` runs (the first run also pays for a cold directory cache, hence the median).
    """
    with tempfile.TemporaryDirectory(prefix="busi-listing-", dir=tmp_root) as tmp:
        root = Path(tmp)
        total = _populate(root, n_files)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = scan_folder(root)
            runs.append(time.perf_counter() - start)
    if len(result.images) != n_files:  # the benchmark must measure a correct scan
        raise RuntimeError(f"scan found {len(result.images)} images, expected {n_files}")
    return {
        "n_images": n_files,
        "n_files": total,
        "images_found": len(result.images),
        "skipped": len(result.skipped),
        "median_s": statistics.median(runs),
        "runs_s": runs,
    }


def main() -> None:
    """Print the listing benchmark for 10 000 images as JSON."""
    print(json.dumps(time_listing(), indent=2))


if __name__ == "__main__":
    main()
