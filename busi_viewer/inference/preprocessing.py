"""The one preprocessing function, driven by the model card, used by training and by the app alike.

It returns the network input and the :class:`Geometry` that maps anything computed on the input square
(a Grad-CAM map, say) back onto the original image pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from busi_viewer.inference.model_card import PreprocessSpec

_CV2_INTERPOLATION = {
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class Geometry:
    """Where the original (H, W) image sits inside the square network input of side ``input_size``.

    ``content_box`` = (x0, y0, x1, y1) in input pixels (x1, y1 exclusive) of the whole resized image: the
    square itself for "stretch", a centred rectangle inside it for "letterbox", and a rectangle reaching
    beyond it (x0 or y0 < 0) for "center_crop".
    """

    original_shape: tuple[int, int]
    input_size: int
    content_box: tuple[int, int, int, int]

    def to_original(self, map_on_input: np.ndarray) -> np.ndarray:
        """Resample a map that covers the input square onto the original image grid.

        ``map_on_input``: (h, w) float array spanning the whole input square at any resolution (e.g. the
        7x7 final feature map, or 224x224). Returns (H, W) float32, bilinear, in one exact affine step from
        original pixel centres to map coordinates, so no resize-then-crop rounding piles up. Original pixels
        the network never saw (cropped-off margins) get 0: no evidence, rather than an extrapolated guess.
        """
        height, width = self.original_shape
        map_h, map_w = map_on_input.shape
        x0, y0, x1, y1 = self.content_box
        # Original pixel centre x -> input coordinate u = x0 + (x + 0.5) * (x1 - x0) / W
        # -> map coordinate m = u * map_w / S - 0.5 (pixel-centre convention on both sides).
        sx = (x1 - x0) / width * map_w / self.input_size
        sy = (y1 - y0) / height * map_h / self.input_size
        bx = (x0 * map_w / self.input_size) + 0.5 * sx - 0.5
        by = (y0 * map_h / self.input_size) + 0.5 * sy - 0.5
        matrix = np.array([[sx, 0.0, bx], [0.0, sy, by]], dtype=np.float64)
        mapped = cv2.warpAffine(
            np.ascontiguousarray(map_on_input, dtype=np.float32),
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if x0 < 0 or y0 < 0:
            seen_x = self._seen_range(x0, x1, width)
            seen_y = self._seen_range(y0, y1, height)
            mapped[:, : seen_x[0]] = 0
            mapped[:, seen_x[1]:] = 0
            mapped[: seen_y[0]] = 0
            mapped[seen_y[1]:] = 0
        return mapped

    def _seen_range(self, start: int, stop: int, length: int) -> tuple[int, int]:
        """Original pixel indices [first, last) whose centres fall inside the input square along one axis."""
        scale = (stop - start) / length
        centres = start + (np.arange(length) + 0.5) * scale
        inside = np.flatnonzero((centres >= 0) & (centres <= self.input_size))
        return (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)


def equalise(rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the card's histogram equalisation applied ("none": the image itself).

    Greyscale content (three equal channels, as mammograms and most ultrasound) is equalised once and
    replicated; colour images are equalised on their luminance (YCrCb), which leaves hues alone.
    """
    if spec.equalisation == "none":
        return rgb
    if spec.equalisation == "clahe":
        clahe = cv2.createCLAHE(clipLimit=spec.clahe_clip_limit, tileGridSize=(spec.clahe_tiles, spec.clahe_tiles))
        apply = clahe.apply
    else:
        apply = cv2.equalizeHist
    grey = rgb[..., 0]
    if np.array_equal(grey, rgb[..., 1]) and np.array_equal(grey, rgb[..., 2]):
        return np.repeat(apply(np.ascontiguousarray(grey))[..., None], 3, axis=2)
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    ycrcb[..., 0] = apply(np.ascontiguousarray(ycrcb[..., 0]))
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)


def resize_for_model(rgb: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, Geometry]:
    """(H, W, 3) uint8 RGB -> (S, S, 3) uint8 RGB at the card's input size and resize policy, plus geometry.

    Histogram equalisation (:func:`equalise`) comes first, at full resolution. Kept separate from
    :func:`normalise` so that training can cache the resized uint8 images once and augment them before
    normalising.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    rgb = equalise(rgb, spec)
    height, width = rgb.shape[:2]
    size = spec.input_size
    interpolation = _CV2_INTERPOLATION[spec.interpolation]
    if spec.resize_policy == "stretch":
        resized = cv2.resize(rgb, (size, size), interpolation=interpolation)
        return resized, Geometry((height, width), size, (0, 0, size, size))
    if spec.resize_policy == "center_crop":
        scale = size / min(height, width)
        new_w = max(size, round(width * scale))
        new_h = max(size, round(height * scale))
        x0 = (new_w - size) // 2
        y0 = (new_h - size) // 2
        full = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
        cropped = np.ascontiguousarray(full[y0:y0 + size, x0:x0 + size])
        return cropped, Geometry((height, width), size, (-x0, -y0, new_w - x0, new_h - y0))
    scale = size / max(height, width)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    x0 = (size - new_w) // 2
    y0 = (size - new_h) // 2
    canvas = np.full((size, size, 3), spec.pad_value, dtype=np.uint8)
    canvas[y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
    return canvas, Geometry((height, width), size, (x0, y0, x0 + new_w, y0 + new_h))


def normalise(resized: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32, scaled to [0, 1] then (x - mean) / std per channel."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    scaled = resized.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))


def preprocess(rgb: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, Geometry]:
    """(H, W, 3) uint8 RGB -> network input (3, S, S) float32 and the geometry to map results back."""
    resized, geometry = resize_for_model(rgb, spec)
    return normalise(resized, spec), geometry
