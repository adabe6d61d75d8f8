"""The thumbnail strip on the left of the window: one row per image, made in the background.

Thumbnails are decoded by :func:`busi_viewer.core.loader.load_image` on ONE pool thread (the inference worker
keeps the other core), downscaled to at most :data:`THUMB_SIZE` px with ``cv2.INTER_AREA`` and handed back as
a QImage (QPixmap may only be created in the GUI thread). Only rows the user can see (plus a margin) are asked
for, newest request first, and at most :data:`PIXMAP_CACHE_SIZE` pixmaps are kept (least recently used go).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPoint,
    QRect,
    QRectF,
    QRunnable,
    QSize,
    Qt,
    QThreadPool,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QImage,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
)

from ..core.errors import ImageLoadError
from ..core.loader import load_image
from .state import ThumbState
from .thread_priority import lower_current_thread_priority

__all__ = ["CLASS_COLOURS", "THUMB_SIZE", "ThumbStateRole", "ThumbnailModel", "ThumbnailStrip", "make_thumbnail"]

CLASS_COLOURS: dict[str, str] = {"benign": "#2e9e44", "malignant": "#d62728", "normal": "#1f6fd1"}
"""Marker colour per class name (thumbnail dots, result bars). Unknown classes fall back to grey."""

FALLBACK_COLOUR = "#8c8c8c"
OUT_OF_SCOPE_COLOUR = "#5f5f5f"  # the "?" dot of an image outside the model's scope: no class colour
THUMB_SIZE = 96  # longest side of a thumbnail, logical px
PIXMAP_CACHE_SIZE = 500  # ~500 x 96 x 96 x 4 B = 18 MB at most
MAX_QUEUED = 256  # older pending requests are dropped; a row that becomes visible again asks again
VISIBLE_MARGIN = 12  # rows above/below the viewport that are prepared ahead of scrolling
ThumbStateRole = Qt.ItemDataRole.UserRole + 1  # model data role returning the row's ThumbState

_PAD = 6  # cell padding, px


def class_colour(name: str | None) -> QColor:
    """The marker colour of a class name (grey for None or an unknown class)."""
    return QColor(CLASS_COLOURS.get(name or "", FALLBACK_COLOUR))


def make_thumbnail(path: Path | str, size: int = THUMB_SIZE) -> QImage:
    """Load ``path`` and return an RGB QImage whose longest side is at most ``size`` px (never upscaled).

    Raises ImageLoadError when the file cannot be read. Safe to call from any thread (no QPixmap involved).
    """
    rgb = load_image(path).rgb  # (H, W, 3) uint8, windowed for display
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    # .copy() detaches the QImage from the numpy buffer, which dies with this frame.
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class _Emitter(QObject):
    """Lives in the GUI thread; pool threads emit on it, so delivery is queued into the GUI thread."""

    finished = Signal(str, QImage, str)  # path, thumbnail (null on failure), error reason ("" on success)


_THREAD_STATE = threading.local()


class _ThumbJob(QRunnable):
    def __init__(self, path: str, emitter: _Emitter):
        super().__init__()
        self._path = path
        self._emitter = emitter

    def run(self) -> None:  # pool thread
        if not getattr(_THREAD_STATE, "lowered", False):  # once per pool thread: niceness only goes up
            _THREAD_STATE.lowered = True
            lower_current_thread_priority()
        try:
            image, error = make_thumbnail(self._path), ""
        except ImageLoadError as exc:
            image, error = QImage(), exc.reason
        except Exception as exc:  # noqa: BLE001 - a broken file must never kill the strip
            image, error = QImage(), f"{type(exc).__name__}: {exc}"
        self._emitter.finished.emit(self._path, image, error)


class ThumbnailModel(QAbstractListModel):
    """List model over ThumbState rows; fetches thumbnails lazily and marks unreadable files.

    Roles: DisplayRole = file name, ToolTipRole = path (+ error), DecorationRole = QPixmap or None while
    loading, ThumbStateRole = the row's ThumbState.
    """

    def __init__(self, parent: QObject | None = None, *, threads: int = 1):
        super().__init__(parent)
        # Created before the emitter: children die in creation order and ~QThreadPool waits for its jobs,
        # so a running job can still emit on a live emitter when the model is torn down.
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._emitter = _Emitter(self)
        self._emitter.finished.connect(self._on_finished)
        self._items: list[ThumbState] = []
        self._rows_by_path: dict[str, list[int]] = {}
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()  # LRU, most recently used last
        self._failed: dict[str, str] = {}  # path -> reason, never retried while the model lives
        self._queue: OrderedDict[str, None] = OrderedDict()  # pending requests, newest last
        self._in_flight: set[str] = set()
        self._threads = threads
        self._closed = False

    # --- Qt model API ---
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt signature
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        item = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.path.name
        if role == ThumbStateRole:
            return item
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = str(item.path)
            if item.predicted and item.out_of_scope:
                tip += f"\nmodel: outside its scope (most probable: {item.predicted})"
            elif item.predicted:
                tip += f"\nmodel: {item.predicted}"
            if item.reviewed:
                tip += "\nreviewed"
            if item.unreadable:
                tip += f"\nunreadable: {item.error or 'could not be loaded'}"
            return tip
        if role == Qt.ItemDataRole.DecorationRole:
            if item.unreadable:
                return None
            key = str(item.path)
            pixmap = self._pixmaps.get(key)
            if pixmap is not None:
                self._pixmaps.move_to_end(key)
                return pixmap
            self.request(index.row())  # the view asks only for rows it paints: lazy by construction
            return None
        return None

    # --- public API ---
    def items(self) -> list[ThumbState]:
        return list(self._items)

    def set_items(self, items: list[ThumbState]) -> None:
        """Replace all rows. Cached pixmaps are kept (same paths reappear); pending requests are dropped."""
        self.beginResetModel()
        self._items = [self._with_known_failure(item) for item in items]
        self._rebuild_index()
        self._queue.clear()
        self.endResetModel()

    def update_item(self, row: int, state: ThumbState) -> None:
        """Replace one row's state (prediction, review mark, ...); IndexError when out of range."""
        if not 0 <= row < len(self._items):
            raise IndexError(f"thumbnail row {row} out of range 0..{len(self._items) - 1}")
        old = self._items[row]
        self._items[row] = self._with_known_failure(state)
        if old.path != state.path:
            self._rebuild_index()
        index = self.index(row)
        self.dataChanged.emit(index, index)

    def request(self, row: int) -> None:
        """Ask for row's thumbnail (no-op when cached, failed, pending or in flight); newest requests run first."""
        if self._closed or not 0 <= row < len(self._items):
            return
        item = self._items[row]
        key = str(item.path)
        if item.unreadable or key in self._pixmaps or key in self._failed or key in self._in_flight:
            return
        self._queue[key] = None
        self._queue.move_to_end(key)
        while len(self._queue) > MAX_QUEUED:
            self._queue.popitem(last=False)
        self._pump()

    def pending(self) -> int:
        """Thumbnails queued or being made right now."""
        return len(self._queue) + len(self._in_flight)

    def cached_count(self) -> int:
        """Converted pixmaps held in the LRU cache now (at most PIXMAP_CACHE_SIZE)."""
        return len(self._pixmaps)

    def is_cached(self, row: int) -> bool:
        return 0 <= row < len(self._items) and str(self._items[row].path) in self._pixmaps

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        """Stop asking for thumbnails and wait for the running job; True when the pool is idle."""
        self._closed = True
        self._queue.clear()
        self._pool.clear()
        return self._pool.waitForDone(timeout_ms)

    # --- internals ---
    def _with_known_failure(self, item: ThumbState) -> ThumbState:
        reason = self._failed.get(str(item.path))
        if reason is not None and not item.unreadable:
            return replace(item, unreadable=True, error=item.error or reason)
        return item

    def _rebuild_index(self) -> None:
        self._rows_by_path = {}
        for row, item in enumerate(self._items):
            self._rows_by_path.setdefault(str(item.path), []).append(row)

    def _pump(self) -> None:
        while not self._closed and self._queue and len(self._in_flight) < self._threads:
            key, _ = self._queue.popitem(last=True)
            self._in_flight.add(key)
            self._pool.start(_ThumbJob(key, self._emitter))

    def _on_finished(self, key: str, image: QImage, error: str) -> None:  # GUI thread
        self._in_flight.discard(key)
        if error or image.isNull():
            self._failed[key] = error or "could not be loaded"
            for row in self._rows_by_path.get(key, []):
                self._items[row] = replace(self._items[row], unreadable=True, error=self._failed[key])
        else:
            self._pixmaps[key] = QPixmap.fromImage(image)
            self._pixmaps.move_to_end(key)
            while len(self._pixmaps) > PIXMAP_CACHE_SIZE:
                self._pixmaps.popitem(last=False)
        for row in self._rows_by_path.get(key, []):
            index = self.index(row)
            self.dataChanged.emit(index, index)
        self._pump()


class ThumbnailDelegate(QStyledItemDelegate):
    """Draws the thumbnail, the elided file name below it, and the markers.

    Markers: top-left a dot in the predicted class's colour with the class's initial (so it reads without
    colour vision), or a grey "?" when the image is outside the model's scope; top-right a green check when
    reviewed, centre a red "!" when the file is unreadable.
    """

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(THUMB_SIZE + 2 * _PAD, THUMB_SIZE + option.fontMetrics.height() + 3 * _PAD)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        widget = opt.widget
        style = widget.style() if widget is not None else None
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if style is not None:  # selection / hover background in the platform's look
            style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, opt, painter, widget)
        state: ThumbState | None = index.data(ThumbStateRole)
        rect = opt.rect
        box = QRect(rect.left() + (rect.width() - THUMB_SIZE) // 2, rect.top() + _PAD, THUMB_SIZE, THUMB_SIZE)
        palette = opt.palette
        pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            size = pixmap.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, size.width(), size.height())
            target.moveCenter(box.center())
            painter.drawPixmap(target, pixmap)
        else:
            painter.setPen(QPen(palette.color(QPalette.ColorRole.Mid), 1))
            painter.setBrush(palette.color(QPalette.ColorRole.AlternateBase))
            painter.drawRoundedRect(QRectF(box).adjusted(0.5, 0.5, -0.5, -0.5), 4, 4)
            if state is not None and not state.unreadable:
                painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
                painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "…")
        if state is not None:
            self._draw_markers(painter, box, state)
        # File name, elided in the middle so both the start and the number at the end stay readable.
        text_rect = QRect(rect.left() + 2, box.bottom() + _PAD // 2, rect.width() - 4, opt.fontMetrics.height())
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(palette.color(role))
        name = opt.fontMetrics.elidedText(opt.text, Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, name)
        painter.restore()

    @staticmethod
    def _draw_markers(painter: QPainter, box: QRect, state: ThumbState) -> None:
        painter.save()  # markers change font and pen; the file name below must not inherit them
        try:
            ThumbnailDelegate._draw_marker_shapes(painter, box, state)
        finally:
            painter.restore()

    @staticmethod
    def _draw_marker_shapes(painter: QPainter, box: QRect, state: ThumbState) -> None:
        outline = QPen(QColor(0, 0, 0, 200), 1.5)  # dark rim: the markers sit on bright or dark images
        if state.predicted:
            dot = QRectF(box.left() + 3, box.top() + 3, 18, 18)
            if state.out_of_scope:  # no class colour: the model's class means nothing here
                _lettered_dot(painter, dot, outline, QColor(OUT_OF_SCOPE_COLOUR), "?", 11)
            else:
                _lettered_dot(painter, dot, outline, class_colour(state.predicted), state.predicted[:1].upper(), 11)
        if state.reviewed:
            badge = QRectF(box.right() - 20, box.top() + 3, 18, 18)
            painter.setPen(outline)
            painter.setBrush(QColor("#2e9e44"))
            painter.drawEllipse(badge)
            tick = QPainterPath()
            tick.moveTo(badge.left() + 4.5, badge.center().y() + 0.5)
            tick.lineTo(badge.left() + 7.5, badge.bottom() - 5)
            tick.lineTo(badge.right() - 4, badge.top() + 5)
            painter.setPen(QPen(QColor("white"), 2.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(tick)
        if state.unreadable:
            badge = QRectF(0, 0, 34, 34)
            badge.moveCenter(QRectF(box).center())
            _lettered_dot(painter, badge, outline, QColor("#d62728"), "!", 24)


class ThumbnailStrip(QListView):
    """Vertical strip of thumbnails; emits ``imageActivated(row)`` when the user moves to a row.

    The user "activates" a row by clicking it or moving the current row with the keyboard; programmatic
    :meth:`set_current` does not emit. Call :meth:`shutdown` before the window closes.
    """

    imageActivated = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("thumbnail_strip")
        self._model = ThumbnailModel(self)
        self.setModel(self._model)
        self.setItemDelegate(ThumbnailDelegate(self))
        self.setViewMode(QListView.ViewMode.ListMode)
        self.setFlow(QListView.Flow.TopToBottom)
        self.setWrapping(False)
        self.setUniformItemSizes(True)  # lets the view skip data() for rows it does not show
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setMouseTracking(True)
        scrollbar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        self.setFixedWidth(THUMB_SIZE + 2 * _PAD + scrollbar + 2 * self.frameWidth() + 4)
        self._programmatic = False
        self.selectionModel().currentChanged.connect(self._on_current_changed)
        self.verticalScrollBar().valueChanged.connect(self._request_visible)
        self._visible_timer = QTimer(self, singleShot=True, interval=0)
        self._visible_timer.timeout.connect(self._request_visible)

    def thumbnail_model(self) -> ThumbnailModel:
        return self._model

    def set_items(self, items: list[ThumbState]) -> None:
        """Show these images (rows in this order); no row is current afterwards."""
        self._programmatic = True
        try:
            self._model.set_items(items)
        finally:
            self._programmatic = False
        self._visible_timer.start()

    def update_item(self, row: int, state: ThumbState) -> None:
        self._model.update_item(row, state)

    def set_current(self, row: int) -> None:
        """Select ``row`` and scroll it into view without emitting imageActivated."""
        index = self._model.index(row)
        if not index.isValid():
            return
        self._programmatic = True
        try:
            self.setCurrentIndex(index)  # SingleSelection: also selects
            self.scrollTo(index, QAbstractItemView.ScrollHint.EnsureVisible)
        finally:
            self._programmatic = False

    def shutdown(self) -> None:
        """Wait for the thumbnail thread (call when the window closes)."""
        self._visible_timer.stop()
        self._model.shutdown()

    # --- internals ---
    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not self._programmatic and current.isValid():
            self.imageActivated.emit(current.row())

    def _request_visible(self, *_args) -> None:
        n = self._model.rowCount()
        if n == 0:
            return
        top = self.indexAt(QPoint(2, 2)).row()
        bottom = self.indexAt(QPoint(2, self.viewport().height() - 2)).row()
        top = max(top, 0)
        bottom = n - 1 if bottom < 0 else bottom
        first, last = max(0, top - VISIBLE_MARGIN), min(n - 1, bottom + VISIBLE_MARGIN)
        # Margin rows first, visible rows last: the queue runs newest first, so what is on screen comes first.
        order = list(range(first, top)) + list(range(last, bottom, -1)) + list(range(bottom, top - 1, -1))
        for row in order:
            self._model.request(row)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._visible_timer.start()


def _lettered_dot(painter: QPainter, rect: QRectF, outline: QPen, fill: QColor, text: str, pixel_size: int) -> None:
    """A filled circle with a bold white glyph: the class initial, or "!" for unreadable files."""
    painter.setPen(outline)
    painter.setBrush(QBrush(fill))
    painter.drawEllipse(rect)
    font = QFont(painter.font())
    font.setBold(True)
    font.setPixelSize(pixel_size)
    painter.setFont(font)
    painter.setPen(QColor("white"))
    painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
