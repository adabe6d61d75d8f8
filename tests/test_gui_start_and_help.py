"""What a new user meets: the start screen's ways in, recent folders across restarts, the keyboard shortcuts
help, and the burned-in-text warning on the image itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QListWidget, QPushButton, QWidget

from busi_viewer.core.phantoms import write_phantom_dataset
from busi_viewer.gui.shortcuts_dialog import ShortcutsDialog, shortcut_rows
from tests.helpers.dicom import write_dicom
from tests.helpers.gui import open_window

WAIT_MS = 60_000
SHOTS = Path("/tmp/widget_shots")  # looked at by eye


@pytest.fixture
def study(tmp_path) -> Path:
    folder = tmp_path / "study"
    write_phantom_dataset(folder, {"benign": 1, "malignant": 1}, seed=2, size=(100, 120))
    return folder


def test_the_start_screen_opens_the_demo_and_remembers_recent_folders(qtbot, tiny_bundle, study, tmp_path):
    window = open_window(qtbot, tiny_bundle)
    try:
        assert window.pages.currentWidget() is window.start_screen
        demo = window.start_screen.findChild(QPushButton, "open_demo_button")
        assert demo.isVisible() and window.start_screen.findChild(QPushButton, "open_folder_button").isVisible()
        assert not window.start_screen.findChild(QListWidget, "recent_folders").isVisible()  # nothing yet
        SHOTS.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(SHOTS / "start_screen.png"))
        with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
            demo.click()
        assert window.pages.currentWidget() is window.viewer_page and window.paths
        demo_folder = window.folder
        assert window.open_folder(study)
        empty = tmp_path / "empty"
        empty.mkdir()
        assert window.open_folder(empty)
        assert window.pages.currentWidget() is window.start_screen
        assert window.start_screen.message.text() == f"No images found in {empty}"
        window.close()  # settings are saved on close
        window = open_window(qtbot, tiny_bundle)
        recent = window.start_screen.findChild(QListWidget, "recent_folders")
        assert recent.isVisible()
        assert [recent.item(i).toolTip() for i in range(recent.count())] == [str(empty), str(study), str(demo_folder)]
        with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
            recent.itemActivated.emit(recent.item(1))
        assert window.folder == study and window.pages.currentWidget() is window.viewer_page
    finally:
        window.close()


def test_the_shortcuts_help_lists_the_keys_of_the_menus(qtbot, tiny_bundle):
    window = open_window(qtbot, tiny_bundle)
    try:
        rows = shortcut_rows(window.menuBar())
        assert ("View", "Heatmap on/off", "H") in rows
        assert ("Go", "Next image", "Down or Right") in rows
        assert ("Review", "Agree with the model", "A") in rows
        assert any(r[:2] == ("Help", "Keyboard shortcuts") and r[2].startswith("?") for r in rows)
        shown = []

        def read_and_close():
            for dialog in QApplication.topLevelWidgets():
                if not (isinstance(dialog, ShortcutsDialog) and dialog.isVisible()):
                    continue
                table = dialog.table
                shown.extend(tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount()))
                dialog.grab().save(str(SHOTS / "shortcuts.png"))
                dialog.reject()

        window.activateWindow()  # offscreen, a shown window is not active until asked
        qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=WAIT_MS)
        QTimer.singleShot(300, read_and_close)
        qtbot.keyClick(window, Qt.Key.Key_Question)
        assert shown == rows
    finally:
        window.close()


@pytest.mark.parametrize(("burned_in", "warned"), [("YES", True), ("NO", False)])
def test_burned_in_text_is_warned_about_on_the_image(qtbot, tiny_bundle, tmp_path, burned_in, warned):
    folder = tmp_path / "dicom"
    folder.mkdir()
    pixels = (np.random.default_rng(0).random((120, 160)) * 255).astype(np.uint8)
    write_dicom(folder / "scan.dcm", pixels, Modality="US", BurnedInAnnotation=burned_in)
    window = open_window(qtbot, tiny_bundle)
    try:
        with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
            assert window.open_folder(folder)
        expected = "⚠ Image pixels may contain burned-in identifying text" if warned else ""
        assert window.view.warning == expected
        if warned:
            window.grab().save(str(SHOTS / "burned_in_on_image.png"))
    finally:
        window.close()


def test_the_side_panel_shows_the_image_without_overlay_turned_as_the_view(qtbot, tiny_bundle, study):
    window = open_window(qtbot, tiny_bundle)
    try:
        with qtbot.waitSignal(window.resultShown, timeout=WAIT_MS):
            assert window.open_folder(study)
        qtbot.waitUntil(lambda: window.agreement is not None, timeout=WAIT_MS)  # the scores follow the result
        preview = window.raw_preview
        assert preview.has_image
        window.resize(1400, 1100)  # a tall screen: the panel's free lower part shows the bare image
        qtbot.waitUntil(lambda: preview.height() >= 150, timeout=WAIT_MS)
        # the room it takes is left over: the explanation check keeps its full height
        box = window.result_panel.findChild(QWidget, "agreement_box")
        assert box.height() >= box.minimumSizeHint().height()
        portrait = preview._image.height() > preview._image.width()
        window.display.rotate()  # 90°: the preview turns with the view
        qtbot.waitUntil(lambda: (preview._image.height() > preview._image.width()) != portrait, timeout=WAIT_MS)
        window.grab().save(str(SHOTS / "raw_preview.png"))
    finally:
        window.close()
