"""BUS-BRA (Gómez-Flores et al., Medical Physics 51(4):3110, 2024): its ``bus_data.csv``, patients and masks.

The published folder holds ``Images/bus_NNNN-x.png``, ``Masks/mask_NNNN-x.png`` (one lesion mask per image),
``bus_data.csv`` (one row per image: ID, Case, Histology, Pathology, BIRADS, Device, Width, Height, Side, BBOX)
and the authors' 5- and 10-fold splits. What this module relies on:

* ``Case`` is the patient: a patient's images (often two views of one lesion, ``-l``/``-r``) must stay on one
  side of every split, so ``patient`` is the group of a grouped split;
* ``Pathology`` is "benign" or "malignant" (biopsy-proven): BUS-BRA has no normal images;
* every row's image and mask must exist, and every image in ``Images/`` must be listed: a mismatch is an error,
  not a silently smaller data set.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from busi_viewer.core.errors import BusiViewerError
from training.folders import given_or_env

BUSBRA_ENV = "BUSBRA_DATA"
CSV_NAME = "bus_data.csv"
REQUIRED_COLUMNS = ("ID", "Case", "Histology", "Pathology", "BIRADS", "Device")
PATHOLOGIES = ("benign", "malignant")
CITATION = ("BUS-BRA (Gómez-Flores, Gregorio-Calas and Pereira, Medical Physics 51(4):3110, 2024; "
            "doi 10.5281/zenodo.7730709; MIT-style licence requiring this citation)")
# The published release, as the article gives it; the audit reports a copy's counts beside these.
PUBLISHED_COUNTS = {"images": 1875, "patients": 1064, "benign": 1268, "malignant": 607}


class BusbraError(BusiViewerError, ValueError):
    """The BUS-BRA folder is missing, or bus_data.csv and the image files disagree."""


@dataclass(frozen=True)
class BusbraImage:
    """One row of ``bus_data.csv``: ``id`` ("bus_0001-l"), patient ``case`` (int), ``pathology`` ("benign" or
    "malignant"), ``histology``, ``birads`` (as written, "2".."5"), acquisition ``device`` (scanner and probe)."""

    id: str
    case: int
    pathology: str
    histology: str
    birads: str
    device: str

    @property
    def image_relpath(self) -> str:
        return f"Images/{self.id}.png"

    @property
    def mask_relpath(self) -> str:
        # "bus_0001-l" -> "mask_0001-l": the mask shares the image's number and view suffix.
        return f"Masks/mask_{self.id.removeprefix('bus_')}.png"

    @property
    def patient(self) -> str:
        return f"case-{self.case:04d}"

    @property
    def scanner(self) -> str:
        """The device without its probe frequency ("GE Logiq 7 @10-14MHz" -> "GE Logiq 7")."""
        return self.device.split("@")[0].strip()


def resolve_busbra_root(root: Path | str | None = None) -> Path:
    """The BUS-BRA folder (the one holding bus_data.csv, Images/, Masks/): ``root``, else $BUSBRA_DATA."""
    path = given_or_env(root, BUSBRA_ENV, BusbraError, f"no BUS-BRA folder given: pass it (the folder holding "
                        f"{CSV_NAME}, Images/, Masks/) or set {BUSBRA_ENV}=/path/to/BUSBRA")
    if not (path / CSV_NAME).is_file():
        raise BusbraError(f"{path} is not a BUS-BRA folder: {CSV_NAME} is missing")
    return path


def read_bus_data(root: Path | str) -> list[BusbraImage]:
    """The rows of ``root/bus_data.csv`` in file order, checked against the files beside it.

    Raises BusbraError for a missing column, an unknown pathology, a repeated ID, a listed image or mask that is
    missing, or an image in ``Images/`` that the CSV does not list.
    """
    root = Path(root)
    path = root / CSV_NAME
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise BusbraError(f"{path}: column(s) {', '.join(missing)} missing")
        rows = list(reader)
    images = []
    for line, row in enumerate(rows, start=2):
        pathology = row["Pathology"].strip().lower()
        if pathology not in PATHOLOGIES:
            raise BusbraError(f"{path}:{line}: pathology {row['Pathology']!r} is neither benign nor malignant")
        try:
            case = int(row["Case"])
        except ValueError as exc:
            raise BusbraError(f"{path}:{line}: case {row['Case']!r} is not a number") from exc
        images.append(BusbraImage(id=row["ID"].strip(), case=case, pathology=pathology,
                                  histology=row["Histology"].strip(), birads=row["BIRADS"].strip(),
                                  device=row["Device"].strip()))
    repeated = [i for i, n in Counter(image.id for image in images).items() if n > 1]
    if repeated:
        raise BusbraError(f"{path}: ID(s) listed twice: {', '.join(sorted(repeated)[:5])}")
    absent = [rel for image in images for rel in (image.image_relpath, image.mask_relpath)
              if not (root / rel).is_file()]
    if absent:
        raise BusbraError(f"{len(absent)} file(s) listed in {CSV_NAME} are missing, e.g. {absent[0]}")
    listed = {image.image_relpath for image in images}
    unlisted = sorted(p.relative_to(root).as_posix() for p in (root / "Images").glob("*.png")
                      if p.relative_to(root).as_posix() not in listed)
    if unlisted:
        raise BusbraError(f"{len(unlisted)} image(s) in {root / 'Images'} are not listed in {CSV_NAME}, "
                          f"e.g. {unlisted[0]}")
    return images


def counts(images: list[BusbraImage]) -> dict[str, int]:
    """Images, patients and images per pathology, keyed as :data:`PUBLISHED_COUNTS`."""
    by_pathology = Counter(image.pathology for image in images)
    return {"images": len(images), "patients": len({image.case for image in images}),
            **{p: by_pathology.get(p, 0) for p in PATHOLOGIES}}
