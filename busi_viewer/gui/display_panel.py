"""Display controls: window/level presets, brightness/contrast, invert, orientation, and the length tool.

They change what the screen shows, never what the model sees. The panel owns the current
:class:`~busi_viewer.core.display.DisplayAdjust` and orientation and announces changes by signals.
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSlider, QWidget

from busi_viewer.core.display import DisplayAdjust, is_windowable, window_from_drag, window_presets
from busi_viewer.core.image_record import ImageRecord

CONTRAST_RANGE = 4.0  # the contrast slider spans 1/4 .. 4 (an exponent, so the middle is 1)
DRAG_PIXELS_PER_SLIDER_STEP = 2.0  # Ctrl+drag on an 8-bit image: 400 px cross a slider's whole range
CUSTOM_WINDOW = "Custom"


class DisplayPanel(QWidget):
    """``adjustChanged(DisplayAdjust)``, ``orientationChanged((rotation, flip_h, flip_v))``,
    ``measureToggled(bool)``."""

    adjustChanged = Signal(object)
    orientationChanged = Signal(object)
    measureToggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.adjust = DisplayAdjust()
        self.rotation, self.flip_h, self.flip_v = 0, False, False
        self._drag_start: tuple[float, float] | None = None  # window a Ctrl+drag starts from ("As rendered")
        self._drag_span = 1.0  # the image's value range: a drag of DRAG_PIXELS_PER_SPAN px moves by all of it
        form = QFormLayout(self)
        self.window_combo = QComboBox()
        self.window_combo.setObjectName("window_presets")
        self.brightness_slider = QSlider(Qt.Orientation.Horizontal)
        self.brightness_slider.setRange(-100, 100)
        self.contrast_slider = QSlider(Qt.Orientation.Horizontal)
        self.contrast_slider.setRange(-100, 100)
        self.invert_check = QCheckBox("Invert (I)")
        self.measure_button = QPushButton("Measure length (L)")
        self.measure_button.setCheckable(True)
        self.measure_label = QLabel("")
        self.measure_label.setObjectName("measure_label")
        self.measure_label.setWordWrap(True)
        orient = QHBoxLayout()
        for text, slot in (("⟳ 90° (R)", self.rotate), ("⇋ Flip H (F)", self.toggle_flip_h),
                           ("⇵ Flip V", self.toggle_flip_v), ("Reset (Space)", self.reset_orientation)):
            button = QPushButton(text)
            button.clicked.connect(slot)
            orient.addWidget(button)
        form.addRow("Window / level", self.window_combo)
        form.addRow("Brightness", self.brightness_slider)
        form.addRow("Contrast", self.contrast_slider)
        form.addRow(self.invert_check)
        form.addRow(orient)
        form.addRow(self.measure_button)
        form.addRow(self.measure_label)
        self.window_combo.currentIndexChanged.connect(self._on_window_preset)
        self.brightness_slider.valueChanged.connect(self._on_brightness_contrast)
        self.contrast_slider.valueChanged.connect(self._on_brightness_contrast)
        self.invert_check.toggled.connect(self._on_invert)
        self.measure_button.toggled.connect(self.measureToggled)

    def reset_for(self, record: ImageRecord) -> None:
        """Defaults for a newly shown image (presets from its own data); emits nothing."""
        controls = (self.window_combo, self.brightness_slider, self.contrast_slider, self.invert_check)
        for widget in controls:
            widget.blockSignals(True)
        self.window_combo.clear()
        self.window_combo.addItem("As rendered", None)
        self._drag_start = None
        if is_windowable(record):
            presets = window_presets(record)
            for label, center, width in presets:
                self.window_combo.addItem(f"{label} (C {center:g} / W {width:g})", (center, width))
            if presets:  # "File" when the file has a window, else "Full range": what "As rendered" shows
                self._drag_start = presets[0][1:]
                self._drag_span = next((w for label, _, w in presets if label == "Full range"), presets[0][2])
        self.window_combo.setEnabled(self.window_combo.count() > 1)
        self.brightness_slider.setValue(0)
        self.contrast_slider.setValue(0)
        self.invert_check.setChecked(False)
        for widget in controls:
            widget.blockSignals(False)
        self.adjust = DisplayAdjust()
        self.measure_label.setText("")

    def drag_window(self, dx: float, dy: float) -> None:
        """A Ctrl+drag step on the image (screen px, x right, y down). Window/level where the image has one
        (right widens, down raises the level: :func:`~busi_viewer.core.display.window_from_drag`); on 8-bit
        images contrast (right raises) and brightness (up raises), through their sliders."""
        if self._drag_start is None:
            self.contrast_slider.setValue(self.contrast_slider.value() + round(dx / DRAG_PIXELS_PER_SLIDER_STEP))
            self.brightness_slider.setValue(self.brightness_slider.value() - round(dy / DRAG_PIXELS_PER_SLIDER_STEP))
            return
        current = (self.adjust.window_center, self.adjust.window_width) if self.adjust.windowed else self._drag_start
        center, width = window_from_drag(*current, dx, dy, self._drag_span)
        self.window_combo.blockSignals(True)
        custom = self.window_combo.findText(CUSTOM_WINDOW, Qt.MatchFlag.MatchStartsWith)
        if custom < 0:
            self.window_combo.addItem(CUSTOM_WINDOW, None)
            custom = self.window_combo.count() - 1
        self.window_combo.setItemText(custom, f"{CUSTOM_WINDOW} (C {center:.6g} / W {width:.6g})")
        self.window_combo.setItemData(custom, (center, width))
        self.window_combo.setCurrentIndex(custom)
        self.window_combo.blockSignals(False)
        self._set(window_center=center, window_width=width)

    def rotate(self) -> None:
        self.rotation = (self.rotation + 90) % 360
        self._emit_orientation()

    def toggle_flip_h(self) -> None:
        self.flip_h = not self.flip_h
        self._emit_orientation()

    def toggle_flip_v(self) -> None:
        self.flip_v = not self.flip_v
        self._emit_orientation()

    def reset_orientation(self) -> None:
        self.rotation, self.flip_h, self.flip_v = 0, False, False
        self._emit_orientation()

    def _emit_orientation(self) -> None:
        self.orientationChanged.emit((self.rotation, self.flip_h, self.flip_v))

    def _on_window_preset(self, _index: int) -> None:
        data = self.window_combo.currentData()
        center, width = data if data else (None, None)
        self._set(window_center=center, window_width=width)

    def _on_brightness_contrast(self, _value: int) -> None:
        self._set(brightness=self.brightness_slider.value() / 100,
                  contrast=CONTRAST_RANGE ** (self.contrast_slider.value() / 100))

    def _on_invert(self, on: bool) -> None:
        self._set(invert=on)

    def _set(self, **changes) -> None:
        self.adjust = replace(self.adjust, **changes)
        self.adjustChanged.emit(self.adjust)
