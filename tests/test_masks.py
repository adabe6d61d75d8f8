"""Lesion masks: BUSI naming, the three BUSI encodings, merging, size checks, outlines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from busi_viewer.core.errors import MaskLoadError
from busi_viewer.core.masks import find_mask_files, load_mask, mask_for_image, mask_outline

H, W = 12, 16


def _lesion(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _save_1bit(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray(mask).convert("1").save(path)
    assert Image.open(path).mode == "1"
    return path


def _save_rgba(path: Path, mask: np.ndarray) -> Path:
    # BUSI's RGBA masks: RGB 0/255 and alpha 255 everywhere (opaque background too).
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask, :3] = 255
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def _save_rgb_zero(path: Path, shape=(H, W)) -> Path:
    Image.fromarray(np.zeros((*shape, 3), np.uint8), "RGB").save(path)
    return path


def test_one_bit_mask(tmp_path):
    expected = _lesion(2, 6, 3, 9)
    got = load_mask(_save_1bit(tmp_path / "a_mask.png", expected))
    assert got.dtype == bool and got.shape == (H, W)
    np.testing.assert_array_equal(got, expected)


def test_rgba_mask_ignores_opaque_alpha(tmp_path):
    expected = _lesion(4, 10, 1, 5)
    got = load_mask(_save_rgba(tmp_path / "a_mask.png", expected))
    np.testing.assert_array_equal(got, expected)
    assert 0 < got.sum() < got.size  # alpha 255 everywhere must not turn the whole image into lesion


def test_rgb_all_zero_mask_is_empty(tmp_path):
    got = load_mask(_save_rgb_zero(tmp_path / "normal (1)_mask.png"), shape=(H, W))
    assert got.dtype == bool and got.shape == (H, W) and not got.any()


def test_greyscale_and_any_nonzero_channel(tmp_path):
    grey = np.zeros((H, W), np.uint8)
    grey[1, 1] = 1  # any non-zero value counts, not just 255
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "l.png"), grey > 0)

    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[3, 4, 2] = 7  # only the blue channel set
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    assert np.argwhere(load_mask(tmp_path / "rgb.png")).tolist() == [[3, 4]]


def test_palette_mask_uses_colours_not_indices(tmp_path):
    indices = np.zeros((H, W), np.uint8)
    indices[5, 5] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)  # index 0 is white, index 1 black
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "p.png"), indices == 0)


def test_several_masks_merge_with_or(tmp_path):
    first, second = _lesion(0, 3, 0, 3), _lesion(8, 12, 10, 16)
    paths = [_save_1bit(tmp_path / "x_mask.png", first), _save_rgba(tmp_path / "x_mask_1.png", second)]
    np.testing.assert_array_equal(load_mask(paths, shape=(H, W)), first | second)


def test_size_mismatch_names_both_sizes(tmp_path):
    path = _save_1bit(tmp_path / "x_mask.png", _lesion(0, 2, 0, 2))
    with pytest.raises(MaskLoadError) as info:
        load_mask(path, shape=(H + 1, W))
    message = str(info.value)
    assert f"{W}×{H}" in message and f"{W}×{H + 1}" in message and "x_mask.png" in message


def test_masks_of_different_sizes_cannot_merge(tmp_path):
    a = _save_1bit(tmp_path / "x_mask.png", _lesion(0, 2, 0, 2))
    b = _save_rgb_zero(tmp_path / "x_mask_1.png", shape=(H, W + 2))
    with pytest.raises(MaskLoadError, match=f"{W + 2}×{H}"):
        load_mask([a, b])


def test_unreadable_and_missing_masks(tmp_path):
    (tmp_path / "bad_mask.png").write_bytes(b"not a png at all")
    with pytest.raises(MaskLoadError, match="bad_mask.png"):
        load_mask(tmp_path / "bad_mask.png")
    with pytest.raises(MaskLoadError, match="not found"):
        load_mask(tmp_path / "gone_mask.png")
    with pytest.raises(ValueError):
        load_mask([])


def test_find_mask_files_beside_image_natural_order(tmp_path):
    stem = "benign (4)"
    for name in [f"{stem}.png", f"{stem}_mask_10.png", f"{stem}_mask_2.png", f"{stem}_mask.png",
                 f"{stem}_mask_1.png", "benign (40)_mask.png", "benign (4)x_mask.png", f"{stem}_mask.jpg"]:
        (tmp_path / name).touch()
    names = [p.name for p in find_mask_files(tmp_path / f"{stem}.png")]
    assert names == [f"{stem}_mask.png", f"{stem}_mask_1.png", f"{stem}_mask_2.png", f"{stem}_mask_10.png"]


def test_find_mask_files_none_and_bracket_stems(tmp_path):
    (tmp_path / "a.png").touch()
    assert find_mask_files(tmp_path / "a.png") == []
    (tmp_path / "scan [1].png").touch()
    (tmp_path / "scan [1]_mask.png").touch()  # glob metacharacters in the stem are matched literally
    assert [p.name for p in find_mask_files(tmp_path / "scan [1].png")] == ["scan [1]_mask.png"]


def test_find_mask_files_in_mask_dir(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    (images / "case 7.png").touch()
    (images / "case 7_mask.png").touch()  # beside the image: ignored once a mask folder is named
    for name in ["case 7.png", "case 7_mask_1.png", "case 70.png"]:
        (masks / name).touch()
    found = find_mask_files(images / "case 7.png", mask_dir=masks)
    assert [p.parent for p in found] == [masks, masks]
    assert [p.name for p in found] == ["case 7.png", "case 7_mask_1.png"]


def test_mask_dir_equal_to_image_folder_does_not_return_the_image(tmp_path):
    (tmp_path / "a.png").touch()
    (tmp_path / "a_mask.png").touch()
    assert [p.name for p in find_mask_files(tmp_path / "a.png", mask_dir=tmp_path)] == ["a_mask.png"]


def test_mask_for_image(tmp_path):
    lesion = _lesion(1, 4, 1, 4)
    _save_1bit(tmp_path / "img_mask.png", lesion)
    np.testing.assert_array_equal(mask_for_image(tmp_path / "img.png", (H, W)), lesion)
    assert mask_for_image(tmp_path / "other.png", (H, W)) is None

    explicit = _lesion(6, 9, 6, 9)
    _save_rgba(tmp_path / "elsewhere.png", explicit)
    got = mask_for_image(tmp_path / "img.png", (H, W), mask_path=tmp_path / "elsewhere.png")
    np.testing.assert_array_equal(got, explicit)  # the explicit path wins over the found mask

    with pytest.raises(MaskLoadError):
        mask_for_image(tmp_path / "img.png", (H + 3, W))


def test_mask_outline(tmp_path):
    assert mask_outline(np.zeros((H, W), bool)) == []
    mask = _lesion(2, 6, 3, 9) | _lesion(8, 11, 12, 15)
    outlines = mask_outline(mask)
    assert len(outlines) == 2
    for outline in outlines:
        assert outline.ndim == 2 and outline.shape[1] == 2 and outline.dtype == np.int32
    points = np.concatenate(outlines)
    xs, ys = points[:, 0], points[:, 1]
    assert mask[ys, xs].all()  # (x, y) order: every outline point is a lesion pixel
    assert {(3, 2), (8, 5), (12, 8), (14, 10)} <= {tuple(p) for p in points.tolist()}


def test_mask_outline_includes_holes():
    ring = _lesion(1, 11, 1, 15) & ~_lesion(4, 8, 5, 11)
    assert len(mask_outline(ring)) == 2


# --- the real BUSI files (skipped when ../shared/data is absent) --------------------------------------------


def test_real_multi_lesion_image(busi_dir):
    image = busi_dir / "benign" / "benign (4).png"
    found = find_mask_files(image)
    assert [p.name for p in found] == ["benign (4)_mask.png", "benign (4)_mask_1.png"]
    with Image.open(image) as im:
        shape = (im.height, im.width)
    modes = set()
    for path in found:
        with Image.open(path) as im:
            modes.add(im.mode)
    assert modes == {"1", "RGBA"}  # one 1-bit and one opaque RGBA mask
    merged = mask_for_image(image, shape)
    singles = [load_mask(p, shape) for p in found]
    assert all(s.any() for s in singles)
    np.testing.assert_array_equal(merged, singles[0] | singles[1])
    assert merged.sum() > max(s.sum() for s in singles)  # two separate lesions
    assert merged.mean() < 0.5  # the RGBA alpha did not flood the mask


@pytest.mark.parametrize("name", ["normal (1)", "normal (57)", "normal (133)"])
def test_real_normal_masks_are_empty(busi_dir, name):
    image = busi_dir / "normal" / f"{name}.png"
    with Image.open(image) as im:
        shape = (im.height, im.width)
    mask = mask_for_image(image, shape)
    assert mask is not None and mask.shape == shape and not mask.any()


@pytest.mark.parametrize("path", ["benign/benign (1)", "benign/benign (195)", "malignant/malignant (53)",
                                  "malignant/malignant (210)"])
def test_real_lesion_masks_are_not_empty(busi_dir, path):
    image = busi_dir / f"{path}.png"
    with Image.open(image) as im:
        shape = (im.height, im.width)
    mask = mask_for_image(image, shape)
    assert mask is not None and 0 < mask.mean() < 0.9
    assert mask_outline(mask)
