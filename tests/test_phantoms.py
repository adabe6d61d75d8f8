"""Synthetic phantoms: shapes, determinism, BI-RADS-like class differences, BUSI layout, planted problems."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import find_mask_files, load_mask
from busi_viewer.core.phantoms import LABELS, make_phantom, plant_duplicates, write_phantom_dataset
from busi_viewer.core.scan import scan_folder


def _lesion_features(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Contrast, shape and posterior features a sonographer (or a tiny model) uses."""
    ys, xs = np.nonzero(mask)
    height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    solidity = cv2.contourArea(contour) / max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    below = image[ys.max() + 4: ys.max() + 24, xs.min(): xs.max() + 1]
    beside = np.concatenate([image[ys.max() + 4: ys.max() + 24, max(0, xs.min() - 25): max(0, xs.min() - 5)].ravel(),
                             image[ys.max() + 4: ys.max() + 24, xs.max() + 5: xs.max() + 25].ravel()])
    return {
        "inside": float(image[mask].mean()),
        "around": float(image[ring].mean()),
        "aspect": float(height / width),  # > 1: taller than wide
        "solidity": float(solidity),
        "posterior": float(below.mean() - beside.mean()) if below.size and beside.size else 0.0,
    }


@pytest.mark.parametrize("label", LABELS)
def test_phantom_shape_dtype_and_mask(label):
    image, mask = make_phantom(3, label, size=(96, 120))
    assert image.shape == (96, 120) and image.dtype == np.uint8
    assert mask.shape == (96, 120) and mask.dtype == bool
    assert image.std() > 20, "a phantom has texture, not a flat grey"
    if label == "normal":
        assert not mask.any()
    else:
        assert 0.005 < mask.mean() < 0.15


def test_phantom_is_deterministic_and_seeds_differ():
    a, ma = make_phantom(7, "benign")
    b, mb = make_phantom(7, "benign")
    c, _ = make_phantom(8, "benign")
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


def test_phantom_rejects_bad_arguments():
    with pytest.raises(ValueError, match="label"):
        make_phantom(0, "cyst")
    with pytest.raises(ValueError, match="size"):
        make_phantom(0, "normal", size=(16, 16))
    with pytest.raises(ValueError, match="shift"):
        make_phantom(0, "normal", shift=(40, 0))


def test_next_frame_keeps_anatomy_and_changes_speckle():
    first, mask = make_phantom(5, "malignant")
    again, mask_again = make_phantom(5, "malignant", frame=1)
    moved, moved_mask = make_phantom(5, "malignant", frame=1, shift=(3, 2))
    assert np.array_equal(mask, mask_again)
    assert not np.array_equal(first, again)  # new speckle
    smooth = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), 3)  # noqa: E731
    assert np.corrcoef(smooth(first).ravel(), smooth(again).ravel())[0, 1] > 0.8  # same anatomy
    # The moved frame's lesion is the first frame's lesion shifted by (dx, dy) = (3, 2).
    assert np.array_equal(moved_mask[2:, 3:], mask[:-2, :-3])


def test_benign_and_malignant_follow_birads_descriptors():
    benign = [_lesion_features(*make_phantom(s, "benign")) for s in range(12)]
    malignant = [_lesion_features(*make_phantom(s, "malignant")) for s in range(12)]
    for features in benign + malignant:
        assert features["inside"] < features["around"] - 30, "lesions are hypoechoic"
    assert all(f["aspect"] < 1 for f in benign), "benign: parallel (wider than tall)"
    assert np.mean([f["aspect"] for f in malignant]) > 1.0, "malignant: not parallel"
    assert min(f["solidity"] for f in benign) > max(f["solidity"] for f in malignant), "spiculated outline"
    assert np.mean([f["posterior"] for f in malignant]) < -15, "posterior shadowing"
    assert np.mean([f["posterior"] for f in benign]) > np.mean([f["posterior"] for f in malignant]) + 20


def test_classes_are_separable_by_a_tiny_model():
    """A two-feature nearest-centroid rule, fit on some seeds, beats chance by far on others."""
    def features(seed, label):
        f = _lesion_features(*make_phantom(seed, label))
        return [f["solidity"], f["aspect"]]

    train = {label: np.array([features(s, label) for s in range(10)]) for label in ("benign", "malignant")}
    centroids = {label: x.mean(axis=0) for label, x in train.items()}
    correct = 0
    for seed in range(100, 110):
        for label in ("benign", "malignant"):
            x = np.array(features(seed, label))
            guess = min(centroids, key=lambda k: np.linalg.norm(x - centroids[k]))
            correct += guess == label
    assert correct >= 18  # of 20


def test_dataset_has_busi_layout(tmp_path):
    info = write_phantom_dataset(tmp_path, {"benign": 3, "malignant": 2, "normal": 2}, seed=1, size=(64, 80))
    assert info["files"] == [f"benign/benign ({n}).png" for n in (1, 2, 3)] + \
        [f"malignant/malignant ({n}).png" for n in (1, 2)] + [f"normal/normal ({n}).png" for n in (1, 2)]
    scan = scan_folder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in scan.images] == info["files"]
    assert len(scan.skipped) == 7 and all("mask" in s.reason for s in scan.skipped)
    for relative in info["files"]:
        record = load_image(tmp_path / relative)
        assert record.shape == (64, 80) and record.pixels.ndim == 2
        masks = find_mask_files(tmp_path / relative)
        assert len(masks) == 1
        mask = load_mask(masks, record.shape)
        assert mask.any() == (info["labels"][relative] != "normal")
        image, expected = make_phantom(info["seeds"][relative], info["labels"][relative], (64, 80))
        assert np.array_equal(record.pixels, image) and np.array_equal(mask, expected)


def test_unknown_class_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown class"):
        write_phantom_dataset(tmp_path, {"cyst": 1})


def test_planted_problems_are_where_the_truth_says(tmp_path):
    write_phantom_dataset(tmp_path, {"benign": 8, "malignant": 4, "normal": 2}, seed=2)
    truth = plant_duplicates(tmp_path, seed=2)
    sha = lambda rel: hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()  # noqa: E731
    (source, copy), = truth["exact"]
    assert sha(source) == sha(copy) and source != copy
    (source, copy), = truth["conflict"]
    assert sha(source) == sha(copy) and source.split("/")[0] == "benign" and copy.split("/")[0] == "malignant"
    (source, copy), = truth["resized"]
    h, w = load_image(tmp_path / source).shape
    assert load_image(tmp_path / copy).shape == (round(h * 0.8), round(w * 0.8))
    (source, copy), = truth["recropped"]
    h2, w2 = load_image(tmp_path / copy).shape
    assert 0.85 * h < h2 < h and 0.85 * w < w2 < w
    (source, copy), = truth["frame"]
    assert load_image(tmp_path / copy).shape == (h, w) and sha(source) != sha(copy)
    for relative, count in truth["calipers"].items():
        assert count == 4
        assert load_image(tmp_path / relative).pixels.max() == 255
    (colour,) = truth["colour"]
    record = load_image(tmp_path / colour)
    assert record.pixels.ndim == 3 and (np.ptp(record.rgb.astype(int), axis=2) > 100).sum() > 20
    # every planted copy has its mask, with the copy's size
    for kind in ("exact", "resized", "recropped", "frame", "conflict"):
        for _, copy in truth[kind]:
            masks = find_mask_files(tmp_path / copy)
            assert masks and load_mask(masks, load_image(tmp_path / copy).shape).any()


def test_plant_needs_enough_images(tmp_path):
    write_phantom_dataset(tmp_path, {"benign": 2, "malignant": 1}, seed=0, size=(64, 64))
    with pytest.raises(ValueError, match="at least"):
        plant_duplicates(tmp_path)
