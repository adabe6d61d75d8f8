"""The image without any overlay, beside the explained one: what the B-mode shows under the heatmap (as the PDF
report puts the two side by side)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

__all__ = ["RawPreview"]


class RawPreview(QWidget):
    """Paints the current frame as displayed (window/level, orientation), scaled to fit, with no layer on it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("raw_preview")
        self.setMinimumHeight(0)  # it takes what the panel has left, never room the results need
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._image: QImage | None = None
        self.setToolTip("The image without heatmap, mask or measurements")

    def set_image(self, pixels: np.ndarray | None, orientation: tuple[int, bool, bool] = (0, False, False)) -> None:
        """(H, W) or (H, W, 3) uint8 as displayed, turned as the view shows it (clockwise degrees, flips); None
        clears."""
        if pixels is None:
            self._image = None
        else:
            rotation, flip_h, flip_v = orientation
            turned = np.rot90(pixels, k=-(int(rotation) // 90) % 4)  # clockwise, then the mirrors, as the view
            turned = turned[:, ::-1] if flip_h else turned
            pixels = np.ascontiguousarray(turned[::-1] if flip_v else turned)
            height, width = pixels.shape[:2]
            if pixels.ndim == 2:
                image = QImage(pixels.data, width, height, width, QImage.Format.Format_Grayscale8)
            else:
                image = QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888)
            self._image = image.copy()  # the QImage must own its pixels
        self.update()

    @property
    def has_image(self) -> bool:
        return self._image is not None

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(24, 24, 24))
        painter.setPen(QColor(190, 190, 190))  # on the fixed dark background, whatever the theme
        caption = "Without overlay"
        line = self.fontMetrics().height()
        painter.drawText(QRectF(4, 2, self.width() - 8, line), Qt.AlignmentFlag.AlignLeft, caption)
        if self._image is not None and self.width() > 8 and self.height() > line + 8:
            room = QRectF(4, line + 4, self.width() - 8, self.height() - line - 8)
            scale = min(room.width() / self._image.width(), room.height() / self._image.height())
            w, h = self._image.width() * scale, self._image.height() * scale
            target = QRectF(room.left() + (room.width() - w) / 2, room.top() + (room.height() - h) / 2, w, h)
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            painter.drawImage(target, self._image)
        painter.end()
