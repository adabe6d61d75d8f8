"""``busi-viewer [FOLDER] [--demo] [--model DIR] [--device cpu|cuda] [--smoke-test]``: the desktop workstation.

The window is shown before torch or ONNX Runtime is imported: the model is loaded inside the inference thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from busi_viewer.cli.options import add_runtime_options

SMOKE_TIMEOUT_S = 180


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="busi-viewer", description="BUSI Viewer — For research use only — "
                                     "not for diagnostic use. Review a folder of ultrasound images with the model.")
    parser.add_argument("folder", nargs="?", type=Path, help="folder of images to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo folder")
    parser.add_argument("--model", type=Path, default=None,
                        help="model bundle folder, or the name of an installed one such as mias-mg (default: the "
                             "bundled one)")
    add_runtime_options(parser)
    parser.add_argument("--smoke-test", action="store_true",
                        help="load the model, open the demo, run one inference, print a summary and exit (0 = ok)")
    return parser


def build_window(model_dir: Path | None = None, device: str | None = None, backend: str | None = None):
    """Create the inference service, review store and main window (a QApplication must exist).

    Problems that leave the viewer usable (a damaged reviews database, user folders replaced by temporary
    ones) are gathered here and shown once by the window.
    """
    from busi_viewer.core import paths
    from busi_viewer.core.reviews import ReviewStore, ReviewStoreError
    from busi_viewer.gui.main_window import MainWindow
    from busi_viewer.gui.settings import load_settings
    from busi_viewer.gui.worker import InferenceService

    settings = load_settings()
    reviews, review_error, notices = None, None, []
    try:
        reviews = ReviewStore()
    except (ReviewStoreError, OSError) as exc:
        review_error = f"{exc}\n\nReviews will not be saved in this session."
    if reviews is not None and reviews.notice:
        notices.append(("Reviews database damaged", reviews.notice))
    paths.user_cache_dir()  # an unusable cache folder is told now, with the others, not found mid-session
    problems = paths.user_dir_problems()
    if problems:
        notices.insert(0, ("User folders unavailable", "\n".join(problems)))
    service = InferenceService(model_dir, device, backend=backend)
    window = MainWindow(service, settings, reviews, review_error, notices)
    return window


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = _parser().parse_args(argv)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("BUSI Viewer")
    window = build_window(args.model, args.device, args.backend)
    window.show()
    shown = time.perf_counter() - started
    shown_clock = time.time()
    window.service.start()
    if args.smoke_test:
        return _smoke_test(app, window, shown, shown_clock)
    if args.demo:
        QTimer.singleShot(0, window.open_demo)
    elif args.folder is not None:
        QTimer.singleShot(0, lambda: window.open_folder(args.folder))
    return app.exec()


def _smoke_test(app, window, shown_s: float, shown_clock: float) -> int:
    """Open the demo, wait for the first result, report; exit status 0 only if the model really ran.

    The report gives the wall-clock time the window showed, so that a caller can time launch -> window
    (packaging/smoke_frozen.py does, for the frozen app, whose start-up begins before Python does).
    """
    from PySide6.QtCore import QEventLoop, QTimer

    from busi_viewer.gui import presenters

    outcome: dict = {}
    loop = QEventLoop()

    def finish(key: str, value) -> None:
        outcome.setdefault(key, value)
        loop.quit()

    window.resultShown.connect(lambda index: finish("result", index))
    window.service.failed.connect(lambda failure: finish("failure", failure.message))
    window.service.modelChanged.connect(
        lambda state: None if state.loaded else finish("failure", f"model not loaded: {state.error}"))
    QTimer.singleShot(SMOKE_TIMEOUT_S * 1000, lambda: finish("failure", f"no result within {SMOKE_TIMEOUT_S} s"))
    QTimer.singleShot(0, window.open_demo)
    loop.exec()
    status = 1
    if "result" in outcome and window.result is not None:
        prediction = window.result.prediction
        probabilities = ", ".join(f"{n} {p:.3f}" for n, p in zip(prediction.class_names, prediction.probabilities))
        print(f"smoke test OK: window shown in {shown_s:.2f} s (clock {shown_clock:.3f}); "
              f"model {presenters.model_label(window.model)} on {window.model.device}; "
              f"{len(window.paths)} demo images; first image {window.paths[window.index].name}: {prediction.predicted_class} ({probabilities}); "
              f"inference {window.result.seconds * 1000:.0f} ms")
        status = 0
    else:
        print(f"smoke test FAILED: {outcome.get('failure', 'unknown')}", file=sys.stderr)
    window.close()
    app.processEvents()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
