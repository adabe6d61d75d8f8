"""Near-duplicate ultrasound images: perceptual hashes to find candidates, alignment + local NCC to verify.

BUSI holds the same scan saved twice (once ~20 % smaller, or re-cropped) and consecutive frames of one lesion.
Hashes alone cannot tell these from two different patients with a similar layout (pHash distances of true
copies and of strangers overlap from about 12 bits on), so every candidate pair is verified on pixels:

1. Each image becomes a small band-pass "work" image: greyscale, longest side ``WORK_SIZE`` px (INTER_AREA),
   difference of Gaussians ``DOG_SIGMAS``. The band keeps lesion borders, fat lobules and coarse speckle and
   drops the depth-gain trend and the bright-top/dark-bottom layout that every ultrasound image shares (with
   raw intensities, unrelated pairs reached NCC 0.8).
2. Alignment: the central part of one image (``TEMPLATE_TRIM`` cut off each side, so re-cropped borders do not
   matter) is scaled and searched in the other with normalised cross-correlation, over scales around "same
   field of view" (a resized copy) and "same pixel size" (a crop), both ways round, then refined.
3. Score: the overlap is cut into ``CELL_GRID`` x ``CELL_GRID`` cells and each cell's NCC is taken with
   ``CELL_SLACK`` px of local slack (consecutive frames deform a little). The score is the median cell NCC: a
   copy or a neighbouring frame agrees everywhere, while a stranger that matched on one feature (a dark cyst
   against another dark cyst) agrees in one or two cells only.

Everything is numpy + OpenCV; ~8 ms per verified pair on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "MatchFeatures", "Verification", "candidate_pairs", "connected_groups", "decide", "dhash", "hamming_matrix",
    "match_features", "phash", "verify_pair",
]

# --- candidate generation -------------------------------------------------------------------------------------
# On BUSI every pair that verification accepts is among the 6 nearest pHash neighbours (dHash breaking ties) of
# one of its two images; checked against a verification of all 64 144 pairs within 26 pHash or 16 dHash bits.
# Copies of one scan are 0-4 bits apart, but re-crops and neighbouring frames reach 16-22 bits, where strangers
# are already common: a fixed radius wide enough for them would mean 4 500-13 000 candidates instead of ~3 000.
CANDIDATE_NEIGHBOURS = 6
CANDIDATE_MAX_PHASH = 18  # always verify pairs this close (see LAYOUT_MAX_PHASH), whatever the neighbour ranks

# --- verification ---------------------------------------------------------------------------------------------
WORK_SIZE = 160  # px, longest side of the work image; BUSI's 500-1000 px images are mostly speckle at full size
DOG_SIGMAS = (1.0, 6.0)  # px at WORK_SIZE; chosen among 4 bands x 3 slacks x 3 grids on 19 hand-labelled
# same-lesion pairs, 23 hand-labelled look-alikes and 400 random candidates (best separation of the three)
TEMPLATE_TRIM = 0.12  # share cut off each side of the searched template: tolerates re-crops up to ~12 %
SCALE_STEPS = (0.92, 0.96, 1.0, 1.04, 1.08)  # around each scale hypothesis
REFINE_STEPS = (0.98, 0.99, 1.01, 1.02)  # around the best coarse scale
CELL_GRID = 4
CELL_SLACK = 1  # px of local shift per cell; 2 px let stranger textures align by chance (scores +0.05)
MIN_CELLS = 6  # cells with texture on both sides needed for a score (black borders and cyst interiors are flat)
FLAT_STD = 1.0  # a cell whose band-pass standard deviation is below this has no texture
MIN_OVERLAP = 0.6  # share of the larger image's field of view both must show: accepted BUSI pairs have >= 0.71,
# while a narrow crop matched inside a wide image (look-alikes at 0.45, overlap 0.55) is not a copy

# Thresholds on the median cell NCC, set by viewing side by side every BUSI pair scoring 0.28-0.93 (the audit's
# duplicate_examples.png shows the lowest accepted ones). Copies of one scan score 0.85-1.0, neighbouring frames
# of one sweep 0.47-0.85 (lowest: a Doppler frame beside the B-mode frame of the same lesion). Random pairs score
# up to ~0.32 (99th percentile) and ~0.43 (highest of 5 000). Look-alike strangers sharing the field of view (two
# round cysts, two sweeps through fatty tissue) reach 0.38-0.44, once 0.48 (two large cysts, in an exhaustive
# check of 64 144 pairs; the hash stage never proposes that pair). But the 0.38-0.46 band also holds frames of
# one lesion with a moved probe, and there the global layout separates them: all 14 same-lesion pairs seen in that
# band were within LAYOUT_MAX_PHASH bits, every stranger sharing the field of view 22 bits or more apart (random
# pairs: 32 +- 4 bits). On BUSI this rule adds 8 pairs (one lesion filed as benign and as malignant among them).
NEAR_MIN_SCORE = 0.46  # near-duplicate on local agreement alone
REVIEW_MIN_SCORE = 0.38  # near-duplicate when the layout agrees too (pHash <= LAYOUT_MAX_PHASH), else listed for
# a human to review (review_pairs.csv), not grouped
LAYOUT_MAX_PHASH = 18


# --- perceptual hashes ----------------------------------------------------------------------------------------
def _pack_bits(bits: np.ndarray) -> int:
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def phash(grey: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a (H, W) image: 8x8 lowest frequencies of a 32x32 INTER_AREA thumbnail,
    each bit = coefficient above the median of the 63 AC coefficients."""
    small = cv2.resize(np.asarray(grey, np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    return _pack_bits(low > np.median(low[1:]))


def dhash(grey: np.ndarray) -> int:
    """64-bit difference hash of a (H, W) image: 9x8 thumbnail, bit = pixel brighter than its left neighbour."""
    small = cv2.resize(np.asarray(grey, np.float32), (9, 8), interpolation=cv2.INTER_AREA)
    return _pack_bits(small[:, 1:] > small[:, :-1])


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances (N, N) int of N 64-bit hashes given as a uint64 array."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    return np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(np.int32)


def candidate_pairs(phashes: np.ndarray, dhashes: np.ndarray,
                    neighbours: int = CANDIDATE_NEIGHBOURS, max_phash: int = CANDIDATE_MAX_PHASH
                    ) -> list[tuple[int, int, int, int]]:
    """(i, j, pHash distance, dHash distance) with i < j: each image's nearest pHash neighbours (ties broken by
    dHash) plus every pair within ``max_phash`` bits. O(N^2) on 64-bit words, fine for thousands of images."""
    dp, dd = hamming_matrix(phashes), hamming_matrix(dhashes)
    n = len(dp)
    if n < 2:
        return []
    key = dp.astype(np.float64) * 100 + dd  # dHash only breaks pHash ties
    np.fill_diagonal(key, np.inf)
    chosen = dp <= max_phash
    k = min(neighbours, n - 1)
    nearest = np.argpartition(key, k - 1, axis=1)[:, :k]
    chosen[np.repeat(np.arange(n), k), nearest.ravel()] = True
    chosen |= chosen.T
    i, j = np.nonzero(np.triu(chosen, 1))
    return [(int(a), int(b), int(dp[a, b]), int(dd[a, b])) for a, b in zip(i, j)]


# --- verification ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchFeatures:
    """Band-pass work image (h, w) float32 with longest side WORK_SIZE, and its size relative to the original
    (work px per original px)."""

    work: np.ndarray
    scale: float


@dataclass(frozen=True)
class Verification:
    """Result of aligning image b onto image a.

    ``score``: median local NCC over the overlap, -1..1 (-1 when no alignment was possible); ``ncc``: NCC of
    the aligning template match; ``scale``: size of b's content relative to a's, in original pixels;
    ``overlap``: shared field of view as a share of the larger image, 0..1.
    """

    score: float
    ncc: float
    scale: float
    overlap: float



_NO_MATCH = Verification(-1.0, -1.0, 1.0, 0.0)


def match_features(grey: np.ndarray) -> MatchFeatures:
    """Work image of a (H, W) greyscale image (any real dtype)."""
    grey = np.asarray(grey, dtype=np.float32)
    h, w = grey.shape
    scale = WORK_SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    band = cv2.GaussianBlur(small, (0, 0), DOG_SIGMAS[0]) - cv2.GaussianBlur(small, (0, 0), DOG_SIGMAS[1])
    return MatchFeatures(work=np.ascontiguousarray(band), scale=scale)


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _template_match(x: np.ndarray, y: np.ndarray, factor: float) -> tuple[float, tuple[float, float]]:
    """Best NCC of y's trimmed centre scaled by ``factor`` inside x, and where y's origin then lies in x."""
    h, w = y.shape
    y0, x0 = int(h * TEMPLATE_TRIM), int(w * TEMPLATE_TRIM)
    template = _resize(y[y0:h - y0, x0:w - x0], factor)
    th, tw = template.shape
    if th > x.shape[0] or tw > x.shape[1] or th < 16 or tw < 16 or template.std() < FLAT_STD:
        return -1.0, (0.0, 0.0)
    result = cv2.matchTemplate(x, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (bx, by) = cv2.minMaxLoc(result)
    return float(best), (bx - x0 * factor, by - y0 * factor)


def _cell_score(x: np.ndarray, y: np.ndarray, factor: float, origin: tuple[float, float]) -> tuple[float, float]:
    """(median cell NCC, overlap share of the larger image) of y scaled by ``factor`` placed at ``origin`` in x."""
    ys = _resize(y, factor)
    ox, oy = int(round(origin[0])), int(round(origin[1]))
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(x.shape[1], ox + ys.shape[1]), min(x.shape[0], oy + ys.shape[0])
    if x1 - x0 < 4 * CELL_GRID or y1 - y0 < 4 * CELL_GRID:
        return -1.0, 0.0
    overlap = (x1 - x0) * (y1 - y0) / max(x.size, ys.size)
    xs = np.linspace(x0, x1, CELL_GRID + 1).astype(int)
    rows = np.linspace(y0, y1, CELL_GRID + 1).astype(int)
    values = []
    for r in range(CELL_GRID):
        for c in range(CELL_GRID):
            cx0, cx1, cy0, cy1 = xs[c], xs[c + 1], rows[r], rows[r + 1]
            cell = ys[cy0 - oy:cy1 - oy, cx0 - ox:cx1 - ox]
            ax0, ay0 = max(0, cx0 - CELL_SLACK), max(0, cy0 - CELL_SLACK)
            area = x[ay0:min(x.shape[0], cy1 + CELL_SLACK), ax0:min(x.shape[1], cx1 + CELL_SLACK)]
            flat_y, flat_x = cell.std() < FLAT_STD, area.std() < FLAT_STD
            if flat_y and flat_x:
                continue  # both featureless (black margin, cyst interior): no evidence either way
            if flat_y or flat_x:
                values.append(0.0)  # texture on one side only: evidence against
                continue
            values.append(float(cv2.matchTemplate(area, cell, cv2.TM_CCOEFF_NORMED).max()))
    if len(values) < MIN_CELLS:
        return -1.0, overlap
    return float(np.median(values)), overlap


def verify_pair(a: MatchFeatures, b: MatchFeatures) -> Verification:
    """Align b onto a (either may be the resized or cropped one) and score the agreement, see the module doc."""
    best = (-1.0, 0, 1.0, (0.0, 0.0))  # ncc, order, factor, origin
    pairs = ((a, b), (b, a))
    for order, (x, y) in enumerate(pairs):
        # In work pixels a resized copy has the same scale (factor 1); a crop keeps the original pixel size,
        # which in work pixels is the ratio of the two downscaling factors.
        hypotheses = {1.0, round(x.scale / y.scale, 4)}
        for base in hypotheses:
            for step in SCALE_STEPS:
                ncc, origin = _template_match(x.work, y.work, base * step)
                if ncc > best[0]:
                    best = (ncc, order, base * step, origin)
    if best[0] <= -1.0:
        return _NO_MATCH
    ncc, order, factor, origin = best
    x, y = pairs[order]
    for step in REFINE_STEPS:
        candidate, candidate_origin = _template_match(x.work, y.work, factor * step)
        if candidate > ncc:
            ncc, factor, origin = candidate, factor * step, candidate_origin
    score, overlap = _cell_score(x.work, y.work, factor, origin)
    # factor maps y's work pixels to x's; in original pixels b's content is this big relative to a's:
    original = factor * y.scale / x.scale
    scale_b_in_a = 1.0 / original if order == 0 else original
    return Verification(score=score, ncc=ncc, scale=scale_b_in_a, overlap=overlap)


def decide(result: Verification, phash_distance: int) -> str | None:
    """"near" (group the pair), "review" (show it to a human) or None, from a verification and the pair's pHash
    distance; see the threshold notes above."""
    if result.overlap < MIN_OVERLAP or result.score < REVIEW_MIN_SCORE:
        return None
    if result.score >= NEAR_MIN_SCORE or phash_distance <= LAYOUT_MAX_PHASH:
        return "near"
    return "review"


# --- grouping -------------------------------------------------------------------------------------------------
def connected_groups(n: int, edges) -> list[int]:
    """Group index (0..G-1) of each of ``n`` items, connected components of ``edges`` (pairs of indices).
    Groups are numbered in order of their smallest member, so item 0 is always in group 0."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving
            i = parent[i]
        return i

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    ids: dict[int, int] = {}
    return [ids.setdefault(find(i), len(ids)) for i in range(n)]
