"""The image view, checked on what it actually renders (offscreen grabs), not on its internals.

Set BUSI_VIEW_SHOTS=/some/folder to keep screenshots of the main states for a human look.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QImage, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QGraphicsView

from busi_viewer.core.overlay import colorize
from busi_viewer.gui.image_view import ImageView
from tests.helpers.mouse import drag

H, W = 200, 300
CENTRE, RADIUS = (150, 100), 50  # disc centre (x, y) and radius in image px
BACKGROUND, DISC, MARKER = 40, 150, 255


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 dark grey with a bright disc and a white 20x20 marker at the top-left corner; the disc mask."""
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - CENTRE[0]) ** 2 + (yy - CENTRE[1]) ** 2 < RADIUS**2
    image = np.full((H, W), BACKGROUND, np.uint8)
    image[disc] = DISC
    image[:20, :20] = MARKER
    return image, disc


def _heatmap() -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 inside a 40x40 square in the disc, 0 elsewhere."""
    heat = np.zeros((H, W), np.float32)
    heat[80:120, 130:170] = 1.0
    return heat


def _render(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes()).reshape(height, image.bytesPerLine())
    return raw[:, : width * 3].reshape(height, width, 3).copy()


def _shot(name: str, widget) -> None:
    folder = os.environ.get("BUSI_VIEW_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(Path(folder) / f"{name}.png"))


def _view_rect(view: ImageView) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the graphics area in widget pixels (the colour bar strip excluded)."""
    graphics = view.findChild(QGraphicsView)
    top_left = graphics.mapTo(view, QPoint(0, 0))
    return top_left.x(), top_left.y(), top_left.x() + graphics.width(), top_left.y() + graphics.height()


def _graphics(pixels: np.ndarray, view: ImageView) -> np.ndarray:
    """The graphics area of a render (without the colour bar)."""
    left, top, right, bottom = _view_rect(view)
    return pixels[top:bottom, left:right]


def _image_bbox(pixels: np.ndarray, view: ImageView) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in widget pixels (right/bottom exclusive) of what is not view background."""
    left, top, right, bottom = _view_rect(view)
    area = pixels[top:bottom, left:right].max(axis=2) > 10  # the view background is black, the phantom is not
    rows, cols = np.nonzero(area.any(axis=1))[0], np.nonzero(area.any(axis=0))[0]
    return left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[0] + len(rows)


def _marker_centroid(pixels: np.ndarray, view: ImageView) -> tuple[float, float]:
    """Centroid (x, y) in widget pixels of the white marker, relative to the rendered image box (0..1)."""
    left, top, right, bottom = _image_bbox(pixels, view)
    box = pixels[top:bottom, left:right]
    ys, xs = np.nonzero(box.min(axis=2) > 240)
    assert len(xs) > 50, "marker not rendered"
    return xs.mean() / (right - left), ys.mean() / (bottom - top)


def _green(pixels: np.ndarray) -> np.ndarray:
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return (g > 150) & (r < 110) & (b < 110)


@pytest.fixture
def view(qtbot):
    widget = ImageView()
    qtbot.addWidget(widget)
    widget.resize(600, 500)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


@pytest.fixture
def shown(view):
    image, _ = _phantom()
    view.set_image(image)
    return view


def _viewport(view: ImageView):
    return view.findChild(QGraphicsView).viewport()


def _drag(qtbot, view: ImageView, start: QPointF, end: QPointF, steps: int = 8) -> None:
    """A real left-button drag (press, moves, release) on the view's viewport, in widget coordinates."""
    viewport = _viewport(view)
    to_port = lambda p: viewport.mapFrom(view, QPointF(p)).toPoint()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, to_port(start))
    for i in range(1, steps + 1):
        qtbot.wait(15)  # pyqtgraph drops mouse moves closer than 10 ms apart
        point = start + (end - start) * (i / steps)
        QTest.mouseMove(viewport, to_port(point))
    qtbot.wait(15)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, to_port(end))


# --------------------------------------------------------------------------------------------------- image
def test_fit_shows_the_whole_image_centred_at_fixed_levels(shown):
    pixels = _render(shown)
    _shot("image", shown)
    left, top, right, bottom = _image_bbox(pixels, shown)
    v_left, v_top, v_right, v_bottom = _view_rect(shown)
    # whole image inside, touching the view on the limiting axis (W/H = 1.5 > 600/view height), centred
    assert v_left <= left and right <= v_right and v_top <= top and bottom <= v_bottom
    assert abs(left - v_left) <= 1 and abs(right - v_right) <= 1
    assert abs((top - v_top) - (v_bottom - bottom)) <= 2
    assert (right - left) / (bottom - top) == pytest.approx(W / H, rel=0.02)  # aspect kept
    assert shown.zoom_percent() == pytest.approx(100 * (right - left) / W, rel=0.02)
    # values shown as they are: no auto-levels stretch of the 40..255 range
    centre = shown.map_image_to_widget(*CENTRE)
    assert tuple(pixels[int(centre.y()), int(centre.x())]) == (DISC, DISC, DISC)
    background = shown.map_image_to_widget(W - 5, H - 5)
    assert tuple(pixels[int(background.y()), int(background.x())]) == (BACKGROUND,) * 3


def test_narrow_band_image_is_not_auto_levelled(view):
    view.set_image(np.linspace(100, 110, H * W).reshape(H, W).astype(np.uint8))
    left, top, right, bottom = _view_rect(view)
    pixels = _render(view)[top:bottom, left:right]
    shown = pixels[pixels.max(axis=2) > 10]
    assert shown.min() >= 100 and shown.max() <= 110


def test_rgb_image_and_new_shape_refits(view):
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[..., 0] = 200
    view.set_image(rgb)
    pixels = _render(view)
    centre = view.map_image_to_widget(50, 50)
    assert tuple(pixels[int(centre.y()), int(centre.x())]) == (200, 0, 0)
    square_zoom = view.zoom_percent()
    view.set_image(_phantom()[0])  # wider image: fit shrinks it
    assert view.zoom_percent() < square_zoom


def test_bad_display_arrays_are_refused(view):
    with pytest.raises(ValueError):
        view.set_image(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError):
        view.set_image(np.zeros((10, 10, 4), np.uint8))


def test_image_swap_and_opacity_changes_are_cheap(view):
    first, second = (np.random.default_rng(i).integers(0, 255, (1000, 1000), dtype=np.uint8) for i in range(2))
    view.set_image(first)
    _render(view)
    timings = []
    for array in (second, first, second, first, second):
        start = time.perf_counter()
        view.set_image(array, keep_view=True)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.01  # the swap itself; painting happens later, once
    heat = np.random.default_rng(2).random((1000, 1000), dtype=np.float32)
    view.set_heatmap(heat)
    opacity_timings = []
    for opacity in (0.2, 0.8, 0.3, 0.6, 0.5):
        start = time.perf_counter()
        view.set_opacity(opacity)
        opacity_timings.append(time.perf_counter() - start)
    assert min(opacity_timings) < 0.02


# ------------------------------------------------------------------------------------------------- heatmap
def test_heatmap_colours_where_high_and_opacity_zero_is_the_bare_image(shown):
    bare = _render(shown)
    shown.set_heatmap(_heatmap(), title="Grad-CAM evidence for malignant")
    shown.set_opacity(0.0)
    assert np.array_equal(_graphics(_render(shown), shown), _graphics(bare, shown))  # (the colour bar appears)

    shown.set_opacity(0.5)
    half = _render(shown)
    _shot("heatmap_0.5", shown)
    hot = shown.map_image_to_widget(150, 100)
    cold = shown.map_image_to_widget(60, 150)
    assert np.abs(half[int(hot.y()), int(hot.x())].astype(int) - bare[int(hot.y()), int(hot.x())]).sum() > 60
    assert np.array_equal(half[int(cold.y()), int(cold.x())], bare[int(cold.y()), int(cold.x())])


def test_more_opacity_more_colour_and_full_opacity_is_the_colour_map(shown):
    bare = _render(shown).astype(int)
    shown.set_heatmap(_heatmap())
    left, top = shown.map_image_to_widget(135, 85).toTuple()
    right, bottom = shown.map_image_to_widget(165, 115).toTuple()
    region = np.s_[int(top) : int(bottom), int(left) : int(right)]
    differences = []
    for opacity in (0.2, 0.8):
        shown.set_opacity(opacity)
        differences.append(np.abs(_render(shown).astype(int)[region] - bare[region]).mean())
    assert differences[1] > differences[0] * 2
    shown.set_opacity(1.0)
    top_colour = colorize(np.ones((1, 1), np.float32))[0, 0]
    assert np.abs(_render(shown)[region].astype(int) - top_colour).max() <= 2


def test_hiding_the_heatmap_restores_the_image_and_hides_the_colour_bar(shown):
    bare = _render(shown)
    assert shown.colorbar.isHidden()
    shown.set_heatmap(_heatmap(), title="Grad-CAM evidence for benign", scale_text="shared raw scale (0–3.2)")
    assert not shown.colorbar.isHidden() and shown.heatmap_visible
    assert shown.colorbar.title == "Grad-CAM evidence for benign"
    assert shown.colorbar.scale_text == "shared raw scale (0–3.2)"
    with_heat = _render(shown)
    assert not np.array_equal(with_heat, bare)
    bar = shown.colorbar.geometry()
    assert bar.left() >= _view_rect(shown)[2]  # beside the view, which kept its size
    legend = with_heat[bar.top() : bar.bottom(), bar.left() : bar.right()]
    assert legend.std(axis=(0, 1)).max() > 20  # gradient and text drawn
    shown.colorbar.set_orientation(Qt.Orientation.Horizontal)
    assert shown.colorbar.height() < 100
    shown.colorbar.set_orientation(Qt.Orientation.Vertical)

    shown.set_heatmap_visible(False)
    assert not shown.heatmap_visible and shown.colorbar.isHidden()
    assert np.array_equal(_graphics(_render(shown), shown), _graphics(bare, shown))
    shown.set_heatmap_visible(True)
    assert not shown.colorbar.isHidden()
    shown.set_heatmap(None)
    assert shown.colorbar.isHidden()
    assert np.array_equal(_render(shown), bare)


def test_heatmap_must_match_the_image_grid(shown):
    with pytest.raises(ValueError):
        shown.set_heatmap(np.zeros((H + 1, W), np.float32))
    with pytest.raises(ValueError):
        shown.set_mask(np.zeros((H, W + 1), bool))


def test_a_new_image_shape_drops_layers_that_belonged_to_the_old_grid(shown):
    _, disc = _phantom()
    shown.set_heatmap(_heatmap())
    shown.set_mask(disc)
    shown.set_measurement((10, 10), (50, 50))
    shown.set_image(np.full((50, 60), 90, np.uint8))
    assert not shown.has_heatmap and not shown.has_mask and shown.measurement is None
    assert shown.colorbar.isHidden()
    assert not _green(_render(shown)).any()


# ---------------------------------------------------------------------------------------------------- mask
def test_mask_outline_is_green_on_the_disc_edge_and_can_be_hidden(shown):
    _, disc = _phantom()
    assert not _green(_render(shown)).any()
    shown.set_mask(disc)
    pixels = _render(shown)
    _shot("mask", shown)
    ys, xs = np.nonzero(_green(pixels))
    assert len(xs) > 200
    centre = shown.map_image_to_widget(*CENTRE)
    scale = shown.zoom_percent() / 100
    distance = np.hypot(xs + 0.5 - centre.x(), ys + 0.5 - centre.y())
    assert np.all(np.abs(distance - RADIUS * scale) < 2 + scale)  # on the edge, not drifting
    assert np.median(np.abs(distance - RADIUS * scale)) < 1.5

    assert shown.mask_visible
    shown.set_mask_visible(False)
    assert not shown.mask_visible and not _green(_render(shown)).any()
    shown.set_mask_visible(True)
    assert _green(_render(shown)).any()
    shown.set_mask(None)
    assert not _green(_render(shown)).any()


def test_mask_outline_is_symmetric_on_the_pixel_grid(view):
    # 10x10 lesion in a 20x20 image at 20x zoom: the outline must sit equally far inside all four pixel edges
    image = np.full((20, 20), 60, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    view.set_image(image)
    view.set_mask(mask)
    view.actual_size()
    view.zoom_by(20)
    pixels = _render(view)
    ys, xs = np.nonzero(_green(pixels))
    edge_left, edge_top = view.map_image_to_widget(5, 5).toTuple()
    edge_right, edge_bottom = view.map_image_to_widget(15, 15).toTuple()
    scale = view.zoom_percent() / 100
    assert scale == pytest.approx(20, rel=0.01)
    insets = [xs.min() - edge_left, edge_right - (xs.max() + 1), ys.min() - edge_top, edge_bottom - (ys.max() + 1)]
    # line centres half a pixel inside the edge (through the edge pixels' centres), 2 px pen: inset ~ 10 - 1
    assert max(insets) - min(insets) <= 2
    assert all(abs(inset - (0.5 * scale - 1)) <= 2 for inset in insets)


# --------------------------------------------------------------------------------------------- orientation
def test_rotation_and_flips_move_the_top_left_marker(shown):
    x, y = _marker_centroid(_render(shown), shown)
    assert x < 0.2 and y < 0.2
    shown.set_orientation(90)
    _shot("rotated_90", shown)
    x, y = _marker_centroid(_render(shown), shown)
    assert x > 0.8 and y < 0.2  # clockwise: top-left goes to top-right
    left, top, right, bottom = _image_bbox(_render(shown), shown)
    assert (bottom - top) / (right - left) == pytest.approx(W / H, rel=0.02)  # portrait now, still fitted
    shown.set_orientation(180)
    x, y = _marker_centroid(_render(shown), shown)
    assert x > 0.8 and y > 0.8
    shown.set_orientation(270)
    x, y = _marker_centroid(_render(shown), shown)
    assert x < 0.2 and y > 0.8
    shown.set_orientation(0, flip_h=True)
    x, y = _marker_centroid(_render(shown), shown)
    assert x > 0.8 and y < 0.2
    shown.set_orientation(0, flip_v=True)
    x, y = _marker_centroid(_render(shown), shown)
    assert x < 0.2 and y > 0.8
    shown.set_orientation(90, flip_h=True)  # flips act on the screen after rotating: top-right mirrored
    x, y = _marker_centroid(_render(shown), shown)
    assert x < 0.2 and y < 0.2
    assert shown.orientation == (90, True, False)
    shown.reset()
    assert shown.orientation == (0, False, False)
    x, y = _marker_centroid(_render(shown), shown)
    assert x < 0.2 and y < 0.2
    with pytest.raises(ValueError):
        shown.set_orientation(45)


def test_layers_rotate_with_the_image(shown):
    _, disc = _phantom()
    heat = np.zeros((H, W), np.float32)
    heat[:20, :20] = 1.0  # over the marker
    shown.set_heatmap(heat)
    shown.set_opacity(1.0)
    shown.set_mask(disc)
    shown.set_orientation(90)
    pixels = _render(shown)
    corner = shown.map_image_to_widget(10, 10)
    left, top, right, bottom = _image_bbox(pixels, shown)
    assert corner.x() > left + 0.8 * (right - left) and corner.y() < top + 0.2 * (bottom - top)
    expected = colorize(np.ones((1, 1), np.float32))[0, 0]
    assert np.abs(pixels[int(corner.y()), int(corner.x())].astype(int) - expected).max() <= 2
    ys, xs = np.nonzero(_green(pixels[:, : shown.colorbar.x()]))  # the legend's viridis greens are not the outline
    centre = shown.map_image_to_widget(*CENTRE)
    assert abs(xs.mean() - centre.x()) < 3 and abs(ys.mean() - centre.y()) < 3


# ---------------------------------------------------------------------------------------------- zoom, pan
def test_zoom_by_actual_size_and_view_changed(shown, qtbot):
    fitted = shown.zoom_percent()
    with qtbot.waitSignal(shown.viewChanged, timeout=1000):
        shown.zoom_by(2)
    assert shown.zoom_percent() == pytest.approx(2 * fitted, rel=0.01)
    shown.zoom_by(0.5)
    assert shown.zoom_percent() == pytest.approx(fitted, rel=0.01)
    shown.actual_size()
    assert shown.zoom_percent() == pytest.approx(100, rel=0.01)
    centre = shown.map_image_to_widget(W / 2, H / 2)
    left, top, right, bottom = _view_rect(shown)
    assert abs(centre.x() - (left + right) / 2) < 1.5 and abs(centre.y() - (top + bottom) / 2) < 1.5
    shown.fit()
    assert shown.zoom_percent() == pytest.approx(fitted, rel=0.01)


def test_keep_view_keeps_zoom_and_otherwise_fits(shown):
    image, _ = _phantom()
    fitted = shown.zoom_percent()
    shown.zoom_by(3)
    shown.set_image(image.copy(), keep_view=True)
    assert shown.zoom_percent() == pytest.approx(3 * fitted, rel=0.01)
    shown.set_image(image.copy())
    assert shown.zoom_percent() == pytest.approx(fitted, rel=0.01)


def test_left_drag_pans_when_not_measuring(shown, qtbot):
    before = shown.map_image_to_widget(*CENTRE)
    seen = []
    shown.measurementChanged.connect(seen.append)
    _drag(qtbot, shown, QPointF(300, 200), QPointF(360, 240))
    after = shown.map_image_to_widget(*CENTRE)
    assert after.x() - before.x() == pytest.approx(60, abs=3)
    assert after.y() - before.y() == pytest.approx(40, abs=3)
    assert seen == [] and shown.measurement is None


def test_wheel_zooms_around_the_cursor(shown, qtbot):
    viewport = _viewport(shown)
    anchor_image = (60.0, 50.0)
    anchor = shown.map_image_to_widget(*anchor_image)
    before = shown.zoom_percent()
    local = viewport.mapFrom(shown, anchor)
    event = QWheelEvent(
        local, viewport.mapToGlobal(local), QPoint(0, 0), QPoint(0, 240), Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False,
    )
    QApplication.sendEvent(viewport, event)
    assert shown.zoom_percent() > before * 1.1
    after = shown.map_image_to_widget(*anchor_image)
    assert abs(after.x() - anchor.x()) < 2 and abs(after.y() - anchor.y()) < 2


# ------------------------------------------------------------------------------------------- measurement
def test_measurement_drag_reports_image_coordinates(shown, qtbot):
    shown.set_measure_mode(True)
    seen = []
    shown.measurementChanged.connect(seen.append)
    start, end = (100.0, 50.0), (200.0, 150.0)
    # expected widget positions from the rendered image box, independently of the view's own mapping
    left, top, right, _ = _image_bbox(_render(shown), shown)
    scale = (right - left) / W
    to_widget = lambda x, y: QPointF(left + x * scale, top + y * scale)
    _drag(qtbot, shown, to_widget(*start), to_widget(*end))
    assert seen, "no measurementChanged during the drag"
    (x0, y0), (x1, y1) = seen[-1]
    tolerance = 1.5 / scale + 0.5
    assert (x0, y0) == pytest.approx(start, abs=tolerance)
    assert (x1, y1) == pytest.approx(end, abs=tolerance)
    assert shown.measurement == seen[-1]


def test_measurement_after_rotation_is_still_in_image_coordinates(shown, qtbot):
    shown.set_orientation(90)
    shown.set_measure_mode(True)
    seen = []
    shown.measurementChanged.connect(seen.append)
    start, end = (40.0, 30.0), (250.0, 170.0)
    left, top, right, _ = _image_bbox(_render(shown), shown)
    scale = (right - left) / H
    # clockwise quarter turn: image (x, y) lands at (left + (H - y) * s, top + x * s)
    to_widget = lambda x, y: QPointF(left + (H - y) * scale, top + x * scale)
    _drag(qtbot, shown, to_widget(*start), to_widget(*end))
    (x0, y0), (x1, y1) = seen[-1]
    tolerance = 1.5 / scale + 0.5
    assert (x0, y0) == pytest.approx(start, abs=tolerance)
    assert (x1, y1) == pytest.approx(end, abs=tolerance)
    shown.set_measurement_text("263.1 px (uncalibrated)", calibrated=False)
    _shot("measurement_rotated", shown)


def test_dragging_an_endpoint_edits_the_line(shown, qtbot):
    shown.set_measure_mode(True)
    shown.set_measurement((100.0, 50.0), (200.0, 150.0))
    seen = []
    shown.measurementChanged.connect(seen.append)
    target = (250.0, 60.0)
    _drag(qtbot, shown, shown.map_image_to_widget(200.0, 150.0), shown.map_image_to_widget(*target))
    start, end = seen[-1]
    assert start == pytest.approx((100.0, 50.0), abs=0.01)  # the other end stayed put
    assert end == pytest.approx(target, abs=1.0)


def test_measurement_is_clamped_to_the_image(shown, qtbot):
    shown.set_measure_mode(True)
    seen = []
    shown.measurementChanged.connect(seen.append)
    _, _, right, bottom = _view_rect(shown)
    _drag(qtbot, shown, shown.map_image_to_widget(150, 100), QPointF(right - 2, bottom - 2))
    (_, _), (x1, y1) = seen[-1]
    assert 0 <= x1 <= W and 0 <= y1 <= H


def test_measurement_label_and_uncalibrated_badge(shown):
    yellow = lambda p: (p[..., 0] > 200) & (p[..., 1] > 180) & (p[..., 2] < 80)
    left, top, right, _ = _view_rect(shown)
    badge_region = np.s_[top : top + 60, right - 200 : right]
    shown.set_measurement((50.0, 150.0), (150.0, 150.0))
    shown.set_measurement_text("12.3 mm", calibrated=True)
    pixels = _render(shown)
    assert not yellow(pixels[badge_region]).any()
    line_row = int(shown.map_image_to_widget(100, 150).y())
    assert yellow(pixels[line_row - 2 : line_row + 3]).sum() > 50  # the line is drawn
    label_at = shown.map_image_to_widget(150, 150)  # the label sits just below-right of the end point
    label = pixels[int(label_at.y()) + 8 : int(label_at.y()) + 30, int(label_at.x()) + 10 : int(label_at.x()) + 70]
    assert yellow(label).any()

    shown.set_measurement((50.0, 150.0), (290.0, 150.0))
    shown.set_measurement_text("240.0 px (uncalibrated)", calibrated=False)
    pixels = _render(shown)
    _shot("measurement", shown)
    assert yellow(pixels[badge_region]).sum() > 300  # a filled yellow badge
    # a label too long for the space right of the end point moves to its left rather than being cut off
    label_at = shown.map_image_to_widget(290, 150)
    band = pixels[line_row + 8 : line_row + 30, left:right]
    text_columns = np.nonzero(yellow(band).any(axis=0))[0] + left
    assert len(text_columns) > 20
    assert text_columns.max() < label_at.x() and text_columns.max() < right - 8
    shown.set_placeholder("Loading…")  # the badge belongs to the measured image, hidden with it
    assert not yellow(_render(shown)[badge_region]).any()
    shown.set_placeholder(None)
    assert yellow(_render(shown)[badge_region]).sum() > 300

    shown.clear_measurement()
    assert shown.measurement is None
    pixels = _render(shown)
    assert not yellow(pixels).any()


# --------------------------------------------------------------------------------------------- text layers
def test_placeholder_shows_without_an_image_and_replaces_the_image(view, qtbot):
    left, top, right, bottom = _view_rect(view)
    assert _render(view)[top:bottom, left:right].std() == 0  # empty view: uniform
    view.set_placeholder("No folder open")
    assert _render(view)[top:bottom, left:right].std() > 0
    image, _ = _phantom()
    view.set_image(image)
    view.set_placeholder("Cannot read case_07.dcm: the file is not DICOM and has no image header")
    pixels = _render(view)[top:bottom, left:right]
    # the image is gone (a few anti-aliased text pixels may happen to match a grey level)
    assert (pixels == BACKGROUND).all(axis=2).sum() < 50 and (pixels == DISC).all(axis=2).sum() < 50
    _shot("placeholder", view)
    view.set_placeholder(None)
    assert (_render(view) == DISC).all(axis=2).sum() > 1000


def test_corner_texts_render_in_their_corners(shown):
    bare = _render(shown)
    shown.set_corner_text("top_left", "case_01.png\n3 / 120")
    shown.set_corner_text("bottom_left", "200%  frame 2/40")
    pixels = _render(shown)
    left, top, _, bottom = _view_rect(shown)
    changed = np.abs(pixels.astype(int) - bare).sum(axis=2) > 0
    assert changed[top : top + 50, left : left + 150].any()
    assert changed[bottom - 40 : bottom, left : left + 150].any()
    assert not changed[top + 60 : bottom - 60].any()  # nothing in the middle
    assert shown.corner_text("top_left") == "case_01.png\n3 / 120"
    shown.set_corner_text("top_left", "")
    shown.set_corner_text("bottom_left", "")
    assert np.array_equal(_render(shown), bare)
    with pytest.raises(ValueError):
        shown.set_corner_text("middle", "x")


def test_set_image_none_clears_everything(shown):
    _, disc = _phantom()
    shown.set_heatmap(_heatmap())
    shown.set_mask(disc)
    shown.set_image(None)
    left, top, right, bottom = _view_rect(shown)
    assert _render(shown)[top:bottom, left:right].max() == 0
    assert shown.colorbar.isHidden() and shown.image_shape is None


# ------------------------------------------------------------------------------------------- window drag
def test_ctrl_drag_reports_window_steps_and_does_not_pan(shown, qtbot):
    steps: list[tuple[float, float]] = []
    shown.windowDragged.connect(lambda dx, dy: steps.append((dx, dy)))
    before = shown.map_image_to_widget(*CENTRE)
    drag(qtbot, shown, QPointF(300, 200), QPointF(360, 180), modifiers=Qt.KeyboardModifier.ControlModifier)
    assert steps, "a Ctrl+drag sent no window steps"
    assert sum(dx for dx, _ in steps) == pytest.approx(60, abs=8)
    assert sum(dy for _, dy in steps) == pytest.approx(-20, abs=8)
    assert shown.map_image_to_widget(*CENTRE) == before  # the image did not move
    steps.clear()
    drag(qtbot, shown, QPointF(300, 200), QPointF(360, 240))  # without Ctrl: a pan, no window change
    assert not steps and shown.map_image_to_widget(*CENTRE) != before
