"""Training-time augmentation of cached (S, S, 3) uint8 images and their lesion masks.

Every random number comes from the ``rng`` the caller passes (the dataset seeds one per item and epoch), so an
augmentation repeats exactly whatever worker process draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from training.config_schema import AugmentConfig


def apply_mask_overlay(image: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Emphasise the lesion: out = I + s * M * (255 - I), i.e. the mask drawn in white at opacity s over I.

    ``image`` (S, S, 3) uint8, ``mask`` (S, S) bool, ``strength`` s in [0, 1]; s = 0 (or an empty mask) returns
    ``image`` itself, unchanged. The paper writes its overlay as I*M + I*(1 - M), which equals I (no overlay at
    all); its figures show the lesion brightened, which this alpha blend reproduces. Chosen over I * (1 + s*M):
    BUSI lesions are mostly hypoechoic (dark), which a multiplicative gain would barely change; and over
    darkening outside the mask, which would darken every normal image (empty mask) as a whole.
    Training images only: a mask exists only for lesion classes, so this is a label leak by construction.
    """
    if strength <= 0 or not mask.any():
        return image
    work = image.astype(np.float32)
    alpha = np.float32(strength) * mask.astype(np.float32)[..., None]
    return np.clip(np.rint(work + alpha * (255.0 - work)), 0, 255).astype(np.uint8)


def is_greyscale(image: np.ndarray) -> bool:
    """True when the three channels of an (S, S, 3) image are equal (764 of BUSI's 780 images)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as torchvision's rgb_to_grayscale


def color_jitter(image: np.ndarray, factors: Mapping[str, float], order: Sequence[str]) -> np.ndarray:
    """torchvision ColorJitter semantics on float32 RGB in [0, 255], clipped after each step.

    ``factors``: brightness b (I * b), contrast c (blend with the mean grey level), saturation s (blend with the
    image's greyscale), hue h (shift of h turns); ``order``: the order of application. Greyscale-aware:
    saturation and hue are skipped for images whose channels are equal, on which they are mathematically no-ops
    (they would only add rounding noise), so the paper's saturation/hue jitter does nothing on 764 BUSI images.
    """
    grey = is_greyscale(image)
    out = image.astype(np.float32)
    for name in order:
        f = factors[name]
        if name == "brightness" and f != 1.0:
            out = np.clip(out * f, 0, 255)
        elif name == "contrast" and f != 1.0:
            mean = float((out @ _GREY_WEIGHTS).mean())
            out = np.clip((out - mean) * f + mean, 0, 255)
        elif name == "saturation" and f != 1.0 and not grey:
            luminance = (out @ _GREY_WEIGHTS)[..., None]
            out = np.clip(luminance + (out - luminance) * f, 0, 255)
        elif name == "hue" and f != 0.0 and not grey:
            hsv = cv2.cvtColor(out / 255.0, cv2.COLOR_RGB2HSV)  # float input: H in degrees [0, 360)
            hsv[..., 0] = np.mod(hsv[..., 0] + f * 360.0, 360.0)
            out = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)
    return out


_JITTER_NAMES = ("brightness", "contrast", "saturation", "hue")


def augment_image(image: np.ndarray, params: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation of an (S, S, 3) uint8 image -> (S, S, 3) uint8 (see :func:`augment_pair`)."""
    return augment_pair(image, None, params, rng)[0]


def augment_pair(image: np.ndarray, mask: np.ndarray | None, params: AugmentConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """One random augmentation of an (S, S, 3) uint8 image, and the same flips and warp of its (S, S) bool
    lesion mask (nearest neighbour; None stays None) -> (image (S, S, 3) uint8, mask (S, S) bool or None).

    In order: horizontal / vertical flip (probabilities ``hflip_p``/``vflip_p``), one affine warp (rotation
    uniform in ±``rotation_deg``, scale uniform in 1 ± ``zoom``, about the centre, bilinear, black outside),
    colour jitter (:func:`color_jitter`, factors as torchvision, in a random order as torchvision), then
    multiplicative speckle noise I * (1 + ``speckle`` * N(0, 1)), equal on all channels. Every random number is
    drawn whether or not its transform is enabled, so the stream depends on ``rng`` alone.
    """
    hflip = rng.random() < params.hflip_p
    vflip = rng.random() < params.vflip_p
    angle = rng.uniform(-params.rotation_deg, params.rotation_deg)
    scale = rng.uniform(1.0 - params.zoom, 1.0 + params.zoom)
    factors = {
        "brightness": rng.uniform(max(0.0, 1.0 - params.brightness), 1.0 + params.brightness),
        "contrast": rng.uniform(max(0.0, 1.0 - params.contrast), 1.0 + params.contrast),
        "saturation": rng.uniform(max(0.0, 1.0 - params.saturation), 1.0 + params.saturation),
        "hue": rng.uniform(-params.hue, params.hue),
    }
    order = [_JITTER_NAMES[i] for i in rng.permutation(len(_JITTER_NAMES))]
    noise_seed = int(rng.integers(0, 2**63 - 1))

    out, mask_out = image, mask
    if hflip:
        out = out[:, ::-1]
        mask_out = None if mask_out is None else mask_out[:, ::-1]
    if vflip:
        out = out[::-1]
        mask_out = None if mask_out is None else mask_out[::-1]
    out = np.ascontiguousarray(out)
    if params.rotation_deg > 0 or params.zoom > 0:
        size = out.shape[0]
        centre = ((out.shape[1] - 1) / 2.0, (size - 1) / 2.0)
        matrix = cv2.getRotationMatrix2D(centre, angle, scale)
        out = cv2.warpAffine(out, matrix, (out.shape[1], size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if mask_out is not None:
            mask_out = cv2.warpAffine(np.ascontiguousarray(mask_out, dtype=np.uint8), matrix, (out.shape[1], size),
                                      flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    work = color_jitter(out, factors, order)
    if params.speckle > 0:
        noise = np.random.default_rng(noise_seed).standard_normal(out.shape[:2], dtype=np.float32)
        work = work * (1.0 + np.float32(params.speckle) * noise)[..., None]
    if mask_out is not None:
        mask_out = np.ascontiguousarray(mask_out, dtype=bool)
    return np.clip(np.rint(work), 0, 255).astype(np.uint8), mask_out
