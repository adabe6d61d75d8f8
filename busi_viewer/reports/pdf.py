"""PDF reports with Qt's own writer (QTextDocument laid out on QPdfWriter pages): one image, or a folder summary.

Content comes from :mod:`busi_viewer.core.report_data` entries, which are de-identified unless the user asked
for identifiers; this module adds pictures, layout, page numbers and a safe write (a temporary file renamed
into place, never a silent overwrite). Every page carries "For research use only — not for diagnostic use".
A QGuiApplication must exist (the headless CLI creates an offscreen one).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QBuffer, QIODevice, QMarginsF, QRectF, QSizeF, Qt, QUrl
from PySide6.QtGui import (
    QFont,
    QImage,
    QPageLayout,
    QPageSize,
    QPainter,
    QPdfWriter,
    QTextCursor,
    QTextDocument,
    QTextFormat,
)

from busi_viewer import RESEARCH_USE_BANNER, __version__
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.overlay import (
    DEFAULT_COLORMAP,
    DEFAULT_EVIDENCE_FLOOR,
    blend_heatmap,
    colour_ramp,
    draw_mask_outline,
)
from busi_viewer.core.report_data import (
    FolderCounts,
    ImageEntry,
    ModelSection,
    ScaleBar,
    modality_text,
)

DPI = 150
FOOTER_HEIGHT_PX = DPI // 3  # below each page's body: the disclaimer and "page n of N"
IMAGE_WIDTH_PX = 300  # each picture: about 8 cm wide (the layout scales pixels by the PDF's DPI / 96)
MIN_IMAGE_WIDTH_PX = 200  # smallest picture an image report shrinks to, to stay on one page
IMAGE_WIDTH_STEP_PX = 25
THUMB_WIDTH_PX = 64
BURNED_IN_NOTE = ("The image itself may carry burned-in identifying text (DICOM BurnedInAnnotation, or ultrasound "
                  "that does not say): check the pictures before sharing this report.")


class ReportError(BusiViewerError):
    """A report cannot be written (target exists, folder not writable, nothing to report)."""


@dataclass(frozen=True)
class ReportImages:
    """The pixels of one entry: ``rgb`` (H, W, 3) uint8 as displayed, ``heatmap`` (H, W) float in [0, 1] or
    None, ``mask`` (H, W) bool or None; ``opacity``, ``colormap`` and ``floor`` (evidence not drawn below it)
    as chosen on screen."""

    rgb: np.ndarray
    heatmap: np.ndarray | None = None
    mask: np.ndarray | None = None
    opacity: float = 0.45
    colormap: str = DEFAULT_COLORMAP
    orientation: tuple[int, bool, bool] = (0, False, False)  # as on screen: clockwise degrees, then flips
    floor: float = DEFAULT_EVIDENCE_FLOOR

    def oriented(self, array: np.ndarray) -> np.ndarray:
        """``array`` (H, W[, C]) turned as the screen shows it: rotated clockwise, then mirrored."""
        rotation, flip_h, flip_v = self.orientation
        out = np.rot90(array, k=-(int(rotation) // 90) % 4)
        if flip_h:
            out = out[:, ::-1]
        if flip_v:
            out = out[::-1]
        return np.ascontiguousarray(out)

    def oriented_scale(self, scale: ScaleBar | None, shape: tuple[int, int]) -> ScaleBar | None:
        """``scale`` with its region moved the way :meth:`oriented` moves pixels (square pixels: same mm/px)."""
        if scale is None:
            return None
        marks = np.zeros(shape, np.uint8)
        x0, y0, x1, y1 = scale.region
        marks[y0:y1 + 1, x0:x1 + 1] = 1
        ys, xs = np.nonzero(self.oriented(marks))
        return ScaleBar(scale.mm_per_pixel, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())))


def model_section_for(card) -> ModelSection:
    """The report's model section from a :class:`~busi_viewer.inference.model_card.ModelCard`."""
    protocol = " ".join(part for part in (card.training_data, card.protocol) if part)
    return ModelSection(card.name, card.version, card.architecture, card.weights_sha256, protocol,
                        card.explanation_name())


def ensure_gui_application():
    """The running QGuiApplication, or a new offscreen one (headless reports need fonts and painting)."""
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance()
    if app is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QGuiApplication([])
    return app


def thumbnail(rgb: np.ndarray, width: int = 2 * THUMB_WIDTH_PX) -> np.ndarray:
    """A small copy of a display RGB for the folder summary (keeps memory flat on large folders)."""
    return _scaled(rgb, min(width, rgb.shape[1]))


# ----------------------------------------------------------------------------------------------- pictures
def _qimage(rgb: np.ndarray) -> QImage:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def _scaled(rgb: np.ndarray, width: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    height = max(1, round(h * width / w))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if w > width else cv2.INTER_LINEAR)


def _with_scale_bar(rgb: np.ndarray, scale: ScaleBar | None) -> np.ndarray:
    """A 10 mm bar (or 5 / 1 mm when the region is small) in the calibrated region's lower-left corner."""
    if scale is None:
        return rgb
    x0, y0, x1, y1 = scale.region
    for mm in (10.0, 5.0, 1.0):
        length = round(mm / scale.mm_per_pixel)
        if length <= 0.6 * (x1 - x0 + 1):
            break
    else:
        return rgb
    out = np.ascontiguousarray(rgb.copy())
    thickness = max(2, rgb.shape[1] // 200)
    y = y1 - max(12, (y1 - y0) // 20)
    x = x0 + max(8, (x1 - x0) // 20)
    cv2.line(out, (x, y), (x + length, y), (255, 255, 255), thickness)
    cv2.putText(out, f"{mm:g} mm", (x, y - 2 * thickness - 2), cv2.FONT_HERSHEY_SIMPLEX,
                max(0.4, rgb.shape[1] / 1200), (255, 255, 255), max(1, thickness // 2), cv2.LINE_AA)
    return out


def _explanation(images: ReportImages) -> np.ndarray | None:
    if images.heatmap is None:
        return None
    out = blend_heatmap(images.rgb, images.heatmap, images.opacity, images.colormap, images.floor)
    out = draw_mask_outline(out, images.mask) if images.mask is not None and images.mask.any() else out
    return images.oriented(out)


# --------------------------------------------------------------------------------------------------- html
def _e(text: object) -> str:
    return html.escape(str(text))


def _header(title: str) -> str:
    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"<h2>{_e(title)}</h2><p><b>BUSI Viewer {_e(__version__)}</b> · {_e(stamp)}<br>"
            f"<b style='color:#8b1a1a'>{_e(RESEARCH_USE_BANNER)}</b></p>")


def _model_html(model: ModelSection) -> str:
    return (f"<h3>Model</h3><p>{_e(model.name)} {_e(model.version)} · {_e(model.architecture)} · weights SHA-256 "
            f"{_e(model.weights_prefix)}…<br><i>Where its numbers come from:</i> {_e(model.protocol or 'not stated')}"
            "</p><p>A heatmap shows where the classifier found evidence; it is not a lesion detection.</p>")


def _identifiers_html(entry: ImageEntry) -> str:
    if not entry.source_name and not entry.identifiers:
        return "<p>De-identified: no patient identifiers, no original file name (case id from the file's hash).</p>"
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in entry.identifiers.items())
    return (f"<p><b>Identifiers included at the user's request.</b> File: {_e(entry.source_name)}</p>"
            f"<table cellpadding='2'>{rows}</table>")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _agreement_html(entry: ImageEntry) -> str:
    a = entry.agreement
    if a is None:
        return "<p>No lesion mask beside this image: no heatmap-vs-mask agreement.</p>"
    if a.iou_otsu is None and a.reason:
        return f"<p>Heatmap-vs-mask agreement: not defined ({_e(a.reason)}).</p>"
    b = a.baseline
    hit = {True: "hit", False: "miss", None: "n/a"}
    rows = [("IoU (Otsu threshold)", _fmt(a.iou_otsu), _fmt(b.iou_otsu if b else None)),
            ("Pointing game", hit[a.pointing_hit], hit[b.pointing_hit if b else None]),
            ("Energy in mask", _fmt(a.energy_in_mask), _fmt(b.energy_in_mask if b else None))]
    body = "".join(f"<tr><td>{_e(n)}</td><td align='right'>{v}</td><td align='right'>{c}</td></tr>" for n, v, c in rows)
    return ("<h3>Heatmap vs lesion mask</h3><table border='1' cellspacing='0' cellpadding='3'>"
            "<tr><th>score</th><th>this heatmap</th><th>centre prior</th></tr>" + body + "</table>")


def _burned_in_summary_html(count: int) -> str:
    if not count:
        return ""
    return (f"<p><b>{count} image(s), marked “burned-in text?”, may carry burned-in identifying text (DICOM "
            "BurnedInAnnotation, or ultrasound that does not say): check their thumbnails before sharing this "
            "summary.</b></p>")


def _unreadable_html(unreadable: Sequence[tuple[str, str]]) -> str:
    if not unreadable:
        return ""
    items = "".join(f"<li>{_e(name)}: {_e(reason)}</li>" for name, reason in unreadable)
    return f"<h3>Not classified ({len(unreadable)})</h3><ul>{items}</ul>"


def _review_html(entry: ImageEntry) -> str:
    r = entry.review
    if not r.reviewed and not r.note:
        return "<h3>Review</h3><p>Not reviewed.</p>"
    decision = {"agree": "Agrees with the model", "unsure": "Unsure",
                "disagree": f"Disagrees: {r.chosen_class or 'no class chosen'}"}.get(r.decision or "", "No decision")
    note = f"<br>Note: {_e(r.note)}" if r.note else ""
    return f"<h3>Review</h3><p>{_e(decision)}{note}</p>"


def _probabilities_html(entry: ImageEntry) -> str:
    rows = "".join(
        f"<tr><td>{'<b>' if n == entry.predicted else ''}{_e(n)}{'</b>' if n == entry.predicted else ''}</td>"
        f"<td align='right'>{p:.2f}</td></tr>" for n, p in zip(entry.class_names, entry.probabilities))
    confidence = (" <b style='color:#a15c00'>LOW CONFIDENCE</b>" if entry.low_confidence else "")
    scope = f"<p><b style='color:#b3261e'>{_e(entry.out_of_scope)}</b></p>" if entry.out_of_scope else ""
    heading = (f"Prediction: out of scope (most probable class: {_e(entry.predicted)}, not a finding)"
               if entry.out_of_scope else f"Prediction: {_e(entry.predicted)}{confidence}")
    override = f"<p><b>{_e(entry.decision_override)}</b></p>" if entry.decision_override else ""
    return (f"{scope}<h3>{heading}</h3>{override}"
            "<table border='1' cellspacing='0' cellpadding='3'><tr><th>class</th><th>probability</th></tr>"
            f"{rows}</table><p>Calibrated probabilities (temperature scaling). {_e(entry.decision_rule)}</p>")


# ------------------------------------------------------------------------------------------------ writing
def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ReportError(f"{path} already exists; choose another name or allow replacing it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ReportError(f"cannot write {path.name}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ReportError(f"cannot write {path.name}: folder {folder} is not writable")


def _render(document: QTextDocument, path: Path, title: str, overwrite: bool) -> None:
    """Lay ``document`` out on A4 pages with a footer (disclaimer, page n of N) and write it atomically."""
    _check_target(path, overwrite)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        writer = QPdfWriter(str(staging))
        writer.setTitle(title)  # never an identifier: case ids and "Folder summary" only
        writer.setCreator(f"BUSI Viewer {__version__}")
        body = _lay_out(document, writer)
        painter = QPainter(writer)
        if not painter.isActive():
            raise ReportError(f"cannot write {path.name}: the PDF could not be opened for writing")
        pages = document.pageCount()
        footer_font = QFont(document.defaultFont())
        footer_font.setPointSizeF(8)
        for index in range(pages):
            if index:
                writer.newPage()
            painter.save()
            painter.translate(0, -index * body.height())
            document.drawContents(painter, QRectF(0, index * body.height(), body.width(), body.height()))
            painter.restore()
            painter.setFont(footer_font)
            painter.drawText(QRectF(0, body.height(), body.width(), FOOTER_HEIGHT_PX),
                             int(Qt.AlignmentFlag.AlignCenter),
                             f"{RESEARCH_USE_BANNER} · page {index + 1} of {pages}")
        painter.end()
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _lay_out(document: QTextDocument, writer: QPdfWriter) -> QSizeF:
    """Set ``writer`` to A4 with 15 mm margins and lay ``document`` out on its pages, less the footer; returns the
    size of one page's body in PDF pixels."""
    writer.setResolution(DPI)
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter)
    page = writer.pageLayout().paintRectPixels(DPI)
    body = QSizeF(page.width(), page.height() - FOOTER_HEIGHT_PX)
    document.documentLayout().setPaintDevice(writer)  # point sizes at the PDF's resolution, not the screen's
    document.setPageSize(body)
    keep_headings_with_their_content(document)
    return body


def _page_count(document: QTextDocument) -> int:
    """How many pages ``document`` takes as :func:`_render` lays it out (into memory; nothing is written)."""
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QPdfWriter(buffer)
    _lay_out(document, writer)
    pages = document.pageCount()
    document.documentLayout().setPaintDevice(None)  # the writer goes away with this function
    return pages


def keep_headings_with_their_content(document: QTextDocument, room: float = 0.12) -> int:
    """Move each heading that would end a page (less than ``room`` of the page height left below it) to the next
    page; Qt's rich text has no keep-with-next. Returns how many headings moved. Call after setPageSize."""
    page_height = document.pageSize().height()
    layout = document.documentLayout()
    moved = 0
    block = document.begin()
    while block.isValid():
        if block.blockFormat().headingLevel() > 0:
            top = layout.blockBoundingRect(block).top()
            below = page_height - (top % page_height)
            if below < room * page_height and top % page_height > 0:
                cursor = QTextCursor(block)
                form = block.blockFormat()
                form.setPageBreakPolicy(QTextFormat.PageBreakFlag.PageBreak_AlwaysBefore)
                cursor.setBlockFormat(form)
                moved += 1
        block = block.next()
    return moved


def _new_document() -> QTextDocument:
    document = QTextDocument()
    font = QFont()
    font.setPointSizeF(9.5)
    document.setDefaultFont(font)
    return document


def _add_image(document: QTextDocument, name: str, rgb: np.ndarray, width: int) -> str:
    document.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"img://{name}"), _qimage(_scaled(rgb, width)))
    return f"<img src='img://{name}'>"


def write_image_report(path: Path | str, entry: ImageEntry, images: ReportImages, model: ModelSection, *,
                       overwrite: bool = False) -> Path:
    """One image's report (see the module docstring); returns the written path. ReportError on a bad target.

    One page whenever it can be: when the text runs onto a second page, the pictures are drawn smaller (down to
    :data:`MIN_IMAGE_WIDTH_PX`) rather than leave a line or two alone on it."""
    path = Path(path)
    scale = images.oriented_scale(entry.scale, images.rgb.shape[:2])
    explained = _explanation(images)
    # drawn once, whatever size the layout then gives them
    pictures = {"image": _with_scale_bar(images.oriented(images.rgb), scale)}
    if explained is not None:
        pictures["explanation"] = _with_scale_bar(explained, scale)
    bar = colour_ramp(images.colormap, images.floor, height=14)
    for width in range(IMAGE_WIDTH_PX, MIN_IMAGE_WIDTH_PX - 1, -IMAGE_WIDTH_STEP_PX):
        document = _image_document(entry, images, model, pictures, bar, width)
        if _page_count(document) == 1:
            break
    _render(document, path, f"BUSI Viewer report {entry.case_id}", overwrite)
    return path


def _image_document(entry: ImageEntry, images: ReportImages, model: ModelSection, pictures: dict[str, np.ndarray],
                    bar: np.ndarray, width_px: int) -> QTextDocument:
    """The report's document with its ``pictures`` (name -> RGB, the image and, when explained, the explanation)
    and the colour ``bar`` drawn ``width_px`` wide."""
    document = _new_document()
    cells = [_add_image(document, name, rgb, width_px) for name, rgb in pictures.items()]
    bar_html = _add_image(document, "colourbar", bar, width_px)
    width, height = entry.size
    parts = [
        _header(f"Image report — {entry.case_id}"),
        f"<p>{_e(modality_text(entry.modality))} · {width}×{height} px · "
        + ("scale bar in mm (calibrated region)" if entry.scale else "uncalibrated: no scale bar") + "</p>",
        _identifiers_html(entry),
        f"<p><b>{_e(BURNED_IN_NOTE)}</b></p>" if entry.burned_in_risk else "",
        "<table cellpadding='4'><tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr></table>",
    ]
    if "explanation" in pictures:
        mask_note = " Green outline: the lesion mask." if images.mask is not None and images.mask.any() else ""
        parts.append(f"<p>{_e(model.explanation)}, for the predicted class, at opacity {images.opacity:.2f}; "
                     f"evidence below {images.floor:.0%} of this image's peak not drawn.{mask_note}<br>{bar_html}<br>"
                     "low ← evidence → high; normalised per image (colours compare regions within this image only)</p>")
    parts += [_probabilities_html(entry), _agreement_html(entry), _review_html(entry), _model_html(model)]
    document.setHtml("".join(parts))
    return document


def write_summary_report(path: Path | str, rows: Sequence[tuple[ImageEntry, np.ndarray]], counts: FolderCounts,
                         model: ModelSection, *, unreadable: Sequence[tuple[str, str]] = (),
                         overwrite: bool = False) -> Path:
    """A folder summary: one row per (entry, display RGB) with a thumbnail, then counts; the model once.
    ``unreadable``: (case id or, with identifiers, file name; reason) of files that could not be classified."""
    if not rows:
        raise ReportError("there is nothing to report: no image was processed")
    path = Path(path)
    document = _new_document()
    class_names = rows[0][0].class_names
    head = "".join(f"<th style='white-space:nowrap'>p({_e(n)})</th>" for n in class_names)
    body = []
    for index, (entry, rgb) in enumerate(rows):
        thumb = _add_image(document, f"thumb{index}", rgb, THUMB_WIDTH_PX)
        probs = "".join(f"<td align='right'>{p:.2f}</td>" for p in entry.probabilities)
        review = entry.review.decision or "—"
        if entry.review.decision == "disagree" and entry.review.chosen_class:
            review += f": {entry.review.chosen_class}"
        a = entry.agreement
        agreement = "—" if a is None or a.iou_otsu is None else (
            f"IoU {a.iou_otsu:.2f}, {'hit' if a.pointing_hit else 'miss'}")
        name = _e(entry.case_id) + (f"<br>{_e(entry.source_name)}" if entry.source_name else "") + (
            "<br><b>burned-in text?</b>" if entry.burned_in_risk else "")
        if entry.out_of_scope:  # no class for an image the model does not know: the most probable, as a note
            prediction = f"<b>out of scope</b><br>(most probable: {_e(entry.predicted)})"
        else:
            prediction = _e(entry.predicted) + ("<br>(low confidence)" if entry.low_confidence else "")
        body.append(f"<tr><td>{thumb}</td><td style='white-space:nowrap'>{name}</td>"
                    f"<td>{prediction}</td>{probs}"
                    f"<td>{_e(review)}</td><td>{_e(agreement)}</td></tr>")
    per_class = ", ".join(f"{_e(n)} {c}" for n, c in counts.per_class.items())
    anonymous = not any(entry.source_name for entry, _ in rows)
    parts = [
        _header("Folder summary"),
        (f"<p>{len(rows)} images · predicted: {per_class} · reviewed {counts.reviewed}, "
         f"not reviewed {counts.unreviewed}"
         + (f" · {len(unreadable)} not classified" if unreadable else "") + "</p>"),
        ("<p>Case ids come from each file's hash; file names and patient identifiers are left out unless the user "
         "asked for them.</p>") if anonymous else "",
        _burned_in_summary_html(sum(entry.burned_in_risk for entry, _ in rows)),
        ("<table border='1' cellspacing='0' cellpadding='2' style='font-size:8pt'><tr><th>image</th><th>case</th>"
         f"<th>prediction</th>{head}<th>review</th><th>agreement</th></tr>{''.join(body)}</table>"),
        _unreadable_html(unreadable),
        _model_html(model),
    ]
    document.setHtml("".join(parts))
    _render(document, path, "BUSI Viewer folder summary", overwrite)
    return path
