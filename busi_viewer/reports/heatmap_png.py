"""busi-predict's explanation picture: the image and its Grad-CAM overlay side by side, with a legend strip that
says what it shows (class, probability, model, colour scale, research-use label), so the PNG stands on its own."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from busi_viewer import RESEARCH_USE_BANNER
from busi_viewer.core.overlay import (
    DEFAULT_COLORMAP,
    DEFAULT_EVIDENCE_FLOOR,
    blend_heatmap,
    colour_ramp,
    draw_mask_outline,
)

__all__ = ["Legend", "explanation_png"]

_GAP = 8  # white columns between the image and its overlay
_BAR_WIDTH = 160
_MIN_WIDTH = 480  # the legend's lines need this much; smaller pictures get white room beside them


@dataclass(frozen=True)
class Legend:
    """The words under the pictures: ``headline`` (e.g. "Prediction: malignant, p(malignant) 0.74"), ``model``
    ("busi-us 0.3.0"), ``warning`` (out of scope, or ""); the heatmap's ``colormap``, ``floor`` and
    ``opacity`` as drawn."""

    headline: str
    model: str
    warning: str = ""
    colormap: str = DEFAULT_COLORMAP
    floor: float = DEFAULT_EVIDENCE_FLOOR
    opacity: float = 0.45
    explanation: str = "Grad-CAM"  # what the heatmap is (ModelCard.explanation_name)


def explanation_png(rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray | None, legend: Legend) -> np.ndarray:
    """(H', W', 3) uint8: ``rgb`` (H, W, 3) uint8 | the overlay of the [0, 1] ``heatmap`` (mask outlined) above
    the legend strip. Needs a QGuiApplication (:func:`busi_viewer.reports.pdf.ensure_gui_application`)."""
    overlay = blend_heatmap(rgb, heatmap, legend.opacity, legend.colormap, legend.floor)
    if mask is not None and mask.any():
        overlay = draw_mask_outline(overlay, mask)
    separator = np.full((rgb.shape[0], _GAP, 3), 255, np.uint8)
    pictures = np.concatenate([rgb, separator, overlay], axis=1)
    width = max(pictures.shape[1], _MIN_WIDTH)
    pictures = np.pad(pictures, ((0, 0), (0, width - pictures.shape[1]), (0, 0)), constant_values=255)
    return np.concatenate([pictures, _legend_strip(width, legend)], axis=0)


def _legend_strip(width: int, legend: Legend) -> np.ndarray:
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter

    font = QFont()
    font.setPixelSize(13)
    bold = QFont(font)
    bold.setBold(True)
    line = QFontMetricsF(font).height()
    lines = [(bold, legend.headline), (font, f"Model {legend.model}")]
    if legend.warning:
        lines.insert(0, (bold, legend.warning))
    lines.append((font, f"{legend.explanation}: evidence (where the model looked, not a detection), normalised "
                        "per image:"))
    wrap = Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap
    text_width = width - 12
    heights = [QFontMetricsF(f).boundingRect(QRectF(0, 0, text_width, 1e4), wrap, t).height() for f, t in lines]
    bar_height = 12
    height = int(sum(heights) + line + bar_height + line + 24)
    image = QImage(width, height, QImage.Format.Format_RGB888)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    y = 6.0
    for (f, text), h in zip(lines, heights):
        painter.setFont(f)
        painter.setPen(QColor(179, 38, 30) if text == legend.warning else QColor(0, 0, 0))
        painter.drawText(QRectF(6, y, text_width, h + 1), wrap, text)
        y += h
    painter.setFont(font)
    painter.setPen(QColor(0, 0, 0))
    low = QFontMetricsF(font).horizontalAdvance("low ")
    painter.drawText(QRectF(6, y + 2, low, line), Qt.AlignmentFlag.AlignLeft, "low")
    bar = np.ascontiguousarray(colour_ramp(legend.colormap, legend.floor, _BAR_WIDTH, bar_height))
    bar_image = QImage(bar.data, _BAR_WIDTH, bar_height, 3 * _BAR_WIDTH, QImage.Format.Format_RGB888).copy()
    painter.drawImage(int(6 + low), int(y + 2 + (line - bar_height) / 2), bar_image)
    painter.drawText(QRectF(6 + low + _BAR_WIDTH + 4, y + 2, 200, line), Qt.AlignmentFlag.AlignLeft,
                     f"high (below {legend.floor:.0%} not drawn)")
    y += line + 6
    painter.setFont(bold)
    painter.setPen(QColor(122, 31, 31))
    painter.drawText(QRectF(6, y, text_width, line + 2), Qt.AlignmentFlag.AlignLeft, RESEARCH_USE_BANNER)
    painter.end()
    pointer = image.constBits()
    stride = image.bytesPerLine()
    array = np.frombuffer(pointer, np.uint8, count=stride * image.height()).reshape(image.height(), stride)
    return array[:, : width * 3].reshape(image.height(), width, 3).copy()
