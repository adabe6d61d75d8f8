"""The one preprocessing function, and the exact mapping of maps back onto the original image."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from busi_viewer.inference.model_card import PreprocessSpec
from busi_viewer.inference.preprocessing import Geometry, normalise, preprocess, resize_for_model


def _ramp_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 128)], -1).astype(
        np.uint8
    )


def test_stretch_gives_square_float_input_with_card_normalisation():
    spec = PreprocessSpec(input_size=64, resize_policy="stretch", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tensor, geometry = preprocess(_ramp_image(30, 50), spec)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == np.float32
    assert -1.0 <= tensor.min() and tensor.max() <= 1.0
    assert geometry.content_box == (0, 0, 64, 64)
    # channel 2 is constant 128 -> (128/255 - 0.5) / 0.5
    assert np.allclose(tensor[2], (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_imagenet_style_normalisation_values():
    spec = PreprocessSpec(input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    white = np.full((10, 10, 3), 255, np.uint8)
    out = normalise(resize_for_model(white, spec)[0], spec)
    assert np.allclose(out[:, 0, 0], (1 - np.array(spec.mean)) / np.array(spec.std), atol=1e-5)


def test_letterbox_keeps_aspect_and_pads():
    spec = PreprocessSpec(input_size=100, resize_policy="letterbox", pad_value=0)
    image = np.full((50, 200, 3), 200, np.uint8)
    resized, geometry = resize_for_model(image, spec)
    assert geometry.content_box == (0, 37, 100, 62)
    assert resized[:37].max() == 0 and resized[62:].max() == 0
    assert resized[40:60].min() == 200


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess(np.zeros((10, 10), np.uint8), PreprocessSpec())
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess(np.zeros((10, 10, 3), np.float32), PreprocessSpec())


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "center_crop"])
def test_map_of_the_input_returns_to_the_original_pixel_for_pixel(policy):
    """A map made by preprocessing the image itself must come back as (nearly) the image."""
    spec = PreprocessSpec(input_size=224, resize_policy=policy, interpolation="bilinear")
    original = _ramp_image(120, 300)
    resized, geometry = resize_for_model(original, spec)
    back = geometry.to_original(resized[..., 0].astype(np.float32))
    assert back.shape == (120, 300)
    seen = slice(2, -2)
    if policy == "center_crop":  # the 300-px-wide image keeps its central 120 columns
        seen = slice(92, 208)
        assert back[:, :88].max() == 0 and back[:, 212:].max() == 0
    # Bilinear there and back on a linear ramp: within a grey level or two away from the borders.
    assert np.abs(back[2:-2, seen] - original[2:-2, seen, 0]).max() <= 2.0


def test_coarse_map_block_lands_on_the_matching_original_region():
    """A 7x7 map with one hot cell maps to the original rectangle that cell covers."""
    geometry = Geometry(original_shape=(140, 280), input_size=224, content_box=(0, 0, 224, 224))
    cam = np.zeros((7, 7), np.float32)
    cam[3, 5] = 1.0
    back = geometry.to_original(cam)
    peak_y, peak_x = np.unravel_index(np.argmax(back), back.shape)
    # cell (3, 5) is centred at input (5.5 * 32, 3.5 * 32) = (176, 112) -> original (220, 70)
    assert abs(peak_x - 220) <= 1 and abs(peak_y - 70) <= 1


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(8, 400),
    width=st.integers(8, 400),
    policy=st.sampled_from(["stretch", "letterbox", "center_crop"]),
)
def test_geometry_maps_any_size_back_to_its_shape(height, width, policy):
    spec = PreprocessSpec(input_size=64, resize_policy=policy)
    tensor, geometry = preprocess(np.zeros((height, width, 3), np.uint8), spec)
    assert tensor.shape == (3, 64, 64)
    x0, y0, x1, y1 = geometry.content_box
    assert x0 < x1 and y0 < y1
    if policy == "center_crop":
        assert x0 <= 0 and y0 <= 0 and x1 >= 64 and y1 >= 64 and (x0 == 0 or y0 == 0)
    else:
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    back = geometry.to_original(np.ones((7, 7), np.float32))
    assert back.shape == (height, width)
    if policy == "center_crop":
        assert back.max() == 1.0  # the centre was seen; cropped margins may be 0
        assert back[height // 2, width // 2] == 1.0
    else:
        assert np.allclose(back, 1.0)


# ---- histogram equalisation (the mammography recipe's; part of the one preprocessing function)

def _low_contrast_grey(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = (100 + 30 * rng.random((120, 160))).astype(np.uint8)  # values 100..129 only
    return np.repeat(grey[..., None], 3, axis=2)


def test_no_equalisation_leaves_the_image_alone():
    from busi_viewer.inference.preprocessing import equalise

    image = _low_contrast_grey()
    assert equalise(image, PreprocessSpec()) is image


@pytest.mark.parametrize("method", ["global", "clahe"])
def test_equalisation_stretches_a_grey_image_and_keeps_it_grey(method):
    from busi_viewer.inference.preprocessing import equalise

    image = _low_contrast_grey()
    out = equalise(image, PreprocessSpec(equalisation=method))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert int(out.max()) - int(out.min()) > 2 * (int(image.max()) - int(image.min()))
    if method == "global":  # a flat histogram over 0..255: the cumulative distribution becomes linear
        assert out.min() == 0 and out.max() == 255
        assert abs(float(np.median(out)) - 127.5) < 12


def test_clahe_is_local_and_differs_from_global_equalisation():
    from busi_viewer.inference.preprocessing import equalise

    image = _low_contrast_grey()
    image[:, :80] //= 2  # a dark left half
    global_out = equalise(image, PreprocessSpec(equalisation="global"))
    clahe_out = equalise(image, PreprocessSpec(equalisation="clahe", clahe_tiles=4))
    assert not np.array_equal(global_out, clahe_out)
    # adaptive: the dark half gets contrast of its own
    assert clahe_out[:, :80].std() > image[:, :80].std() * 2


def test_colour_images_are_equalised_on_luminance_only():
    import cv2

    from busi_viewer.inference.preprocessing import equalise

    rng = np.random.default_rng(1)
    image = np.stack([(90 + 40 * rng.random((64, 64))).astype(np.uint8),
                      (80 + 20 * rng.random((64, 64))).astype(np.uint8),
                      np.full((64, 64), 60, np.uint8)], axis=2)
    out = equalise(image, PreprocessSpec(equalisation="global"))
    before, after = (cv2.cvtColor(x, cv2.COLOR_RGB2YCrCb).astype(int) for x in (image, out))
    assert after[..., 0].std() > before[..., 0].std() * 2
    # Chroma kept, except where the stretched luminance clips an RGB channel at 0 or 255.
    change = np.abs(after[..., 1:] - before[..., 1:])
    assert np.median(change) == 0 and change.mean() < 2


def test_equalisation_travels_in_the_card_and_is_validated():
    from busi_viewer.core.errors import BundleError
    from busi_viewer.inference.model_card import ModelCard

    card = ModelCard(name="m", version="1", architecture="resnet50", class_names=("benign", "malignant"),
                     preprocess=PreprocessSpec(equalisation="clahe", clahe_clip_limit=3.0, clahe_tiles=4))
    again = ModelCard.from_json(card.to_json())
    assert again.preprocess == card.preprocess
    with pytest.raises(BundleError, match="unknown equalisation"):
        PreprocessSpec(equalisation="adaptive")


def test_the_network_input_sees_the_equalised_image():
    image = _low_contrast_grey()
    plain, _ = preprocess(image, PreprocessSpec(input_size=64))
    equalised, _ = preprocess(image, PreprocessSpec(input_size=64, equalisation="global"))
    assert equalised.std() > plain.std() * 2
