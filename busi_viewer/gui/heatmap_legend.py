"""The heatmap's legend beside (or below) the image view: title, colour gradient with "low"/"high" ends, scale."""

from __future__ import annotations

import functools

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from busi_viewer.core.overlay import DEFAULT_COLORMAP, DEFAULT_EVIDENCE_FLOOR, colorize, colour_ramp

DEFAULT_SCALE_TEXT = "normalised per image (0–1)"
_LEGEND_BACKGROUND = 24  # grey level behind the heatmap legend


@functools.lru_cache(maxsize=8)
def colormap_table(colormap: str) -> np.ndarray:
    """(1, 256, 3) uint8: colorize()'s colour for each heatmap level 0..255 (level k = heatmap value k / 255)."""
    return np.ascontiguousarray(colorize(np.arange(256, dtype=np.float64)[None, :] / 255.0, colormap))


class HeatmapColorBar(QWidget):
    """Legend for the heatmap: title, the colour map gradient with "low"/"high" ends, and the scale it uses.

    Vertical (a narrow column beside the view, "high" at the top) by default; ``set_orientation(Horizontal)``
    makes it a strip for below the view.
    """

    _BAR_THICKNESS = 14
    _COLUMN_WIDTH = 150
    _MARGIN = 8.0

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = ""
        self.scale_text = DEFAULT_SCALE_TEXT
        self.colormap = DEFAULT_COLORMAP
        self.floor = DEFAULT_EVIDENCE_FLOOR
        self._gradient = self._make_gradient(self.colormap, self.floor)
        self._orientation = Qt.Orientation.Vertical
        self.set_orientation(Qt.Orientation.Vertical)
        self.setAutoFillBackground(True)
        palette = self.palette()
        palette.setColor(self.backgroundRole(), QColor(*(_LEGEND_BACKGROUND,) * 3))
        self.setPalette(palette)

    @staticmethod
    def _make_gradient(colormap: str, floor: float) -> QImage:
        """256 x 1 RGB image of the colour map, low (left) to high (right), as drawn at full opacity over the
        bar's dark background: nothing below the evidence floor."""
        rgb = np.ascontiguousarray(colour_ramp(colormap, floor, background=_LEGEND_BACKGROUND))
        # .copy(): the QImage must own its pixels, the numpy array is temporary
        return QImage(rgb.data, 256, 1, 256 * 3, QImage.Format.Format_RGB888).copy()

    @property
    def orientation(self) -> Qt.Orientation:
        return self._orientation

    def set_orientation(self, orientation: Qt.Orientation) -> None:
        """Vertical: fixed-width column that grows in height. Horizontal: fixed-height strip that grows in width."""
        self._orientation = orientation
        self.setMinimumSize(0, 0)
        self.setMaximumSize(16_777_215, 16_777_215)  # QWIDGETSIZE_MAX: undo the other orientation's fixed side
        retain = self.sizePolicy().retainSizeWhenHidden()
        if orientation == Qt.Orientation.Vertical:
            policy = QSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
            self.setFixedWidth(self._COLUMN_WIDTH)
            self.setMinimumHeight(200)
        else:
            policy = QSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            line = QFontMetricsF(self.font()).height()
            self.setFixedHeight(int(3 * line + self._BAR_THICKNESS + 14))
            self.setMinimumWidth(180)
        policy.setRetainSizeWhenHidden(retain)
        self.setSizePolicy(policy)
        self.updateGeometry()
        self.update()

    def set_content(self, *, colormap: str, title: str, scale_text: str) -> None:
        """Colour map name (busi_viewer.core.overlay), title (e.g. "Grad-CAM: evidence for <class>") and scale text."""
        if colormap != self.colormap:
            self._gradient = self._make_gradient(colormap, self.floor)
            self.colormap = colormap
        self.title = title
        self.scale_text = scale_text
        self.update()

    def set_floor(self, floor: float) -> None:
        """The evidence floor below which the legend, like the heatmap, shows nothing."""
        if floor != self.floor:
            self._gradient = self._make_gradient(self.colormap, floor)
            self.floor = floor
            self.update()

    def paintEvent(self, ev) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(*(_LEGEND_BACKGROUND,) * 3))
        if self._orientation == Qt.Orientation.Vertical:
            self._paint_vertical(painter)
        else:
            self._paint_horizontal(painter)
        painter.end()

    def _title_font(self) -> QFont:
        font = QFont(self.font())
        font.setBold(True)
        return font

    def _paint_vertical(self, painter: QPainter) -> None:
        wrap = Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap
        margin, bar_w = self._MARGIN, self._BAR_THICKNESS
        width = self.width() - 2 * margin
        metrics = QFontMetricsF(self.font())
        line = metrics.height()
        title_font = self._title_font()
        title = self.title or "Evidence"
        title_rect = QFontMetricsF(title_font).boundingRect(QRectF(margin, margin, width, 1e4), wrap, title)
        scale = f"scale: {self.scale_text}"
        scale_h = metrics.boundingRect(QRectF(0, 0, width, 1e4), wrap, scale).height()
        bar_top = title_rect.bottom() + 10 + line / 2
        bar_bottom = max(bar_top + 20, self.height() - margin - scale_h - 10 - line / 2)
        painter.setFont(title_font)
        painter.setPen(QColor(235, 235, 235))
        painter.drawText(QRectF(margin, margin, width, title_rect.height() + 1), wrap, title)
        bar = QRectF(margin, bar_top, bar_w, bar_bottom - bar_top)
        # the gradient image runs low -> high left to right; turn it so high is at the top
        painter.save()
        painter.translate(bar.left(), bar.bottom())
        painter.rotate(-90)
        painter.drawImage(QRectF(0, 0, bar.height(), bar.width()), self._gradient)
        painter.restore()
        painter.setPen(QColor(120, 120, 120))
        painter.drawRect(bar)
        painter.setFont(self.font())
        painter.setPen(QColor(210, 210, 210))
        label_x = bar.right() + 6
        painter.drawText(QRectF(label_x, bar_top - line / 2, width, line), Qt.AlignmentFlag.AlignLeft, "high")
        painter.drawText(QRectF(label_x, bar_bottom - line / 2, width, line), Qt.AlignmentFlag.AlignLeft, "low")
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(QRectF(margin, bar_bottom + line / 2 + 10, width, scale_h + 1), wrap, scale)

    def _paint_horizontal(self, painter: QPainter) -> None:
        left_aligned = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        right_aligned = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        metrics = QFontMetricsF(self.font())
        line = metrics.height()
        margin = self._MARGIN
        width = self.width() - 2 * margin
        end_w = metrics.horizontalAdvance("high") + 8  # same room at both ends keeps the bar centred
        y = 4.0
        title_font = self._title_font()
        painter.setFont(title_font)
        painter.setPen(QColor(235, 235, 235))
        title = self.title or "Evidence"
        title = QFontMetricsF(title_font).elidedText(title, Qt.TextElideMode.ElideRight, width)
        painter.drawText(QRectF(margin, y, width, line), left_aligned, title)
        y += line + 3
        painter.setFont(self.font())
        bar_width = max(10.0, width - 2 * end_w)
        bar = QRectF(margin + end_w, y + (line - self._BAR_THICKNESS) / 2, bar_width, self._BAR_THICKNESS)
        painter.drawImage(bar, self._gradient)
        painter.setPen(QColor(120, 120, 120))
        painter.drawRect(bar)
        painter.setPen(QColor(210, 210, 210))
        painter.drawText(QRectF(margin, y, end_w - 4, line), right_aligned, "low")
        painter.drawText(QRectF(bar.right() + 4, y, end_w, line), left_aligned, "high")
        y += line + 3
        painter.setPen(QColor(170, 170, 170))
        scale = metrics.elidedText(f"scale: {self.scale_text}", Qt.TextElideMode.ElideRight, width)
        painter.drawText(QRectF(margin, y, width, line), left_aligned, scale)
