"""The main window end to end (offscreen): a folder of generated images, keyboard review, explanation layers,
reviews that survive a restart, stale results dropped, worker errors surfaced, and the --smoke-test entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QMessageBox, QWidget

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.agreement import agreement
from busi_viewer.core.phantoms import write_phantom_dataset
from busi_viewer.core.reviews import ReviewStore, default_reviews_path
from tests.helpers.gui import open_window
from tests.helpers.reviews import write_damaged_reviews

SHOTS = Path(os.environ.get("BUSI_SCREENSHOTS", "")) if os.environ.get("BUSI_SCREENSHOTS") else None
WAIT_MS = 60_000


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "study"
    write_phantom_dataset(folder, {"benign": 2, "malignant": 2, "normal": 1}, seed=3, size=(120, 150))
    (folder / "zz_broken.png").write_bytes(b"this is not a png at all")
    return folder


@pytest.fixture
def window(qtbot, tiny_bundle):
    win = open_window(qtbot, tiny_bundle)
    yield win
    win.close()


def _view_pixels(qtbot, win) -> np.ndarray:
    """(H, W, 3) uint8 of the image view as painted, after the pending repaint has happened."""
    qtbot.wait(50)
    grabbed = win.view.grab().toImage()
    image = grabbed.convertToFormat(grabbed.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * height)
    return data.reshape(height, image.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def _shot(win, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        win.grab().save(str(SHOTS / f"{name}.png"))


def _open_and_wait(qtbot, win, folder: Path) -> None:
    with qtbot.waitSignal(win.resultShown, timeout=WAIT_MS):
        assert win.open_folder(folder)


def _key(qtbot, win, key) -> None:
    qtbot.keyClick(win, key)


def test_banner_is_always_visible(window):
    assert RESEARCH_USE_BANNER in window.windowTitle()
    assert window.banner.isVisible() and window.banner.text() == RESEARCH_USE_BANNER


def test_open_folder_navigate_with_keys_and_see_results(qtbot, window, image_folder):
    _open_and_wait(qtbot, window, image_folder)
    assert len(window.paths) == 6 and window.index == 0
    assert window.result is not None and window.result.path == window.paths[0]
    probabilities = window.result.prediction.probabilities
    assert abs(float(np.sum(probabilities)) - 1) < 1e-5
    _shot(window, "main_first_image")

    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_Down)
    assert window.index == 1 and window.result.path == window.paths[1]
    with qtbot.waitSignal(window.imageShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_End)
    assert window.index == 5
    # The last file is unreadable: its reason is shown in place and navigation goes on.
    qtbot.waitUntil(lambda: window.thumbs[5].unreadable, timeout=WAIT_MS)
    assert window.record is None and not window.review_panel.isEnabled()  # nothing to review
    _shot(window, "main_unreadable")
    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_Up)
    assert window.index == 4 and window.record is not None
    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_Home)
    assert window.index == 0


def test_heatmap_toggle_opacity_and_mask_change_rendered_pixels(qtbot, window, image_folder):
    _open_and_wait(qtbot, window, image_folder)
    window.view.fit()
    with_heatmap = _view_pixels(qtbot, window)
    legend_width = window.view.colorbar.width()
    assert window.view.colorbar.isVisible() and legend_width > 50
    _key(qtbot, window, Qt.Key.Key_H)
    assert not window.heatmap_check.isChecked()
    without = _view_pixels(qtbot, window)
    # the legend goes and the image view takes its room back
    assert not window.view.colorbar.isVisible() and without.shape[1] >= with_heatmap.shape[1] + legend_width
    _key(qtbot, window, Qt.Key.Key_H)
    qtbot.wait(50)
    assert window.view.colorbar.isVisible() and _view_pixels(qtbot, window).shape == with_heatmap.shape
    window.opacity_slider.setValue(0)
    bare = _view_pixels(qtbot, window)
    assert np.abs(with_heatmap.astype(int) - bare).sum() > 0, "the heatmap changed nothing on screen"
    window.opacity_slider.setValue(10)
    faint = _view_pixels(qtbot, window)
    window.opacity_slider.setValue(90)
    strong = _view_pixels(qtbot, window)
    assert np.abs(strong.astype(int) - bare).sum() > np.abs(faint.astype(int) - bare).sum() > 0
    # evidence below the floor is not drawn: raising it to 90 % brings most of the bare image back
    window.floor_slider.setValue(90)
    assert window.settings.evidence_floor == 0.9 and window.floor_label.text() == "Hide below 90 %"
    high_floor = _view_pixels(qtbot, window)
    assert np.abs(high_floor.astype(int) - bare).sum() < np.abs(strong.astype(int) - bare).sum()
    _shot(window, "main_heatmap_strong")

    assert window.mask is not None and window.mask.any()  # phantoms carry masks
    window.heatmap_check.setChecked(False)
    mask_on = _view_pixels(qtbot, window)
    _key(qtbot, window, Qt.Key.Key_M)
    mask_off = _view_pixels(qtbot, window)
    green = lambda img: int(((img[..., 1] > 180) & (img[..., 0] < 100) & (img[..., 2] < 100)).sum())  # noqa: E731
    assert green(mask_on) > green(mask_off) + 20
    # the scores follow the result: computed by hand from the shown heatmap and the mask, shown in the panel
    qtbot.waitUntil(lambda: window.agreement is not None, timeout=30_000)
    expected = agreement(window.result.prediction.heatmap, window.mask)
    assert window.agreement == expected
    iou_cell = window.result_panel.findChild(QLabel, "agreement_iou")
    assert window.result_panel.findChild(QWidget, "agreement_box").isVisible()
    assert iou_cell.text() == f"{expected.iou_otsu:.2f}"


def test_hashes_still_queued_when_the_window_closes_are_dropped(qtbot, tiny_bundle, image_folder):
    """A batch the folder hasher sent just before the window closed arrives after the review store is closed:
    it must be dropped, not raise inside the slot (seen once under load in the full suite)."""
    win = open_window(qtbot, tiny_bundle)
    _open_and_wait(qtbot, win, image_folder)
    hasher = win._hasher
    win.close()
    hasher.hashed.emit([(0, "ab" * 32)])  # as if queued before the close; pytest-qt fails on any slot exception
    qtbot.wait(50)


def test_review_is_saved_at_once_and_survives_a_restart(qtbot, tiny_bundle, image_folder):
    first = open_window(qtbot, tiny_bundle)
    _open_and_wait(qtbot, first, image_folder)
    _key(qtbot, first, Qt.Key.Key_A)  # agree
    with qtbot.waitSignal(first.resultShown, timeout=WAIT_MS):
        _key(qtbot, first, Qt.Key.Key_Down)
    first.review_panel.apply_decision("disagree")
    qtbot.waitUntil(lambda: "2 of 6 reviewed" in first.progress_label.text(), timeout=WAIT_MS)
    saved_sha = first.sha256
    # No orderly shutdown of the store: the row must already be on disk.
    from busi_viewer.core.reviews import ReviewStore

    with ReviewStore() as other:
        assert other.get(saved_sha) is not None and other.get(saved_sha).decision == "disagree"
    first.close()

    second = open_window(qtbot, tiny_bundle)
    try:
        _open_and_wait(qtbot, second, image_folder)
        qtbot.waitUntil(lambda: "2 of 6 reviewed" in second.progress_label.text(), timeout=WAIT_MS)
        assert second.thumbs[0].reviewed and second.thumbs[1].reviewed and not second.thumbs[2].reviewed
        csv_path = image_folder.parent / "reviews.csv"
        assert second.export_reviews(csv_path) == 2
        assert "agree" in csv_path.read_text(encoding="utf-8")
    finally:
        second.close()


def _dismiss(qtbot, win) -> None:
    """Close the warning as the user would; the window takes the keyboard back."""
    win.warning_box.close()
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=WAIT_MS)


def test_a_damaged_reviews_database_is_told_once_and_reviews_go_to_a_recovered_copy(qtbot, tiny_bundle,
                                                                                     image_folder):
    damaged = write_damaged_reviews(default_reviews_path())
    before = damaged.read_bytes()
    win = open_window(qtbot, tiny_bundle)
    try:
        qtbot.waitUntil(lambda: win.warning_box is not None and win.warning_box.isVisible(), timeout=WAIT_MS)
        assert "damaged" in win.warning_box.windowTitle() and str(damaged) in win.warning_box.text()
        assert "Reviews database damaged" in win.statusBar().currentMessage()
        recovered = win.reviews.path
        assert recovered != damaged and str(recovered) in win.warning_box.text()
        _dismiss(qtbot, win)
        _open_and_wait(qtbot, win, image_folder)
        with qtbot.waitSignal(win.resultShown, timeout=WAIT_MS):
            _key(qtbot, win, Qt.Key.Key_Down)
        _key(qtbot, win, Qt.Key.Key_A)  # saved to the recovered copy (pytest-qt fails on any slot exception)
        qtbot.waitUntil(lambda: "1 of 6 reviewed" in win.progress_label.text(), timeout=WAIT_MS)
        assert len(win.findChildren(QMessageBox)) == 1  # told once
        saved_sha = win.sha256
    finally:
        win.close()
    with ReviewStore(recovered) as store:
        assert store.get(saved_sha).decision == "agree"
    assert damaged.read_bytes() == before


def test_review_store_errors_in_a_session_are_shown_not_raised(qtbot, window, image_folder):
    from busi_viewer.gui.state import ReviewEdit

    _open_and_wait(qtbot, window, image_folder)
    qtbot.waitUntil(lambda: "indexing" not in window.progress_label.text(), timeout=WAIT_MS)
    window.reviews.close()  # every call now raises ReviewStoreError, as a file damaged mid-session would
    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_Down)  # reading the image's review fails
    assert not window.review_panel.isEnabled()  # nothing to overwrite a review that could not be read
    assert "could not be read" in window.warning_box.windowTitle()
    window.review_panel.reviewChanged.emit(ReviewEdit("agree", None, ""))  # a save that fails
    assert "Review NOT saved" in window.statusBar().currentMessage()
    window._hasher.hashed.emit([(2, window.hashes[2])])  # a folder batch whose lookup fails
    assert "Reviews could not be read" in window.statusBar().currentMessage()
    assert len(window.findChildren(QMessageBox)) == 1  # one dialog; later failures only on the status bar


def test_unusable_user_folders_are_told_and_the_viewer_works(qtbot, tiny_bundle, image_folder, tmp_path,
                                                             home_is_a_file):
    home = home_is_a_file
    win = open_window(qtbot, tiny_bundle)
    try:
        qtbot.waitUntil(lambda: win.warning_box is not None and win.warning_box.isVisible(), timeout=WAIT_MS)
        text = win.warning_box.text()
        assert all(f"{sub} folder {home / sub}" in text for sub in ("data", "config", "cache")), text
        assert win.reviews is not None and win.reviews.path.parent.parent == tmp_path / "tmp"
        _dismiss(qtbot, win)
        _open_and_wait(qtbot, win, image_folder)
        _key(qtbot, win, Qt.Key.Key_A)
        qtbot.waitUntil(lambda: "1 of 6 reviewed" in win.progress_label.text(), timeout=WAIT_MS)
    finally:
        win.close()  # saves the settings, to the temporary folder


def test_holding_the_arrow_key_shows_the_result_of_the_image_landed_on(qtbot, window, image_folder):
    _open_and_wait(qtbot, window, image_folder)
    for _ in range(4):
        _key(qtbot, window, Qt.Key.Key_Down)  # no waiting: key repeat
    assert window.index == 4
    qtbot.waitUntil(lambda: window.result is not None and window.result.path == window.paths[4], timeout=WAIT_MS)
    assert window.record.path == window.paths[4]


def test_while_computing_the_panel_keeps_the_result_layout_with_empty_bars(qtbot, window, image_folder, monkeypatch):
    """What a reader sees between an image and its result: the bars where they were, empty, "—" for every value
    and "Computing…" as the prediction; then the new numbers in the same places."""
    from busi_viewer.inference.prediction import PredictorBase as Predictor

    _open_and_wait(qtbot, window, image_folder)
    panel = window.result_panel
    bar = panel.findChild(QWidget, "prob_bar_malignant")
    value = panel.findChild(QLabel, "prob_value_malignant")
    where = bar.geometry()
    released = threading.Event()
    original = Predictor.predict

    def gated(self, rgb, explain=True):
        released.wait(30)
        return original(self, rgb, explain)

    monkeypatch.setattr(Predictor, "predict", gated)
    with qtbot.waitSignal(window.imageShown, timeout=WAIT_MS):
        window.go_to(3)  # not prefetched yet (the neighbours of image 0 are)
    try:
        assert panel.findChild(QLabel, "predicted_label").text() == "Computing…"
        assert value.text() == "—" and bar.isVisible() and bar.value() == 0 and bar.geometry() == where
        assert not panel.findChild(QLabel, "result_message").isVisible()
        assert panel.findChild(QLabel, "decision_rule").isVisible()
    finally:
        released.set()
    qtbot.waitUntil(lambda: window.result is not None and window.result.path == window.paths[3], timeout=WAIT_MS)
    expected = window.result.prediction.probability("malignant")
    assert value.text() == f"{expected:.2f}" and bar.geometry() == where


def test_worker_errors_surface_and_the_app_keeps_working(qtbot, window, image_folder, monkeypatch):
    from busi_viewer.inference.prediction import PredictorBase as Predictor

    _open_and_wait(qtbot, window, image_folder)
    original = Predictor.predict

    def broken(self, rgb, explain=True):
        raise RuntimeError("simulated CUDA out of memory")

    monkeypatch.setattr(Predictor, "predict", broken)
    with qtbot.waitSignal(window.service.failed, timeout=WAIT_MS):
        window.go_to(3)  # not prefetched yet (the neighbours of image 0 are)
    qtbot.waitUntil(lambda: "simulated CUDA out of memory" in window.statusBar().currentMessage(), timeout=WAIT_MS)
    monkeypatch.setattr(Predictor, "predict", original)
    assert "Inference failed" in window.result_panel.findChild(QLabel, "result_message").text()
    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_Down)
    assert window.index == 4


def test_missing_model_leaves_a_plain_viewer(qtbot, tmp_path, image_folder):
    win = open_window(qtbot, tmp_path / "no-such-bundle")
    try:
        qtbot.waitUntil(lambda: win.model is not None, timeout=WAIT_MS)
        assert not win.model.loaded and win.model.error
        with qtbot.waitSignal(win.imageShown, timeout=WAIT_MS):
            win.open_folder(image_folder)
        assert win.record is not None and win.result is None
        assert "No model" in win.model_label.text()
        assert win.warning_box is not None and "Model not available" in win.warning_box.windowTitle()
        win.warning_box.close()  # as the user would; the window takes the keyboard back
        win.activateWindow()
        qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=WAIT_MS)
        with qtbot.waitSignal(win.imageShown, timeout=WAIT_MS):
            _key(qtbot, win, Qt.Key.Key_Down)
        assert win.index == 1
    finally:
        win.close()


def test_settings_persist_between_sessions(qtbot, tiny_bundle):
    from busi_viewer.gui.settings import load_settings

    first = open_window(qtbot, tiny_bundle)
    first.opacity_slider.setValue(70)
    first.colormap_combo.setCurrentText("viridis")
    first.close()
    settings = load_settings()
    assert settings.opacity == pytest.approx(0.7) and settings.colormap == "viridis"


def test_smoke_test_entry_point(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", BUSI_VIEWER_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "busi_viewer.gui.app", "--smoke-test", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "smoke test OK" in done.stdout


def test_smoke_test_passes_when_the_home_folder_is_a_file(tmp_path, tiny_bundle):
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    (tmp_path / "tmp").mkdir()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", BUSI_VIEWER_HOME=str(home), TMPDIR=str(tmp_path / "tmp"))
    done = subprocess.run([sys.executable, "-m", "busi_viewer.gui.app", "--smoke-test", "--device", "cpu",
                           "--model", str(tiny_bundle)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "smoke test OK" in done.stdout
    assert f"cannot use the config folder {home / 'config'}" in done.stderr


def test_display_controls_change_the_screen_not_the_model_input(qtbot, window, image_folder):
    _open_and_wait(qtbot, window, image_folder)
    window.heatmap_check.setChecked(False)
    window.mask_check.setChecked(False)
    plain = _view_pixels(qtbot, window)
    model_input, result = window.record.rgb.copy(), window.result
    requests = window.service.latest_request_id
    _key(qtbot, window, Qt.Key.Key_I)
    inverted = _view_pixels(qtbot, window)
    assert window.display.adjust.invert
    assert np.abs(plain.astype(int) - inverted).mean() > 20
    # the model input is untouched: same pixels, same result, and no new inference was asked for
    assert np.array_equal(window.record.rgb, model_input)
    assert window.result is result and window.service.latest_request_id == requests
    _key(qtbot, window, Qt.Key.Key_I)
    window.display.contrast_slider.setValue(80)
    assert np.abs(_view_pixels(qtbot, window).astype(int) - plain).mean() > 3
    _key(qtbot, window, Qt.Key.Key_R)
    assert window.view.orientation[0] == 90


def test_ctrl_drag_on_the_image_changes_contrast_and_brightness(qtbot, window, image_folder):
    from PySide6.QtCore import QPointF

    from tests.helpers.mouse import drag

    _open_and_wait(qtbot, window, image_folder)
    window.heatmap_check.setChecked(False)
    window.mask_check.setChecked(False)
    plain = _view_pixels(qtbot, window)
    centre = QPointF(window.view.width() / 2, window.view.height() / 2)
    drag(qtbot, window.view, centre, centre + QPointF(120, -60), modifiers=Qt.KeyboardModifier.ControlModifier)
    adjust = window.display.adjust
    assert adjust.contrast > 1.0 and adjust.brightness > 0.0  # right raises contrast, up brightens (8-bit PNG)
    assert window.display.contrast_slider.value() > 0
    assert np.abs(_view_pixels(qtbot, window).astype(int) - plain).mean() > 3


def test_length_measurement_says_px_on_uncalibrated_images(qtbot, window, image_folder):
    _open_and_wait(qtbot, window, image_folder)
    _key(qtbot, window, Qt.Key.Key_L)
    assert window.display.measure_button.isChecked()
    window.view.set_measurement((10.0, 10.0), (40.0, 50.0))
    text = window.display.measure_label.text()
    assert "50.0 px" in text and "uncalibrated" in text


def test_multiframe_cine_and_per_frame_explanation(qtbot, window):
    from busi_viewer.core.demo import demo_folder

    folder = demo_folder()
    cine = folder / "dicom" / "examples_ybr_color.dcm"  # 30 frames, ships inside pydicom
    if not cine.is_file():
        pytest.skip("pydicom's examples_ybr_color.dcm is not installed")
    _open_and_wait(qtbot, window, folder)
    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        window.go_to(window.paths.index(cine))
    assert window.cine.isVisible() and window.record.n_frames == 30
    with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
        window.cine.slider.setValue(10)  # the heatmap of frame 0 is withdrawn, frame 10 is explained
        assert not window.view.has_heatmap
    assert window.result.frame == 10 and window.view.has_heatmap
    assert "frame 11/30" in window.view.corner_text("bottom_left")
    window.cine.play_button.setChecked(True)
    qtbot.waitUntil(lambda: window.frame not in (10, 11), timeout=WAIT_MS)
    window.cine.play_button.setChecked(False)
    assert not window.cine.playing


def test_ctrl_e_exports_the_report_of_the_image_on_screen(qtbot, window, image_folder, tmp_path, monkeypatch):
    pytest.importorskip("pypdf")
    from PySide6.QtWidgets import QFileDialog

    from busi_viewer.core.report_data import case_id
    from tests.helpers.pdf import pdf_text as text_of

    assert window.export_image_report(tmp_path / "early.pdf") is None  # nothing on screen yet: says so
    assert "no result" in window.warning_box.text()
    window.warning_box.close()
    window.activateWindow()
    _open_and_wait(qtbot, window, image_folder)
    target = tmp_path / "chosen.pdf"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "PDF files (*.pdf)"))
    qtbot.keyClick(window, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(target.exists, timeout=5000)
    text = text_of(target)
    done = window.result
    assert case_id(done.sha256) in text and f"Prediction: {done.prediction.predicted_class}" in text
    assert "For research use only — not for diagnostic use" in text
    assert window.paths[window.index].name not in text  # de-identified by default
    assert window.export_image_report(target) is None  # an explicit path is never replaced silently
    window.identifiers_action.setChecked(True)
    named = window.export_image_report(tmp_path / "named.pdf")
    assert window.paths[window.index].name in text_of(named)


def test_folder_summary_is_written_in_the_background(qtbot, window, image_folder, tmp_path):
    pytest.importorskip("pypdf")
    from tests.helpers.pdf import pdf_text

    _open_and_wait(qtbot, window, image_folder)
    target = tmp_path / "summary.pdf"
    with qtbot.waitSignal(window.summaryExported, timeout=180_000) as written:
        assert window.export_folder_summary(target)
        _key(qtbot, window, Qt.Key.Key_Down)  # the window keeps working meanwhile
    assert written.args == [target]
    text = pdf_text(target)
    assert "Folder summary" in text and f"{len(window.paths) - 1} images" in text
    assert "1 not classified" in text and "Not classified (1)" in text  # zz_broken.png, by its case id
    assert not any(path.name in text for path in window.paths)  # de-identified
    assert not window.export_folder_summary(target)  # never replaces a file silently
    assert "already exists" in window.warning_box.text()
