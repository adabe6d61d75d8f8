"""Render every image under a folder through the loader, to check decoding by eye.

Writes ``<name>.png`` (frame 0 of ``record.rgb``, longest side at most 800 px) and, for multi-frame files,
``<name>_frames.png`` (4 frames spread over the cine, side by side). Files that fail to load are listed with
their error. Usage::

    python bench/render_samples.py [FOLDER] [--out /tmp/renders]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from busi_viewer.core.errors import ImageLoadError  # noqa: E402
from busi_viewer.core.loader import SUPPORTED_SUFFIXES, load_image, looks_like_dicom  # noqa: E402

MAX_SIDE = 800


def fit(rgb: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Downscale (H, W, 3) uint8 so that its longest side is at most ``max_side`` (never upscales)."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def save_rgb(path: Path, rgb: np.ndarray) -> None:
    # OpenCV writes BGR: swap here, once, so the PNG shows the record's true colours.
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def frame_strip(record, count: int = 4) -> np.ndarray:
    """``count`` frames spread evenly over the cine, side by side, each fitted into 400 px."""
    indices = np.linspace(0, record.n_frames - 1, num=min(count, record.n_frames)).round().astype(int)
    tiles = [fit(record.rgb_frame(int(i)), 400) for i in indices]
    height = max(t.shape[0] for t in tiles)
    padded = [np.pad(t, ((0, height - t.shape[0]), (0, 4), (0, 0))) for t in tiles]
    return np.concatenate(padded, axis=1)


def candidates(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and (p.suffix.lower() in SUPPORTED_SUFFIXES or (p.suffix == "" and looks_like_dicom(p)))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "dicom")
    parser.add_argument("--out", type=Path, default=Path("/tmp/renders"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in candidates(args.folder):
        try:
            record = load_image(path)
        except ImageLoadError as exc:
            failures += 1
            print(f"FAIL {path.relative_to(args.folder)}: {exc.reason}")
            continue
        save_rgb(args.out / f"{path.stem}.png", fit(record.rgb))
        line = (
            f"ok   {path.relative_to(args.folder)}: {record.format} {record.modality} {record.photometric} "
            f"pixels {record.pixels.shape} {record.pixels.dtype}, {record.n_frames} frame(s)"
        )
        if record.n_frames > 1:
            save_rgb(args.out / f"{path.stem}_frames.png", frame_strip(record))
        print(line)
    print(f"renders in {args.out}; {failures} file(s) failed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
