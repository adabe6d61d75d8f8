"""Burned-in annotations on ultrasound images: caliper crosses, text lines and colour overlays.

These are shortcuts a classifier can learn (BUSI's calipers sit almost only on benign/malignant images), so the
audit flags them per image. Everything works on native pixels of one image, numpy + OpenCV only.

Caliper crosses in BUSI are '+' marks about 15-19 px wide with 1-2 px bright lines, drawn over tissue, often
with a digit beside them and a dotted measurement line ending at them. Detection: a white top-hat keeps thin
bright structures; a grey erosion with each of four one-sided arm kernels keeps pixels from which a bright line
runs at least ``CROSS_MIN_ARM`` px in that direction; where all four hold, a cross centre is a candidate. The
candidate is then measured (arm lengths) and rejected when the arms are too long or lopsided (line crossings,
letters such as 't' or '4') or when it lies in a detected text line (a row of letter-sized bright shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["AnnotationFlags", "ColourInfo", "analyse_annotations", "colour_info", "detect_calipers", "detect_text"]

# --- caliper crosses (thresholds set by viewing detections on all 780 BUSI images) ---------------------------
TOPHAT_SIZE = 5  # square; caliper lines are 1-2 px wide, so a 5x5 opening erases them and the top-hat keeps them
LINE_CONTRAST = 40  # grey levels above the opened image; the arms of the 399 BUSI crosses found are 63-184 above
# it (5th-95th percentile); speckle grains that survive the top-hat are mostly below 40 and, above all, not
# cross-shaped. Lower thresholds found no more crosses: arms then merge with bright tissue and fail the shape test
CROSS_MIN_ARM = 4  # px from the centre in each of the four directions; BUSI arms are 7-9 px (5-7 in the ~80 %
# resized copies), letters rarely have four arms this long
CROSS_MAX_ARM = 14  # longer arms are crossing lines (box borders, probe icons, Doppler cursor), not calipers
CROSS_MAX_ASYMMETRY = 4  # px between opposite arms; 't' (long descender), '4', 'T' and icons are lopsided
# --- text ---------------------------------------------------------------------------------------------------
TEXT_CONTRAST = 60  # burned-in text is near white (or saturated yellow) on tissue: strong top-hat response
TEXT_MIN_GRAY = 190  # labels are drawn near white (yellow ones convert to ~226 grey); tissue rarely gets there
TEXT_STREAK_LENGTH = 15  # px; longer horizontal bright runs are tissue streaks or lines, not letter strokes
GLYPH_HEIGHT = (6, 32)  # px; BUSI labels ('RT UOQ', 'LEFT BREAST', 'LOGIQ E9') are 8-20 px tall
TEXT_MIN_GLYPHS = 3  # a row of at least three letter-sized shapes of equal height on one baseline
# --- colour -------------------------------------------------------------------------------------------------
CHROMA_MIN = 15  # max-min over RGB; BUSI's colour files carry JPEG chroma noise up to ~10, box outlines ~20+
COLOUR_MIN_PIXELS = 20  # fewer coloured pixels than this is noise, not an overlay
FLOW_CHROMA = 60  # saturated Doppler flow colours (red/blue), unlike the pale yellow box outline
FLOW_MIN_PIXELS = 40  # after a 2x2 opening; BUSI's 8 Doppler frames keep 126-1813 such pixels


@dataclass(frozen=True)
class ColourInfo:
    """Colour content of an RGB image (all False/0 for greyscale)."""

    colour: bool  # any coloured overlay (Doppler box, flow, coloured calipers or text)
    colour_fraction: float  # share of pixels with chroma >= CHROMA_MIN, 0..1
    colour_box: bool  # a rectangle outline in colour (the Doppler region of interest)
    colour_flow: bool  # saturated colour blobs (Doppler flow)


@dataclass(frozen=True)
class AnnotationFlags:
    """Per-image flags: ``calipers`` are (x, y) cross centres in native pixels; ``text_boxes`` (x, y, w, h)."""

    calipers: list[tuple[int, int]] = field(default_factory=list)
    text_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    colour: ColourInfo = ColourInfo(False, 0.0, False, False)

    @property
    def has_calipers(self) -> bool:
        return bool(self.calipers)

    @property
    def has_text(self) -> bool:
        return bool(self.text_boxes)


def _arm_kernels(length: int) -> list[np.ndarray]:
    """Four one-sided line kernels (left, right, up, down) of ``length`` + 1 px anchored at the centre."""
    size = 2 * length + 1
    kernels = []
    for axis, side in ((1, slice(0, length + 1)), (1, slice(length, size)), (0, slice(0, length + 1)),
                       (0, slice(length, size))):
        kernel = np.zeros((size, size), np.uint8)
        if axis == 1:
            kernel[length, side] = 1
        else:
            kernel[side, length] = 1
        kernels.append(kernel)
    return kernels


_ARM_KERNELS = _arm_kernels(CROSS_MIN_ARM)
_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (dx, dy): left, right, up, down


def white_tophat(grey: np.ndarray, size: int = TOPHAT_SIZE) -> np.ndarray:
    """uint8 (H, W): how much brighter than its surroundings each pixel is, for structures thinner than size."""
    return cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))


def _arm_lengths(bright: np.ndarray, x: int, y: int, limit: int) -> list[tuple[int, bool]]:
    """(length, cut) of the bright run from (x, y) in each of the four directions, 1 px of sideways slack.

    ``cut`` is True when the run reaches the image border: a cross clipped by the crop has an arm of unknown
    length.
    """
    h, w = bright.shape
    arms = []
    for dx, dy in _DIRECTIONS:
        n, cut = 0, False
        for step in range(1, limit + 1):
            xx, yy = x + dx * step, y + dy * step
            if not (0 <= xx < w and 0 <= yy < h):
                cut = True
                break
            lateral = bright[max(0, yy - 1):yy + 2, xx] if dx else bright[yy, max(0, xx - 1):xx + 2]
            if not lateral.any():
                break
            n = step
        arms.append((n, cut))
    return arms


def _is_caliper_cross(arms: list[tuple[int, bool]]) -> bool:
    """Arm lengths (left, right, up, down) of a caliper '+': all visible, short, opposite arms alike."""
    if any(length < CROSS_MIN_ARM for length, _ in arms):
        return False  # also rejects letters clipped at the border whose only 'arm' is the border itself
    if sum(cut for _, cut in arms) > 1 or any(length > CROSS_MAX_ARM for length, cut in arms if not cut):
        return False
    for (a, cut_a), (b, cut_b) in ((arms[0], arms[1]), (arms[2], arms[3])):
        if not (cut_a or cut_b) and abs(a - b) > CROSS_MAX_ASYMMETRY:
            return False
    return True


def _glyph_components(mask: np.ndarray) -> np.ndarray:
    """Letter-sized connected components of a bool mask as an (N, 4) int array of x, y, w, h."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = stats[1:, :4]
    lo, hi = GLYPH_HEIGHT
    keep = (boxes[:, 3] >= lo) & (boxes[:, 3] <= hi) & (boxes[:, 2] >= 2) & (boxes[:, 2] <= 2 * hi)
    return boxes[keep]


def _text_rows(boxes: np.ndarray) -> list[np.ndarray]:
    """Rows of >= TEXT_MIN_GLYPHS boxes with equal height on one line and letter-spaced gaps."""
    if len(boxes) < TEXT_MIN_GLYPHS:
        return []
    order = np.argsort(boxes[:, 0])
    boxes = boxes[order]
    used = np.zeros(len(boxes), bool)
    rows = []
    for i in range(len(boxes)):
        if used[i]:
            continue
        row = [i]
        x, y, w, h = boxes[i]
        for j in range(i + 1, len(boxes)):
            if used[j]:
                continue
            xj, yj, wj, hj = boxes[j]
            lx, ly, lw, lh = boxes[row[-1]]
            gap = xj - (lx + lw)
            same_height = max(hj, lh) <= 1.6 * min(hj, lh)
            same_line = abs((yj + hj / 2) - (ly + lh / 2)) <= 0.35 * max(hj, lh)
            if -2 <= gap <= 1.2 * max(hj, lh) and same_height and same_line:
                row.append(j)
            elif gap > 1.2 * max(hj, lh) + w:
                break
        if len(row) >= TEXT_MIN_GLYPHS:
            used[row] = True
            rows.append(boxes[row])
    return rows


def detect_text(grey: np.ndarray, tophat: np.ndarray | None = None) -> list[tuple[int, int, int, int]]:
    """Best-effort burned-in text lines of a uint8 (H, W) image: list of (x, y, w, h) boxes, native pixels."""
    tophat = white_tophat(grey, 9) if tophat is None else tophat
    mask = ((tophat >= TEXT_CONTRAST) & (grey >= TEXT_MIN_GRAY)).astype(np.uint8)
    # Bright tissue streaks running through a label glue its letters into one blob: cut long horizontal runs.
    streaks = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((1, TEXT_STREAK_LENGTH), np.uint8))
    mask = (mask & ~streaks).astype(bool)
    boxes = []
    for row in _text_rows(_glyph_components(mask)):
        x0, y0 = row[:, 0].min(), row[:, 1].min()
        x1, y1 = (row[:, 0] + row[:, 2]).max(), (row[:, 1] + row[:, 3]).max()
        boxes.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
    return boxes


def detect_calipers(grey: np.ndarray, text_boxes: list[tuple[int, int, int, int]] | None = None
                    ) -> list[tuple[int, int]]:
    """Centres (x, y) of '+' caliper crosses in a uint8 (H, W) image, native pixels, top to bottom.

    Crosses inside ``text_boxes`` (from :func:`detect_text`) are dropped: letters such as 't' and '+' signs in
    labels are not calipers.
    """
    tophat = white_tophat(grey)
    response = np.minimum.reduce([cv2.erode(tophat, k) for k in _ARM_KERNELS])
    candidates = (response >= LINE_CONTRAST).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(candidates, connectivity=8)
    if n <= 1:
        return []
    bright = tophat >= LINE_CONTRAST
    text_boxes = text_boxes or []
    found = []
    for index in range(1, n):
        x0, y0, w, h = stats[index, :4]
        patch = np.where(labels[y0:y0 + h, x0:x0 + w] == index, response[y0:y0 + h, x0:x0 + w], 0)
        cy, cx = np.unravel_index(int(np.argmax(patch)), patch.shape)
        x, y = int(x0 + cx), int(y0 + cy)
        if not _is_caliper_cross(_arm_lengths(bright, x, y, CROSS_MAX_ARM + 2)):
            continue
        if any(bx - 2 <= x <= bx + bw + 2 and by - 2 <= y <= by + bh + 2 for bx, by, bw, bh in text_boxes):
            continue
        found.append((x, y))
    return sorted(found, key=lambda p: (p[1], p[0]))


def colour_info(rgb: np.ndarray) -> ColourInfo:
    """Colour overlay flags of an (H, W, 3) uint8 image (a greyscale image stored as RGB gives all False)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3:
        return ColourInfo(False, 0.0, False, False)
    chroma = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    coloured = chroma >= CHROMA_MIN
    count = int(coloured.sum())
    h, w = coloured.shape
    # A Doppler ROI box: at least one long coloured row and one long coloured column (its outline).
    box = bool(coloured.sum(axis=1).max(initial=0) >= 0.15 * w and coloured.sum(axis=0).max(initial=0) >= 0.15 * h)
    # Flow is blobs of saturated colour; a saturated 1-px box outline or caliper is not (opened away).
    saturated = (chroma >= FLOW_CHROMA).astype(np.uint8)
    flow = int(cv2.morphologyEx(saturated, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)).sum()) >= FLOW_MIN_PIXELS
    return ColourInfo(count >= COLOUR_MIN_PIXELS, count / float(h * w), box, flow)


def analyse_annotations(grey: np.ndarray, rgb: np.ndarray | None = None) -> AnnotationFlags:
    """All flags of one image: ``grey`` uint8 (H, W); ``rgb`` (H, W, 3) uint8 when the file has colour."""
    text = detect_text(grey)
    calipers = detect_calipers(grey, text)
    colour = colour_info(rgb) if rgb is not None else ColourInfo(False, 0.0, False, False)
    return AnnotationFlags(calipers=calipers, text_boxes=text, colour=colour)
