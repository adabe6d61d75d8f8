"""What a PDF report says about one image, de-identified unless the user asks otherwise (no Qt, no torch).

The report writer (issue #5) renders these records; everything a report may print passes through here, so
de-identification happens in one place: without ``include_identifiers`` an entry holds no patient name, ID,
birth date, accession number, institution or original file name, only a case id derived from the file's hash.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .agreement import AgreementResult
from .decision import override_sentence
from .image_record import ImageRecord
from .reviews import Review

CASE_ID_HEX = 10  # 40 bits of the SHA-256: a collision within one folder is vanishingly unlikely
_SHA256 = re.compile(r"[0-9a-f]{64}")


def case_id(sha256: str) -> str:
    """A short, stable, non-identifying name for an image: ``"case-"`` + the first hex digits of its SHA-256."""
    if not _SHA256.fullmatch(sha256 or ""):
        raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
    return f"case-{sha256[:CASE_ID_HEX]}"


# What DICOM Modality codes mean, for readers of a report; "OT" is also what a plain image file is given.
MODALITY_MEANINGS = {"US": "ultrasound", "MG": "mammography", "CT": "computed tomography", "MR": "magnetic resonance",
                     "DX": "digital radiography", "CR": "computed radiography", "XA": "X-ray angiography",
                     "NM": "nuclear medicine", "PT": "PET", "OT": "other: a plain image file, or no modality stated",
                     "SC": "secondary capture"}


def modality_text(code: str) -> str:
    """"US (ultrasound)", "OT (other: a plain image file, or no modality stated)"; an unknown code as it is."""
    code = (code or "").strip().upper()
    meaning = MODALITY_MEANINGS.get(code)
    return f"{code} ({meaning})" if meaning else (code or "image")


def burned_in_risk(burned_in_annotation: str | None, modality: str) -> bool:
    """True when the pixels may show identifying text: flagged "YES", or ultrasound that does not say.

    Ultrasound scanners routinely burn the patient's name into the frame, so a missing flag counts as a risk.
    """
    flag = burned_in_annotation.strip().upper() if burned_in_annotation else None
    return flag == "YES" or (modality.strip().upper() == "US" and flag is None)


@dataclass(frozen=True)
class ModelSection:
    """The model behind every number of a report: printed once per report."""

    name: str
    version: str
    architecture: str
    weights_sha256: str
    protocol: str  # what data and protocol its stated metrics come from (the model card's words)
    explanation: str = "Grad-CAM"  # what the heatmap is (ModelCard.explanation_name)

    @property
    def weights_prefix(self) -> str:
        return self.weights_sha256[:12]


@dataclass(frozen=True)
class ReviewSection:
    """The reviewer's decision ("agree", "disagree", "unsure" or None), their class when disagreeing, a note."""

    decision: str | None = None
    chosen_class: str | None = None
    note: str = ""

    @property
    def reviewed(self) -> bool:
        return self.decision is not None

    @classmethod
    def of(cls, review: Review | None) -> ReviewSection | None:
        """The report's view of a saved review (None stays None: not reviewed)."""
        return None if review is None else cls(review.decision, review.chosen_class, review.note)


@dataclass(frozen=True)
class ScaleBar:
    """Where a millimetre scale bar may be drawn: ``mm_per_pixel`` (square pixels) inside ``region``
    (x0, y0, x1, y1), inclusive pixel bounds: the calibrated ultrasound region, or the whole image."""

    mm_per_pixel: float
    region: tuple[int, int, int, int]

    def on_grid(self, shape: tuple[int, int], grid: tuple[int, int]) -> ScaleBar:
        """This bar for the image drawn on ``grid`` (H', W') instead of its own ``shape`` (H, W): millimetres per
        pixel grow, and the region shrinks, by the scale factor (pixel x goes to floor(x * W' / W))."""
        if tuple(grid) == tuple(shape):
            return self
        sy, sx = grid[0] / shape[0], grid[1] / shape[1]
        x0, y0, x1, y1 = self.region
        return ScaleBar(self.mm_per_pixel / sx, (int(x0 * sx), int(y0 * sy), min(int(x1 * sx), grid[1] - 1),
                                                 min(int(y1 * sy), grid[0] - 1)))


def scale_for(record: ImageRecord) -> ScaleBar | None:
    """The image's scale for a report: its largest calibrated ultrasound region, else a file-wide pixel
    spacing; None when uncalibrated or when pixels are not square (a bar would mislead along one axis)."""
    height, width = record.shape
    candidates = [(r.spacing_mm, (r.x0, r.y0, r.x1, r.y1)) for r in record.ultrasound_regions if r.spacing_mm]
    if not record.ultrasound_regions and record.pixel_spacing_mm:
        candidates = [(record.pixel_spacing_mm, (0, 0, width - 1, height - 1))]
    if not candidates:
        return None
    spacing, region = max(candidates, key=lambda c: (c[1][2] - c[1][0] + 1) * (c[1][3] - c[1][1] + 1))
    row_mm, col_mm = (float(v) for v in spacing)
    if not (row_mm > 0 and col_mm > 0) or abs(row_mm - col_mm) > 1e-3 * max(row_mm, col_mm):
        return None
    return ScaleBar(col_mm, tuple(int(v) for v in region))


@dataclass(frozen=True)
class ImageEntry:
    """One image as a report shows it. ``probabilities`` are calibrated, in ``class_names`` order.

    ``source_name`` and ``identifiers`` are empty unless identifiers were explicitly included; ``scale`` is set
    only when the image is calibrated; ``agreement`` only when a lesion mask exists; ``out_of_scope`` says why
    the model's output means nothing here (another modality, or the model's scope guard), or is "";
    ``decision_override`` says when the operating rule decided against the most probable class, or is "".
    """

    case_id: str
    modality: str
    size: tuple[int, int]  # (width, height) in pixels
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    predicted: str
    low_confidence: bool
    decision_rule: str
    agreement: AgreementResult | None
    review: ReviewSection
    burned_in_risk: bool
    scale: ScaleBar | None = None
    source_name: str = ""
    identifiers: Mapping[str, str] = field(default_factory=dict)
    out_of_scope: str = ""
    decision_override: str = ""

    def __post_init__(self) -> None:
        if len(self.probabilities) != len(self.class_names):
            raise ValueError("one probability per class is needed")
        if self.predicted not in self.class_names:
            raise ValueError(f"predicted class {self.predicted!r} is not one of {self.class_names}")


def image_entry(record: ImageRecord, sha256: str, *, class_names: Sequence[str], probabilities: Sequence[float],
                predicted: str, low_confidence: bool, decision_rule: str, agreement: AgreementResult | None = None,
                review: ReviewSection | None = None, include_identifiers: bool = False,
                out_of_scope: str = "", operating_point: tuple[str, float] | None = None) -> ImageEntry:
    """The report entry of ``record`` (identified by its file's ``sha256``); de-identified by default.
    ``operating_point``: the model's (class, threshold), to say when it overrode the most probable class."""
    height, width = record.shape[:2]
    return ImageEntry(
        case_id=case_id(sha256), modality=record.modality or "", size=(int(width), int(height)),
        class_names=tuple(class_names), probabilities=tuple(float(p) for p in probabilities), predicted=predicted,
        low_confidence=bool(low_confidence), decision_rule=decision_rule, agreement=agreement,
        review=review or ReviewSection(),
        burned_in_risk=burned_in_risk(record.burned_in_annotation, record.modality or ""),
        scale=scale_for(record),
        source_name=record.path.name if include_identifiers else "",
        identifiers=dict(record.identifiers) if include_identifiers else {},
        out_of_scope=out_of_scope,
        decision_override=override_sentence(class_names, probabilities, predicted, operating_point),
    )


@dataclass(frozen=True)
class FolderCounts:
    """How many images were predicted in each class, and how many were reviewed."""

    per_class: Mapping[str, int]
    reviewed: int
    unreviewed: int


def folder_counts(entries: Iterable[ImageEntry], class_names: Sequence[str]) -> FolderCounts:
    """Counts for a folder summary (every class listed, zeros included)."""
    entries = list(entries)
    predicted = Counter(entry.predicted for entry in entries)
    reviewed = sum(entry.review.reviewed for entry in entries)
    return FolderCounts({name: predicted.get(name, 0) for name in class_names}, reviewed, len(entries) - reviewed)
