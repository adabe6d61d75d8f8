"""Screenshots of the viewer in its main states, with the bundled model on the demo folder (offscreen).

    QT_QPA_PLATFORM=offscreen python bench/viewer_screenshots.py OUT_DIR

Writes one PNG per state; look at them after any change to the window. Demo images only (never BUSI); reviews,
settings and caches go to a temporary BUSI_VIEWER_HOME unless one is set.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the screenshots record a review: keep it (and settings, caches) out of the user's own review store
os.environ.setdefault("BUSI_VIEWER_HOME", tempfile.mkdtemp(prefix="busi-screenshots-"))


def _wait(app, condition, timeout_s: float = 120.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the viewer did not reach the expected state")
        app.processEvents()
        time.sleep(0.01)


def main(out: Path) -> int:
    from PySide6.QtWidgets import QApplication

    from busi_viewer.gui.app import build_window

    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    window = build_window(device="cpu")
    window.resize(1500, 950)
    window.show()
    window.service.start()
    window.open_demo()

    def shown(index: int):
        return lambda: window.index == index and window.result is not None and window.result.path == window.paths[index]

    _wait(app, shown(0))
    window.grab().save(str(out / "01_phantom_heatmap_mask.png"))
    window.review_panel.apply_decision("disagree")
    window.display.measure_button.setChecked(True)
    window.view.set_measurement((60.0, 150.0), (200.0, 160.0))
    window.tabs.setCurrentIndex(1)
    app.processEvents()
    window.grab().save(str(out / "02_review_and_measurement.png"))
    window.display.measure_button.setChecked(False)
    dicom = [i for i, p in enumerate(window.paths) if p.suffix.lower() == ".dcm"]
    if dicom:
        window.go_to(dicom[0])
        _wait(app, shown(dicom[0]))
        window.tabs.setCurrentIndex(2)
        app.processEvents()
        window.grab().save(str(out / "03_dicom_attributes.png"))
    window.heatmap_check.setChecked(False)
    window.go_to(len(window.paths) - 1)
    _wait(app, shown(len(window.paths) - 1))
    window.grab().save(str(out / "04_heatmap_off.png"))
    window.close()
    print(f"screenshots written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "viewer-screenshots")))
