"""The review window's widgets, docks, menus and shortcuts (built once); :mod:`main_window` gives them behaviour."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.inference.catalogue import installed_models
from busi_viewer.gui.attributes_panel import AttributesPanel
from busi_viewer.gui.cine_bar import CineBar
from busi_viewer.gui.display_panel import DisplayPanel
from busi_viewer.gui.image_view import ImageView
from busi_viewer.gui.model_menu import ModelChooser
from busi_viewer.gui.raw_preview import RawPreview
from busi_viewer.gui.result_panel import ResultPanel
from busi_viewer.gui.review_panel import ReviewPanel
from busi_viewer.gui.settings import COLORMAPS
from busi_viewer.gui.start_screen import StartScreen
from busi_viewer.gui.thumbnails import ThumbnailStrip

PAGE_JUMP = 10
FRAME_INFERENCE_DELAY_MS = 250  # infer a new frame once the slider rests, not for every frame scrubbed past


class WindowLayout:
    """Mixed into :class:`~busi_viewer.gui.main_window.MainWindow` (a QMainWindow with ``settings`` and
    ``service``): creates its widgets as attributes and its menu actions, connected to the window's slots."""

    def _build_ui(self) -> None:
        banner = QLabel(RESEARCH_USE_BANNER)
        banner.setObjectName("research_banner")
        banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        banner.setStyleSheet("QLabel { background: #7a1f1f; color: white; font-weight: bold; padding: 3px; }")
        self.banner = banner

        self.view = ImageView()
        self.cine = CineBar()
        self.frame_infer_timer = QTimer(self)
        self.frame_infer_timer.setSingleShot(True)
        self.frame_infer_timer.setInterval(FRAME_INFERENCE_DELAY_MS)

        viewer = QWidget()
        viewer_column = QVBoxLayout(viewer)
        viewer_column.setContentsMargins(0, 0, 0, 0)
        viewer_column.setSpacing(2)
        row = QHBoxLayout()
        row.addWidget(self.view, 1)
        row.addWidget(self.view.colorbar)
        viewer_column.addLayout(row, 1)
        viewer_column.addWidget(self.cine)
        self.start_screen = StartScreen()
        self.start_screen.set_recent(self.settings.recent())
        self.pages = QStackedWidget()
        self.pages.addWidget(self.start_screen)
        self.pages.addWidget(viewer)
        self.viewer_page = viewer
        centre = QWidget()
        column = QVBoxLayout(centre)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(banner)
        column.addWidget(self.pages, 1)
        self.setCentralWidget(centre)

        self.thumbnails = ThumbnailStrip()
        left = QDockWidget("Images", self)
        left.setObjectName("thumbnails_dock")
        left.setWidget(self.thumbnails)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, left)

        self.result_panel = ResultPanel()
        self.review_panel = ReviewPanel()
        self.attributes_panel = AttributesPanel()
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(self.result_panel)
        side_layout.addWidget(self._explanation_box())
        tabs = QTabWidget()
        tabs.addTab(self.review_panel, "Review")
        self.display = DisplayPanel()
        tabs.addTab(self.display, "Display")
        tabs.addTab(self.attributes_panel, "Attributes")
        self.tabs = tabs
        side_layout.addWidget(tabs)
        self.raw_preview = RawPreview()
        side_layout.addWidget(self.raw_preview, 1)
        right = QDockWidget("Model and review", self)
        right.setObjectName("side_dock")
        right.setWidget(side)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, right)

        self.progress_label = QLabel("No folder")
        self.progress_label.setObjectName("review_progress")
        self.model_label = QLabel("Loading model…")
        self.statusBar().addPermanentWidget(self.model_label)
        self.statusBar().addPermanentWidget(self.progress_label)

    def _explanation_box(self) -> QGroupBox:
        box = QGroupBox("Explanation (where the evidence lies, not a detection)")  # the legend names the method
        form = QFormLayout(box)
        self.heatmap_check = QCheckBox("Heatmap (H)")
        self.heatmap_check.setChecked(self.settings.heatmap_visible)
        self.mask_check = QCheckBox("Lesion mask outline (M)")
        self.mask_check.setChecked(self.settings.mask_visible)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setObjectName("opacity_slider")
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(round(self.settings.opacity * 100))
        self.floor_slider = QSlider(Qt.Orientation.Horizontal)
        self.floor_slider.setObjectName("evidence_floor_slider")
        self.floor_slider.setRange(0, 90)
        self.floor_slider.setValue(round(self.settings.evidence_floor * 100))
        self.floor_slider.setToolTip("Evidence weaker than this share of the image's peak is not drawn")
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(COLORMAPS)
        self.colormap_combo.setCurrentText(self.settings.colormap)
        form.addRow(self.heatmap_check)
        form.addRow("Opacity", self.opacity_slider)
        self.floor_label = QLabel()
        self.floor_label.setObjectName("evidence_floor_label")
        self._label_floor(self.floor_slider.value())
        form.addRow(self.floor_label, self.floor_slider)
        form.addRow("Colour map", self.colormap_combo)
        form.addRow(self.mask_check)
        return box

    def _build_actions(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self._action(file_menu, "&Open folder…", QKeySequence.StandardKey.Open, self.choose_folder)
        self._action(file_menu, "Open &demo folder", None, self.open_demo)
        self._action(file_menu, "&Export reviews as CSV…", None, self.export_reviews)
        self._action(file_menu, "Export &report for this image (PDF)…", "Ctrl+E", lambda: self.export_image_report())
        self._action(file_menu, "Export folder &summary (PDF)…", None, lambda: self.export_folder_summary())
        self.identifiers_action = QAction("Include patient &identifiers in reports", self)
        self.identifiers_action.setCheckable(True)  # off at every start: de-identified unless asked each session
        file_menu.addAction(self.identifiers_action)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", QKeySequence.StandardKey.Quit, self.close)

        view_menu = menu.addMenu("&View")
        self._action(view_menu, "Fit to window", "=", self.view.fit)
        self._action(view_menu, "Actual size (1:1)", "1", self.view.actual_size)
        self._action(view_menu, "Reset view", "Space", self._reset_view)
        self._action(view_menu, "Zoom in", "+", lambda: self.view.zoom_by(1.25))
        self._action(view_menu, "Zoom out", "-", lambda: self.view.zoom_by(0.8))
        self._action(view_menu, "Invert", "I", self.display.invert_check.toggle)
        self._action(view_menu, "Rotate 90°", "R", self.display.rotate)
        self._action(view_menu, "Flip horizontally", "F", self.display.toggle_flip_h)
        self._action(view_menu, "Heatmap on/off", "H", self.heatmap_check.toggle)
        self._action(view_menu, "Mask outline on/off", "M", self.mask_check.toggle)
        self._action(view_menu, "Measure length", "L", self.display.measure_button.toggle)

        go_menu = menu.addMenu("&Go")
        for text, keys, step in (("Next image", ("Down", "Right"), 1), ("Previous image", ("Up", "Left"), -1),
                                 ("Jump forward", ("PgDown",), PAGE_JUMP), ("Jump back", ("PgUp",), -PAGE_JUMP)):
            action = self._action(go_menu, text, keys[0], lambda _=False, s=step: self.step(s))
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setAutoRepeat(True)
        self._action(go_menu, "First image", "Home", lambda: self.go_to(0))
        self._action(go_menu, "Last image", "End", lambda: self.go_to(len(self.paths) - 1))

        self.model_chooser = ModelChooser(menu.addMenu("&Model"), installed_models(), self.service.model_dir)
        self.model_chooser.modelChosen.connect(self._switch_model)

        review_menu = menu.addMenu("&Review")
        self._action(review_menu, "Agree with the model", "A", lambda: self.review_panel.apply_decision("agree"))
        self._action(review_menu, "Disagree", "D", lambda: self.review_panel.apply_decision("disagree"))
        self._action(review_menu, "Unsure", "U", lambda: self.review_panel.apply_decision("unsure"))
        self._action(review_menu, "Clear decision", "C", lambda: self.review_panel.apply_decision(None))

        help_menu = menu.addMenu("&Help")
        shortcuts = self._action(help_menu, "&Keyboard shortcuts", "?", self.show_shortcuts)
        shortcuts.setShortcuts([QKeySequence("?"), QKeySequence(QKeySequence.StandardKey.HelpContents)])
        self._action(help_menu, "&About", None, self._about)

    def _action(self, menu, text: str, shortcut, slot) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        # Shortcuts work wherever focus is, except while typing a note (single letters belong to the text).
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

