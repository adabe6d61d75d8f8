"""The review workstation window: wires the folder, the inference service, the image view and the panels.

The window owns the *session* state (folder, current index, current record and result); widgets only receive
small state objects (:mod:`busi_viewer.gui.state`) and answer with signals. Results that arrive for an image
the user has already left are dropped here by request id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMainWindow, QMessageBox

from busi_viewer import RESEARCH_USE_BANNER, __version__
from busi_viewer.core.agreement import AgreementResult
from busi_viewer.core.display import render_display
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.image_record import ImageRecord
from busi_viewer.core.measure import measure_length
from busi_viewer.core.report_data import case_id
from busi_viewer.core.reviews import ReviewStore, ReviewStoreError
from busi_viewer.core.scan import ScanError, scan_folder
from busi_viewer.gui import presenters
from busi_viewer.gui.attributes_panel import BURNED_IN_WARNING, burned_in_risk
from busi_viewer.gui.folder_hasher import FolderHasher
from busi_viewer.gui.settings import ViewerSettings, save_settings
from busi_viewer.gui.state import (
    ResultState,
    ReviewEdit,
    ReviewState,
    ThumbState,
)
from busi_viewer.gui.window_layout import WindowLayout
from busi_viewer.gui.worker import (
    AgreementDone,
    ImageLoaded,
    InferenceDone,
    InferenceService,
    ModelState,
    WorkerFailure,
)

SHUTDOWN_WAIT_MS = 10 * 60 * 1000


class MainWindow(WindowLayout, QMainWindow):
    """``folderOpened(int)`` (number of images) and ``imageShown(int)`` (index) let tests and benches follow."""

    folderOpened = Signal(int)
    imageShown = Signal(int)
    resultShown = Signal(int)
    summaryExported = Signal(object)  # Path of a written folder summary

    def __init__(self, service: InferenceService, settings: ViewerSettings, reviews: ReviewStore | None = None,
                 review_error: str | None = None, notices: Sequence[tuple[str, str]] = ()):
        """``notices``: (title, text) of problems found while starting (shown once, with ``review_error``)."""
        super().__init__()
        self.service = service
        self.settings = settings
        self.reviews = reviews
        self.paths: list[Path] = []
        self.folder: Path | None = None
        self.hashes: dict[int, str] = {}
        self.thumbs: list[ThumbState] = []
        self.index = -1
        self.record: ImageRecord | None = None
        self.sha256: str | None = None
        self.mask: np.ndarray | None = None
        self.frame = 0
        self.result: InferenceDone | None = None
        self.agreement: AgreementResult | None = None  # of self.result's heatmap with self.mask
        self.model: ModelState | None = None
        self._hasher: FolderHasher | None = None
        self._summary = None  # SummaryExport, created on the first folder summary
        self._reclassify = False  # classify the image shown again when the model now loading is ready
        self.warning_box: QMessageBox | None = None
        self._review_failure_told = False  # the first review store error of a session gets a dialog, later ones not
        self.setWindowTitle(f"BUSI Viewer {__version__} — {RESEARCH_USE_BANNER}")
        self.setAcceptDrops(True)
        self._build_ui()
        self._build_actions()
        self._connect()
        if settings.geometry is not None:
            self.restoreGeometry(settings.geometry)
        else:
            self.resize(1400, 900)
        if settings.window_state is not None:
            self.restoreState(settings.window_state)
        self.view.set_placeholder("No folder open — File ▸ Open folder… (Ctrl+O) or drop a folder here")
        notices = [*notices, *([("Reviews cannot be saved", review_error)] if review_error else [])]
        if notices:
            title, text = notices[0] if len(notices) == 1 else (
                "Problems found at start-up", "\n\n".join(f"{head}: {body}" for head, body in notices))
            QTimer.singleShot(0, lambda: self._warn(title, text))

    def _connect(self) -> None:
        self.service.imageLoaded.connect(self._on_image_loaded)
        self.service.inferenceDone.connect(self._on_inference_done)
        self.service.agreementDone.connect(self._on_agreement_done)
        self.service.modelChanged.connect(self._on_model_changed)
        self.service.failed.connect(self._on_failure)
        self.thumbnails.imageActivated.connect(self.go_to)
        self.review_panel.reviewChanged.connect(self._on_review_changed)
        self.heatmap_check.toggled.connect(self._on_heatmap_toggled)
        self.mask_check.toggled.connect(self._on_mask_toggled)
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        self.floor_slider.valueChanged.connect(self._on_evidence_floor)
        self.colormap_combo.currentTextChanged.connect(self._on_colormap)
        self.display.adjustChanged.connect(lambda _adjust: self._redisplay())
        self.view.windowDragged.connect(self.display.drag_window)
        self.display.orientationChanged.connect(self._on_orientation)
        self.display.measureToggled.connect(self._on_measure_mode)
        self.view.measurementChanged.connect(self._on_measurement)
        self.cine.frameChanged.connect(self._on_frame)
        self.cine.playingChanged.connect(self._on_playing)
        self.frame_infer_timer.timeout.connect(self._infer_current_frame)
        self.start_screen.openFolderRequested.connect(self.choose_folder)
        self.start_screen.openDemoRequested.connect(self.open_demo)
        self.start_screen.recentChosen.connect(self.open_folder)

    # ----------------------------------------------------------------------------------------------- folder
    def choose_folder(self) -> None:
        start = self.settings.last_folder or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", start)
        if folder:
            self.open_folder(Path(folder))

    def open_demo(self) -> None:
        from busi_viewer.core.demo import demo_folder

        self.open_folder(demo_folder())

    def open_folder(self, folder: Path) -> bool:
        """Scan ``folder``, show its first image; False (and a message) when it cannot be opened."""
        try:
            scan = scan_folder(folder)
        except (ScanError, OSError) as exc:
            self._warn("Cannot open folder", str(exc))
            return False
        if self._hasher is not None:
            self._hasher.cancel()
            self._hasher.wait()
        self.paths = scan.images
        self.folder = Path(folder)
        self.hashes = {}
        self.thumbs = [ThumbState(path=p) for p in self.paths]
        self.thumbnails.set_items(self.thumbs)
        self.settings.remember_folder(folder)
        self.start_screen.set_recent(self.settings.recent())
        masks = scan.masks
        others = len(scan.skipped) - masks
        skipped = (f", {masks} lesion mask(s)" if masks else "") + (
            f", {others} other file(s) skipped" if others else "")
        self.statusBar().showMessage(f"{folder}: {len(self.paths)} image(s){skipped}", 10_000)
        self.index = -1
        self._update_progress()
        if self.paths:
            self._hasher = FolderHasher(self.paths, self)
            self._hasher.hashed.connect(self._on_hashed)
            self._hasher.start()
            self.pages.setCurrentWidget(self.viewer_page)
            self.go_to(0)
        else:
            self._clear_image()
            self.view.set_placeholder(f"No images in {folder}")
            self.start_screen.set_message(f"No images found in {folder}")
            self.pages.setCurrentWidget(self.start_screen)
        self.folderOpened.emit(len(self.paths))
        return True

    def _on_hashed(self, batch: list[tuple[int, str]]) -> None:
        if self.sender() is not self._hasher:
            return
        for index, sha in batch:
            self.hashes[index] = sha
        if self.reviews is None:
            return
        try:
            found = self.reviews.get_many(sha for _, sha in batch)
        except ReviewStoreError as exc:
            self._review_store_failed("Reviews could not be read", exc)
            found = {}
        for index, sha in batch:
            if sha in found and found[sha].reviewed:
                self._set_thumb(index, reviewed=True)
        self._update_progress()

    def _update_progress(self) -> None:
        total = len(self.paths)
        if not total:
            self.progress_label.setText("No images")
            return
        reviewed = sum(t.reviewed for t in self.thumbs)
        pending = "" if len(self.hashes) >= total else " (indexing…)"
        self.progress_label.setText(f"{reviewed} of {total} reviewed{pending}")

    # ----------------------------------------------------------------------------------------------- navigation
    def step(self, delta: int) -> None:
        if self.paths:
            self.go_to(min(max(self.index + delta, 0), len(self.paths) - 1))

    def go_to(self, index: int) -> None:
        if not self.paths or not 0 <= index < len(self.paths) or index == self.index:
            return
        self.cine.stop()
        self.index = index
        self.thumbnails.set_current(index)
        path = self.paths[index]
        self.view.set_corner_text("top_left", f"{path.name}\n{index + 1} / {len(self.paths)}")
        neighbours = [self.paths[i] for i in (index + 1, index - 1) if 0 <= i < len(self.paths)]
        self.service.request(path, 0, prefetch=neighbours)

    def _on_image_loaded(self, loaded: ImageLoaded) -> None:
        if loaded.request_id != self.service.latest_request_id:
            return  # the user has moved on
        same_image = self.record is not None and loaded.path == self.record.path and loaded.error is None
        if same_image:
            return  # a new frame's inference request of the image already shown
        self.result = self.agreement = None
        self.record, self.sha256, self.mask = loaded.record, loaded.sha256, loaded.mask
        self.frame = 0
        self.view.clear_measurement()
        if loaded.error is not None or loaded.record is None:
            self._show_unreadable(loaded)
            return
        record = loaded.record
        self.display.reset_for(record)
        self.view.set_placeholder(None)
        self._show_pixels(render_display(record, 0, self.display.adjust))
        self.view.set_heatmap(None)
        self.view.set_mask(self.mask)
        self.view.set_mask_visible(self.mask_check.isChecked())
        self._setup_frames(record)
        self.attributes_panel.set_attributes(record.attributes, record.identifiers, record.burned_in_annotation,
                                             record.modality)
        self.view.set_warning(BURNED_IN_WARNING if burned_in_risk(record.burned_in_annotation, record.modality)
                              else "")
        self._show_review()
        mask_note = f" · mask: {loaded.mask_error}" if loaded.mask_error else ""
        side = f" · {record.laterality_and_view}" if record.laterality_and_view else ""
        self.view.set_corner_text("top_right", f"{record.format} · {record.modality}{side} · "
                                               f"{record.shape[1]}×{record.shape[0]}{mask_note}")
        self.result_panel.set_state(presenters.pending_result(self.model, self._record_modality()))
        self.result_panel.set_agreement(None)
        self.model_chooser.image_shown(record.modality)
        self.imageShown.emit(self.index)

    def _show_unreadable(self, loaded: ImageLoaded) -> None:
        self._show_pixels(None)
        self.view.set_heatmap(None)
        self.view.set_mask(None)
        self.view.set_placeholder(f"Cannot show {loaded.path.name}:\n{loaded.error}")
        self.view.set_corner_text("top_right", "unreadable")
        self.view.set_corner_text("bottom_left", "")
        self.cine.set_frames(1, None)
        self.attributes_panel.set_attributes({}, {}, None, "")
        self.review_panel.set_state(None)
        self.result_panel.set_state(ResultState(class_names=presenters.class_names(self.model), message="Unreadable file"))
        self.result_panel.set_agreement(None)
        self._set_thumb(self.index, unreadable=True, error=loaded.error)
        self.imageShown.emit(self.index)

    def _clear_image(self) -> None:
        self.record = self.sha256 = self.mask = self.result = self.agreement = None
        self._show_pixels(None)
        self.view.set_heatmap(None)
        self.view.set_mask(None)
        self.review_panel.set_state(None)

    def _on_inference_done(self, done: InferenceDone) -> None:
        if done.request_id != self.service.latest_request_id or self.record is None:
            return
        if done.path != self.record.path:
            return
        self.result, self.agreement = done, None
        prediction = done.prediction
        self._show_heatmap()
        state = presenters.result_state(self.model, done, self._record_modality())
        self.result_panel.set_state(state)
        self._set_thumb(self.index, predicted=prediction.predicted_class, out_of_scope=state.out_of_scope)
        self.resultShown.emit(self.index)

    def _on_agreement_done(self, scored: AgreementDone) -> None:
        done = self.result
        if done is None or scored.request_id != done.request_id or scored.frame != done.frame:
            return
        self.agreement = scored.agreement
        self.result_panel.set_agreement(presenters.agreement_state(scored.agreement))

    def _show_heatmap(self) -> None:
        done = self.result
        if done is None or done.prediction.heatmap is None or done.frame != self.frame:
            self.view.set_heatmap(None)
            return
        prediction = done.prediction
        explanation = self.model.card.explanation_name() if self.model is not None else "Grad-CAM"
        self.view.set_heatmap(
            prediction.heatmap, colormap=self.colormap_combo.currentText(),
            title=f"{explanation}: evidence for “{prediction.predicted_class}”",
            scale_text="normalised per image (0–1): colours compare regions within this image only")
        self.view.set_opacity(self.opacity_slider.value() / 100)
        self.view.set_evidence_floor(self.floor_slider.value() / 100)
        self.view.set_heatmap_visible(self.heatmap_check.isChecked())

    # ----------------------------------------------------------------------------------------------- model state
    def _record_modality(self) -> str | None:
        return self.record.modality if self.record is not None else None

    def _switch_model(self, folder: Path) -> None:
        """Load another bundle; the image shown is classified again once it has loaded."""
        self._reclassify = True
        self.model_label.setText(f"Loading {folder.name}…")
        self.service.set_model(folder)

    def _on_model_changed(self, state: ModelState) -> None:
        self.model = state
        self.model_chooser.model_loaded(state.model_dir, state.loaded,
                                        state.card.modality if state.card is not None else None)
        if self._reclassify and self.record is not None and 0 <= self.index < len(self.paths):
            self._reclassify = False
            self.result = self.agreement = None
            self.service.request(self.paths[self.index], self.frame, prefetch=[])
        if state.loaded and state.card is not None:
            self.model_label.setText(f"{presenters.model_label(self.model)} · {state.device} · loaded in {state.seconds:.1f} s")
        else:
            self.model_label.setText("No model (plain viewer)")
            self._warn("Model not available",
                       f"{state.error}\n\nBUSI Viewer keeps working as a plain image viewer.")
        if self.record is not None and self.result is None:
            self.result_panel.set_state(presenters.pending_result(self.model, self._record_modality()))

    def _on_failure(self, failure: WorkerFailure) -> None:
        where = f" ({failure.path.name})" if failure.path is not None else ""
        self.statusBar().showMessage(f"Error during {failure.stage}{where}: {failure.message}", 15_000)
        if failure.request_id == self.service.latest_request_id and self.result is None:
            self.result_panel.set_state(replace(presenters.pending_result(self.model),
                                                message=f"Inference failed: {failure.message}", computing=False))

    # ----------------------------------------------------------------------------------------------- review
    def _show_review(self) -> None:
        if self.reviews is None or self.sha256 is None:
            self.review_panel.set_state(None)
            return
        try:
            saved = self.reviews.get(self.sha256)
        except ReviewStoreError as exc:
            # Nothing to review rather than an empty review: saving one would replace what could not be read.
            self._review_store_failed("The review of this image could not be read", exc)
            self.review_panel.set_state(None)
            return
        state = ReviewState(class_names=presenters.class_names(self.model))
        if saved is not None:
            state = replace(state, decision=saved.decision, chosen_class=saved.chosen_class, note=saved.note,
                            model_version=saved.model_version)
        self.review_panel.set_state(state)

    def _on_review_changed(self, edit: ReviewEdit) -> None:
        if self.reviews is None or self.sha256 is None or self.record is None:
            return
        card = self.model.card if self.model is not None else None
        version = f"{card.name} {card.version}" if card is not None else "no model"
        try:
            self.reviews.save(self.sha256, decision=edit.decision,
                              chosen_class=edit.chosen_class if edit.decision == "disagree" else None,
                              note=edit.note, model_version=version, file_name=self.record.path.name)
        except (ReviewStoreError, OSError) as exc:
            self._review_store_failed("Review NOT saved", exc)
            return
        self.hashes.setdefault(self.index, self.sha256)
        self._set_thumb(self.index, reviewed=edit.decision is not None)
        self._update_progress()

    def export_reviews(self, path: Path | None = None) -> int | None:
        if self.reviews is None:
            self._warn("Export reviews", "The review database is not available.")
            return None
        if path is None:
            path = self._ask_save_path("Export reviews as CSV", "reviews.csv", "CSV files (*.csv)")
            if path is None:
                return None
        try:
            rows = self.reviews.export_csv(path, self.hashes.values() if self.paths else None)
        except (ReviewStoreError, OSError) as exc:
            self._warn("Export reviews", f"Could not write {path}: {exc}")
            return None
        self.statusBar().showMessage(f"{rows} review(s) written to {path}", 10_000)
        return rows

    def export_image_report(self, path: Path | None = None, *, overwrite: bool = False) -> Path | None:
        """Ctrl+E: the current image's PDF report as on screen; asks for a file (which confirms a replacement)
        unless ``path`` is given. Returns the written path, or None (nothing to report, cancelled, failed)."""
        from busi_viewer.gui.report_export import write_current_image_report
        from busi_viewer.reports.pdf import ReportError

        done, card = self.result, self.model.card if self.model is not None else None
        if self.record is None or done is None or card is None or done.frame != self.frame:
            self._warn("Export report", "There is no result for the image on screen yet.")
            return None
        if path is None:
            path = self._ask_save_path("Export report", f"{case_id(done.sha256)}.pdf", "PDF files (*.pdf)")
            if path is None:
                return None
            overwrite = True  # the dialog has asked before replacing a file
        try:
            written = write_current_image_report(
                path, record=self.record, frame=self.frame, adjust=self.display.adjust, done=done,
                agreement=self.agreement, mask=self.mask,
                card=card, review=self.reviews.get(done.sha256) if self.reviews is not None else None,
                opacity=self.opacity_slider.value() / 100, colormap=self.colormap_combo.currentText(),
                evidence_floor=self.floor_slider.value() / 100,
                include_identifiers=self.identifiers_action.isChecked(), overwrite=overwrite,
                orientation=self.view.orientation)
        except (ReportError, ReviewStoreError, OSError) as exc:
            self._warn("Export report", f"Could not write the report: {exc}")
            return None
        self.statusBar().showMessage(f"Report written to {written}", 10_000)
        return written

    def export_folder_summary(self, path: Path | None = None, *, overwrite: bool = False) -> bool:
        """The open folder's summary PDF, written by busi-predict in a separate process (the window stays
        usable); ``summaryExported(Path)`` follows, or a warning. Returns whether it started."""
        from busi_viewer.gui.summary_export import SummaryExport

        model_dir = self.model.model_dir if self.model is not None and self.model.loaded else None
        if not self.paths or self.folder is None or model_dir is None:
            self._warn("Export folder summary", "Open a folder, with a model loaded, first.")
            return False
        if path is None:
            path = self._ask_save_path("Export folder summary", "summary.pdf", "PDF files (*.pdf)")
            if path is None:
                return False
            overwrite = True  # the dialog has asked before replacing a file
        if self._summary is None:
            self._summary = SummaryExport(self)
            self._summary.finished.connect(self._on_summary_written)
            self._summary.failed.connect(lambda reason: self._warn("Export folder summary", reason))
        started = self._summary.start(self.folder, path, model_dir,
                                      include_identifiers=self.identifiers_action.isChecked(), overwrite=overwrite)
        if started:
            self.statusBar().showMessage(f"Writing the folder summary of {len(self.paths)} images…", 60_000)
        return started

    def _on_summary_written(self, path: Path) -> None:
        self.statusBar().showMessage(f"Folder summary written to {path}", 10_000)
        self.summaryExported.emit(path)

    def _ask_save_path(self, title: str, file_name: str, file_filter: str) -> Path | None:
        """A save dialog starting in the last folder (it asks before replacing a file); None if cancelled."""
        start = Path(self.settings.last_folder or Path.home()) / file_name
        chosen, _ = QFileDialog.getSaveFileName(self, title, str(start), file_filter)
        return Path(chosen) if chosen else None

    def _set_thumb(self, index: int, **changes) -> None:
        if 0 <= index < len(self.thumbs):
            self.thumbs[index] = replace(self.thumbs[index], **changes)
            self.thumbnails.update_item(index, self.thumbs[index])

    # ----------------------------------------------------------------------------------------------- display
    def _show_pixels(self, pixels: np.ndarray | None, keep_view: bool = False) -> None:
        """The frame as displayed, in the view (with its layers) and, bare, in the raw preview."""
        self.view.set_image(pixels, keep_view=keep_view)
        self.raw_preview.set_image(pixels, self.view.orientation)

    def _on_orientation(self, orientation: tuple[int, bool, bool]) -> None:
        self.view.set_orientation(*orientation)
        self._redisplay()

    def _redisplay(self) -> None:
        if self.record is not None:
            self._show_pixels(render_display(self.record, self.frame, self.display.adjust), keep_view=True)

    def _on_heatmap_toggled(self, on: bool) -> None:
        self.settings.heatmap_visible = on
        self.view.set_heatmap_visible(on)

    def _on_mask_toggled(self, on: bool) -> None:
        self.settings.mask_visible = on
        self.view.set_mask_visible(on)

    def _on_opacity(self, value: int) -> None:
        self.settings.opacity = value / 100
        self.view.set_opacity(value / 100)

    def _label_floor(self, value: int) -> None:
        self.floor_label.setText(f"Hide below {value} %")

    def _on_evidence_floor(self, value: int) -> None:
        self._label_floor(value)
        self.settings.evidence_floor = value / 100
        self.view.set_evidence_floor(value / 100)

    def _on_colormap(self, name: str) -> None:
        self.settings.colormap = name
        self._show_heatmap()

    def _reset_view(self) -> None:
        self.display.reset_orientation()
        self.view.reset()

    def _on_measure_mode(self, on: bool) -> None:
        self.view.set_measure_mode(on)
        if not on:
            self.view.clear_measurement()
            self.display.measure_label.setText("")

    def _on_measurement(self, points) -> None:
        if self.record is None:
            return
        start, end = points
        measurement = measure_length(self.record, start, end)
        self.view.set_measurement_text(measurement.text(), measurement.calibrated)
        reason = f" — {measurement.reason}" if measurement.reason else ""
        self.display.measure_label.setText(measurement.text() + reason)

    # ----------------------------------------------------------------------------------------------- frames
    def _setup_frames(self, record: ImageRecord) -> None:
        rate = record.attributes.get("CineRate") or record.attributes.get("RecommendedDisplayFrameRate")
        try:
            fps = float(rate) if rate else None
        except ValueError:
            fps = None
        self.cine.set_frames(record.n_frames, fps)
        self._frame_corner()

    def _frame_corner(self) -> None:
        multi = self.record is not None and self.record.n_frames > 1
        self.view.set_corner_text("bottom_left", f"frame {self.frame + 1}/{self.record.n_frames}" if multi else "")

    def _on_frame(self, value: int) -> None:
        if self.record is None:
            return
        self.frame = value
        try:
            self._show_pixels(render_display(self.record, value, self.display.adjust), keep_view=True)
        except (BusiViewerError, IndexError, ValueError) as exc:
            self.statusBar().showMessage(f"Frame {value + 1} cannot be decoded: {exc}", 10_000)
            return
        self._frame_corner()
        self._show_heatmap()  # hidden unless the result belongs to this frame
        if not self.cine.playing:
            self.frame_infer_timer.start()

    def _on_playing(self, playing: bool) -> None:
        if not playing:
            self.frame_infer_timer.start()

    def _infer_current_frame(self) -> None:
        if self.record is not None and (self.result is None or self.result.frame != self.frame):
            self.service.request(self.record.path, self.frame)

    # ----------------------------------------------------------------------------------------------- misc
    def _review_store_failed(self, what: str, exc: Exception) -> None:
        """A review store error inside a slot: on the status bar each time, in a dialog the first time only."""
        if self._review_failure_told:
            self.statusBar().showMessage(f"{what}: {exc}", 30_000)
            return
        self._review_failure_told = True
        self._warn(what, f"{exc}\n\nFurther problems with the reviews database are shown on the status bar.")

    def _warn(self, title: str, text: str) -> None:
        self.statusBar().showMessage(f"{title}: {text.splitlines()[0]}", 30_000)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)  # never block review (or a test) on a dialog
        box.show()
        self.warning_box = box

    def show_shortcuts(self) -> None:
        from busi_viewer.gui.shortcuts_dialog import ShortcutsDialog, shortcut_rows

        ShortcutsDialog(shortcut_rows(self.menuBar()), self).exec()

    def _about(self) -> None:
        QMessageBox.about(self, "About BUSI Viewer",
                          f"BUSI Viewer {__version__}\n\n{RESEARCH_USE_BANNER}.\n\n"
                          "Grad-CAM heatmaps show where the classifier found evidence; they are not detections.")

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt naming
        for url in event.mimeData().urls():
            path = Path(url.toLocalFile())
            if path.is_dir():
                self.open_folder(path)
                return
            if path.is_file():
                self.open_folder(path.parent)
                if path in self.paths:
                    self.go_to(self.paths.index(path))
                return

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.cine.stop()
        self.settings.geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        try:
            save_settings(self.settings)
        except OSError:
            pass  # settings are a convenience; never block closing on them
        if self._hasher is not None:
            self._hasher.cancel()
            self._hasher.wait()
            self._hasher = None  # its batches still queued in the event loop are dropped by _on_hashed
        self.thumbnails.shutdown()
        # An inference in progress (a prefetch, perhaps on a busy machine) finishes first; a QThread destroyed
        # while running aborts the process, so wait as long as it takes rather than a fixed few seconds.
        self.service.stop(timeout_ms=SHUTDOWN_WAIT_MS)
        if self.reviews is not None:
            self.reviews.close()
            self.reviews = None  # slots that still run (queued signals) see no store rather than a closed one
        super().closeEvent(event)
