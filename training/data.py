"""BUSI for training: the image index, a decode-once image cache and the torch Dataset.

* :func:`index_busi` lists ``benign/``, ``malignant/``, ``normal/`` in natural order with busi_viewer's scanner
  and mask discovery.
* :func:`load_or_build_cache` decodes every image once with busi_viewer's loader, resizes it with
  ``resize_for_model`` (the app's own preprocessing) to the input size, resizes its merged lesion mask the same
  way (nearest neighbour), and stores all of it as one ``.npz`` keyed by the dataset's content hash and the
  resize settings. Later runs load that file instead of decoding.
* :class:`BusiDataset` serves cached items as ``(float32 tensor (3, S, S), int label)``: optional mask overlay
  (training items only), then augmentation on the uint8 image (:mod:`training.augment`), then busi_viewer's
  ``normalise``; :mod:`training.balancing` chooses which items are repeated or drawn more often.

Augmentation is deterministic: item i of epoch e draws from ``np.random.default_rng([seed, e, i])``, whatever
worker process serves it, so runs repeat exactly and ``num_workers`` does not change the data.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.hashing import sha256_file
from busi_viewer.core.labels import CLASS_NAMES, TASKS, task_class
from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import find_mask_files, mask_for_image
from busi_viewer.core.paths import user_cache_dir
from busi_viewer.core.scan import scan_folder
from busi_viewer.inference.model_card import PreprocessSpec
from busi_viewer.inference.preprocessing import normalise, resize_for_model
from training.augment import apply_mask_overlay, augment_pair
from training.balancing import minority_classes, oversample_minority
from training.folders import given_or_env
from training.mias import circles_mask

if TYPE_CHECKING:
    from training.config_schema import AugmentConfig, TrainConfig

DATA_ENV = "BUSI_DATA"
CACHE_VERSION = 1


class DataError(BusiViewerError, ValueError):
    """The data folder is missing or not laid out as BUSI, or a cache does not fit the requested settings."""


# ------------------------------------------------------------------------------------------------ index

@dataclass(frozen=True)
class Sample:
    """One image: absolute ``path``, class index into the index's class names and the name, its mask files
    (merge order), and ``relpath``, the POSIX path relative to the data root ("benign/benign (1).png") used in
    manifests (in a multi-source index prefixed with the source: "bus-bra/Images/bus_0001-l.png"). mini-MIAS
    images have lesion ``circles`` instead of mask files ((row, column, radius) in image pixels); mini-MIAS and
    BUS-BRA images have their ``patient`` as the group a split must keep together ("" = none known)."""

    path: Path
    label_index: int
    class_name: str
    mask_paths: tuple[Path, ...]
    relpath: str
    circles: tuple[tuple[int, int, int], ...] = ()
    patient: str = ""
    crop: tuple[int, int, int, int] | None = None  # (top, left, bottom, right) of the region used, in image pixels
    source: str = ""  # the data set the image comes from ("busi", "bus-bra", "mini-mias")
    device: str = ""  # the scanner, where the data set records it (BUS-BRA)


@dataclass(frozen=True)
class BusiIndex:
    """The samples of a dataset for one task, classes in ``class_names`` order (BUSI: class folders in natural
    order; mini-MIAS: reference order; BUS-BRA: bus_data.csv order; several sources: one after the other).

    Behaves as a read-only sequence of :class:`Sample`. Content hashes are computed on first use and kept.
    """

    root: Path
    samples: tuple[Sample, ...]
    class_names: tuple[str, ...] = CLASS_NAMES
    dataset: str = "busi"
    roots: tuple[tuple[str, str], ...] = ()  # (source, folder) of each source of a multi-source index
    _hashes: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 class indices."""
        return np.array([s.label_index for s in self.samples], dtype=np.int64)

    @property
    def relpaths(self) -> list[str]:
        return [s.relpath for s in self.samples]

    @property
    def sources(self) -> np.ndarray:
        """(N,) str: the source of every sample."""
        return np.array([s.source or self.dataset for s in self.samples], dtype=np.str_)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(counts[i]) for i, name in enumerate(self.class_names)}

    def sha256s(self, threads: int = 4) -> list[str]:
        """SHA-256 of every image file, in sample order (read in parallel, computed once)."""
        if "images" not in self._hashes:
            self._hashes["images"] = _hash_files([s.path for s in self.samples], threads)
        return list(self._hashes["images"])

    def manifest_sha256(self, threads: int = 4) -> str:
        """SHA-256 over (relative path, class, image hash, mask hashes) of every sample: changes whenever any
        image, mask, label or file name changes. Recorded in model cards and used as the cache key."""
        if "manifest" not in self._hashes:
            images = self.sha256s(threads)
            mask_files = [m for s in self.samples for m in s.mask_paths]
            mask_hash = dict(zip(mask_files, _hash_files(mask_files, threads)))
            digest = hashlib.sha256()
            for sample, image_hash in zip(self.samples, images):
                masks = ",".join(mask_hash[m] for m in sample.mask_paths)
                if sample.circles:
                    masks += "circles:" + ";".join(",".join(map(str, c)) for c in sample.circles)
                if sample.crop:
                    masks += "crop:" + ",".join(map(str, sample.crop))
                digest.update(f"{sample.relpath}\t{sample.class_name}\t{image_hash}\t{masks}\n".encode("utf-8"))
            self._hashes["manifest"] = digest.hexdigest()
        return self._hashes["manifest"]


def _hash_files(paths: Sequence[Path], threads: int) -> list[str]:
    # hashlib releases the GIL on large buffers, so a few threads overlap reading and hashing.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(sha256_file, paths))


def resolve_data_root(root: Path | str | None = None) -> Path:
    """The BUSI folder: ``root`` when given, else the BUSI_DATA environment variable; DataError otherwise."""
    path = given_or_env(root, DATA_ENV, DataError, f"no BUSI data folder given: pass the folder (the one holding "
                        f"{', '.join(c + '/' for c in CLASS_NAMES)}) or set {DATA_ENV}=/path/to/busi")
    if not path.is_dir():
        raise DataError(f"BUSI data folder {path} does not exist or is not a folder")
    return path


def index_busi(root: Path | str | None = None, task: str = "three-class") -> BusiIndex:
    """Index a BUSI-layout folder for ``task``: one sub-folder per finding (benign/, malignant/, normal/),
    images with ``*_mask*.png`` beside; images the task leaves out (normal ones in benign-vs-malignant) are
    not indexed.

    Images are found by busi_viewer's scanner (masks are not images), in natural order ("benign (2)" before
    "benign (10)"); masks by busi_viewer's mask discovery. Raises DataError for a missing or empty class folder.
    """
    base = resolve_data_root(root)
    missing = [name for name in CLASS_NAMES if not (base / name).is_dir()]
    if missing:
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise DataError(f"{base} is not a BUSI folder: class folder(s) {', '.join(m + '/' for m in missing)} "
                        f"missing (expected {', '.join(c + '/' for c in CLASS_NAMES)}; found "
                        f"{', '.join(found) or 'no sub-folders'})")
    class_names = TASKS[task]
    samples = []
    for finding in _in_task_order(task):
        name = task_class(finding, task)
        images = scan_folder(base / finding, recursive=False).images
        if not images:
            raise DataError(f"class folder {base / finding} holds no images")
        for image in images:
            samples.append(Sample(path=image, label_index=class_names.index(name), class_name=name,
                                  mask_paths=tuple(find_mask_files(image)),
                                  relpath=image.relative_to(base).as_posix(), source="busi"))
    return BusiIndex(root=base, samples=tuple(samples), class_names=class_names)


def _in_task_order(task: str) -> list[str]:
    """The findings (BUSI folders) that ``task`` uses, ordered by their class in it, so samples come class by class."""
    return [finding for name in TASKS[task] for finding in CLASS_NAMES if task_class(finding, task) == name]


def index_mias(root: Path | str | None = None, task: str = "benign-vs-malignant",
               lesion_crops: bool = False) -> BusiIndex:
    """Index mini-MIAS for ``task`` from its Info.txt (see :mod:`training.mias`): ``png/mdbNNN.png`` in reference
    order, lesion circles as masks, the patient (film pair) of every image as its split group.

    ``lesion_crops``: each film is replaced by the square around its first localised finding
    (:func:`training.mias.lesion_crop_box`); films without one (normal films, findings without coordinates)
    are left out. A model trained so classifies regions of interest, not whole films.
    """
    from training.mias import image_path, lesion_crop_box, read_info, resolve_mias_root

    base = resolve_mias_root(root)
    class_names = TASKS[task]
    samples = []
    for image in read_info(base):
        name = task_class(image.severity, task)
        crop = lesion_crop_box(image) if lesion_crops else None
        if name is None or (lesion_crops and crop is None):
            continue
        path = image_path(base, image)
        if not path.is_file():
            raise DataError(f"{path} is listed in Info.txt but missing")
        samples.append(Sample(path=path, label_index=class_names.index(name), class_name=name, mask_paths=(),
                              relpath=path.relative_to(base).as_posix(), circles=image.circles,
                              patient=f"patient-{image.patient:03d}", crop=crop, source="mini-mias"))
    return BusiIndex(root=base, samples=tuple(samples), class_names=class_names, dataset="mini-mias")


def index_busbra(root: Path | str | None = None, task: str = "three-class") -> BusiIndex:
    """Index BUS-BRA (see :mod:`training.busbra`) for ``task``: ``Images/bus_NNNN-x.png`` in bus_data.csv order,
    each with its lesion mask, its patient (``Case``) as split group and its scanner as ``device``.

    BUS-BRA has benign and malignant images only; in the three-class task they keep those classes, and no image
    is normal (see :mod:`training.partial_labels` for what that means for training).
    """
    from training.busbra import read_bus_data, resolve_busbra_root

    base = resolve_busbra_root(root)
    class_names = TASKS[task]
    samples = []
    for image in read_bus_data(base):
        name = task_class(image.pathology, task)
        samples.append(Sample(path=base / image.image_relpath, label_index=class_names.index(name),
                              class_name=name, mask_paths=(base / image.mask_relpath,),
                              relpath=image.image_relpath, patient=image.patient, source="bus-bra",
                              device=image.scanner))
    return BusiIndex(root=base, samples=tuple(samples), class_names=class_names, dataset="bus-bra")


MULTI_SOURCE = {"busi+bus-bra": ("busi", "bus-bra")}
"""Data sets that combine several sources, and their sources in index order."""


def files_sources(files: Sequence[str] | np.ndarray) -> np.ndarray:
    """(N,) str: the source of each prediction of a multi-source run (its file's first folder, "busi/…"), or ""
    for every file of a single-source run (whose files carry no source prefix)."""
    known = {source for sources in MULTI_SOURCE.values() for source in sources}
    heads = np.array([str(f).split("/", 1)[0] for f in files])
    return heads if heads.size and np.isin(heads, list(known)).all() else np.full(len(files), "")


def combine_indexes(indexes: Sequence[BusiIndex], name: str) -> BusiIndex:
    """One index over several sources' indexes of the same task: every sample's ``relpath`` is prefixed with its
    source ("busi/benign/benign (1).png"), so files of different sources never collide in manifests. ``root``
    is the first source's; ``roots`` names each source's."""
    class_names = indexes[0].class_names
    if any(index.class_names != class_names for index in indexes):
        raise DataError("sources of one index must be indexed for the same task")
    samples = tuple(dataclasses.replace(s, relpath=f"{index.dataset}/{s.relpath}", source=index.dataset)
                    for index in indexes for s in index.samples)
    return BusiIndex(root=indexes[0].root, samples=samples, class_names=class_names, dataset=name,
                     roots=tuple((index.dataset, str(index.root)) for index in indexes))


def index_dataset(dataset: str, root: Path | str | None, task: str, lesion_crops: bool = False,
                  roots: Mapping[str, Path | str | None] | None = None) -> BusiIndex:
    """The index of ``dataset`` ("busi", "bus-bra", "mini-mias" or a :data:`MULTI_SOURCE` name) for ``task``
    (crops: mini-MIAS only). ``root`` is a single source's folder; a multi-source data set takes each source's
    folder from ``roots`` (a missing one: that source's environment variable)."""
    if dataset in MULTI_SOURCE:
        roots = roots or {}
        return combine_indexes([index_dataset(source, roots.get(source), task) for source in MULTI_SOURCE[dataset]],
                               dataset)
    if dataset == "mini-mias":
        return index_mias(root, task, lesion_crops)
    if dataset == "bus-bra":
        return index_busbra(root, task)
    return index_busi(root, task)


def sample_image(sample: Sample) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``sample`` as training sees it: the decoded file, cropped when the sample says."""
    rgb = load_image(sample.path).rgb
    if sample.crop is not None:
        top, left, bottom, right = sample.crop
        rgb = np.ascontiguousarray(rgb[top:bottom, left:right])
    return rgb


def sample_mask(sample: Sample, shape: tuple[int, int]) -> np.ndarray | None:
    """The lesion mask of ``sample`` on the grid :func:`sample_image` returns (``shape``): its mask files merged,
    or its circles (moved with the crop); None without."""
    if sample.mask_paths:
        return mask_for_image(sample.path, shape, mask_path=list(sample.mask_paths))
    top, left = sample.crop[:2] if sample.crop is not None else (0, 0)
    return circles_mask([(row - top, col - left, radius) for row, col, radius in sample.circles], shape)


# ------------------------------------------------------------------------------------------------ cache

@dataclass(frozen=True)
class ImageCache:
    """Every image of an index resized for the model, in index order.

    ``images`` (N, S, S, 3) uint8 RGB exactly as ``resize_for_model`` returns them; ``masks`` (N, S, S) bool,
    the merged lesion mask resized the same way with nearest neighbour (all False without a mask);
    ``labels`` (N,) int64. ``built`` says whether this call decoded the images, ``seconds`` how long it took.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    relpaths: tuple[str, ...]
    key: str
    resize: Mapping[str, object]
    path: Path
    built: bool = False
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def input_size(self) -> int:
        return int(self.images.shape[1])

    def check_spec(self, spec: PreprocessSpec) -> None:
        """DataError unless this cache was resized exactly as ``spec`` resizes."""
        wanted = _resize_settings(spec)
        if dict(self.resize) != wanted:
            raise DataError(f"the image cache {self.path.name} was made with {dict(self.resize)}, "
                            f"but the model needs {wanted}")


def _resize_settings(spec: PreprocessSpec) -> dict[str, object]:
    # Normalisation (mean/std) is applied after the cache, so it is not part of the key. Equalisation is, but
    # only when used, so that caches made before it existed stay valid.
    settings: dict[str, object] = {"input_size": spec.input_size, "resize_policy": spec.resize_policy,
                                   "interpolation": spec.interpolation, "pad_value": spec.pad_value}
    if spec.equalisation != "none":
        settings.update(equalisation=spec.equalisation, clahe_clip_limit=spec.clahe_clip_limit,
                        clahe_tiles=spec.clahe_tiles)
    return settings


def default_cache_dir() -> Path:
    """``user_cache_dir()/training`` (created on demand)."""
    path = user_cache_dir() / "training"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_path(index: BusiIndex, spec: PreprocessSpec, cache_dir: Path | str | None = None) -> tuple[Path, str]:
    """(file, key) of the cache for this dataset content and these resize settings."""
    settings = _resize_settings(spec)
    payload = json.dumps({"version": CACHE_VERSION, "manifest": index.manifest_sha256(), **settings},
                         sort_keys=True)
    key = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    name = f"{index.dataset}-{spec.input_size}px-{spec.resize_policy}-{spec.interpolation}-{key[:16]}.npz"
    return folder / name, key


def resize_mask_for_model(mask: np.ndarray | None, shape: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """A (H, W) bool mask (or None = no lesion) placed on the network input square exactly like its image:
    the same ``resize_for_model`` with nearest-neighbour interpolation and padding 0. Returns (S, S) bool."""
    if mask is None or not mask.any():
        return np.zeros((spec.input_size, spec.input_size), dtype=bool)
    nearest = dataclasses.replace(spec, interpolation="nearest", pad_value=0)
    as_image = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    resized, _ = resize_for_model(as_image, nearest)
    return resized[..., 0] > 127


def decode_sample(sample: Sample, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """One sample as the cache stores it: ((S, S, 3) uint8 image, (S, S) bool mask)."""
    rgb = sample_image(sample)
    image, _ = resize_for_model(rgb, spec)
    return image, resize_mask_for_model(sample_mask(sample, rgb.shape[:2]), rgb.shape[:2], spec)


def load_or_build_cache(index: BusiIndex, spec: PreprocessSpec, cache_dir: Path | str | None = None, *,
                        threads: int = 4, progress: bool = True) -> ImageCache:
    """The cache for ``index`` at ``spec``'s resize settings: loaded when a valid file exists, else built.

    Building decodes with a pool of ``threads`` threads (PNG decoding and OpenCV resizing release the GIL),
    shows a tqdm bar when ``progress``, and writes the file atomically, so an interrupted build leaves nothing.
    """
    start = time.perf_counter()
    path, key = cache_path(index, spec, cache_dir)
    if path.is_file():
        try:
            cache = _read_cache(path, key, index)
            return dataclasses.replace(cache, seconds=time.perf_counter() - start)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # a damaged or foreign file: rebuild it
            import warnings

            warnings.warn(f"rebuilding image cache {path.name}: {exc}", stacklevel=2)
    images, masks = _decode_all(index, spec, threads, progress)
    labels = index.labels
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"key": key, "version": CACHE_VERSION, "resize": _resize_settings(spec),
                       "root": str(index.root)})
    with atomic_write(path, "wb") as handle:
        np.savez(handle, images=images, masks=masks, labels=labels,
                 relpaths=np.array(index.relpaths, dtype=np.str_), meta=np.array(meta))
    return ImageCache(images=images, masks=masks, labels=labels, relpaths=tuple(index.relpaths), key=key,
                      resize=_resize_settings(spec), path=path, built=True, seconds=time.perf_counter() - start)


def _decode_all(index: BusiIndex, spec: PreprocessSpec, threads: int,
                progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    n, size = len(index), spec.input_size
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool, \
            tqdm(total=n, desc=f"caching {n} images at {size} px", unit="img", disable=not progress) as bar:
        for i, (image, mask) in enumerate(pool.map(lambda s: decode_sample(s, spec), index.samples)):
            images[i], masks[i] = image, mask
            bar.update(1)
    return images, masks


def _read_cache(path: Path, key: str, index: BusiIndex) -> ImageCache:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("key") != key:
            raise ValueError("its key does not match this dataset and these settings")
        relpaths = tuple(str(p) for p in data["relpaths"])
        if relpaths != tuple(index.relpaths):
            raise ValueError("it lists other images than the dataset")
        images, masks, labels = data["images"], data["masks"], data["labels"].astype(np.int64)
    if images.shape[0] != len(index) or masks.shape[0] != len(index) or not np.array_equal(labels, index.labels):
        raise ValueError("its arrays do not match the dataset")
    return ImageCache(images=images, masks=masks, labels=labels, relpaths=relpaths, key=key,
                      resize=meta["resize"], path=path, built=False)


# --------------------------------------------------------------------------------------------- dataset

class BusiDataset(Dataset):
    """Cached items as ``(torch.float32 (3, S, S), int label)``, normalised by busi_viewer's ``normalise``.

    ``positions``: cache indices, repeats allowed (balancing copies). ``augment``/``augment_flags``: which
    items are augmented (None = no augmentation; flags None = every item). ``overlay_strength`` > 0 draws the
    lesion mask into every item (use it for training items only). ``targets``: what each item yields instead of
    its label (the label with its source's label set, :mod:`training.partial_labels`; None = the label).
    ``with_masks``: items are ``(image, (target, mask))`` with the lesion mask (S, S) bool tensor, flipped and
    warped with the image (a training target for :mod:`training.evidence`, never an input). Call
    :meth:`set_epoch` before each epoch: the epoch lives in shared memory, so persistent DataLoader workers see it
    too.
    """

    def __init__(self, cache: ImageCache, positions: Sequence[int] | np.ndarray, spec: PreprocessSpec, *,
                 augment: AugmentConfig | None = None, augment_flags: Sequence[bool] | np.ndarray | None = None,
                 overlay_strength: float = 0.0, seed: int = 0, targets: Sequence[int] | np.ndarray | None = None,
                 with_masks: bool = False):
        cache.check_spec(spec)
        self.cache = cache
        self.spec = spec
        self.positions = np.asarray(positions, dtype=np.int64)
        if self.positions.size and (self.positions.min() < 0 or self.positions.max() >= len(cache)):
            raise IndexError(f"positions must index the {len(cache)} cached images")
        self._labels = cache.labels[self.positions]
        self._targets = self._labels if targets is None else np.asarray(targets, dtype=np.int64)
        if self._targets.shape != self._labels.shape:
            raise ValueError("targets needs one target per position")
        enabled = augment is not None and augment.enabled
        if not enabled:
            flags = np.zeros(self.positions.size, dtype=bool)
        elif augment_flags is None:
            flags = np.ones(self.positions.size, dtype=bool)
        else:
            flags = np.asarray(augment_flags, dtype=bool)
            if flags.shape != self.positions.shape:
                raise ValueError("augment_flags needs one flag per position")
        self.augment = augment
        self.augment_flags = flags
        self.overlay_strength = float(overlay_strength)
        self.seed = int(seed)
        self.with_masks = bool(with_masks)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return int(self.positions.size)

    @property
    def labels(self) -> np.ndarray:
        """(len,) int64 label of every item."""
        return self._labels

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def image(self, i: int) -> np.ndarray:
        """Item ``i`` as (S, S, 3) uint8 after overlay and augmentation, before normalisation."""
        return self.image_and_mask(i)[0]

    def image_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i``: (S, S, 3) uint8 image after overlay and augmentation, before normalisation, and its
        (S, S) bool lesion mask moved with it."""
        position = int(self.positions[i])
        image, mask = self.cache.images[position], self.cache.masks[position]
        if self.overlay_strength > 0:
            image = apply_mask_overlay(image, mask, self.overlay_strength)
        if self.augment_flags[i]:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            image, mask = augment_pair(image, mask, self.augment, rng)  # type: ignore[arg-type]
        return image, mask

    def __getitem__(self, i: int):
        image, mask = self.image_and_mask(i)
        x = torch.from_numpy(normalise(image, self.spec))
        if self.with_masks:
            mask_copy = np.array(mask, dtype=bool)  # the cache may be read-only; torch wants its own memory
            return x, (int(self._targets[i]), torch.from_numpy(mask_copy))
        return x, int(self._targets[i])


def make_datasets(cache: ImageCache, splits: Mapping[str, Sequence[int] | np.ndarray], config: TrainConfig,
                  seed: int, targets: np.ndarray | None = None) -> dict[str, BusiDataset]:
    """One dataset per split name. Only "train" gets the mask overlay (when ``config.overlay.enabled``),
    minority oversampling (``config.balance.oversample_minority``) and augmentation (per
    ``config.augment.apply_to``), and its lesion masks when the loss uses them (``loss.evidence_weight`` > 0);
    every other split is served as cached, only normalised. ``targets``: (N,) per
    cached image, what its items yield instead of the label (see :class:`BusiDataset`)."""
    spec = config.preprocess_spec()
    out: dict[str, BusiDataset] = {}
    for name, indices in splits.items():
        indices = np.asarray(indices, dtype=np.int64)
        if name != "train":
            out[name] = BusiDataset(cache, indices, spec, seed=seed,
                                    targets=None if targets is None else targets[indices])
            continue
        labels = cache.labels[indices]
        if config.balance.oversample_minority:
            items, is_copy = oversample_minority(labels, seed)
        else:
            items, is_copy = np.arange(indices.size, dtype=np.int64), np.zeros(indices.size, bool)
        positions = indices[items]
        apply_to = config.augment.apply_to
        if apply_to == "all":
            flags = np.ones(positions.size, dtype=bool)
        elif apply_to == "minority":
            flags = np.isin(cache.labels[positions], minority_classes(labels))
        else:  # "copies"
            flags = is_copy
        strength = config.overlay.strength if config.overlay.enabled else 0.0
        out[name] = BusiDataset(cache, positions, spec, augment=config.augment, augment_flags=flags,
                                overlay_strength=strength, seed=seed,
                                targets=None if targets is None else targets[positions],
                                with_masks=config.loss.evidence_weight > 0)
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy's global generator from torch's per-worker seed.

    This module's augmentation does not need it (it seeds per item); it protects other code that draws from
    ``np.random``. Do not call ``cv2.setNumThreads`` here: in a forked worker, after the parent has used
    OpenCV's thread pool, it deadlocks (seen with OpenCV 4/5 on Linux).
    """
    np.random.seed(torch.initial_seed() % 2**32)
