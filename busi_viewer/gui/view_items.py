"""Graphics pieces of the image view: its ViewBox (measure and window drags), a view that reports resizes,
screen-size text and endpoint markers."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsItem


class ImageViewBox(pg.ViewBox):
    """A ViewBox whose left-drag is handed to ``measure_drag`` while measuring; otherwise plain pan/zoom."""

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
        self.measure_drag = None  # callable(ev) -> bool (True when it took the drag), set by ImageView
        self.window_drag = None  # callable(dx, dy) in screen px, for Ctrl+left-drags; set by ImageView
        self._windowing = False  # a Ctrl+drag stays a window drag until released, even if Ctrl is let go

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() == Qt.MouseButton.LeftButton and self.window_drag is not None:
            if ev.isStart():
                self._windowing = bool(ev.modifiers() & Qt.KeyboardModifier.ControlModifier)
            if self._windowing:
                step = ev.screenPos() - ev.lastScreenPos()
                self.window_drag(step.x(), step.y())
                self._windowing = not ev.isFinish()
                ev.accept()
                return
        if ev.button() == Qt.MouseButton.LeftButton and self.measure_drag is not None and self.measure_drag(ev):
            ev.accept()
            return
        super().mouseDragEvent(ev, axis)


class ResizingGraphicsView(pg.GraphicsView):
    """pg.GraphicsView that reports resizes, so the overlay labels (child widgets) can follow the corners."""

    def __init__(self, background: QColor) -> None:
        self.on_resize = None  # callable(); set by the owner once its overlays exist (__init__ resizes already)
        super().__init__(background=background)

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        if self.on_resize is not None:
            self.on_resize()


class ScreenText(QGraphicsItem):
    """Text drawn at screen size (never zoomed or rotated): PACS-style outlined text, or text on a box.

    ``anchor`` says which corner/edge of the text sits at the item's position ("top_left", "bottom_right",
    "center", ...); ``offset`` shifts it in screen pixels. Lines wrap at ``max_width`` screen pixels.
    """

    def __init__(
        self,
        *,
        colour: QColor,
        box: QColor | None = None,
        point_size: float = 10.0,
        bold: bool = False,
        align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft,
        anchor: str = "top_left",
        offset: QPointF | None = None,
        parent: QGraphicsItem | None = None,
    ) -> None:
        super().__init__(parent)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)  # pan, zoom and measuring pass through
        self._colour, self._box, self._align, self._anchor = colour, box, align, anchor
        self._offset = QPointF(0, 0) if offset is None else offset
        self._font = QFont()
        self._font.setPointSizeF(point_size)
        self._font.setBold(bold)
        self._text = ""
        self._max_width = 10_000.0
        self._text_rect = QRectF()
        self._rect = QRectF()

    @property
    def text(self) -> str:
        return self._text

    def set_anchor(self, anchor: str, offset: QPointF) -> None:
        if (anchor, offset) != (self._anchor, self._offset):
            self._anchor, self._offset = anchor, offset
            self.set_text(self._text)

    def set_text(self, text: str, max_width: float | None = None) -> None:
        self.prepareGeometryChange()
        self._text = text
        if max_width is not None:
            self._max_width = max(20.0, float(max_width))
        flags = int(self._align) | int(Qt.TextFlag.TextWordWrap)
        size = QFontMetricsF(self._font).boundingRect(QRectF(0, 0, self._max_width, 1e6), flags, text).size()
        pad_x, pad_y = (6.0, 3.0) if self._box is not None else (1.0, 1.0)
        width, height = size.width() + 2 * pad_x, size.height() + 2 * pad_y
        x = {"left": 0.0, "right": -width, "center": -width / 2}[self._anchor.split("_")[-1]]
        y = {"top": 0.0, "bottom": -height, "center": -height / 2}[self._anchor.split("_")[0]]
        self._rect = QRectF(x + self._offset.x(), y + self._offset.y(), width, height)
        self._text_rect = self._rect.adjusted(pad_x, pad_y, -pad_x, -pad_y)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect.adjusted(-1, -1, 1, 1)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if not self._text:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setFont(self._font)
        flags = int(self._align) | int(Qt.TextFlag.TextWordWrap)
        if self._box is not None:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self._box)
            painter.drawRoundedRect(self._rect, 3, 3)
        else:
            # a dark halo keeps light text readable over any image, as PACS annotations do
            painter.setPen(QColor(0, 0, 0))
            for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1), (1, 1)):
                painter.drawText(self._text_rect.translated(dx, dy), flags, self._text)
        painter.setPen(self._colour)
        painter.drawText(self._text_rect, flags, self._text)


def endpoint_handle(parent: QGraphicsItem, colour: QColor) -> QGraphicsEllipseItem:
    """A small screen-size endpoint marker."""
    item = QGraphicsEllipseItem(-4, -4, 8, 8, parent)
    item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, True)
    item.setPen(QPen(QColor(0, 0, 0), 1))
    item.setBrush(colour)
    return item
