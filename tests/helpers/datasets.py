"""Tiny synthetic data sets in the published layouts of BUSI and BUS-BRA, for tests that must not need the real ones."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

BUSI_COUNTS = {"benign": 6, "malignant": 3, "normal": 2}


def write_busi(root: Path, counts: dict[str, int] = BUSI_COUNTS, seed: int = 0) -> Path:
    """A BUSI-layout folder: random grey (one RGB) images of varied sizes; elliptic lesion masks; empty masks for
    normal images; one image with two masks (_mask and _mask_1), as BUSI has."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(1, count + 1):
            h, w = int(rng.integers(40, 90)), int(rng.integers(40, 120))
            grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
            stem = f"{name} ({k})"
            if name == "benign" and k == 2:
                colour = np.stack([grey, grey, grey], -1)
                colour[:5, :5] = (255, 255, 0)  # a coloured caliper mark
                Image.fromarray(colour, "RGB").save(folder / f"{stem}.png")
            else:
                Image.fromarray(grey, "L").save(folder / f"{stem}.png")
            mask = np.zeros((h, w), np.uint8)
            if name != "normal":
                yy, xx = np.mgrid[0:h, 0:w]
                cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
                mask[((yy - cy) / (h / 5)) ** 2 + ((xx - cx) / (w / 5)) ** 2 <= 1] = 255
            Image.fromarray(mask, "L").save(folder / f"{stem}_mask.png")
            if name == "malignant" and k == 1:
                second = np.zeros((h, w), np.uint8)
                second[:6, :6] = 255
                Image.fromarray(second, "L").convert("1").save(folder / f"{stem}_mask_1.png")
    return root


HEADER = ["ID", "Case", "Histology", "Pathology", "BIRADS", "Device", "Width", "Height", "Side", "BBOX"]
DEVICES = ("GE Logiq 7 @10-14MHz", "GE Logiq 5 @10-12MHz", "Toshiba Aplio 300 @12-14 MHz")


def write_busbra(root: Path, cases: int = 12, seed: int = 0) -> Path:
    """A BUS-BRA-layout folder: patient k has two views (-l, -r) of one lesion, every third patient one view
    (-s); pathology alternates by patient; each image has its mask."""
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    rows = []
    for case in range(1, cases + 1):
        pathology = "malignant" if case % 2 else "benign"
        for view in (("s",) if case % 3 == 0 else ("l", "r")):
            image_id = f"bus_{case:04d}-{view}"
            h, w = int(rng.integers(40, 70)), int(rng.integers(50, 90))
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(root / "Images" / f"{image_id}.png")
            mask = np.zeros((h, w), np.uint8)
            mask[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 255
            Image.fromarray(mask, "L").save(root / "Masks" / f"mask_{case:04d}-{view}.png")
            rows.append([image_id, case, "fibroadenoma" if pathology == "benign" else "invasive ductal carcinoma",
                         pathology, 4, DEVICES[case % 3], w, h, "left", "[1,2,3,4]"])
    with (root / "bus_data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return root
