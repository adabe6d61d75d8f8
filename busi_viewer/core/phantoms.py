"""Synthetic breast-ultrasound phantoms that the project may redistribute (tests, demos), in BUSI's layout.

A phantom is drawn from an echogenicity map (tissue layers, a smooth random tissue texture and, for benign and
malignant, a lesion) multiplied by Rayleigh speckle, attenuated with depth and log-compressed like a B-mode
image. The lesion follows the textbook BI-RADS descriptors so that the classes are visually separable:

- benign: oval, parallel (wider than tall), circumscribed, hypoechoic, with posterior enhancement;
- malignant: irregular and spiculated, not parallel (taller than wide), hypoechoic and heterogeneous, with
  an echogenic halo and posterior acoustic shadowing;
- normal: no lesion, empty mask.

Anatomy and speckle have separate seeds, so :func:`make_phantom` with ``frame`` and ``shift`` renders the
"next frame" of a sweep (same anatomy, moved a little, new speckle), as BUSI's consecutive frames are.
:func:`write_phantom_dataset` writes ``<class>/<class> (<n>).png`` with ``_mask.png`` beside each image and
:func:`plant_duplicates` adds the known problems of BUSI (copies, resized and re-cropped copies, a neighbouring
frame, a cross-class copy, caliper crosses, a colour Doppler box) and says where it put them.
Only numpy and OpenCV.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np

__all__ = ["LABELS", "draw_caliper", "make_phantom", "plant_duplicates", "write_phantom_dataset"]

LABELS = ("benign", "malignant", "normal")
_LABEL_CODE = {label: i for i, label in enumerate(LABELS)}
_MARGIN = 12  # px of anatomy drawn beyond the frame on each side, so a shifted frame has content everywhere
DYNAMIC_RANGE_DB = 45.0  # displayed range of the log-compressed echo, as a B-mode preset
SPECKLE_OVERSAMPLING = 3
MEDIAN_GREY = 0.4  # where the median pixel lands in 0..1 (BUSI tissue is mid-grey)
_NAME = re.compile(r"(?P<cls>.+) \((?P<n>\d+)\)\.png")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large |x|."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise smoothed with (sigma_x, sigma_y)."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma[0], sigmaY=sigma[1])
    return (field - field.mean()) / (field.std() + 1e-6)


def _wavy_line(rng: np.random.Generator, width: int, y0: float, amplitude: float) -> np.ndarray:
    """y coordinate (float, per column) of a smooth undulating tissue boundary."""
    x = np.arange(width, dtype=np.float32)
    y = np.full(width, y0, np.float32)
    for _ in range(3):
        period = rng.uniform(0.4, 1.5) * width
        y += amplitude * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi))
    return y


def _tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Echogenicity (h, w) float32, roughly 0..1: skin, fat, glandular layer, ligaments, muscle, texture."""
    yy = np.arange(h, dtype=np.float32)[:, None]
    skin = _wavy_line(rng, w, rng.uniform(0.03, 0.06) * h, 1.0)
    fat = _wavy_line(rng, w, rng.uniform(0.18, 0.32) * h, 0.04 * h)
    muscle = _wavy_line(rng, w, rng.uniform(0.72, 0.85) * h, 0.03 * h)
    # Layers as soft steps: fat is hypoechoic, the fibroglandular zone brighter, the pectoral muscle darker.
    echo = np.full((h, w), 0.12, np.float32)
    echo += 0.48 * _sigmoid((yy - fat[None, :]) / 2.0)
    echo -= 0.40 * _sigmoid((yy - muscle[None, :]) / 2.0)
    # Texture of the anatomy (lobules, ducts): elongated along the layers, multiplicative like reflectivity.
    texture = _smooth_noise(rng, (h, w), (rng.uniform(4, 7), rng.uniform(1.5, 2.5)))
    lobules = _smooth_noise(rng, (h, w), (2.5, 2.0))
    echo *= np.exp(0.35 * texture + 0.35 * lobules)
    # Fibrous streaks: short thin bright strands along the layers, the look of breast parenchyma.
    streaks = _smooth_noise(rng, (h, w), (rng.uniform(5, 8), 0.7))
    echo += 0.8 * np.clip(streaks - 0.8, 0, None)
    # Bright thin interfaces: skin line, fascia, Cooper's ligaments, muscle striations.
    lines = [(skin, 1.2, 3.0), (fat + rng.uniform(-2, 2), 1.0, 1.5)]
    for _ in range(int(rng.integers(3, 6))):
        lines.append((_wavy_line(rng, w, rng.uniform(0.1, 0.7) * h, rng.uniform(2, 6)), rng.uniform(0.6, 1.2),
                      rng.uniform(0.8, 1.6)))
    for k in range(int(rng.integers(2, 4))):
        lines.append((muscle + (k + 1) * rng.uniform(3, 6), 0.8, 0.8))
    for y_line, thickness, gain in lines:
        echo += gain * np.exp(-0.5 * ((yy - y_line[None, :]) / thickness) ** 2)
    echo[yy[:, 0] < skin.min() - 2, :] *= 0.3  # gel/standoff above the skin is nearly anechoic
    return echo


def _benign_lesion(rng: np.random.Generator, h: int, w: int, cx: float, cy: float) -> tuple[np.ndarray, dict]:
    """Soft mask (h, w) of an oval, parallel, circumscribed lesion and its geometry."""
    a = rng.uniform(0.07, 0.14) * w  # semi-axis along the skin
    b = a / rng.uniform(1.4, 2.1)  # wider than tall: "parallel" orientation
    angle = np.deg2rad(rng.uniform(-12, 12))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    soft = _sigmoid((1 - r) * 14)  # sharp but anti-aliased margin: circumscribed
    return soft.astype(np.float32), {"half_width": a, "half_height": b}


def _malignant_lesion(rng: np.random.Generator, h: int, w: int, cx: float, cy: float) -> tuple[np.ndarray, dict]:
    """Soft mask (h, w) of an irregular, spiculated, taller-than-wide lesion and its geometry."""
    r0 = rng.uniform(0.06, 0.11) * w
    stretch = rng.uniform(1.1, 1.5)  # vertical: "not parallel"
    theta = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    radius = np.ones_like(theta)
    for harmonic in range(2, 8):  # lobulated, angular outline
        radius += rng.uniform(0.04, 0.12) * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    body = float(radius.max())  # the spicules below do not cast the shadow
    for _ in range(int(rng.integers(6, 11))):  # spicules: narrow radial extensions
        centre, width = rng.uniform(0, 2 * np.pi), rng.uniform(0.04, 0.09)
        delta = np.angle(np.exp(1j * (theta - centre)))
        radius += rng.uniform(0.35, 0.8) * np.exp(-0.5 * (delta / width) ** 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (xx - cx) / r0, (yy - cy) / (r0 * stretch)
    polar = np.sqrt(dx ** 2 + dy ** 2)
    index = ((np.arctan2(dy, dx) % (2 * np.pi)) / (2 * np.pi) * len(theta)).astype(int) % len(theta)
    soft = _sigmoid((1 - polar / radius[index]) * 8)  # blurrier margin: indistinct
    return soft.astype(np.float32), {"half_width": r0 * body, "half_height": r0 * stretch * body}


def make_phantom(seed: int, label: str, size: tuple[int, int] = (128, 160), *, frame: int = 0,
                 shift: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic B-mode image and its lesion mask.

    ``seed`` and ``label`` fix the anatomy (layers, texture, lesion position and shape); ``frame`` picks the
    speckle realisation and ``shift`` = (dx, dy) moves the anatomy by up to ``_MARGIN`` px, so ``frame=1,
    shift=(2, 1)`` is a neighbouring frame of ``frame=0``. Returns (image uint8 (H, W), mask bool (H, W));
    the mask is all False for "normal".
    """
    if label not in _LABEL_CODE:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    h, w = int(size[0]), int(size[1])
    if h < 32 or w < 32:
        raise ValueError(f"phantom size must be at least 32x32, got {size}")
    dx, dy = int(shift[0]), int(shift[1])
    if max(abs(dx), abs(dy)) > _MARGIN:
        raise ValueError(f"shift must stay within {_MARGIN} px, got {shift}")
    rng = np.random.default_rng([int(seed), _LABEL_CODE[label]])
    H, W = h + 2 * _MARGIN, w + 2 * _MARGIN
    echo = _tissue(rng, H, W)

    lesion = np.zeros((H, W), np.float32)
    if label != "normal":
        cx = _MARGIN + rng.uniform(0.25, 0.75) * w
        cy = _MARGIN + rng.uniform(0.35, 0.55) * h
        draw = _benign_lesion if label == "benign" else _malignant_lesion
        lesion, geometry = draw(rng, H, W, cx, cy)
        xx = np.arange(W, dtype=np.float32)[None, :]
        yy = np.arange(H, dtype=np.float32)[:, None]
        column = np.exp(-0.5 * ((xx - cx) / geometry["half_width"]) ** 2)  # acoustic column below
        below = _sigmoid((yy - cy - geometry["half_height"]) / 2.0)
        if label == "benign":
            echo = echo * (1 - lesion) + rng.uniform(0.015, 0.04) * lesion
            echo *= 1 + 0.9 * column * below  # posterior enhancement behind a fluid-like lesion
        else:
            halo = cv2.GaussianBlur(lesion, (0, 0), 2.5) - lesion  # echogenic rim just outside the margin
            inner = 0.025 + 0.02 * np.clip(_smooth_noise(rng, (H, W), (1.5, 1.5)), -1, 1)
            echo = echo * (1 - lesion) + inner * lesion + 0.5 * np.clip(halo, 0, None)
            echo *= 1 - 0.8 * column * below  # posterior shadowing
    echo = np.clip(echo, 0.02, None)

    # Anatomy shifted for this frame, then speckle of this frame.
    window = (slice(_MARGIN - dy, _MARGIN - dy + h), slice(_MARGIN - dx, _MARGIN - dx + w))
    echo, lesion = echo[window], lesion[window]
    srng = np.random.default_rng([int(seed), _LABEL_CODE[label], 1000 + int(frame)])
    # Rayleigh speckle: envelope of a complex Gaussian field, correlated over a grain longer than tall (lateral
    # resolution is worse than axial). Rendered oversampled and averaged down, as a real scan saved at a
    # lower resolution is, which keeps the grain from drowning the anatomy.
    fine = (SPECKLE_OVERSAMPLING * h, SPECKLE_OVERSAMPLING * w)
    real = cv2.GaussianBlur(srng.standard_normal(fine).astype(np.float32), (0, 0), 1.6, sigmaY=0.8)
    imag = cv2.GaussianBlur(srng.standard_normal(fine).astype(np.float32), (0, 0), 1.6, sigmaY=0.8)
    speckle = np.sqrt(real ** 2 + imag ** 2)
    speckle /= speckle.mean()
    depth = np.linspace(0, 1, fine[0], dtype=np.float32)[:, None]
    attenuation = np.exp(-rng.uniform(1.5, 2.5) * depth)  # what the time-gain compensation did not restore
    echo_fine = cv2.resize(echo, (fine[1], fine[0]), interpolation=cv2.INTER_LINEAR)
    db = 20 * np.log10(echo_fine * speckle * attenuation + 1e-4)
    low = np.median(db) - MEDIAN_GREY * DYNAMIC_RANGE_DB  # gain: tissue mid-grey, lines and skin near white
    fine_image = np.clip((db - low) / DYNAMIC_RANGE_DB, 0, 1) * 255
    image = cv2.resize(fine_image, (w, h), interpolation=cv2.INTER_AREA)
    return np.rint(image).astype(np.uint8), lesion >= 0.5


def _encode_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG through imencode (cv2.imwrite cannot open non-ASCII paths on Windows). RGB input is RGB."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def _read(path: Path) -> np.ndarray:
    """uint8 (H, W) greyscale or (H, W, 3) RGB."""
    array = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise OSError(f"could not read {path}")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if array.ndim == 3 else array


def _mask_path(image_path: Path) -> Path:
    return image_path.with_name(f"{image_path.stem}_mask.png")


def _save_pair(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    _encode_png(path, image)
    _encode_png(_mask_path(path), np.where(mask, 255, 0).astype(np.uint8))  # L, 0/255


def write_phantom_dataset(root: Path | str, counts: dict[str, int], seed: int = 0,
                          size: tuple[int, int] = (128, 160)) -> dict:
    """Write ``counts[label]`` phantoms per class as ``root/<label>/<label> (<n>).png`` (n from 1) with
    ``<label> (<n>)_mask.png`` (L, 0/255; all zero for normal) beside each.

    Image n of a class uses anatomy seed ``seed * 100_000 + n``. Returns ``{"root": Path, "files": [relative
    posix paths], "labels": {relative path: label}, "seeds": {relative path: anatomy seed}}``.
    """
    root = Path(root)
    files, labels, seeds = [], {}, {}
    for label, count in counts.items():
        if label not in _LABEL_CODE:
            raise ValueError(f"unknown class {label!r}; classes are {LABELS}")
        for n in range(1, int(count) + 1):
            anatomy = int(seed) * 100_000 + n
            image, mask = make_phantom(anatomy, label, size)
            relative = f"{label}/{label} ({n}).png"
            _save_pair(root / relative, image, mask)
            files.append(relative)
            labels[relative] = label
            seeds[relative] = anatomy
    return {"root": root, "files": files, "labels": labels, "seeds": seeds}


def _next_path(root: Path, label: str) -> Path:
    """The first free ``<label> (<n>).png`` after the highest n in ``root/label``."""
    numbers = [int(m["n"]) for p in (root / label).glob("*.png") if (m := _NAME.fullmatch(p.name))]
    return root / label / f"{label} ({max(numbers, default=0) + 1}).png"


def _images(root: Path, label: str) -> list[Path]:
    found = [p for p in (root / label).glob("*.png") if _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(_NAME.fullmatch(p.name)["n"]))


def draw_caliper(image: np.ndarray, x: int, y: int, arm: int = 6, value: int = 255, thickness: int = 1) -> None:
    """Burn a '+' caliper mark (in place) centred on (x, y): lines ``thickness`` px wide, ``arm`` px long."""
    colour = (value, value, value) if image.ndim == 3 else value
    cv2.line(image, (x - arm, y), (x + arm, y), colour, thickness)
    cv2.line(image, (x, y - arm), (x, y + arm), colour, thickness)


def _lesion_extremes(mask: np.ndarray) -> list[tuple[int, int]]:
    """Left, right, top and bottom points of the lesion (where a sonographer puts the calipers)."""
    ys, xs = np.nonzero(mask)
    cy, cx = int(round(ys.mean())), int(round(xs.mean()))
    row, col = xs[ys == cy], ys[xs == cx]
    points = [(int(row.min()), cy), (int(row.max()), cy)] if row.size else []
    points += [(cx, int(col.min())), (cx, int(col.max()))] if col.size else []
    return points


def plant_duplicates(root: Path | str, seed: int = 0, n_calipers: int = 3) -> dict:
    """Add BUSI's known problems to a dataset made by :func:`write_phantom_dataset` with the same ``seed``, as
    new files (except the caliper and colour images, which are modified in place). Needs at least 6 benign
    and 3 malignant images. ``n_calipers`` images get caliper crosses (benign ones first, then malignant).

    Returns the ground truth, paths relative to ``root`` in posix form:
    ``exact``, ``resized``, ``recropped``, ``frame``, ``conflict``: lists of (source, copy) pairs (the copy
    of ``conflict`` is in another class folder); ``calipers``: {path: number of crosses}; ``colour``: [path].
    Masks are copied/transformed with their images.
    """
    root = Path(root)
    rng = np.random.default_rng([int(seed), 77])
    benign, malignant = _images(root, "benign"), _images(root, "malignant")
    if len(benign) < 6 or len(malignant) < 3:
        raise ValueError("plant_duplicates needs at least 6 benign and 3 malignant images")
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    truth: dict = {"exact": [], "resized": [], "recropped": [], "frame": [], "conflict": [], "calipers": {},
                   "colour": []}

    def copy_bytes(source: Path, label: str) -> Path:
        target = _next_path(root, label)
        shutil.copyfile(source, target)
        shutil.copyfile(_mask_path(source), _mask_path(target))
        return target

    # 1. exact byte copy, same class
    source = benign[0]
    truth["exact"].append((rel(source), rel(copy_bytes(source, "benign"))))
    # 2. resized copy (~80 %): masks resized with nearest neighbour so they stay binary
    source = benign[1]
    image, mask = _read(source), _read(_mask_path(source)) > 0
    h, w = image.shape[:2]
    new_size = (round(w * 0.8), round(h * 0.8))
    target = _next_path(root, "benign")
    _save_pair(target, cv2.resize(image, new_size, interpolation=cv2.INTER_AREA),
               cv2.resize(mask.astype(np.uint8), new_size, interpolation=cv2.INTER_NEAREST) > 0)
    truth["resized"].append((rel(source), rel(target)))
    # 3. re-cropped copy: a few per cent off each border, unequal sides
    source = malignant[0]
    image, mask = _read(source), _read(_mask_path(source)) > 0
    h, w = image.shape[:2]
    top, bottom, left, right = (int(round(f * s)) for f, s in zip(rng.uniform(0.02, 0.06, 4), (h, h, w, w)))
    crop = (slice(top, h - bottom), slice(left, w - right))
    target = _next_path(root, "malignant")
    _save_pair(target, image[crop], mask[crop])
    truth["recropped"].append((rel(source), rel(target)))
    # 4. neighbouring frame: same anatomy, moved 2-3 px, new speckle
    source = malignant[1]
    anatomy = int(seed) * 100_000 + int(_NAME.fullmatch(source.name)["n"])  # write_phantom_dataset's rule
    target = _next_path(root, "malignant")
    frame_image, frame_mask = make_phantom(anatomy, "malignant", _read(source).shape[:2], frame=1,
                                           shift=(int(rng.integers(2, 4)), int(rng.integers(1, 3))))
    _save_pair(target, frame_image, frame_mask)
    truth["frame"].append((rel(source), rel(target)))
    # 5. cross-class conflict: a benign scan saved again in malignant/
    source = benign[2]
    truth["conflict"].append((rel(source), rel(copy_bytes(source, "malignant"))))
    # 6. caliper crosses on lesion extremes of images not used above (so the copies stay exact) and not the
    #    last benign image, which gets the colour box
    marked = benign[3:min(3 + max(0, n_calipers - 1), len(benign) - 1)] + malignant[2:]
    for path in marked[:n_calipers]:
        image, mask = _read(path), _read(_mask_path(path)) > 0
        points = _lesion_extremes(mask)
        for x, y in points:
            draw_caliper(image, x, y, arm=int(rng.integers(5, 8)), thickness=1)
        _encode_png(path, image)
        truth["calipers"][rel(path)] = len(points)
    # 7. a colour Doppler box: RGB file, yellow ROI outline, red and blue flow blobs
    path = benign[-1]
    image = _read(path)
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = w // 4, h // 5, 3 * w // 4, 3 * h // 5
    cv2.rectangle(rgb, (x0, y0), (x1, y1), (200, 190, 60), 1)
    for colour in ((220, 30, 20), (30, 60, 230), (240, 120, 20)):
        centre = (int(rng.integers(x0 + 5, x1 - 5)), int(rng.integers(y0 + 5, y1 - 5)))
        cv2.ellipse(rgb, centre, (int(rng.integers(2, 5)), int(rng.integers(2, 4))), 0, 0, 360, colour, -1)
    _encode_png(path, rgb)
    truth["colour"].append(rel(path))
    return truth
