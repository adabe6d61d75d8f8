"""How well an explanation heatmap agrees with the annotated lesion mask, next to a centre-prior baseline.

Agreement is not correctness: a map can overlap the lesion for the wrong reason, and BUSI masks are one
annotator's outline. The baseline (a Gaussian at the image centre, where lesions usually are) says how much of
a score needs no model at all: a heatmap that does not beat it has shown little.

Conventions: ``heatmap`` is a float (H, W) array >= 0 in the image's geometry, any scale; ``mask`` a bool
(H, W) array of the same shape, True = lesion. Thresholds act on the map divided by its maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "AgreementResult",
    "agreement",
    "centre_prior",
    "energy_in_mask",
    "iou",
    "pointing_game",
    "threshold_fixed",
    "threshold_otsu",
    "threshold_top_fraction",
]

_OTSU_BINS = 256


def _as_heatmap(heatmap: np.ndarray) -> np.ndarray:
    array = np.asarray(heatmap)
    if array.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise ValueError(f"heatmap must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("heatmap holds NaN or infinite values")
    if array.size and array.min() < 0:
        raise ValueError(f"heatmap must be >= 0 (minimum is {array.min():g}); apply ReLU or shift it first")
    return array


def _as_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != shape:
        raise ValueError(f"mask shape {array.shape} differs from heatmap shape {shape}")
    return array if array.dtype == bool else array != 0


def _all_zero(heatmap: np.ndarray) -> bool:
    """True for a map with nothing in it (checked maps are >= 0, so a zero maximum means all zero)."""
    return not heatmap.size or heatmap.max() <= 0


def _normalised(heatmap: np.ndarray) -> np.ndarray | None:
    """The map divided by its maximum (values in [0, 1]), or None for an all-zero map."""
    return None if _all_zero(heatmap) else heatmap / heatmap.max()


def threshold_fixed(heatmap: np.ndarray, level: float = 0.5) -> np.ndarray:
    """Bool (H, W): pixels whose value is at least ``level`` (0..1) times the map's maximum.

    An all-zero map gives an empty region (it highlights nothing).
    """
    _check_level(level)
    h = _as_heatmap(heatmap)
    return _fixed(_normalised(h), level, h.shape)


def threshold_otsu(heatmap: np.ndarray) -> np.ndarray:
    """Bool (H, W): the bright class of Otsu's two-class split of the normalised map (256-bin histogram).

    A constant map (all-zero included) has no split and gives an empty region: it singles nothing out.
    Ties in between-class variance take the lowest threshold; for a two-valued map every threshold in the
    gap gives the same region anyway.
    """
    h = _as_heatmap(heatmap)
    return _otsu(_normalised(h), h.shape)


def threshold_top_fraction(heatmap: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Bool (H, W): the ``fraction`` (0..1] of pixels with the highest values, round(fraction * H * W) of them.

    Ties at the cut are broken by row-major order (earlier pixels first), so the area is exact and the
    result deterministic. Zero-valued pixels are never selected (they carry no attention), so a sparse map
    gives a smaller region, and an all-zero map an empty one.
    """
    _check_fraction(fraction)
    return _top(_as_heatmap(heatmap), fraction)


# The cores below take maps already checked by _as_heatmap, so agreement() validates and normalises once.

def _check_level(level: float) -> None:
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be in [0, 1], got {level}")


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")


def _fixed(norm: np.ndarray | None, level: float, shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, bool) if norm is None else norm >= level


def _otsu(norm: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if norm is None:
        return np.zeros(shape, bool)
    lo, hi = float(norm.min()), float(norm.max())
    if hi - lo <= 1e-12:
        return np.zeros(shape, bool)
    counts, edges = np.histogram(norm, bins=_OTSU_BINS, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1].astype(np.float64)
    weight_high = norm.size - weight_low
    sum_low = np.cumsum(counts * centres)[:-1]
    total = float(np.sum(counts * centres))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_low = sum_low / weight_low
        mean_high = (total - sum_low) / weight_high
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between = np.where((weight_low > 0) & (weight_high > 0), between, -1.0)
    split = int(np.argmax(between))  # bins 0..split are the dark class
    return norm >= edges[split + 1]


def _top(h: np.ndarray, fraction: float) -> np.ndarray:
    flat = h.ravel()
    k = min(flat.size, max(1, int(np.floor(fraction * flat.size + 0.5))))
    k = min(k, int(np.count_nonzero(flat)))
    selected = np.zeros(flat.size, bool)
    if k > 0:
        cut = np.partition(flat, flat.size - k)[flat.size - k]  # the k-th largest value
        above = flat > cut
        selected |= above
        ties = np.flatnonzero(flat == cut)[: k - int(np.count_nonzero(above))]
        selected[ties] = True
    return selected.reshape(h.shape)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool (H, W) regions, in [0, 1]; NaN when both are empty (undefined)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"region shapes differ: {a.shape} vs {b.shape}")
    union = np.count_nonzero(a | b)
    return float("nan") if union == 0 else np.count_nonzero(a & b) / union


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance_px: float = 0) -> bool:
    """True when the map's maximum lies in the mask, or within ``tolerance_px`` (Euclidean) of a mask pixel.

    With several maximal pixels the first in row-major order (``np.argmax``) is the one that points; a flat
    map therefore points at its top-left pixel. An all-zero map points nowhere: ``ValueError``. An empty mask
    can never be hit (False).
    """
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    h = _as_heatmap(heatmap)
    m = _as_mask(mask, h.shape)
    if _all_zero(h):
        raise ValueError("heatmap is all zero: it points nowhere")
    return _points(np.unravel_index(int(np.argmax(h)), h.shape), m, tolerance_px)


def _points(peak: tuple[int, int], m: np.ndarray, tolerance_px: float) -> bool:
    y, x = peak
    if m[y, x]:
        return True
    if tolerance_px == 0:
        return False
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return False
    # Exact Euclidean distance to the nearest lesion pixel; the mask is small next to the cost of a transform.
    nearest_sq = np.min((ys - y).astype(np.float64) ** 2 + (xs - x).astype(np.float64) ** 2)
    return bool(nearest_sq <= float(tolerance_px) ** 2)


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total value (its "energy", sum of values) that falls inside the mask, in [0, 1].

    NaN for an all-zero map (no energy to share out).
    """
    h = _as_heatmap(heatmap)
    return _energy(h, _as_mask(mask, h.shape))


def _energy(h: np.ndarray, m: np.ndarray) -> float:
    total = float(h.sum())
    if total <= 0:
        return float("nan")
    return min(1.0, float(h[m].sum()) / total)  # min(): float summation order can overshoot 1 by an ulp


def centre_prior(shape: tuple[int, int], sigma_fraction: float = 0.25) -> np.ndarray:
    """Baseline "heatmap": float32 (H, W) Gaussian peaking at 1.0 at the image centre.

    The standard deviation is ``sigma_fraction`` of the height along y and of the width along x. Symmetric,
    so an even-sized image has four equal maxima (the pointing game takes the upper-left one).
    """
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive (H, W), got {shape}")
    if sigma_fraction <= 0:
        raise ValueError(f"sigma_fraction must be > 0, got {sigma_fraction}")
    y = np.arange(height, dtype=np.float64) - (height - 1) / 2
    x = np.arange(width, dtype=np.float64) - (width - 1) / 2
    gy = np.exp(-(y**2) / (2 * (sigma_fraction * height) ** 2))
    gx = np.exp(-(x**2) / (2 * (sigma_fraction * width) ** 2))
    return np.outer(gy, gx).astype(np.float32)


@dataclass(frozen=True)
class AgreementResult:
    """Scores of one heatmap against one mask; ``None`` where a score is undefined, with ``reason`` saying why.

    ``iou_*`` are in [0, 1]; ``pointing_hit`` is the pointing game; ``energy_in_mask`` in [0, 1].
    ``baseline`` holds the same scores for :func:`centre_prior` of the same shape (its own ``baseline`` is
    None), or None when the mask is empty.
    """

    iou_fixed: float | None
    iou_otsu: float | None
    iou_top: float | None
    pointing_hit: bool | None
    energy_in_mask: float | None
    baseline: AgreementResult | None = None
    reason: str | None = None
    fixed_level: float = 0.5
    top_fraction: float = 0.1


@dataclass(frozen=True)
class _Regions:
    """What a map contributes to every score: its thresholded regions, its peak and its values."""

    fixed: np.ndarray
    otsu: np.ndarray
    top: np.ndarray
    peak: tuple[int, int]
    values: np.ndarray


def _regions(h: np.ndarray, fixed_level: float, top_fraction: float) -> _Regions:
    """``h``: a checked, not all-zero map (float64 (H, W) >= 0); normalised once for both thresholds."""
    norm = _normalised(h)
    peak = np.unravel_index(int(np.argmax(h)), h.shape)
    return _Regions(_fixed(norm, fixed_level, h.shape), _otsu(norm, h.shape), _top(h, top_fraction),
                    (int(peak[0]), int(peak[1])), h)


@lru_cache(maxsize=8)
def _prior_regions(shape: tuple[int, int], fixed_level: float, top_fraction: float) -> _Regions:
    # The baseline depends on the image size alone: a folder of one scanner's images pays for it once.
    regions = _regions(_as_heatmap(centre_prior(shape)), fixed_level, top_fraction)
    for array in (regions.fixed, regions.otsu, regions.top, regions.values):
        array.flags.writeable = False  # shared between calls
    return regions


def _scores(r: _Regions, m: np.ndarray, tolerance_px: float) -> dict:
    return {
        "iou_fixed": iou(r.fixed, m),
        "iou_otsu": iou(r.otsu, m),
        "iou_top": iou(r.top, m),
        "pointing_hit": _points(r.peak, m, tolerance_px),
        "energy_in_mask": _energy(r.values, m),
    }


def agreement(
    heatmap: np.ndarray,
    mask: np.ndarray,
    fixed_level: float = 0.5,
    top_fraction: float = 0.1,
    tolerance_px: float = 0,
) -> AgreementResult:
    """All agreement scores of ``heatmap`` against ``mask``, and the centre-prior baseline's.

    An empty mask (normal images) gives every score and the baseline as None with ``reason="empty mask"``:
    there is no lesion to agree with, and a 0 would read as a failure. An all-zero heatmap gives None scores
    with ``reason="heatmap is all zero"`` but still a baseline. Shape mismatch: ``ValueError``.
    """
    _check_level(fixed_level)
    _check_fraction(top_fraction)
    if tolerance_px < 0:
        raise ValueError(f"tolerance_px must be >= 0, got {tolerance_px}")
    h = _as_heatmap(heatmap)
    m = _as_mask(mask, h.shape)
    settings = {"fixed_level": fixed_level, "top_fraction": top_fraction}
    empty = dict.fromkeys(("iou_fixed", "iou_otsu", "iou_top", "pointing_hit", "energy_in_mask"))
    if not m.any():
        return AgreementResult(**empty, reason="empty mask", **settings)
    prior = _prior_regions(h.shape, float(fixed_level), float(top_fraction))
    baseline = AgreementResult(**_scores(prior, m, tolerance_px), **settings)
    if _all_zero(h):
        return AgreementResult(**empty, baseline=baseline, reason="heatmap is all zero", **settings)
    return AgreementResult(**_scores(_regions(h, fixed_level, top_fraction), m, tolerance_px), baseline=baseline,
                           **settings)
