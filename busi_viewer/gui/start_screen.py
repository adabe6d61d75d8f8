"""What the window shows before a folder is open: the ways in (open a folder, open the demo, a recent folder)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from busi_viewer import RESEARCH_USE_BANNER

__all__ = ["StartScreen"]


class StartScreen(QWidget):
    """Open folder / Open demo buttons and the recent folders (double-click or Enter opens one).

    Emits ``openFolderRequested()``, ``openDemoRequested()`` and ``recentChosen(Path)``. Children have
    objectNames ``open_folder_button``, ``open_demo_button``, ``recent_folders``, ``start_message``.
    """

    openFolderRequested = Signal()
    openDemoRequested = Signal()
    recentChosen = Signal(Path)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("start_screen")
        layout = QVBoxLayout(self)
        layout.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.setSpacing(10)
        title = QLabel("BUSI Viewer")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.8)
        font.setBold(True)
        title.setFont(font)
        note = QLabel(f"{RESEARCH_USE_BANNER}.\nOpen a folder of ultrasound or mammography images (PNG, JPEG, BMP, "
                      "TIFF, PGM, DICOM), or drop one here.")
        note.setWordWrap(True)
        note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.message = QLabel()
        self.message.setObjectName("start_message")
        self.message.setWordWrap(True)
        self.message.hide()
        self.open_folder_button = QPushButton("Open folder…  (Ctrl+O)")
        self.open_folder_button.setObjectName("open_folder_button")
        self.open_demo_button = QPushButton("Open the demo images")
        self.open_demo_button.setObjectName("open_demo_button")
        self.recent_label = QLabel("Recent folders")
        self.recent = QListWidget()
        self.recent.setObjectName("recent_folders")
        self.recent.setMaximumHeight(160)
        for widget in (title, note, self.message, self.open_folder_button, self.open_demo_button,
                       self.recent_label, self.recent):
            widget.setMaximumWidth(520)
            layout.addWidget(widget)
        self.open_folder_button.clicked.connect(self.openFolderRequested)
        self.open_demo_button.clicked.connect(self.openDemoRequested)
        self.recent.itemActivated.connect(
            lambda item: self.recentChosen.emit(Path(item.data(Qt.ItemDataRole.UserRole))))
        self.set_recent([])

    def set_recent(self, folders: list[str]) -> None:
        """Show these folders, most recent first (the full path as tooltip)."""
        self.recent.clear()
        for folder in folders:
            item = QListWidgetItem(Path(folder).name or folder)
            item.setToolTip(folder)
            item.setData(Qt.ItemDataRole.UserRole, folder)
            self.recent.addItem(item)
        self.recent_label.setVisible(bool(folders))
        self.recent.setVisible(bool(folders))

    def set_message(self, text: str | None) -> None:
        """A line above the buttons (e.g. "No images in …"); None hides it."""
        self.message.setText(text or "")
        self.message.setVisible(bool(text))
