"""Opening the real main window in tests (offscreen), as the app's build_window makes it."""

from __future__ import annotations

from pathlib import Path


def open_window(qtbot, model_dir: Path | None):
    """A shown main window on ``model_dir`` (CPU) with its inference thread started; closed by the caller."""
    from busi_viewer.gui.app import build_window

    window = build_window(model_dir, "cpu")
    qtbot.addWidget(window)
    window.resize(1300, 850)
    window.show()
    qtbot.waitExposed(window)
    window.service.start()
    return window
