"""PDF reports: content (pypdf text), pictures (pdftoppm pages), de-identification and safe writing."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")
pypdf = pytest.importorskip("pypdf")

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.agreement import agreement
from busi_viewer.core.image_record import UltrasoundRegion
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.core.loader import load_image
from busi_viewer.core.report_data import (
    ModelSection,
    ReviewSection,
    folder_counts,
    image_entry,
)
from busi_viewer.reports.pdf import (
    ReportError,
    ReportImages,
    write_image_report,
    write_summary_report,
)
from tests.helpers.pdf import pdf_text
from tests.helpers.dicom import write_dicom

IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "PID-0042", "PatientBirthDate": "19700101"}
MODEL = ModelSection("busi-us", "0.2.0", "tf_efficientnet_lite0", "47081f4e713f" + "0" * 52,
                     "BUSI, grouped split, 116 test images")


@pytest.fixture
def dicom_case(tmp_path):
    """An ultrasound DICOM with patient identifiers and a calibrated region, its heatmap and lesion mask."""
    height, width = 120, 160
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = (60 + 40 * np.sin(xx / 7.0) + 30 * np.cos(yy / 5.0)).astype(np.uint8)
    lesion = (yy - 60) ** 2 / 400 + (xx - 80) ** 2 / 900 <= 1
    pixels[lesion] = 10
    path = write_dicom(tmp_path / "Doe_Jane_scan.dcm", pixels, Modality="US", **IDENTIFIERS)
    record = load_image(path)
    assert record.identifiers.get("PatientName") == "Doe^Jane"  # the fixture really carries identifiers
    heat = np.exp(-((yy - 60) ** 2 + (xx - 85) ** 2) / 300.0).astype(np.float32)
    return path, record, heat, lesion


def _entry(path, record, heat, mask, **kwargs):
    return image_entry(record, hashlib.sha256(path.read_bytes()).hexdigest(), class_names=CLASS_NAMES,
                       probabilities=(0.25, 0.62, 0.13), predicted="malignant", low_confidence=False,
                       decision_rule="malignant when p(malignant) ≥ 0.30, else the most probable",
                       agreement=agreement(heat, mask), review=ReviewSection("disagree", "benign", "smooth margin"),
                       **kwargs)


def _text(pdf: Path) -> str:
    return pdf_text(pdf, metadata=True)


def test_image_report_says_what_was_on_screen_and_no_identifier(qtbot, tmp_path, dicom_case):
    path, record, heat, mask = dicom_case
    entry = _entry(path, record, heat, mask)
    pdf = write_image_report(tmp_path / "report.pdf", entry, ReportImages(record.rgb, heat, mask, 0.6), MODEL)
    text = _text(pdf)
    for expected in (RESEARCH_USE_BANNER, entry.case_id, "Prediction: malignant", "0.62", "busi-us 0.2.0",
                     "tf_efficientnet_lite0", "47081f4e713f", "BUSI, grouped split", "opacity 0.60",
                     "IoU (Otsu threshold)", "Pointing game", "Energy in mask", "centre prior",
                     "Disagrees: benign", "smooth margin", "page 1 of", "burned-in identifying text",
                     "uncalibrated", "not a lesion detection"):
        assert expected in text, expected
    # one page: at full picture size this report ran one line onto a second page; the pictures shrink instead
    assert len(pypdf.PdfReader(pdf).pages) == 1 and "page 1 of 1" in text
    raw = pdf.read_bytes()
    for secret in [*IDENTIFIERS.values(), "Doe_Jane", "Doe^Jane", "Jane"]:
        assert secret not in text and secret.encode() not in raw, secret
    assert not list(tmp_path.glob(".*partial"))  # the staging file was renamed away
    assert "Grad-CAM, for the predicted class" in text  # the section's default method
    mirrored = dataclasses.replace(MODEL, explanation="Grad-CAM, mean with mirror image")
    text = _text(write_image_report(tmp_path / "mirrored.pdf", entry, ReportImages(record.rgb, heat, mask, 0.6),
                                    mirrored))
    assert "Grad-CAM, mean with mirror image, for the predicted class" in text


def test_the_report_says_when_the_rule_overrode_the_most_probable_class_or_the_image_is_out_of_scope(
        qtbot, tmp_path, dicom_case):
    path, record, heat, mask = dicom_case
    entry = image_entry(record, "ab" * 32, class_names=CLASS_NAMES, probabilities=(0.62, 0.31, 0.07),
                        predicted="malignant", low_confidence=False, decision_rule="malignant when …",
                        operating_point=("malignant", 0.05))
    text = _text(write_image_report(tmp_path / "override.pdf", entry, ReportImages(record.rgb, heat, mask), MODEL))
    assert ("Prediction: malignant Malignant although benign is more probable (0.62): the operating rule decides, "
            "p(malignant) = 0.31 ≥ 0.05, the threshold chosen on validation.") in text
    why = "Outside this model's scope: this image is unlike the ultrasound images it was trained on."
    entry = image_entry(record, "ab" * 32, class_names=CLASS_NAMES, probabilities=(0.25, 0.62, 0.13),
                        predicted="malignant", low_confidence=True, decision_rule="", out_of_scope=why)
    text = _text(write_image_report(tmp_path / "scope.pdf", entry, ReportImages(record.rgb, heat, mask), MODEL))
    assert f"{why} Prediction: out of scope (most probable class: malignant, not a finding)" in text
    assert "LOW CONFIDENCE" not in text and "Prediction: malignant" not in text


def test_identifiers_appear_only_when_asked(qtbot, tmp_path, dicom_case):
    path, record, heat, mask = dicom_case
    entry = _entry(path, record, heat, mask, include_identifiers=True)
    text = _text(write_image_report(tmp_path / "named.pdf", entry, ReportImages(record.rgb, heat, mask), MODEL))
    for value in [*IDENTIFIERS.values(), "Doe_Jane_scan.dcm"]:
        assert value in text, value
    assert "Identifiers included at the user's request" in text


def test_summary_lists_every_image_counts_and_the_model_once(qtbot, tmp_path, dicom_case):
    path, record, heat, mask = dicom_case
    entries = [_entry(path, record, heat, mask),
               image_entry(record, "f" * 64, class_names=CLASS_NAMES, probabilities=(0.7, 0.2, 0.1),
                           predicted="benign", low_confidence=True, decision_rule="")]
    pdf = write_summary_report(tmp_path / "summary.pdf", [(e, record.rgb) for e in entries],
                               folder_counts(entries, CLASS_NAMES), MODEL)
    text = _text(pdf)
    assert "2 images" in text and "benign 1, malignant 1, normal 0" in text
    assert "reviewed 1, not reviewed 1" in text and "low confidence" in text
    assert entries[0].case_id in text and "case-ffffffffff" in text
    assert text.count("busi-us 0.2.0") == 1 and "Doe" not in text
    # both are ultrasound that does not say whether text is burned in: each row is marked, and the page says why
    assert "2 image(s), marked" in text and "may carry burned-in identifying text" in text
    assert text.count("burned-in text?") == 3  # two rows and the note naming the mark
    with pytest.raises(ReportError, match="nothing to report"):
        write_summary_report(tmp_path / "empty.pdf", [], folder_counts([], CLASS_NAMES), MODEL)


def test_never_overwrites_silently_and_says_why_it_cannot_write(qtbot, tmp_path, dicom_case):
    path, record, heat, mask = dicom_case
    entry, images = _entry(path, record, heat, mask), ReportImages(record.rgb, heat, mask)
    target = tmp_path / "report.pdf"
    target.write_bytes(b"an earlier report")
    with pytest.raises(ReportError, match="already exists"):
        write_image_report(target, entry, images, MODEL)
    assert target.read_bytes() == b"an earlier report"
    write_image_report(target, entry, images, MODEL, overwrite=True)
    assert target.read_bytes().startswith(b"%PDF")
    with pytest.raises(ReportError, match="does not exist"):
        write_image_report(tmp_path / "missing" / "r.pdf", entry, images, MODEL)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ReportError, match="not writable"):
            write_image_report(locked / "r.pdf", entry, images, MODEL)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) is not installed")
def test_rendered_page_shows_the_image_the_heatmap_and_a_scale_bar(qtbot, tmp_path, dicom_case):
    path, record, heat, mask = dicom_case
    record.ultrasound_regions = (UltrasoundRegion(0, 0, 159, 119, (0.2, 0.2)),)  # 0.2 mm/px: a 10 mm bar = 50 px
    entry = _entry(path, record, heat, mask)
    assert entry.scale is not None
    pdf = write_image_report(tmp_path / "r.pdf", entry, ReportImages(record.rgb, heat, mask, 0.6), MODEL)
    assert "scale bar in mm" in _text(pdf)
    subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
                   check=True)
    page = cv2.cvtColor(cv2.imread(str(next(tmp_path.glob("page*.png")))), cv2.COLOR_BGR2RGB).astype(int)
    height = page.shape[0]
    band = page[int(0.12 * height):int(0.5 * height)]  # where the two pictures sit, below the header
    not_white = (band < 230).any(axis=2)
    assert not_white.mean() > 0.15, "the picture area is blank"
    warm = (band[..., 0] - band[..., 2] > 60) & (band[..., 0] > 120)  # inferno's orange/yellow: the heatmap
    green = (band[..., 1] - band[..., 0] > 80) & (band[..., 1] - band[..., 2] > 80)  # the mask outline
    assert warm.sum() > 50 and green.sum() > 10
    white_line = (band > 245).all(axis=2) & np.roll(not_white, 3, axis=0)  # a white bar drawn over the image
    assert white_line.sum() > 20


def test_long_summaries_run_over_numbered_pages(qtbot, tmp_path, dicom_case):
    _, record, _, _ = dicom_case
    entries = [image_entry(record, f"{i:064x}", class_names=CLASS_NAMES, probabilities=(0.5, 0.3, 0.2),
                           predicted="benign", low_confidence=False, decision_rule="") for i in range(40)]
    pdf = write_summary_report(tmp_path / "long.pdf", [(e, record.rgb) for e in entries],
                               folder_counts(entries, CLASS_NAMES), MODEL)
    pages = len(pypdf.PdfReader(pdf).pages)
    text = _text(pdf)
    assert pages >= 2 and f"page {pages} of {pages}" in text and RESEARCH_USE_BANNER in text
    assert all(e.case_id in text for e in entries)


def test_report_pictures_follow_the_screen_orientation():
    from busi_viewer.core.report_data import ScaleBar

    image = np.arange(2 * 3).reshape(2, 3)  # [[0 1 2], [3 4 5]]
    turn = ReportImages(np.zeros((2, 3, 3), np.uint8), orientation=(90, False, False))
    assert turn.oriented(image).tolist() == [[3, 0], [4, 1], [5, 2]]  # clockwise: the left column becomes the top
    mirrored = ReportImages(np.zeros((2, 3, 3), np.uint8), orientation=(90, True, False))
    assert mirrored.oriented(image).tolist() == [[0, 3], [1, 4], [2, 5]]  # then mirrored left-right, as on screen
    assert ReportImages(image, orientation=(180, False, True)).oriented(image).tolist() == [[2, 1, 0], [5, 4, 3]]
    scale = ScaleBar(0.2, (0, 0, 2, 0))  # the top row of the 2 x 3 image
    assert turn.oriented_scale(scale, (2, 3)).region == (1, 0, 1, 2)  # becomes the right column
    assert turn.oriented_scale(None, (2, 3)) is None


def test_a_heading_that_would_end_a_page_moves_to_the_next(qtbot):
    from PySide6.QtCore import QSizeF
    from PySide6.QtGui import QTextDocument

    from busi_viewer.reports.pdf import keep_headings_with_their_content

    document = QTextDocument()
    document.setPageSize(QSizeF(400, 300))
    layout = document.documentLayout()
    for lines in range(100, 160):  # pad until the heading lands in a page's last tenth
        document.setHtml("<p>x</p>" * lines + "<h3>Review</h3><p>Not reviewed.</p>")
        heading = document.lastBlock().previous()
        top = layout.blockBoundingRect(heading).top()
        if 300 - top % 300 < 0.1 * 300:
            break
    assert heading.text() == "Review" and 300 - top % 300 < 0.1 * 300
    assert keep_headings_with_their_content(document) == 1
    moved = layout.blockBoundingRect(document.lastBlock().previous()).top()
    assert moved % 300 < 0.1 * 300 and moved // 300 == top // 300 + 1  # the top of the next page
    assert keep_headings_with_their_content(document) == 0


def test_modality_codes_and_split_sizes_read_as_words():
    from busi_viewer.core.report_data import modality_text
    from training.report import split_sizes_text

    assert modality_text("OT") == "OT (other: a plain image file, or no modality stated)"
    assert modality_text("us") == "US (ultrasound)" and modality_text("XX") == "XX" and modality_text("") == "image"
    assert split_sizes_text({"train": 1859, "val": 399, "test": 397}) == "1859 training, 399 validation and 397 test"
