"""The viewer's side widgets in isolation: result panel, review panel, attributes panel, thumbnail strip.

Every widget is also grabbed to a PNG (tmp_path and /tmp/widget_shots/, light and dark palette) and the image
must not be uniform, i.e. the widget really painted something.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from busi_viewer.gui import thumbnails
from busi_viewer.gui.attributes_panel import (
    BURNED_IN_WARNING,
    NO_ATTRIBUTES,
    AttributesPanel,
)
from busi_viewer.gui.result_panel import AGREEMENT_CAPTION, ResultPanel
from busi_viewer.gui.review_panel import ReviewPanel
from busi_viewer.gui.state import (
    AgreementState,
    ResultState,
    ReviewEdit,
    ReviewState,
    ThumbState,
)
from busi_viewer.gui.thumbnails import (
    CLASS_COLOURS,
    THUMB_SIZE,
    ThumbnailModel,
    ThumbnailStrip,
    ThumbStateRole,
    make_thumbnail,
)

CLASSES = ("benign", "malignant", "normal")
SHOTS = Path("/tmp/widget_shots")


def _dark_palette() -> QPalette:
    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: "#202124", QPalette.ColorRole.WindowText: "#e8eaed",
        QPalette.ColorRole.Base: "#16171a", QPalette.ColorRole.AlternateBase: "#26282c",
        QPalette.ColorRole.Text: "#e8eaed", QPalette.ColorRole.Button: "#2d2f33",
        QPalette.ColorRole.ButtonText: "#e8eaed", QPalette.ColorRole.Highlight: "#3a6ea5",
        QPalette.ColorRole.HighlightedText: "#ffffff", QPalette.ColorRole.Mid: "#55585e",
        QPalette.ColorRole.Dark: "#111214", QPalette.ColorRole.Shadow: "#000000",
        QPalette.ColorRole.Light: "#3c3f44", QPalette.ColorRole.Midlight: "#34373b",
        QPalette.ColorRole.PlaceholderText: "#9aa0a6", QPalette.ColorRole.ToolTipBase: "#2d2f33",
        QPalette.ColorRole.ToolTipText: "#e8eaed",
    }
    for role, colour in roles.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b6f75"))
    return palette


def _pixels(widget: QWidget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    rows = np.frombuffer(image.constBits(), np.uint8, count=h * stride).reshape(h, stride)
    return rows[:, : 3 * w].reshape(h, w, 3).copy()  # copy: the buffer dies with ``image``


def _shoot(widget: QWidget, tmp_path: Path, name: str) -> np.ndarray:
    """Grab light and dark screenshots; return the light one. Fails when a grab is uniform."""
    widget.resize(widget.sizeHint().expandedTo(widget.size()))
    SHOTS.mkdir(parents=True, exist_ok=True)
    light = _pixels(widget)
    original = widget.palette()
    widget.setPalette(_dark_palette())
    dark = _pixels(widget)
    widget.setPalette(original)
    for suffix, pixels in (("", light), ("_dark", dark)):
        for folder in (tmp_path, SHOTS):
            cv2.imwrite(str(folder / f"{name}{suffix}.png"), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        assert pixels.size and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8, f"{name}{suffix} is blank"
    assert dark.mean() < light.mean() - 40, "the dark palette did not reach the widget (hard-coded background?)"
    white = (dark.min(axis=2) > 235).mean()
    assert white < 0.02, f"{name}: {white:.1%} of the dark screenshot is white (hard-coded light background?)"
    return light


def _find(widget: QWidget, cls, name: str):
    child = widget.findChild(cls, name)
    assert child is not None, f"no {cls.__name__} named {name!r}"
    return child


def _result(**overrides) -> ResultState:
    base = {
        "class_names": CLASSES, "probabilities": (0.10, 0.87, 0.03), "predicted": "malignant",
        "decision_rule": "malignant when p(malignant) ≥ 0.19 (chosen on validation)", "calibrated": True,
        "model_label": "busi-us 0.1.0 · tf_efficientnet_lite0", "device": "CPU", "seconds": 0.021,
        "low_confidence_below": 0.60,
    }
    base.update(overrides)
    return ResultState(**base)


# --- ResultPanel ---


def test_result_panel_shows_bars_values_and_predicted_class(qtbot, tmp_path):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.set_state(_result())
    panel.show()
    for name, p in zip(CLASSES, (0.10, 0.87, 0.03)):
        bar = _find(panel, QProgressBar, f"prob_bar_{name}")
        assert bar.value() / bar.maximum() == pytest.approx(p, abs=1e-3)
        assert _find(panel, QLabel, f"prob_value_{name}").text() == f"{p:.2f}"
        assert _find(panel, QLabel, f"prob_name_{name}").font().bold() == (name == "malignant")
    assert _find(panel, QLabel, "predicted_label").text() == "malignant"
    assert _find(panel, QLabel, "decision_rule").text().startswith("malignant when p(malignant)")
    assert _find(panel, QLabel, "calibration_label").text() == "calibrated (temperature scaling)"
    assert _find(panel, QLabel, "timing_label").text() == "CPU · 21 ms"
    assert _find(panel, QLabel, "model_label").text() == "busi-us 0.1.0 · tf_efficientnet_lite0"
    assert not _find(panel, QLabel, "result_message").isVisible()
    assert not _find(panel, QLabel, "low_confidence_badge").isVisible()

    panel.set_state(_result(calibrated=False, cached=True, seconds=None, device="CPU"))
    assert _find(panel, QLabel, "calibration_label").text() == "uncalibrated"
    assert _find(panel, QLabel, "timing_label").text() == "CPU · cached"
    panel.set_agreement(AgreementState(0.42, True, 0.58, 0.31, True, 0.44))
    _shoot(panel, tmp_path, "result_panel")


def test_result_panel_low_confidence_badge_only_when_flagged(qtbot, tmp_path):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.show()
    badge = _find(panel, QLabel, "low_confidence_badge")
    panel.set_state(_result(probabilities=(0.45, 0.40, 0.15), predicted="malignant", low_confidence=True))
    assert badge.isVisible()
    assert _find(panel, QProgressBar, "prob_bar_benign").isVisible()
    assert "LOW CONFIDENCE" in badge.text() and "max probability < 0.60" in badge.text()
    _shoot(panel, tmp_path, "result_panel_low_confidence")
    panel.set_state(_result(low_confidence=False))
    assert not badge.isVisible()


def test_result_panel_message_replaces_bars(qtbot, tmp_path):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_state(_result())
    panel.set_state(ResultState(class_names=CLASSES, message="No model: bundle not found (plain viewer)"))
    message = _find(panel, QLabel, "result_message")
    assert message.isVisible() and message.text() == "No model: bundle not found (plain viewer)"
    assert not _find(panel, QProgressBar, "prob_bar_malignant").isVisible()
    assert not _find(panel, QLabel, "predicted_label").isVisible()
    assert not _find(panel, QLabel, "low_confidence_badge").isVisible()
    panel.set_state(ResultState(class_names=CLASSES, message="Computing…", model_label="busi-us 0.1.0"))
    assert message.text() == "Computing…"
    _shoot(panel, tmp_path, "result_panel_message")


def test_result_panel_keeps_its_layout_while_computing(qtbot, tmp_path):
    """Between images nothing jumps: the bars stay where they were, empty, and "Computing…" stands in the
    prediction's place (showing and hiding the rows per image cost the result 16-18 ms on the 2-core VM)."""
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.resize(320, 480)
    panel.show()
    computing = ResultState(class_names=CLASSES, message="Computing…",
                            model_label="busi-us 0.1.0 · tf_efficientnet_lite0",
                            device="CPU", calibrated=True,
                            decision_rule="malignant when p(malignant) ≥ 0.19 (chosen on validation)",
                            operating_point=("malignant", 0.19), computing=True)
    panel.set_state(_result())
    bar = _find(panel, QProgressBar, "prob_bar_malignant")
    predicted = _find(panel, QLabel, "predicted_label")
    qtbot.waitUntil(lambda: bar.isVisible())
    qtbot.wait(20)  # the layout settles
    where = bar.geometry()
    panel.set_state(computing)
    qtbot.wait(20)
    assert bar.isVisible() and bar.value() == 0 and bar.geometry() == where
    assert bar.tick() == pytest.approx(0.19)  # the operating point stays marked
    assert [_find(panel, QLabel, f"prob_value_{name}").text() for name in CLASSES] == ["—"] * 3
    assert not any(_find(panel, QLabel, f"prob_name_{name}").font().bold() for name in CLASSES)
    assert predicted.isVisible() and predicted.text() == "Computing…"
    assert not _find(panel, QLabel, "result_message").isVisible()
    _shoot(panel, tmp_path, "result_panel_computing")
    # what belonged to the last image's result goes
    panel.set_state(_result(low_confidence=True, decision_override="p(malignant) 0.25 ≥ 0.19: malignant"))
    assert _find(panel, QLabel, "low_confidence_badge").isVisible()
    panel.set_state(computing)
    assert not _find(panel, QLabel, "low_confidence_badge").isVisible()
    assert not _find(panel, QLabel, "decision_override").isVisible()
    panel.set_state(_result())
    assert predicted.text() == "malignant" and _find(panel, QLabel, "prob_value_malignant").text() == "0.87"


def test_result_panel_rejects_mismatched_probabilities(qtbot):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    with pytest.raises(ValueError, match="2 probabilities for 3 classes"):
        panel.set_state(_result(probabilities=(0.5, 0.5)))


def test_agreement_box_values_baselines_and_hiding(qtbot):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_state(_result())
    box = _find(panel, QGroupBox, "agreement_box")
    assert not box.isVisible()
    panel.set_agreement(AgreementState(0.42, True, 0.58, 0.31, False, 0.44))
    assert box.isVisible()
    texts = {name: _find(panel, QLabel, name).text() for name in (
        "agreement_iou", "agreement_iou_baseline", "agreement_pointing", "agreement_pointing_baseline",
        "agreement_energy", "agreement_energy_baseline")}
    assert texts == {
        "agreement_iou": "0.42", "agreement_iou_baseline": "0.31", "agreement_pointing": "hit",
        "agreement_pointing_baseline": "miss", "agreement_energy": "58 %", "agreement_energy_baseline": "44 %",
    }
    assert any(label.text() == AGREEMENT_CAPTION for label in box.findChildren(QLabel))
    assert not _find(panel, QLabel, "agreement_note").isVisible()
    panel.set_agreement(AgreementState(None, None, None, None, None, None, note="empty mask"))
    assert _find(panel, QLabel, "agreement_iou").text() == "—"
    assert _find(panel, QLabel, "agreement_note").isVisible()
    panel.set_agreement(None)
    assert not box.isVisible()


# --- ReviewPanel ---


@pytest.fixture
def review(qtbot):
    panel = ReviewPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_state(ReviewState(class_names=CLASSES, model_version="busi-us 0.1.0"))
    edits: list[ReviewEdit] = []
    panel.reviewChanged.connect(edits.append)
    return panel, edits


def test_review_buttons_emit_and_are_exclusive(qtbot, review):
    panel, edits = review
    agree, disagree, unsure = (_find(panel, QPushButton, f"review_{d}") for d in ("agree", "disagree", "unsure"))
    qtbot.mouseClick(agree, Qt.MouseButton.LeftButton)
    assert edits[-1] == ReviewEdit("agree", None, "")
    qtbot.mouseClick(unsure, Qt.MouseButton.LeftButton)
    assert edits[-1] == ReviewEdit("unsure", None, "")
    assert not agree.isChecked() and unsure.isChecked()
    qtbot.mouseClick(unsure, Qt.MouseButton.LeftButton)  # second click: nothing checked
    assert edits[-1] == ReviewEdit(None, None, "")
    assert not any(b.isChecked() for b in (agree, disagree, unsure))
    assert len(edits) == 3


def test_review_class_combo_only_for_disagree(qtbot, review):
    panel, edits = review
    combo = _find(panel, QComboBox, "review_class")
    assert not combo.isEnabled()
    qtbot.mouseClick(_find(panel, QPushButton, "review_disagree"), Qt.MouseButton.LeftButton)
    assert combo.isEnabled()
    assert edits[-1] == ReviewEdit("disagree", "benign", "")  # default: the first class
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)
    assert edits[-1] == ReviewEdit("disagree", "malignant", "")
    qtbot.mouseClick(_find(panel, QPushButton, "review_agree"), Qt.MouseButton.LeftButton)
    assert not combo.isEnabled()
    assert edits[-1] == ReviewEdit("agree", None, "")


def test_review_note_emits_on_each_keystroke(qtbot, review):
    panel, edits = review
    qtbot.mouseClick(_find(panel, QPushButton, "review_agree"), Qt.MouseButton.LeftButton)
    note = _find(panel, QPlainTextEdit, "review_note")
    qtbot.keyClicks(note, "cyst")
    assert [e.note for e in edits[-4:]] == ["c", "cy", "cys", "cyst"]
    assert edits[-1] == ReviewEdit("agree", None, "cyst")


def test_review_set_state_does_not_emit_and_restores_controls(qtbot, review, tmp_path):
    panel, edits = review
    panel.set_state(ReviewState(CLASSES, "disagree", "normal", "looks like fat lobule", "busi-us 0.2.0"))
    panel.set_state(ReviewState(CLASSES, "agree", None, "", "busi-us 0.2.0"))
    panel.set_state(ReviewState(CLASSES, "disagree", "normal", "looks like fat lobule", "busi-us 0.2.0"))
    assert edits == []
    assert _find(panel, QPushButton, "review_disagree").isChecked()
    assert _find(panel, QComboBox, "review_class").currentText() == "normal"
    assert _find(panel, QComboBox, "review_class").isEnabled()
    assert _find(panel, QPlainTextEdit, "review_note").toPlainText() == "looks like fat lobule"
    assert _find(panel, QLabel, "review_model_version").text() == "Reviewed against model busi-us 0.2.0"
    assert panel.edit() == ReviewEdit("disagree", "normal", "looks like fat lobule")
    _shoot(panel, tmp_path, "review_panel")


def test_review_apply_decision_acts_like_a_click(qtbot, review):
    panel, edits = review
    panel.apply_decision("disagree")
    assert edits[-1] == ReviewEdit("disagree", "benign", "")
    assert _find(panel, QComboBox, "review_class").isEnabled()
    panel.apply_decision("disagree")  # a repeated shortcut keeps the decision
    assert edits[-1].decision == "disagree" and len(edits) == 2
    panel.apply_decision(None)
    assert edits[-1] == ReviewEdit(None, None, "")
    with pytest.raises(ValueError):
        panel.apply_decision("maybe")


def test_review_none_state_disables_and_never_emits(qtbot, review):
    panel, edits = review
    panel.set_state(None)
    assert not panel.isEnabled()
    assert not _find(panel, QPushButton, "review_agree").isVisible()
    assert _find(panel, QLabel, "review_placeholder").isVisible()
    panel.apply_decision("agree")
    assert edits == []


# --- AttributesPanel ---

ATTRS = {"Modality": "US", "Manufacturer": "Acme Sono", "Rows × Columns": "480 × 640", "Bits stored": "8"}
IDS = {"PatientName": "DOE^JANE", "PatientID": "12345678"}


def test_identifiers_hidden_until_ticked_and_rehidden(qtbot, tmp_path):
    panel = AttributesPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_attributes(ATTRS, IDS, None, "US")
    shown = dict(panel.table_rows())
    assert shown == ATTRS
    assert "DOE^JANE" not in str(panel.table_rows())
    assert _find(panel, QLabel, "identifiers_hidden_note").text() == "2 identifying fields hidden"
    reveal = _find(panel, QCheckBox, "reveal_identifiers")
    assert not reveal.isChecked()
    _shoot(panel, tmp_path, "attributes_panel")
    qtbot.mouseClick(reveal, Qt.MouseButton.LeftButton)
    assert reveal.isChecked()
    assert dict(panel.table_rows()) == {**IDS, **ATTRS}
    assert not _find(panel, QLabel, "identifiers_hidden_note").isVisible()
    _shoot(panel, tmp_path, "attributes_panel_revealed")
    panel.set_attributes(ATTRS, {"PatientName": "ROE^RICHARD"}, "NO", "US")
    assert not reveal.isChecked()
    assert "ROE^RICHARD" not in str(panel.table_rows())


@pytest.mark.parametrize(
    ("burned_in", "modality", "warned"),
    [("YES", "MG", True), ("YES", "US", True), (None, "US", True), ("NO", "US", False), (None, "MG", False),
     (None, "OT", False), ("yes ", "CT", True)],
)
def test_burned_in_warning(qtbot, burned_in, modality, warned):
    panel = AttributesPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_attributes(ATTRS, {}, burned_in, modality)
    warning = _find(panel, QLabel, "burned_in_warning")
    assert warning.isVisible() == warned
    assert "Image pixels may contain burned-in identifying text" in warning.text() == BURNED_IN_WARNING
    assert not _find(panel, QCheckBox, "reveal_identifiers").isVisible()  # nothing to reveal


def test_plain_image_has_no_attributes(qtbot, tmp_path):
    panel = AttributesPanel()
    qtbot.addWidget(panel)
    panel.show()
    panel.set_attributes({}, {}, None, "OT")
    assert _find(panel, QLabel, "no_attributes").isVisible()
    assert _find(panel, QLabel, "no_attributes").text() == NO_ATTRIBUTES
    assert not panel.findChild(QWidget, "attributes_table").isVisible()
    assert not _find(panel, QLabel, "burned_in_warning").isVisible()


# --- ThumbnailStrip ---


def _write_images(folder: Path, n: int) -> list[Path]:
    paths = []
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = (300, 420) if i % 2 else (500, 380)
        yy, xx = np.mgrid[0:h, 0:w]
        blob = ((yy - h / 2) ** 2 + (xx - w * (0.3 + 0.1 * i)) ** 2 < (min(h, w) / 5) ** 2) * 120
        image = (np.clip(40 + blob + rng.normal(0, 25, (h, w)), 0, 255)).astype(np.uint8)
        path = folder / f"case_{i:03d}_long_file_name_for_eliding.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def test_make_thumbnail_downscales_to_the_limit(tmp_path):
    path = _write_images(tmp_path, 1)[0]  # 500 x 380
    image = make_thumbnail(path)
    assert (image.width(), image.height()) == (round(380 * THUMB_SIZE / 500), THUMB_SIZE)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((40, 30), 128, np.uint8))
    assert (make_thumbnail(small).width(), make_thumbnail(small).height()) == (30, 40)  # never upscaled


@pytest.fixture
def strip_with_items(qtbot, tmp_path):
    paths = _write_images(tmp_path, 5)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image at all" * 10)
    paths.insert(2, bad)
    strip = ThumbnailStrip()
    qtbot.addWidget(strip)
    strip.resize(strip.width(), 800)
    strip.show()
    predicted = [None, "benign", None, "malignant", "normal", None]
    items = [ThumbState(p, predicted=c, reviewed=i in (1, 4)) for i, (p, c) in enumerate(zip(paths, predicted))]
    strip.set_items(items)
    model = strip.thumbnail_model()
    qtbot.waitUntil(lambda: model.pending() == 0 and all(
        model.data(model.index(r), Qt.ItemDataRole.DecorationRole) is not None
        or model.data(model.index(r), ThumbStateRole).unreadable for r in range(len(paths))), timeout=20000)
    yield strip, paths
    strip.shutdown()


def test_thumbnails_arrive_and_bad_file_is_unreadable(qtbot, strip_with_items, tmp_path):
    strip, paths = strip_with_items
    model = strip.thumbnail_model()
    states = [model.data(model.index(r), ThumbStateRole) for r in range(len(paths))]
    assert [s.unreadable for s in states] == [False, False, True, False, False, False]
    assert states[2].error
    assert states[1].predicted == "benign" and states[1].reviewed  # other fields survive the marking
    for r in (0, 1, 3):
        pixmap = model.data(model.index(r), Qt.ItemDataRole.DecorationRole)
        assert max(pixmap.width(), pixmap.height()) == THUMB_SIZE
    assert model.data(model.index(2), Qt.ItemDataRole.DecorationRole) is None
    assert "unreadable" in model.data(model.index(2), Qt.ItemDataRole.ToolTipRole)
    strip.set_current(3)
    pixels = _shoot(strip, tmp_path, "thumbnail_strip")
    # The marker colours really are drawn: find the malignant red and the benign green in the grab.
    for name in ("malignant", "benign"):
        colour = np.array(QColor(CLASS_COLOURS[name]).getRgb()[:3])
        assert (np.abs(pixels.astype(int) - colour).sum(axis=2) < 30).sum() > 20, f"no {name} marker drawn"


def test_clicking_a_row_emits_image_activated(qtbot, strip_with_items):
    strip, _paths = strip_with_items
    with qtbot.assertNotEmitted(strip.imageActivated):
        strip.set_current(0)
    assert strip.currentIndex().row() == 0
    rect = strip.visualRect(strip.thumbnail_model().index(3))
    with qtbot.waitSignal(strip.imageActivated, timeout=2000) as blocker:
        qtbot.mouseClick(strip.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [3]
    with qtbot.waitSignal(strip.imageActivated, timeout=2000) as blocker:
        qtbot.keyClick(strip, Qt.Key.Key_Down)
    assert blocker.args == [4]


def test_update_item_changes_markers_and_bounds(qtbot, strip_with_items):
    strip, paths = strip_with_items
    model = strip.thumbnail_model()
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        strip.update_item(0, ThumbState(paths[0], predicted="malignant", reviewed=True))
    assert model.data(model.index(0), ThumbStateRole).predicted == "malignant"
    with pytest.raises(IndexError):
        strip.update_item(99, ThumbState(paths[0]))
    # A known-bad path stays marked even when the window hands a fresh state for it.
    strip.update_item(2, ThumbState(paths[2], predicted="benign"))
    assert model.data(model.index(2), ThumbStateRole).unreadable


def test_only_visible_rows_are_requested(qtbot, tmp_path):
    """With many rows, far-off rows are never loaded while the user does not scroll there."""
    paths = _write_images(tmp_path, 3)
    many = [ThumbState(paths[i % 3].with_name(f"missing_{i:04d}.png")) for i in range(400)]
    many[:3] = [ThumbState(p) for p in paths]
    strip = ThumbnailStrip()
    qtbot.addWidget(strip)
    strip.resize(strip.width(), 400)
    strip.show()
    strip.set_items(many)
    model = strip.thumbnail_model()
    qtbot.waitUntil(lambda: model.data(model.index(3), ThumbStateRole).unreadable and model.pending() == 0,
                    timeout=20000)
    touched = [r for r in range(400) if model.data(model.index(r), ThumbStateRole).unreadable]
    assert touched and max(touched) < 60, "rows far below the viewport were loaded"
    assert not model.data(model.index(399), ThumbStateRole).unreadable
    strip.shutdown()


def test_pixmap_cache_is_bounded_lru_and_shutdown_stops_requests(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "PIXMAP_CACHE_SIZE", 2)
    paths = _write_images(tmp_path, 4)
    model = ThumbnailModel()
    model.set_items([ThumbState(p) for p in paths])
    for row in range(4):  # one at a time, so the order of arrival is the order of use
        model.request(row)
        qtbot.waitUntil(lambda row=row: model.is_cached(row), timeout=10000)
    assert model.cached_count() == 2
    assert [model.is_cached(r) for r in range(4)] == [False, False, True, True]
    assert model.shutdown()
    model.request(0)
    assert model.pending() == 0


def test_ctrl_drag_moves_the_window_of_deep_images_from_what_is_shown(qtbot):
    from busi_viewer.core.image_record import ImageRecord, Window
    from busi_viewer.gui.display_panel import CUSTOM_WINDOW, DisplayPanel

    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))  # 12-bit values 0..4080
    rgb = np.repeat((ramp >> 4).astype(np.uint8)[..., None], 3, axis=2)
    record = ImageRecord(path=Path("deep.dcm"), format="DICOM", modality="US", pixels=ramp, rgb=rgb,
                         bits_stored=12, photometric="MONOCHROME2", window=Window(2000.0, 1000.0))
    panel = DisplayPanel()
    qtbot.addWidget(panel)
    panel.reset_for(record)
    seen = []
    panel.adjustChanged.connect(seen.append)
    panel.drag_window(64, 0)  # the drag starts from the file's window, which "As rendered" shows
    assert seen[-1].window_center == 2000.0 and seen[-1].window_width > 1000.0
    panel.drag_window(0, -32)  # up lowers the level
    assert panel.adjust.window_center < 2000.0 and panel.adjust.window_width == seen[0].window_width
    assert panel.window_combo.currentText().startswith(CUSTOM_WINDOW)
    assert panel.window_combo.count() == 5  # As rendered, File, Full range, Auto, one Custom entry reused
    panel.window_combo.setCurrentIndex(1)  # a preset still applies after a drag
    assert (panel.adjust.window_center, panel.adjust.window_width) == (2000.0, 1000.0)


def test_result_panel_out_of_scope_shows_no_class_and_fades_the_bars(qtbot, tmp_path):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.show()
    why = "Outside this model's scope: this image is unlike the ultrasound images it was trained on"
    panel.set_state(_result(probabilities=(0.20, 0.74, 0.06), predicted="malignant", low_confidence=True,
                            scope_warning=why))
    predicted = _find(panel, QLabel, "predicted_label")
    assert predicted.text() == "Out of scope" and predicted.isVisible()
    warning = _find(panel, QLabel, "scope_warning")
    assert warning.isVisible() and warning.text() == why
    rule = _find(panel, QLabel, "decision_rule").text()
    assert rule == "Most probable class: malignant (not a finding)"
    assert not _find(panel, QLabel, "prob_name_malignant").font().bold()
    assert not _find(panel, QLabel, "low_confidence_badge").isVisible()  # no badge on a class that is not one
    bars = _find(panel, QWidget, "prob_bars")
    assert bars.isVisible() and bars.graphicsEffect().isEnabled()
    assert _find(panel, QLabel, "prob_value_malignant").text() == "0.74"  # still there to read
    _shoot(panel, tmp_path, "result_panel_out_of_scope")
    panel.set_state(_result())
    assert not warning.isVisible() and not bars.graphicsEffect().isEnabled()
    assert predicted.text() == "malignant" and _find(panel, QLabel, "prob_name_malignant").font().bold()


def test_result_panel_marks_the_threshold_and_says_when_it_overrides_the_most_probable_class(qtbot, tmp_path):
    panel = ResultPanel()
    qtbot.addWidget(panel)
    panel.show()
    said = ("Malignant although benign is more probable (0.62): the operating rule decides, p(malignant) = 0.31 "
            "≥ 0.05, the threshold chosen on validation.")
    panel.set_state(_result(probabilities=(0.62, 0.31, 0.07), predicted="malignant",
                            operating_point=("malignant", 0.05), decision_override=said))
    override = _find(panel, QLabel, "decision_override")
    assert override.isVisible() and override.text() == said
    assert _find(panel, QProgressBar, "prob_bar_malignant").tick() == 0.05
    assert _find(panel, QProgressBar, "prob_bar_benign").tick() is None
    pixels = _shoot(panel, tmp_path, "result_panel_override")
    # the tick is drawn: the malignant bar's column at 5 % differs from the same column of the benign bar
    bar = _find(panel, QProgressBar, "prob_bar_malignant")
    top_left = bar.mapTo(panel, bar.rect().topLeft())
    benign = _find(panel, QProgressBar, "prob_bar_benign").mapTo(panel, bar.rect().topLeft())
    x = top_left.x() + round(1.5 + (bar.width() - 4) * 0.05) + 1
    y_m, y_b = top_left.y() + bar.height() // 2, benign.y() + bar.height() // 2
    scale = pixels.shape[1] / panel.width()
    assert np.abs(pixels[round(y_m * scale), round(x * scale)].astype(int)
                  - pixels[round(y_b * scale), round(x * scale)].astype(int)).max() > 60
    panel.set_state(_result(operating_point=("malignant", 0.05)))  # malignant decided and most probable
    assert not override.isVisible()
