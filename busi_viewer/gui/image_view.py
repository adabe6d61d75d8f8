"""The PACS-style image view: image, Grad-CAM heatmap, lesion-mask outline, a length measurement and orientation.

One pyqtgraph ViewBox (aspect locked, y down so row 0 is at the top). Every layer is a child of one ``stack``
item whose transform carries the orientation (rotation/flips), so layers are always drawn in IMAGE pixel
coordinates: pixel (row r, column c) covers [c, c+1] x [r, r+1] and its centre is (c + 0.5, r + 0.5).
Window/level is applied before (busi_viewer.core.display); this view only shows uint8 display arrays as they are.
Mouse: left-drag pans (draws a measurement in measure mode), Ctrl+left-drag adjusts window/level (or
brightness/contrast, see ``windowDragged``), middle-drag pans, wheel zooms around the cursor, right-drag zooms.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QLineF, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsLineItem, QGraphicsPathItem, QHBoxLayout, QWidget

from busi_viewer.core.masks import mask_outline
from busi_viewer.core.overlay import DEFAULT_COLORMAP, DEFAULT_EVIDENCE_FLOOR, heatmap_alpha
from busi_viewer.gui.heatmap_legend import DEFAULT_SCALE_TEXT, HeatmapColorBar, colormap_table
from busi_viewer.gui.view_items import ImageViewBox, ResizingGraphicsView, ScreenText, endpoint_handle

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
ROTATIONS = (0, 90, 180, 270)

_BACKGROUND = QColor(0, 0, 0)
_OUTLINE_COLOUR = QColor(0, 255, 0)
_MEASURE_COLOUR = QColor(255, 220, 0)
_HANDLE_GRAB_PX = 10.0  # pressing this close (screen px) to an endpoint drags that endpoint instead of a new line
_CORNER_MARGIN = 8


class ImageView(QWidget):
    """The image view. Coordinates in the public API are image pixels: x = column, y = row (pixel edges at integers).

    ``colorbar`` is laid out beside the view (vertical) by default; the window may move it into another layout
    (call ``colorbar.set_orientation(Qt.Orientation.Horizontal)`` to put it below the view).
    """

    measurementChanged = Signal(object)  # ((x0, y0), (x1, y1)) in image px; emitted while dragging and at the end
    viewChanged = Signal()  # zoom or pan changed (also on resize and fit)
    # A Ctrl+left-drag step (dx, dy) in screen px, x right and y down: the display panel turns it into
    # window/level (or brightness/contrast); the view itself only shows display arrays.
    windowDragged = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._shape: tuple[int, int] | None = None  # (H, W) of the current image
        self._rotation, self._flip_h, self._flip_v = 0, False, False
        self._heat_u8: np.ndarray | None = None  # (H, W) uint8 heatmap levels, kept to rebuild alpha only
        self._heat_rgba: np.ndarray | None = None  # (H, W, 4) uint8, RGB colourised once per heatmap
        self._opacity = 0.45
        self._floor = DEFAULT_EVIDENCE_FLOOR
        self._heat_visible = True
        self._mask_visible = True
        self._has_mask = False
        self._placeholder: str | None = None
        self._measure_on = False
        self._measure: tuple[tuple[float, float], tuple[float, float]] | None = None
        self._drag_fixed: tuple[float, float] | None = None  # the endpoint that stays put during a drag
        self._measure_text = ""
        self._calibrated = True

        self._view = ResizingGraphicsView(_BACKGROUND)
        self._vb = ImageViewBox()
        self._vb.measure_drag = self._measure_drag
        self._vb.window_drag = self.windowDragged.emit
        self._view.setCentralItem(self._vb)
        self._vb.disableAutoRange()  # the view is set by fit()/actual_size()/the user, never by item bounds
        self._vb.sigRangeChanged.connect(self._on_range_changed)

        self._stack = pg.ItemGroup()
        self._vb.addItem(self._stack)
        self._image_item = pg.ImageItem()
        self._heat_item = pg.ImageItem()
        self._heat_item.setZValue(1)
        self._outline_item = QGraphicsPathItem()
        pen = QPen(_OUTLINE_COLOUR, 2)
        pen.setCosmetic(True)  # 2 screen px at any zoom
        self._outline_item.setPen(pen)
        self._outline_item.setZValue(2)
        for item in (self._image_item, self._heat_item, self._outline_item):
            item.setParentItem(self._stack)
        self._line_item = QGraphicsLineItem(self._stack)
        line_pen = QPen(_MEASURE_COLOUR, 2)
        line_pen.setCosmetic(True)
        self._line_item.setPen(line_pen)
        self._line_item.setZValue(3)
        self._handles = (endpoint_handle(self._stack, _MEASURE_COLOUR), endpoint_handle(self._stack, _MEASURE_COLOUR))
        self._tag = ScreenText(
            colour=_MEASURE_COLOUR, box=QColor(0, 0, 0, 170), bold=True, offset=QPointF(10, 8), parent=self._stack
        )
        for item in (self._line_item, *self._handles, self._tag):
            item.setZValue(3)
            item.hide()

        # Screen-space annotations live in the scene (whose coordinates are the viewport's pixels), above the view
        scene = self._view.scene()
        white = QColor(235, 235, 235)
        self._corners = {}
        for name in CORNERS:
            align = Qt.AlignmentFlag.AlignRight if name.endswith("right") else Qt.AlignmentFlag.AlignLeft
            self._corners[name] = ScreenText(colour=white, align=align, anchor=name)
        self._badge = ScreenText(
            colour=QColor(0, 0, 0), box=QColor(255, 214, 0), bold=True, anchor="top_right"
        )
        self._badge.set_text("uncalibrated")
        self._placeholder_item = ScreenText(
            colour=QColor(200, 200, 200), point_size=14.0, align=Qt.AlignmentFlag.AlignHCenter, anchor="center_center"
        )
        self._warning = ScreenText(colour=QColor(251, 233, 231), box=QColor(179, 38, 30), bold=True,
                                    align=Qt.AlignmentFlag.AlignHCenter, anchor="bottom_center")
        for item in (*self._corners.values(), self._badge, self._placeholder_item, self._warning):
            item.setZValue(1000)
            item.hide()
            scene.addItem(item)

        self.colorbar = HeatmapColorBar(self)
        self.colorbar.hide()
        self.setAutoFillBackground(True)
        palette = self.palette()
        palette.setColor(self.backgroundRole(), QColor(24, 24, 24))  # the colour bar's strip while it is hidden
        self.setPalette(palette)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self._view, 1)
        layout.addWidget(self.colorbar, 0)
        self.setMinimumSize(200, 150)
        self._view.on_resize = self._place_overlays

    def _on_range_changed(self, *_) -> None:
        self._place_tag()
        self.viewChanged.emit()

    # ----------------------------------------------------------------------------------------------- image
    def set_image(self, display: np.ndarray | None, *, keep_view: bool = False) -> None:
        """Show a uint8 (H, W) or (H, W, 3) display array (not copied; do not modify it afterwards).

        None clears the image and every layer. ``keep_view`` keeps zoom/pan (e.g. the next frame, a new window);
        otherwise the view fits the image. A new shape drops the heatmap, mask and measurement (they belonged to
        another grid); with the same shape they stay, and the caller replaces them.
        """
        if display is None:
            self._shape = None
            self._image_item.clear()
            self.set_heatmap(None)
            self.set_mask(None)
            self.clear_measurement()
            self._apply_orientation()
            return
        if display.dtype != np.uint8 or not (display.ndim == 2 or (display.ndim == 3 and display.shape[2] == 3)):
            raise ValueError(f"display must be uint8 (H, W) or (H, W, 3), got {display.dtype} {display.shape}")
        shape = (int(display.shape[0]), int(display.shape[1]))
        had_image = self._shape is not None
        if shape != self._shape:
            self._shape = shape
            self.set_heatmap(None)
            self.set_mask(None)
            self.clear_measurement()
            self._apply_orientation()
        # levels=None on uint8 shows the values as they are (the same as levels (0, 255)) and lets pyqtgraph wrap
        # the array in a QImage without the per-render rescale it does for explicit levels.
        self._image_item.setImage(display, autoLevels=False, levels=None)
        if not keep_view or not had_image:
            self.fit()

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """(H, W) of the current image, or None."""
        return self._shape

    def _check_grid(self, array: np.ndarray, what: str) -> None:
        if array.ndim != 2:
            raise ValueError(f"{what} must be 2-D (H, W), got shape {array.shape}")
        if self._shape is None:
            raise ValueError(f"set an image before its {what}")
        if array.shape != self._shape:
            raise ValueError(f"{what} shape {array.shape} does not match the image shape {self._shape}")

    # --------------------------------------------------------------------------------------------- heatmap
    def set_heatmap(
        self,
        heatmap: np.ndarray | None,
        *,
        colormap: str = DEFAULT_COLORMAP,
        title: str = "",
        scale_text: str = DEFAULT_SCALE_TEXT,
    ) -> None:
        """Overlay a float (H, W) heatmap in [0, 1] on the image grid; None removes it.

        Colour = colorize(heatmap, colormap); alpha = heatmap_alpha(heatmap, opacity, evidence floor) (the rule of
        busi_viewer.core.overlay.blend_heatmap), so where the map is below the floor the image shows untouched.
        """
        if heatmap is None:
            self._heat_u8 = self._heat_rgba = None
            self._heat_item.clear()
            self._sync_heat_visibility()
            return
        heatmap = np.asarray(heatmap)
        self._check_grid(heatmap, "heatmap")
        # colorize()'s quantisation (clip, NaN -> 0, level = floor(h * 255 + 0.5)), computed once: the level
        # picks the colour through a 256-entry colorize() table and, later, the alpha through an opacity table.
        values = np.clip(heatmap.astype(np.float32, copy=False), 0.0, 1.0)
        values[np.isnan(values)] = 0.0
        self._heat_u8 = (values * 255.0 + 0.5).astype(np.uint8)
        table = colormap_table(colormap)
        rgb = cv2.LUT(cv2.merge([self._heat_u8] * 3), table)
        self._heat_rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)  # contiguous (H, W, 4); alpha set below
        self.colorbar.set_content(colormap=colormap, title=title, scale_text=scale_text)
        self._render_alpha()
        self._sync_heat_visibility()

    def _render_alpha(self) -> None:
        if self._heat_rgba is None or self._heat_u8 is None:
            return
        # alpha = heatmap_alpha(level / 255) * 255: one 256-entry table, one uint8 gather
        levels = np.arange(256, dtype=np.float32) / 255.0
        table = np.round(heatmap_alpha(levels, self._opacity, self._floor) * 255.0).astype(np.uint8)
        self._heat_rgba[..., 3] = cv2.LUT(self._heat_u8, table)  # ~10x faster than numpy fancy indexing
        self._heat_item.setImage(self._heat_rgba, autoLevels=False, levels=None)

    def set_opacity(self, opacity: float) -> None:
        """Heatmap opacity in [0, 1] (clipped); 0 shows the bare image. Rebuilds the alpha channel only."""
        opacity = float(np.clip(opacity, 0.0, 1.0))
        if opacity == self._opacity:
            return
        self._opacity = opacity
        self._render_alpha()

    @property
    def opacity(self) -> float:
        return self._opacity

    def set_evidence_floor(self, floor: float) -> None:
        """Heatmap values below ``floor`` (in [0, 0.95]) are not drawn; rebuilds the alpha channel and the legend."""
        floor = float(np.clip(floor, 0.0, 0.95))
        if floor == self._floor:
            return
        self._floor = floor
        self.colorbar.set_floor(floor)
        self._render_alpha()

    @property
    def evidence_floor(self) -> float:
        return self._floor

    def set_heatmap_visible(self, visible: bool) -> None:
        self._heat_visible = bool(visible)
        self._sync_heat_visibility()

    @property
    def heatmap_visible(self) -> bool:
        """The user's show/hide choice (independent of whether a heatmap is set)."""
        return self._heat_visible

    @property
    def has_heatmap(self) -> bool:
        return self._heat_rgba is not None

    def _sync_heat_visibility(self) -> None:
        shown = self._heat_visible and self._heat_rgba is not None
        self._heat_item.setVisible(shown)
        # While the heatmap is wanted, its legend keeps its room between images (the image would jump while
        # the next result computes); switched off, the view takes the room back.
        policy = self.colorbar.sizePolicy()
        if policy.retainSizeWhenHidden() != self._heat_visible:
            policy.setRetainSizeWhenHidden(self._heat_visible)
            self.colorbar.setSizePolicy(policy)
        self.colorbar.setVisible(shown and self._placeholder is None)

    # ------------------------------------------------------------------------------------------------ mask
    def set_mask(self, mask: np.ndarray | None) -> None:
        """Outline a bool (H, W) lesion mask on the image grid (bright green, 2 screen px); None removes it."""
        if mask is None:
            self._outline_item.setPath(QPainterPath())
            self._has_mask = False
            self._outline_item.setVisible(False)
            return
        mask = np.asarray(mask)
        self._check_grid(mask, "mask")
        contours = [c for c in mask_outline(mask) if len(c) > 0]
        path = QPainterPath()
        if contours:
            # close each contour and break the pen between contours; +0.5: contour points are pixel indices and
            # a pixel's centre is at index + 0.5 in item coordinates, so the line runs through the edge pixels
            closed = [np.vstack([c, c[:1]]).astype(np.float64) + 0.5 for c in contours]
            points = np.vstack(closed)
            connect = np.ones(len(points), dtype=bool)
            connect[np.cumsum([len(c) for c in closed]) - 1] = False
            path = pg.arrayToQPath(points[:, 0], points[:, 1], connect=connect)
        self._outline_item.setPath(path)
        self._has_mask = True
        self._outline_item.setVisible(self._mask_visible)

    def set_mask_visible(self, visible: bool) -> None:
        self._mask_visible = bool(visible)
        self._outline_item.setVisible(self._mask_visible and self._has_mask)

    @property
    def mask_visible(self) -> bool:
        """The user's show/hide choice (independent of whether a mask is set)."""
        return self._mask_visible

    @property
    def has_mask(self) -> bool:
        return self._has_mask

    # ----------------------------------------------------------------------------------------- orientation
    def set_orientation(self, rotation: int = 0, flip_h: bool = False, flip_v: bool = False) -> None:
        """Rotate clockwise by 0/90/180/270 degrees, then mirror on screen (flip_h: left-right, flip_v: up-down).

        Flips act on the displayed picture (as a PACS user expects), after the rotation. Refits the view.
        """
        rotation = int(rotation) % 360
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {ROTATIONS}, got {rotation}")
        self._rotation, self._flip_h, self._flip_v = rotation, bool(flip_h), bool(flip_v)
        self._apply_orientation()
        self.fit()

    @property
    def orientation(self) -> tuple[int, bool, bool]:
        """(rotation, flip_h, flip_v)."""
        return self._rotation, self._flip_h, self._flip_v

    def _apply_orientation(self) -> None:
        height, width = self._shape or (0, 0)
        cx, cy = width / 2.0, height / 2.0
        transform = pg.QtGui.QTransform()
        # QTransform calls compose so that the LAST call acts first on a point: centre, rotate, flip, uncentre
        transform.translate(cx, cy)
        transform.scale(-1.0 if self._flip_h else 1.0, -1.0 if self._flip_v else 1.0)
        transform.rotate(self._rotation)  # y points down on screen, so a positive angle turns clockwise
        transform.translate(-cx, -cy)
        self._stack.setTransform(transform)
        self._place_tag()

    # ------------------------------------------------------------------------------------------- zoom/pan
    def _image_rect_in_view(self) -> QRectF | None:
        if self._shape is None:
            return None
        height, width = self._shape
        return self._stack.mapRectToParent(QRectF(0, 0, width, height))

    def fit(self) -> None:
        """Zoom so the whole (oriented) image fills the view, centred."""
        rect = self._image_rect_in_view()
        if rect is not None:
            self._vb.setRange(rect=rect, padding=0.0)

    def actual_size(self) -> None:
        """1 image pixel = 1 screen pixel, image centred."""
        rect = self._image_rect_in_view()
        if rect is None:
            return
        size = self._vb.size()  # the ViewBox's size in scene units = screen pixels
        width, height = max(1.0, size.width()), max(1.0, size.height())
        centre = rect.center()
        self._vb.setRange(
            rect=QRectF(centre.x() - width / 2, centre.y() - height / 2, width, height), padding=0.0
        )

    def zoom_by(self, factor: float) -> None:
        """Zoom in by ``factor`` (> 1 enlarges) around the centre of the view."""
        if factor <= 0:
            raise ValueError(f"zoom factor must be positive, got {factor}")
        self._vb.scaleBy(s=(1.0 / factor, 1.0 / factor))

    def reset(self) -> None:
        """Orientation back to none, then fit."""
        self.set_orientation(0, False, False)

    def zoom_percent(self) -> float:
        """Screen pixels per image pixel, as a percentage (100 = actual size)."""
        pixel = self._vb.viewPixelSize()[0]
        return 100.0 / pixel if pixel > 0 else 100.0

    # ---------------------------------------------------------------------------------------- coordinates
    def map_image_to_widget(self, x: float, y: float) -> QPointF:
        """Image pixel coordinates (x = column, y = row) -> this widget's coordinates (logical pixels)."""
        self._vb.updateMatrix()  # a range change is applied lazily (at the next paint) otherwise
        viewport = self._view.viewportTransform().map(self._stack.mapToScene(QPointF(x, y)))
        return self._view.viewport().mapTo(self, viewport)

    def map_widget_to_image(self, point: QPointF) -> tuple[float, float]:
        """This widget's coordinates -> image pixel coordinates (x = column, y = row); may lie off the image."""
        self._vb.updateMatrix()
        viewport = self._view.viewport().mapFrom(self, QPointF(point))
        inverse, _ = self._view.viewportTransform().inverted()
        image = self._stack.mapFromScene(inverse.map(viewport))
        return image.x(), image.y()

    # ---------------------------------------------------------------------------------------- measurement
    def set_measure_mode(self, on: bool) -> None:
        """While on, a left-drag draws (or, from an endpoint, edits) the length line; pan with middle-drag."""
        self._measure_on = bool(on)
        cursor = Qt.CursorShape.CrossCursor if self._measure_on else Qt.CursorShape.ArrowCursor
        self._view.viewport().setCursor(cursor)

    @property
    def measure_mode(self) -> bool:
        return self._measure_on

    @property
    def measurement(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """((x0, y0), (x1, y1)) in image pixels, or None."""
        return self._measure

    def _to_image_clamped(self, scene_pos) -> tuple[float, float]:
        point = self._stack.mapFromScene(scene_pos)
        height, width = self._shape  # only called with an image
        return float(np.clip(point.x(), 0.0, width)), float(np.clip(point.y(), 0.0, height))

    def _measure_drag(self, ev) -> bool:
        if not self._measure_on or self._shape is None or self._placeholder is not None:
            return False
        if ev.isStart():
            press = ev.buttonDownScenePos(Qt.MouseButton.LeftButton)
            self._drag_fixed = self._to_image_clamped(press)
            if self._measure is not None:
                # pressing on an endpoint edits the line: the other endpoint stays fixed
                to_screen = self._view.viewportTransform()
                press_px = to_screen.map(press)
                distances = [
                    QLineF(to_screen.map(self._stack.mapToScene(QPointF(*p))), press_px).length() for p in self._measure
                ]
                nearest = int(np.argmin(distances))
                if distances[nearest] <= _HANDLE_GRAB_PX:
                    self._drag_fixed = self._measure[1 - nearest]
        end = self._to_image_clamped(ev.scenePos())
        self._set_line((self._drag_fixed, end))
        self.measurementChanged.emit(self._measure)
        return True

    def _set_line(self, points) -> None:
        (x0, y0), (x1, y1) = points
        self._measure = ((float(x0), float(y0)), (float(x1), float(y1)))
        self._line_item.setLine(x0, y0, x1, y1)
        self._handles[0].setPos(x0, y0)
        self._handles[1].setPos(x1, y1)
        for item in (self._line_item, *self._handles):
            item.show()
        self._place_tag()

    def set_measurement(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """Draw a length line between two image points (x, y) programmatically; emits measurementChanged."""
        if self._shape is None:
            raise ValueError("set an image before a measurement")
        self._set_line((start, end))
        self.measurementChanged.emit(self._measure)

    def _place_tag(self) -> None:
        """Put the length label beside the line's end point, on whichever side keeps it inside the view."""
        if self._measure is None:
            return
        end = QPointF(*self._measure[1])
        self._tag.setPos(end)
        self._tag.set_anchor("top_left", QPointF(10, 8))
        self._tag.set_text(self._measure_text)
        self._tag.setVisible(bool(self._measure_text))
        if not self._measure_text:
            return
        self._vb.updateMatrix()
        at = self._view.viewportTransform().map(self._stack.mapToScene(end))
        size = self._tag.boundingRect().size()
        viewport = self._view.viewport()
        right = at.x() + 10 + size.width() > viewport.width() - _CORNER_MARGIN
        below = at.y() + 8 + size.height() > viewport.height() - _CORNER_MARGIN
        if right or below:
            anchor = f"{'bottom' if below else 'top'}_{'right' if right else 'left'}"
            self._tag.set_anchor(anchor, QPointF(-10 if right else 10, -8 if below else 8))

    def set_measurement_text(self, text: str, calibrated: bool) -> None:
        """Label the line ("12.3 mm"); ``calibrated=False`` also shows a yellow "uncalibrated" badge."""
        self._measure_text = text
        self._calibrated = bool(calibrated)
        self._place_tag()
        self._sync_badge()

    def _sync_badge(self) -> None:
        self._badge.setVisible(self._measure is not None and not self._calibrated and self._placeholder is None)

    def clear_measurement(self) -> None:
        """Remove the line, its label and the badge (does not emit measurementChanged)."""
        self._measure = None
        self._drag_fixed = None
        self._measure_text = ""
        for item in (self._line_item, *self._handles, self._tag):
            item.hide()
        self._badge.hide()

    # -------------------------------------------------------------------------------------- text overlays
    def set_placeholder(self, text: str | None) -> None:
        """Centred message shown INSTEAD of the image ("No folder open", "Loading…", why a file can't be read).

        None hides it and shows the layers again.
        """
        self._placeholder = text
        self._placeholder_item.set_text(text or "")
        self._placeholder_item.setVisible(text is not None)
        self._warning.setVisible(bool(self._warning.text) and text is None)
        self._stack.setVisible(text is None)
        self._sync_heat_visibility()
        self._sync_badge()
        self._place_overlays()

    @property
    def placeholder(self) -> str | None:
        return self._placeholder

    def set_corner_text(self, position: str, text: str) -> None:
        """PACS-style corner annotation; ``position`` in CORNERS; "" hides the corner. Newlines make lines."""
        if position not in self._corners:
            raise ValueError(f"position must be one of {CORNERS}, got {position!r}")
        item = self._corners[position]
        item.set_text(text)
        item.setVisible(bool(text))
        self._place_overlays()

    def corner_text(self, position: str) -> str:
        return self._corners[position].text

    def set_warning(self, text: str) -> None:
        """A warning on the image itself, bottom centre on a red box (e.g. burned-in identifying text); "" hides it."""
        self._warning.set_text(text)
        self._warning.setVisible(bool(text) and self._placeholder is None)
        self._place_overlays()

    @property
    def warning(self) -> str:
        return self._warning.text if self._warning.isVisible() else ""

    def _place_overlays(self) -> None:
        viewport = self._view.viewport()
        width, height, margin = viewport.width(), viewport.height(), _CORNER_MARGIN
        to_scene, _ = self._view.viewportTransform().inverted()  # identity for pg.GraphicsView; kept exact anyway
        for name, item in self._corners.items():
            x = margin if name.endswith("left") else width - margin
            y = margin if name.startswith("top") else height - margin
            item.setPos(to_scene.map(QPointF(x, y)))
            item.set_text(item.text, max_width=width / 2 - 2 * margin)
        top_right = self._corners["top_right"]
        badge_y = margin + (top_right.boundingRect().height() + 4 if top_right.isVisible() else 0)
        self._badge.setPos(to_scene.map(QPointF(width - margin, badge_y)))
        self._placeholder_item.setPos(to_scene.map(QPointF(width / 2, height / 2)))
        self._placeholder_item.set_text(self._placeholder or "", max_width=width * 0.8)
        bottom_corners = max((self._corners[n].boundingRect().height() + 4 for n in ("bottom_left", "bottom_right")
                              if self._corners[n].isVisible()), default=0.0)
        self._warning.setPos(to_scene.map(QPointF(width / 2, height - margin - bottom_corners)))
        self._warning.set_text(self._warning.text, max_width=width * 0.7)
