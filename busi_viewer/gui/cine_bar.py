"""Frame slider and cine playback for multi-frame images (hidden for single frames)."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

CINE_FPS_DEFAULT = 15.0
MIN_INTERVAL_MS = 15


class CineBar(QWidget):
    """``frameChanged(int)`` for every frame shown (user or playback); ``playingChanged(bool)``."""

    frameChanged = Signal(int)
    playingChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("frame_slider")
        self.play_button = QPushButton("▶ Play")
        self.play_button.setCheckable(True)
        self.label = QLabel()
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 0, 4, 0)
        row.addWidget(self.play_button)
        row.addWidget(self.slider, 1)
        row.addWidget(self.label)
        self.timer = QTimer(self)
        self.slider.valueChanged.connect(self._on_value)
        self.play_button.toggled.connect(self._on_play)
        self.timer.timeout.connect(self._advance)
        self.setVisible(False)

    @property
    def playing(self) -> bool:
        return self.timer.isActive()

    def set_frames(self, n_frames: int, fps: float | None) -> None:
        """Show the bar for ``n_frames`` > 1 at frame 0 (emits nothing); playback at ``fps`` (default 15)."""
        self.stop()
        self.setVisible(n_frames > 1)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(n_frames - 1, 0))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        rate = fps if fps and fps > 0 else CINE_FPS_DEFAULT
        self.timer.setInterval(max(int(1000 / rate), MIN_INTERVAL_MS))
        self._label(0)

    def stop(self) -> None:
        if self.play_button.isChecked():
            self.play_button.setChecked(False)

    def _label(self, frame: int) -> None:
        self.label.setText(f"frame {frame + 1}/{self.slider.maximum() + 1}")

    def _on_value(self, frame: int) -> None:
        self._label(frame)
        self.frameChanged.emit(frame)

    def _on_play(self, on: bool) -> None:
        self.play_button.setText("❚❚ Pause" if on else "▶ Play")
        if on and self.slider.maximum() > 0:
            self.timer.start()
        else:
            self.timer.stop()
        self.playingChanged.emit(self.timer.isActive())

    def _advance(self) -> None:
        self.slider.setValue((self.slider.value() + 1) % (self.slider.maximum() + 1))
