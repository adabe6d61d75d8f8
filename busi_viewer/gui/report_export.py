"""The viewer's "Export report" (Ctrl+E): what is on screen for the current image, as a PDF report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from busi_viewer.core.agreement import AgreementResult
from busi_viewer.core.display import DisplayAdjust, render_display
from busi_viewer.core.image_record import ImageRecord
from busi_viewer.core.report_data import ReviewSection, image_entry
from busi_viewer.core.reviews import Review
from busi_viewer.gui.worker import InferenceDone
from busi_viewer.inference.catalogue import scope_warning
from busi_viewer.reports.pdf import (
    ReportImages,
    model_section_for,
    write_image_report,
)


def write_current_image_report(path: Path, *, record: ImageRecord, frame: int, adjust: DisplayAdjust,
                               done: InferenceDone, agreement: AgreementResult | None, mask: np.ndarray | None, card,
                               review: Review | None, opacity: float, colormap: str,
                               evidence_floor: float, include_identifiers: bool, overwrite: bool,
                               orientation: tuple[int, bool, bool] = (0, False, False)) -> Path:
    """Write the report of the shown frame: its display rendering (window/level, brightness/contrast, invert and
    orientation as on screen), the heatmap at the chosen opacity, evidence floor and colour map, the mask, scores
    and the saved review."""
    shown = render_display(record, frame, adjust)
    rgb = np.repeat(shown[..., None], 3, axis=2) if shown.ndim == 2 else shown
    prediction = done.prediction
    entry = image_entry(record, done.sha256, class_names=prediction.class_names,
                        probabilities=prediction.probabilities, predicted=prediction.predicted_class,
                        low_confidence=prediction.low_confidence, decision_rule=card.decision_rule(),
                        out_of_scope=scope_warning(card, record.modality, done.prediction),
                        operating_point=card.operating_point(), agreement=agreement,
                        review=ReviewSection.of(review), include_identifiers=include_identifiers)
    images = ReportImages(rgb, prediction.heatmap, mask, opacity, colormap, orientation, evidence_floor)
    return write_image_report(path, entry, images, model_section_for(card), overwrite=overwrite)
