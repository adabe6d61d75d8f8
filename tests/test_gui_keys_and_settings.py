"""The README's keyboard table, drag-and-drop and the settings a restart restores, on the real main window."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QDockWidget, QFileDialog

from busi_viewer.core.phantoms import write_phantom_dataset
from busi_viewer.core.reviews import ReviewStore
from tests.helpers.gui import open_window

WAIT_MS = 60_000
IMAGE_SIZE = (120, 150)  # (rows, columns) of the phantoms


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_phantom_dataset(root, {"benign": 13, "malignant": 12}, seed=4, size=IMAGE_SIZE)
    return root


@pytest.fixture
def window(qtbot, tiny_bundle, folder):
    win = open_window(qtbot, tiny_bundle)
    with qtbot.waitSignal(win.resultShown, timeout=WAIT_MS):
        assert win.open_folder(folder)
    yield win
    win.close()


def _key(qtbot, win, key) -> None:
    qtbot.keyClick(win, key)


def test_page_down_and_up_jump_ten_images(qtbot, window):
    assert len(window.paths) == 25
    with qtbot.waitSignal(window.imageShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_PageDown)
    assert window.index == 10
    with qtbot.waitSignal(window.imageShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_PageDown)
    assert window.index == 20
    with qtbot.waitSignal(window.imageShown, timeout=WAIT_MS):
        _key(qtbot, window, Qt.Key.Key_PageUp)
    assert window.index == 10


def test_zoom_keys(qtbot, window):
    view = window.view
    _key(qtbot, window, Qt.Key.Key_1)
    assert view.zoom_percent() == pytest.approx(100.0, rel=0.01)
    _key(qtbot, window, Qt.Key.Key_Plus)
    assert view.zoom_percent() == pytest.approx(125.0, rel=0.01)
    _key(qtbot, window, Qt.Key.Key_Minus)
    assert view.zoom_percent() == pytest.approx(100.0, rel=0.01)
    _key(qtbot, window, Qt.Key.Key_Equal)
    # fit: the image's limiting side fills the view (by hand from the view's size in screen pixels)
    size = view._vb.size()
    rows, columns = IMAGE_SIZE
    fitted = 100.0 * min(size.width() / columns, size.height() / rows)
    assert view.zoom_percent() == pytest.approx(fitted, rel=0.02)
    assert fitted > 150  # the window is far larger than the phantom: "=" really zoomed


def test_flip_and_space_reset(qtbot, window):
    _key(qtbot, window, Qt.Key.Key_R)
    _key(qtbot, window, Qt.Key.Key_F)
    assert window.view.orientation == (90, True, False)
    _key(qtbot, window, Qt.Key.Key_1)
    _key(qtbot, window, Qt.Key.Key_Space)
    assert window.view.orientation == (0, False, False)
    size = window.view._vb.size()
    assert window.view.zoom_percent() == pytest.approx(
        100.0 * min(size.width() / IMAGE_SIZE[1], size.height() / IMAGE_SIZE[0]), rel=0.02)  # fitted again


@pytest.mark.parametrize(("key", "decision"), [(Qt.Key.Key_D, "disagree"), (Qt.Key.Key_U, "unsure")])
def test_review_keys_save_at_once_and_c_clears(qtbot, window, key, decision):
    qtbot.waitUntil(lambda: window.sha256 is not None, timeout=WAIT_MS)
    _key(qtbot, window, key)
    assert window.review_panel.decision() == decision
    with ReviewStore() as store:
        assert store.get(window.sha256).decision == decision
    _key(qtbot, window, Qt.Key.Key_C)
    assert window.review_panel.decision() is None
    with ReviewStore() as store:
        saved = store.get(window.sha256)
        assert saved is None or saved.decision is None


def test_dropping_a_file_opens_its_folder_at_that_file(qtbot, tiny_bundle, folder):
    win = open_window(qtbot, tiny_bundle)
    try:
        target = sorted(folder.rglob("*.png"))
        target = next(p for p in target if "_mask" not in p.name and p.parent.name == "malignant")
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(target))])
        drop = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                          Qt.KeyboardModifier.NoModifier)
        with qtbot.waitSignal(win.imageShown, timeout=WAIT_MS):
            win.dropEvent(drop)
        assert win.folder == target.parent and win.paths[win.index] == target
    finally:
        win.close()


def test_a_restart_restores_the_layout_and_opens_the_dialog_at_the_last_folder(qtbot, tiny_bundle, folder,
                                                                                 monkeypatch):
    """The dock layout, the opacity and the last folder come back. (The window's size cannot be checked here: the
    offscreen screen, 800 x 800 px, is smaller than the window's minimum, and Qt fits restored windows to it.)"""
    from busi_viewer.gui.app import build_window

    first = open_window(qtbot, tiny_bundle)
    with qtbot.waitSignal(first.resultShown, timeout=WAIT_MS):
        first.open_folder(folder)
    first.findChild(QDockWidget, "thumbnails_dock").close()  # the user closes the thumbnail strip
    first.opacity_slider.setValue(35)
    first.close()

    second = build_window(tiny_bundle, "cpu")  # as the app starts
    qtbot.addWidget(second)
    try:
        second.show()
        assert second.findChild(QDockWidget, "thumbnails_dock").isHidden()
        assert not second.findChild(QDockWidget, "side_dock").isHidden()
        assert second.opacity_slider.value() == 35
        asked = []

        def fake_dialog(_parent, _caption, start, *_args, **_kwargs):  # Qt's dialog, not ours: record its start
            asked.append(start)
            return ""

        monkeypatch.setattr(QFileDialog, "getExistingDirectory", fake_dialog)
        second.choose_folder()
        assert asked == [str(folder)]
    finally:
        second.close()
