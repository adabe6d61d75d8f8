"""Training data on a tiny synthetic BUSI-layout folder: index, decode-once cache, overlay, augmentation,
balancing and busi_viewer's normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import training.data as data_module
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import mask_for_image
from busi_viewer.inference.model_card import PreprocessSpec
from busi_viewer.inference.preprocessing import normalise, resize_for_model
from tests.helpers.datasets import write_busi
from training.config import load_config
from training.augment import apply_mask_overlay, augment_image, color_jitter, is_greyscale
from training.balancing import balanced_sample_weights, class_weights, oversample_minority
from training.data import BusiDataset, DataError, index_busi, load_or_build_cache, make_datasets, resize_mask_for_model

COUNTS = {"benign": 6, "malignant": 3, "normal": 2}
SIZE = 64


@pytest.fixture(scope="module")
def busi_root(tmp_path_factory):
    return write_busi(tmp_path_factory.mktemp("busi"), COUNTS)


@pytest.fixture
def spec():
    return PreprocessSpec(input_size=SIZE)


@pytest.fixture
def cache(busi_root, spec, tmp_path):
    return load_or_build_cache(index_busi(busi_root), spec, tmp_path / "cache", threads=2, progress=False)


def _config(name: str, *overrides: str):
    return load_config(name, [f"data.input_size={SIZE}", "data.interpolation=bicubic", *overrides])


# ---------------------------------------------------------------------------------------------- index

def test_index_lists_classes_in_order_images_in_natural_order_with_masks(busi_root):
    index = index_busi(busi_root)
    assert len(index) == sum(COUNTS.values())
    assert index.class_counts() == COUNTS
    assert [s.class_name for s in index] == [c for c in CLASS_NAMES for _ in range(COUNTS[c])]
    assert index.labels.tolist() == [CLASS_NAMES.index(s.class_name) for s in index]
    assert [s.relpath for s in index][:3] == ["benign/benign (1).png", "benign/benign (2).png",
                                              "benign/benign (3).png"]
    multi = next(s for s in index if s.relpath == "malignant/malignant (1).png")
    assert [p.name for p in multi.mask_paths] == ["malignant (1)_mask.png", "malignant (1)_mask_1.png"]
    assert all(len(s.mask_paths) >= 1 for s in index)
    assert len(index.manifest_sha256()) == 64 and len(index.sha256s()) == len(index)


def test_index_root_from_environment_and_clear_errors(busi_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_DATA", str(busi_root))
    assert len(index_busi()) == len(index_busi(busi_root))
    monkeypatch.delenv("BUSI_DATA")
    with pytest.raises(DataError, match="BUSI_DATA"):
        index_busi()
    with pytest.raises(DataError, match="does not exist"):
        index_busi(tmp_path / "nowhere")
    (tmp_path / "partial" / "benign").mkdir(parents=True)
    with pytest.raises(DataError, match="malignant/, normal/ missing"):
        index_busi(tmp_path / "partial")
    for name in ("malignant", "normal"):
        (tmp_path / "partial" / name).mkdir()
    with pytest.raises(DataError, match="holds no images"):
        index_busi(tmp_path / "partial")


# ---------------------------------------------------------------------------------------------- cache

def test_cache_items_are_resize_for_model_output(busi_root, spec, cache):
    index = index_busi(busi_root)
    assert cache.built and cache.images.shape == (len(index), SIZE, SIZE, 3) and cache.images.dtype == np.uint8
    for i, sample in enumerate(index):
        rgb = load_image(sample.path).rgb
        expected, _ = resize_for_model(rgb, spec)
        assert np.array_equal(cache.images[i], expected)
        mask = mask_for_image(sample.path, rgb.shape[:2])
        assert np.array_equal(cache.masks[i], resize_mask_for_model(mask, rgb.shape[:2], spec))
        assert cache.masks[i].any() == (sample.class_name != "normal")
    assert cache.labels.tolist() == index.labels.tolist()


def test_cache_is_built_once_and_reused_without_decoding(busi_root, spec, cache, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the cache was rebuilt: an image was decoded")

    monkeypatch.setattr(data_module, "load_image", refuse)
    again = load_or_build_cache(index_busi(busi_root), spec, cache.path.parent, progress=False)
    assert not again.built and again.path == cache.path
    assert np.array_equal(again.images, cache.images) and np.array_equal(again.masks, cache.masks)
    other_size = PreprocessSpec(input_size=48)
    with pytest.raises(AssertionError, match="decoded"):  # other settings: another cache file
        load_or_build_cache(index_busi(busi_root), other_size, cache.path.parent, progress=False)


def test_cache_written_atomically_and_rebuilt_when_damaged(busi_root, spec, cache):
    assert not list(cache.path.parent.glob("*.partial"))
    cache.path.write_bytes(b"not a cache")
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = load_or_build_cache(index_busi(busi_root), spec, cache.path.parent, progress=False)
    assert rebuilt.built and np.array_equal(rebuilt.images, cache.images)


def test_letterboxed_masks_follow_their_images():
    spec = PreprocessSpec(input_size=40, resize_policy="letterbox")
    mask = np.zeros((20, 80), bool)
    mask[:, :40] = True  # left half
    resized = resize_mask_for_model(mask, mask.shape, spec)
    image, geometry = resize_for_model(np.repeat((mask * 255).astype(np.uint8)[..., None], 3, 2), spec)
    x0, y0, x1, y1 = geometry.content_box
    assert not resized[:y0].any() and not resized[y1:].any()  # nothing on the padding
    assert resized[y0:y1, x0:20].all() and not resized[y0:y1, 20:x1].any()
    assert np.array_equal(resized, image[..., 0] > 127)


def test_dataset_refuses_a_cache_made_for_other_settings(cache):
    with pytest.raises(DataError, match="made with"):
        BusiDataset(cache, [0], PreprocessSpec(input_size=SIZE, interpolation="bilinear"))


# ------------------------------------------------------------------------------------ overlay, splits

def test_overlay_strength_zero_is_identity_and_changes_only_the_lesion():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:9, 5:12] = True
    assert apply_mask_overlay(image, mask, 0.0) is image
    assert apply_mask_overlay(image, np.zeros_like(mask), 0.7) is image
    half = apply_mask_overlay(image, mask, 0.5)
    assert np.array_equal(half[~mask], image[~mask])
    assert np.all(half[mask] >= image[mask])
    assert np.array_equal(half[mask], np.rint(image[mask] + 0.5 * (255.0 - image[mask])).astype(np.uint8))
    assert np.all(apply_mask_overlay(image, mask, 1.0)[mask] == 255)


def test_overlay_reaches_training_items_only(cache):
    config = _config("busi_paper", "augment.enabled=false", "balance.oversample_minority=false",
                     "augment.apply_to=all")
    spec = config.preprocess_spec()
    everything = np.arange(len(cache))
    sets = make_datasets(cache, {"train": everything, "val": everything, "test": everything}, config, seed=0)
    lesion = np.flatnonzero(cache.masks.any(axis=(1, 2)))
    for i in everything:
        for name in ("val", "test"):
            assert np.array_equal(sets[name].image(i), cache.images[i])
        changed = not np.array_equal(sets["train"].image(i), cache.images[i])
        assert changed == (i in lesion)
    # strength 0 leaves training items untouched too
    off = make_datasets(cache, {"train": everything}, _config("busi_paper", "augment.enabled=false",
                                                              "overlay.strength=0"), seed=0)["train"]
    assert all(np.array_equal(off.image(j), cache.images[off.positions[j]]) for j in range(len(off)))
    # and the items the network gets are busi_viewer's normalisation of those images
    x, y = sets["val"][3]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, SIZE, SIZE)
    assert np.array_equal(x.numpy(), normalise(cache.images[3], spec)) and y == cache.labels[3]
    assert spec.mean == (0.5, 0.5, 0.5)  # Lite0's normalisation by default


# ------------------------------------------------------------------------------------------- augment

def test_augmentation_is_deterministic_per_seed_epoch_and_item(cache):
    config = _config("busi_honest")
    train = make_datasets(cache, {"train": np.arange(len(cache))}, config, seed=5)["train"]
    first = [train.image(i) for i in range(len(train))]
    assert all(np.array_equal(a, train.image(i)) for i, a in enumerate(first))
    twin = make_datasets(cache, {"train": np.arange(len(cache))}, config, seed=5)["train"]
    assert all(np.array_equal(a, twin.image(i)) for i, a in enumerate(first))
    train.set_epoch(1)
    assert sum(not np.array_equal(a, train.image(i)) for i, a in enumerate(first)) >= len(first) - 1
    other_seed = make_datasets(cache, {"train": np.arange(len(cache))}, config, seed=6)["train"]
    assert any(not np.array_equal(a, other_seed.image(i)) for i, a in enumerate(first))


def test_persistent_workers_see_the_epoch(cache):
    train = make_datasets(cache, {"train": np.arange(len(cache))}, _config("busi_honest"), seed=1)["train"]
    loader = DataLoader(train, batch_size=4, num_workers=1, persistent_workers=True,
                        worker_init_fn=data_module.seed_worker)
    for epoch in (0, 1):
        train.set_epoch(epoch)
        served = torch.cat([x for x, _ in loader])
        expected = torch.stack([train[i][0] for i in range(len(train))])
        assert torch.equal(served, expected)


def test_augment_ops_and_greyscale_awareness():
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    assert is_greyscale(grey)
    # saturation and hue jitter are no-ops on a grey image
    jittered = color_jitter(grey, {"brightness": 1.0, "contrast": 1.0, "saturation": 1.8, "hue": 0.1},
                            ["saturation", "hue", "brightness", "contrast"])
    assert np.array_equal(jittered, grey.astype(np.float32))
    colour = grey.copy()
    colour[..., 0] = 255 - colour[..., 0]
    assert not np.array_equal(color_jitter(colour, {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0,
                                                    "hue": 0.25}, ["hue"]), colour.astype(np.float32))
    # flips only: p = 1 mirrors exactly
    params = _config("busi_honest", "augment.hflip_p=1", "augment.rotation_deg=0", "augment.zoom=0",
                     "augment.brightness=0", "augment.contrast=0", "augment.speckle=0").augment
    assert np.array_equal(augment_image(grey, params, np.random.default_rng(0)), grey[:, ::-1])
    # the full honest augmentation keeps grey images grey and uint8
    out = augment_image(grey, _config("busi_honest").augment, np.random.default_rng(1))
    assert out.dtype == np.uint8 and out.shape == grey.shape and is_greyscale(out)


# ------------------------------------------------------------------------------------------ balance

def test_oversampling_balances_the_classes():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 2)
    items, is_copy = oversample_minority(labels, seed=0)
    assert np.bincount(labels[items]).tolist() == [7, 7, 7]
    assert items[: labels.size].tolist() == list(range(labels.size)) and not is_copy[: labels.size].any()
    assert is_copy[labels.size:].all() and not np.any(labels[items[is_copy]] == 0)
    copies_per_sample = np.bincount(items[is_copy], minlength=labels.size)[labels == 2]
    assert copies_per_sample.tolist() in ([3, 2], [2, 3])  # spread evenly


def test_paper_training_set_is_balanced_with_augmented_copies(cache):
    config = _config("busi_paper")
    sets = make_datasets(cache, {"train": np.arange(len(cache)), "val": np.arange(3)}, config, seed=0)
    train = sets["train"]
    assert np.bincount(train.labels).tolist() == [COUNTS["benign"]] * 3
    n = len(cache)
    assert not train.augment_flags[:n].any() and train.augment_flags[n:].all()  # copies only
    assert train.overlay_strength == config.overlay.strength > 0
    assert sets["val"].overlay_strength == 0 and not sets["val"].augment_flags.any()
    minority = make_datasets(cache, {"train": np.arange(n)}, _config("busi_paper", "augment.apply_to=minority"),
                             seed=0)["train"]
    assert np.array_equal(minority.augment_flags, minority.labels != 0)


def test_class_weights_and_sample_weights():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    assert class_weights(labels).tolist() == pytest.approx([7 / 12, 7 / 6, 7 / 3])
    assert class_weights(np.array([0, 0, 1])).tolist() == pytest.approx([0.75, 1.5, 0.0])
    weights = balanced_sample_weights(labels)
    assert [weights[labels == c].sum() for c in range(3)] == pytest.approx([1.0, 1.0, 1.0])


def test_phantom_dataset_indexes_and_caches(tmp_path):
    """busi_viewer's phantom generator (when present) writes a folder this module reads like BUSI."""
    phantoms = pytest.importorskip("busi_viewer.core.phantoms")
    written = phantoms.write_phantom_dataset(tmp_path / "busi", {"benign": 3, "malignant": 2, "normal": 2}, seed=0)
    index = index_busi(tmp_path / "busi")
    assert index.relpaths == written["files"]
    cache = load_or_build_cache(index, PreprocessSpec(input_size=SIZE), tmp_path / "cache", progress=False)
    lesion = cache.masks.any(axis=(1, 2))
    assert lesion.tolist() == [written["labels"][f] != "normal" for f in index.relpaths]


def test_the_image_cache_key_includes_equalisation_only_when_it_is_used():
    from busi_viewer.inference.model_card import PreprocessSpec
    from training.data import _resize_settings

    plain = _resize_settings(PreprocessSpec())
    assert set(plain) == {"input_size", "resize_policy", "interpolation", "pad_value"}  # caches made before stay valid
    clahe = _resize_settings(PreprocessSpec(equalisation="clahe"))
    assert clahe["equalisation"] == "clahe" and clahe != _resize_settings(PreprocessSpec(equalisation="global"))


def test_training_items_carry_their_lesion_mask_only_when_the_loss_uses_it(cache):
    everything = np.arange(len(cache))
    off = make_datasets(cache, {"train": everything}, _config("busi_honest"), seed=0)["train"]
    assert isinstance(off[0][1], int)
    config = _config("busi_honest", "loss.evidence_weight=0.5", "augment.enabled=false",
                     "balance.oversample_minority=false")
    sets = make_datasets(cache, {"train": everything, "val": everything}, config, seed=0)
    assert isinstance(sets["val"][0][1], int)  # validation is scored on classification alone
    for i in everything:
        x, (target, mask) = sets["train"][i]
        assert target == cache.labels[i] and mask.dtype == torch.bool
        assert np.array_equal(mask.numpy(), cache.masks[i])
