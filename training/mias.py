"""mini-MIAS (Suckling et al. 1994): the original ``Info.txt`` ground truth, patients, lesion masks and crops.

``Info.txt`` lists one line per abnormality: reference number, background tissue (F/G/D), class (CALC, CIRC,
SPIC, MISC, ARCH, ASYM, NORM), severity (B/M), and the x, y centre and radius of a circle enclosing it. What
its notes say, and this module does:

* coordinates have their origin at the **bottom-left** corner, so row = 1024 - y in the 1024 x 1024 images;
* some abnormalities have no coordinates (calcifications spread over the breast, "*NOTE 3*", and mdb059):
  the image keeps its label but has no lesion mask, and is flagged ``localised=False``;
* an image may list several abnormalities (mdb005, mdb132, mdb144, ...); mdb144 has a benign and a malignant
  one: an image's severity is its worst (malignant over benign);
* consecutive reference numbers 2k-1 (right breast, odd) and 2k (left breast, even) are one patient: both
  images share ``patient`` so that a split never separates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from busi_viewer.core.errors import BusiViewerError
from training.folders import given_or_env

MIAS_ENV = "MIAS_DATA"
IMAGE_SIZE = 1024
ABNORMALITIES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM")
TISSUES = ("F", "G", "D")


class MiasError(BusiViewerError, ValueError):
    """Info.txt is missing or holds a line this parser cannot read."""


@dataclass(frozen=True)
class Finding:
    """One abnormality. ``centre`` (row, column) in image pixels, top-left origin, and ``radius`` in pixels;
    both None where Info.txt gives no location."""

    abnormality: str
    severity: str  # "B" or "M"
    centre: tuple[int, int] | None
    radius: int | None


@dataclass(frozen=True)
class MiasImage:
    """One mammogram: reference ("mdb001"), number, background tissue and its findings (none: normal)."""

    reference: str
    number: int
    tissue: str
    findings: tuple[Finding, ...]

    @property
    def severity(self) -> str:
        """"normal", "benign" or "malignant" (the worst finding)."""
        if not self.findings:
            return "normal"
        return "malignant" if any(f.severity == "M" for f in self.findings) else "benign"

    @property
    def patient(self) -> int:
        """Patient number: images 2k-1 and 2k are the right and left breast of patient k."""
        return (self.number + 1) // 2

    @property
    def laterality(self) -> str:
        """"R" (odd reference numbers) or "L" (even), as Info.txt's note 1 says."""
        return "L" if self.number % 2 == 0 else "R"

    @property
    def circles(self) -> tuple[tuple[int, int, int], ...]:
        """(row, column, radius) in pixels of the 1024 x 1024 film, of every localised finding."""
        return tuple((f.centre[0], f.centre[1], f.radius) for f in self.findings if f.centre is not None)

    @property
    def localised(self) -> bool:
        """True when every finding has a centre and radius (normal images: True, nothing to locate)."""
        return all(f.centre is not None for f in self.findings)


def parse_info(text: str) -> list[MiasImage]:
    """The images described by the text of Info.txt, in reference order (all 322 for the real file)."""
    by_reference: dict[str, dict] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or not fields[0].startswith("mdb"):
            continue
        reference = fields[0]
        try:
            number = int(reference[3:])
        except ValueError:
            raise MiasError(f"Info.txt line {line_number}: bad reference {reference!r}") from None
        if len(fields) < 3 or fields[1] not in TISSUES:
            raise MiasError(f"Info.txt line {line_number}: expected 'mdbNNN TISSUE CLASS ...', got {line.strip()!r}")
        entry = by_reference.setdefault(reference, {"number": number, "tissue": fields[1], "findings": []})
        if fields[2] == "NORM":
            continue
        if fields[2] not in ABNORMALITIES or len(fields) < 4 or fields[3] not in ("B", "M"):
            raise MiasError(f"Info.txt line {line_number}: unknown abnormality or severity in {line.strip()!r}")
        entry["findings"].append(_finding(fields, line_number))
    return [MiasImage(reference, e["number"], e["tissue"], tuple(e["findings"]))
            for reference, e in sorted(by_reference.items(), key=lambda item: item[1]["number"])]


def _finding(fields: list[str], line_number: int) -> Finding:
    location = fields[4:7]
    if len(location) == 3 and all(value.lstrip("-").isdigit() for value in location):
        x, y, radius = (int(value) for value in location)
        if not (0 <= x < IMAGE_SIZE and 0 < y <= IMAGE_SIZE and radius > 0):
            raise MiasError(f"Info.txt line {line_number}: location {x}, {y}, r {radius} lies outside the image")
        return Finding(fields[2], fields[3], (IMAGE_SIZE - y, x), radius)  # bottom-left origin -> row from top
    return Finding(fields[2], fields[3], None, None)  # "*NOTE 3*" (spread calcifications) or nothing given


def resolve_mias_root(root: Path | str | None = None) -> Path:
    """``root``, else ``$MIAS_DATA``; must hold Info.txt and png/."""
    path = given_or_env(root, MIAS_ENV, MiasError, f"no mini-MIAS folder given: pass one or set {MIAS_ENV}")
    if not (path / "Info.txt").is_file() or not (path / "png").is_dir():
        raise MiasError(f"{path} does not look like mini-MIAS (needs Info.txt and png/)")
    return path


def read_info(root: Path | str | None = None) -> list[MiasImage]:
    """The parsed Info.txt of the mini-MIAS folder ``root`` (see :func:`resolve_mias_root`)."""
    return parse_info((resolve_mias_root(root) / "Info.txt").read_text(encoding="latin-1"))


def image_path(root: Path, image: MiasImage) -> Path:
    return root / "png" / f"{image.reference}.png"


def circles_mask(circles, shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) bool union of (row, column, radius) circles in pixels of an image of ``shape``; None without any."""
    if not circles:
        return None
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for row, col, radius in circles:
        mask |= (rows + 0.5 - row) ** 2 + (cols + 0.5 - col) ** 2 <= radius**2
    return mask


def lesion_mask(image: MiasImage, shape: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """(H, W) bool: the union of the circles of the image's localised findings (all False for normal images),
    scaled from the 1024 x 1024 film to ``shape``."""
    scale_r, scale_c = shape[0] / IMAGE_SIZE, shape[1] / IMAGE_SIZE
    circles = [(row * scale_r, col * scale_c, radius * min(scale_r, scale_c)) for row, col, radius in image.circles]
    mask = circles_mask(circles, shape)
    return mask if mask is not None else np.zeros(shape, dtype=bool)


def lesion_crop_box(image: MiasImage, margin: float = 1.5, minimum: int = 224) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a square centred on the first localised finding, side
    max(``minimum``, 2 x ``margin`` x radius), moved inside the image; None without a localised finding."""
    finding = next((f for f in image.findings if f.centre is not None), None)
    if finding is None:
        return None
    side = min(IMAGE_SIZE, max(minimum, int(round(2 * margin * finding.radius))))
    top = min(max(0, finding.centre[0] - side // 2), IMAGE_SIZE - side)
    left = min(max(0, finding.centre[1] - side // 2), IMAGE_SIZE - side)
    return top, left, top + side, left + side
