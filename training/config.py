"""Training configuration: a frozen dataclass tree read from TOML, strictly validated, hashable, savable.

A config file holds the sections below as TOML tables (``[data]``, ``[optim]``, ...) plus optional top-level
``name``, ``description`` and ``extends = "other.toml"`` (path relative to the file; the parent is loaded
first and the child's keys override it key by key; chains allowed, cycles refused). Unknown sections or keys
raise :class:`ConfigError` naming the key and the file. Command-line overrides ``section.key=value`` are
coerced to the field's declared type (``optim.lr=1e-4``, ``train.seeds=0,1,2``, ``eval.tta_hflip=true``).

``to_toml`` writes the fully resolved config (every field, no ``extends``) so that a run folder holds the
exact recipe; ``load_config`` reads it back to an equal object. ``config_hash`` identifies the recipe and
ignores where things live on this machine (data root, cache folder, device, threads, workers).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.labels import ABNORMAL, CLASS_NAMES, TASKS
from busi_viewer.inference.architectures import OUTPUT_STRIDES, SUPPORTED_ARCHITECTURES
from busi_viewer.inference.model_card import EQUALISATIONS, INTERPOLATIONS, RESIZE_POLICIES, PreprocessSpec
from busi_viewer.inference.pretrained import LITE0_ARCHITECTURE, OFFLINE_ARCHITECTURES, PACKAGED_MEAN, PACKAGED_STD

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_KEYWORDS = ("package", "hub", "none")
DATASETS = ("busi", "bus-bra", "busi+bus-bra", "mini-mias")

# Fields that say where and on what a run happens, not what it computes: left out of config_hash.
ENVIRONMENT_KEYS = frozenset({
    ("data", "root"), ("data", "busbra_root"), ("data", "cache_dir"), ("data", "decode_threads"),
    ("train", "device"), ("train", "num_threads"), ("train", "num_workers"),
})
# Fields that change only what `busi-train export` writes, never a fitted or evaluated run: left out of
# config_hash, so runs of one recipe made before and after such a field was added still summarise together.
EXPORT_ONLY_KEYS = frozenset({("eval", "scope_margin")})
# Fields added after runs were published, whose default reproduces the recipe from before they existed: left out
# of config_hash while they hold their default, so every earlier recipe keeps its hash.
ADDED_LATER_KEYS = frozenset({("loss", "evidence_weight"), ("loss", "evidence_sharpness"), ("model", "output_stride")})


class ConfigError(BusiViewerError, ValueError):
    """A configuration file or override is malformed, names an unknown key, or holds an invalid value."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _choice(value: str, choices: Iterable[str], key: str) -> None:
    choices = tuple(choices)
    _check(value in choices, key, f"{value!r} is not one of {', '.join(map(repr, choices))}")


def _fraction(value: float, key: str, *, low_open: bool = False, high_open: bool = False) -> None:
    ok_low = value > 0 if low_open else value >= 0
    ok_high = value < 1 if high_open else value <= 1
    _check(ok_low and ok_high and math.isfinite(value), key,
           f"{value} must lie in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")


@dataclass(frozen=True)
class DataConfig:
    """Which images, for which task, and how they become the network's input (the model card's PreprocessSpec).

    ``dataset``: "busi" (class folders), "bus-bra" (bus_data.csv, patients from its Case column),
    "busi+bus-bra" (both, one after the other) or "mini-mias" (Info.txt ground truth, patients from film pairs);
    ``task``: one of busi_viewer.core.labels.TASKS, which fixes the output classes and their order.
    ``root`` "" = the dataset's environment variable (BUSI_DATA, BUSBRA_DATA, MIAS_DATA; for "busi+bus-bra" the
    BUSI folder); ``busbra_root``: the BUS-BRA folder of "busi+bus-bra" ("" = $BUSBRA_DATA); ``cache_dir`` "" =
    user cache folder / training. ``lesion_crops`` (mini-MIAS): train on the square around each film's first
    localised finding instead of the whole film (films without one are left out): a region-of-interest classifier.
    ``mean``/``std`` empty = the normalisation of the pretrained weights (Lite0/1/2: 0.5; others: ImageNet).
    """

    dataset: str = "busi"
    task: str = "three-class"
    root: str = ""
    busbra_root: str = ""
    cache_dir: str = ""
    input_size: int = 224
    resize_policy: str = "stretch"
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    decode_threads: int = 4
    equalisation: str = "none"
    clahe_clip_limit: float = 2.0
    clahe_tiles: int = 8
    lesion_crops: bool = False

    def __post_init__(self) -> None:
        _choice(self.dataset, DATASETS, "data.dataset")
        _choice(self.task, TASKS, "data.task")
        _check(self.input_size >= 32, "data.input_size", f"{self.input_size} is too small (at least 32)")
        _choice(self.resize_policy, RESIZE_POLICIES, "data.resize_policy")
        _choice(self.interpolation, INTERPOLATIONS, "data.interpolation")
        _check(len(self.mean) in (0, 3) and len(self.std) == len(self.mean), "data.mean/data.std",
               "give both with three entries each, or leave both empty for the weights' own normalisation")
        _check(all(s > 0 for s in self.std), "data.std", "entries must be > 0")
        _check(self.decode_threads >= 1, "data.decode_threads", "must be >= 1")
        _choice(self.equalisation, EQUALISATIONS, "data.equalisation")
        _check(self.clahe_clip_limit > 0, "data.clahe_clip_limit", "must be > 0")
        _check(self.clahe_tiles >= 1, "data.clahe_tiles", "must be >= 1")
        _check(not self.lesion_crops or self.dataset == "mini-mias", "data.lesion_crops",
               "lesion-centred crops need lesion coordinates, which only mini-MIAS's Info.txt gives")


@dataclass(frozen=True)
class ModelConfig:
    """Backbone, ImageNet weights ("package": the offline Lite0/1/2 weights; "hub"; "none"; or a weights file path),
    dropout before the new linear head, the fraction of backbone layers to freeze (issue #7), and the final
    feature map's stride (16: the last downsampling stage dilated, a twice finer Grad-CAM grid; issue #19)."""

    arch: str = LITE0_ARCHITECTURE
    pretrained: str = "package"
    drop_rate: float = 0.0
    freeze_ratio: float = 0.0
    output_stride: int = 32

    def __post_init__(self) -> None:
        _choice(self.arch, SUPPORTED_ARCHITECTURES, "model.arch")
        _choice(self.output_stride, OUTPUT_STRIDES, "model.output_stride")
        _check(self.output_stride == 32 or self.arch != "vgg19", "model.output_stride", "vgg19 has only 32")
        _check(bool(self.pretrained.strip()), "model.pretrained", "give 'package', 'hub', 'none' or a file path")
        _fraction(self.drop_rate, "model.drop_rate", high_open=True)
        _fraction(self.freeze_ratio, "model.freeze_ratio")


@dataclass(frozen=True)
class OverlayConfig:
    """Ground-truth mask overlay on TRAINING images only (the paper's protocol; a label leak, see
    :func:`training.data.apply_mask_overlay`). ``strength`` 0 leaves the image unchanged."""

    enabled: bool = False
    strength: float = 0.5

    def __post_init__(self) -> None:
        _fraction(self.strength, "overlay.strength")


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms of training images (uint8, S x S), applied before normalisation.

    ``apply_to``: "all" training items, "minority" (items of classes smaller than the largest), or
    "copies" (only the extra copies made by ``balance.oversample_minority``, originals stay untouched).
    Jitter strengths follow torchvision's ColorJitter: factors drawn from [1 - x, 1 + x], hue shift from
    [-hue, hue] of a full turn. ``zoom`` z scales by [1 - z, 1 + z]; ``speckle`` is the standard deviation of
    multiplicative Gaussian noise.
    """

    enabled: bool = True
    apply_to: str = "all"
    hflip_p: float = 0.5
    vflip_p: float = 0.0
    rotation_deg: float = 0.0
    zoom: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    speckle: float = 0.0

    def __post_init__(self) -> None:
        _choice(self.apply_to, ("all", "minority", "copies"), "augment.apply_to")
        _fraction(self.hflip_p, "augment.hflip_p")
        _fraction(self.vflip_p, "augment.vflip_p")
        _check(0 <= self.rotation_deg <= 180, "augment.rotation_deg", "must lie in [0, 180]")
        _fraction(self.zoom, "augment.zoom", high_open=True)
        for name in ("brightness", "contrast", "saturation", "speckle"):
            _check(0 <= getattr(self, name) <= 1, f"augment.{name}", "must lie in [0, 1]")
        _check(0 <= self.hue <= 0.5, "augment.hue", "must lie in [0, 0.5]")


@dataclass(frozen=True)
class BalanceConfig:
    """Class imbalance in the training set.

    ``oversample_minority``: the paper's targeted augmentation: repeat minority-class samples (augmented)
    until every class has as many training items as the largest. ``sampler``: "shuffle" (each item once per
    epoch) or "balanced" (draw items with probability 1 / class count, with replacement).
    """

    oversample_minority: bool = False
    sampler: str = "shuffle"

    def __post_init__(self) -> None:
        _choice(self.sampler, ("shuffle", "balanced"), "balance.sampler")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser over all trainable parameters, one learning rate. ``grad_clip_norm`` 0 = no clipping."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    momentum: float = 0.9
    grad_clip_norm: float = 0.0

    def __post_init__(self) -> None:
        _choice(self.name, ("adam", "adamw", "sgd"), "optim.name")
        _check(self.lr > 0 and math.isfinite(self.lr), "optim.lr", "must be > 0")
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
               "needs two values in [0, 1)")
        _fraction(self.momentum, "optim.momentum", high_open=True)
        _check(self.grad_clip_norm >= 0, "optim.grad_clip_norm", "must be >= 0 (0 = off)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: "constant"; "step" (x gamma every ``step_size`` epochs); "cosine" (linear warm-up
    over ``warmup_epochs``, then cosine down to lr x ``min_lr_ratio``); all three stepped per epoch. "cyclic"
    (Smith 2017, stepped per batch): the rate climbs linearly from ``base_lr`` to ``optim.lr`` over
    ``cycle_step_size`` iterations and back down over as many; ``cyclic_mode`` "triangular" repeats that
    cycle, "triangular2" halves its height after every cycle."""

    name: str = "constant"
    step_size: int = 7
    gamma: float = 0.1
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.0
    cyclic_mode: str = "triangular"
    base_lr: float = 1e-5
    cycle_step_size: int = 200

    def __post_init__(self) -> None:
        _choice(self.name, ("constant", "step", "cosine", "cyclic"), "schedule.name")
        _check(self.step_size >= 1, "schedule.step_size", "must be >= 1")
        _fraction(self.gamma, "schedule.gamma", low_open=True)
        _check(self.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
        _fraction(self.min_lr_ratio, "schedule.min_lr_ratio")
        _choice(self.cyclic_mode, ("triangular", "triangular2"), "schedule.cyclic_mode")
        _check(self.base_lr > 0 and math.isfinite(self.base_lr), "schedule.base_lr", "must be > 0")
        _check(self.cycle_step_size >= 1, "schedule.cycle_step_size", "must be >= 1 (iterations)")


@dataclass(frozen=True)
class LossConfig:
    """Cross-entropy on logits; ``class_weights`` "balanced" = n / (K * n_c) from the training labels.
    ``evidence_weight`` > 0 adds the evidence-alignment term (:mod:`training.evidence`: the lesion classes'
    Grad-CAM asked to sit on the lesion mask, a training target only) with that weight; ``evidence_sharpness``
    scales the standardised maps before their softmax over cells."""

    name: str = "cross_entropy"
    label_smoothing: float = 0.0
    class_weights: str = "none"
    evidence_weight: float = 0.0
    evidence_sharpness: float = 2.0

    def __post_init__(self) -> None:
        _choice(self.name, ("cross_entropy",), "loss.name")
        _fraction(self.label_smoothing, "loss.label_smoothing", high_open=True)
        _choice(self.class_weights, ("none", "balanced"), "loss.class_weights")
        _check(math.isfinite(self.evidence_weight) and self.evidence_weight >= 0, "loss.evidence_weight",
               "must be >= 0 (0: off)")
        _check(math.isfinite(self.evidence_sharpness) and self.evidence_sharpness > 0, "loss.evidence_sharpness",
               "must be > 0")


@dataclass(frozen=True)
class TrainLoopConfig:
    """The fit loop. Early stopping on validation loss after ``patience`` epochs without an improvement larger
    than ``min_delta``; one run per seed in ``seeds``. ``device``: "auto" | "cpu" | "cuda" | "cuda:N" | "mps";
    ``num_threads`` 0 = busi_viewer's default for this machine."""

    max_epochs: int = 18
    batch_size: int = 8
    early_stopping: bool = True
    patience: int = 2
    min_delta: float = 0.0
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"
    num_threads: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        _check(self.max_epochs >= 1, "train.max_epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.patience >= 1, "train.patience", "must be >= 1")
        _check(self.min_delta >= 0, "train.min_delta", "must be >= 0")
        _check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "train.seeds",
               "needs at least one seed, without repeats")
        device = self.device.strip().lower()
        _check(device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit()),
               "train.device", f"{self.device!r} is not 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        _check(self.num_threads >= 0, "train.num_threads", "must be >= 0 (0 = automatic)")
        _check(self.num_workers >= 0, "train.num_workers", "must be >= 0")


@dataclass(frozen=True)
class SplitConfig:
    """How images are divided into train / val / test, and cross-validation.

    "stratified_random": per-class random split of images (the paper's; copies of one lesion can land on both
    sides). "grouped": whole near-duplicate groups from the audit's ``groups_csv`` ("" = the audit's output
    for this dataset); ``conflicting`` groups (one lesion under two classes) go to "train" or are "exclude"d.
    ``folds`` 0 = one split; k >= 2 = grouped k-fold CV, with val carved from each training part in the
    proportion fractions[1] : fractions[0]. ``lesion_links``: a reviewed file of BUSI image pairs that show one
    lesion although the audit does not group them (other frames; :mod:`training.similar_frames`); its "same"
    pairs join their groups. A file name in training/configs or a path; "" = none. ``join_patients``: for a
    source grouped by patient (BUS-BRA), also join patients whose images its audit found to be near-duplicates
    (one woman under two case numbers, or one scan filed twice): "" = patients only, "audit" = each such
    source's ``runs/audit-<source>/groups.csv`` (``busi-train audit --dataset <source>``), or a groups.csv path.
    """

    strategy: str = "grouped"
    fractions: tuple[float, ...] = (0.70, 0.15, 0.15)
    seed: int = 0
    folds: int = 0
    groups_csv: str = ""
    conflicting: str = "train"
    lesion_links: str = ""
    join_patients: str = ""

    def __post_init__(self) -> None:
        _choice(self.strategy, ("stratified_random", "grouped"), "split.strategy")
        _check(len(self.fractions) == 3 and all(f > 0 for f in self.fractions)
               and abs(sum(self.fractions) - 1) < 1e-6, "split.fractions",
               f"needs three positive fractions (train, val, test) summing to 1, got {list(self.fractions)}")
        _check(self.folds == 0 or self.folds >= 2, "split.folds", "must be 0 (no CV) or >= 2")
        _choice(self.conflicting, ("train", "exclude"), "split.conflicting")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: flip test-time augmentation, temperature scaling on val, the decision rule, statistics.

    ``threshold``: "argmax", or "target_sensitivity": the largest threshold on p(``threshold_class``) that
    reaches ``target_sensitivity`` on validation. Bootstrap CIs with ``bootstrap`` resamples (0 = none), by
    near-duplicate group when ``bootstrap_by_group``.
    """

    tta_hflip: bool = False
    calibrate: bool = False
    threshold: str = "argmax"
    threshold_class: str = "malignant"
    target_sensitivity: float = 0.9
    ece_bins: int = 15
    bootstrap: int = 2000
    confidence: float = 0.95
    bootstrap_by_group: bool = False
    scope_margin: float = 1.0  # the exported bundle's scope check widened by this factor (see training.scope_fit)

    def __post_init__(self) -> None:
        _choice(self.threshold, ("argmax", "target_sensitivity"), "eval.threshold")
        _check(self.scope_margin >= 1.0, "eval.scope_margin", "must be >= 1 (it widens the scope check)")
        _choice(self.threshold_class, (*CLASS_NAMES, ABNORMAL), "eval.threshold_class")
        _fraction(self.target_sensitivity, "eval.target_sensitivity", low_open=True)
        _check(self.ece_bins >= 1, "eval.ece_bins", "must be >= 1")
        _check(self.bootstrap >= 0, "eval.bootstrap", "must be >= 0 (0 = no confidence intervals)")
        _fraction(self.confidence, "eval.confidence", low_open=True, high_open=True)


@dataclass(frozen=True)
class TrainConfig:
    """The whole recipe of one ``busi-train`` run."""

    name: str = ""
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.pretrained == "package":
            _check(self.model.arch in OFFLINE_ARCHITECTURES, "model.pretrained",
                   f"'package' holds ImageNet weights for {', '.join(OFFLINE_ARCHITECTURES)} only; for "
                   f"{self.model.arch} use "
                   "'hub' (where the model hub is reachable) or the path of a .safetensors/.pth weights file")
        if self.augment.enabled and self.augment.apply_to == "copies":
            _check(self.balance.oversample_minority, "augment.apply_to",
                   "'copies' augments the balancing copies only, so it needs balance.oversample_minority = true")
        if self.eval.threshold == "target_sensitivity":
            _check(self.eval.threshold_class in self.class_names, "eval.threshold_class",
                   f"{self.eval.threshold_class!r} is not an output of task {self.data.task!r} "
                   f"({', '.join(self.class_names)})")
        if self.schedule.name == "cyclic":
            _check(self.schedule.base_lr < self.optim.lr, "schedule.base_lr",
                   f"the cycle's lower bound must lie below its upper bound optim.lr = {self.optim.lr}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's output classes, in order, for ``data.task``."""
        return TASKS[self.data.task]

    @property
    def positive_class(self) -> str:
        """The class the operating point and the headline sensitivity are about: ``eval.threshold_class`` when
        the task outputs it, else the task's last class (malignant, abnormal)."""
        wanted = self.eval.threshold_class
        return wanted if wanted in self.class_names else self.class_names[-1]

    def normalisation(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(mean, std): data.mean/std when given, else the pretrained weights' own (Lite0/1/2 0.5, others ImageNet)."""
        if self.data.mean:
            return tuple(self.data.mean), tuple(self.data.std)  # type: ignore[return-value]
        if self.model.arch in OFFLINE_ARCHITECTURES:
            return PACKAGED_MEAN, PACKAGED_STD
        return IMAGENET_MEAN, IMAGENET_STD

    def preprocess_spec(self) -> PreprocessSpec:
        """The model card's preprocessing for this recipe (equalisation, resize, normalisation)."""
        mean, std = self.normalisation()
        return PreprocessSpec(input_size=self.data.input_size, resize_policy=self.data.resize_policy,
                              interpolation=self.data.interpolation, mean=mean, std=std,
                              equalisation=self.data.equalisation, clahe_clip_limit=self.data.clahe_clip_limit,
                              clahe_tiles=self.data.clahe_tiles)


TOP_LEVEL_SCALARS = ("name", "description")
SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(TrainConfig)[f.name] for f in dataclasses.fields(TrainConfig)
                             if f.name not in TOP_LEVEL_SCALARS}
"""Section name -> its dataclass, in file order."""


def _field_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


# ---------------------------------------------------------------------------------------------- type coercion

def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _type_name(tp: Any) -> str:
    if _is_tuple(tp):
        return f"a list of {typing.get_args(tp)[0].__name__}"
    return tp.__name__


def _typed(value: Any, tp: Any, key: str, where: str) -> Any:
    """``value`` as read from TOML, checked (and int -> float widened) against the field type ``tp``."""
    def bad() -> ConfigError:
        return ConfigError(f"{key} in {where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")

    if _is_tuple(tp):
        if not isinstance(value, (list, tuple)):
            raise bad()
        inner = typing.get_args(tp)[0]
        return tuple(_typed(v, inner, key, where) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"unsupported config field type {tp!r}")  # a programming error in this module


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_text(text: str, tp: Any, key: str) -> Any:
    """A command-line value (always text) as the field type ``tp``."""
    raw = text.strip()
    try:
        if _is_tuple(tp):
            inner = typing.get_args(tp)[0]
            body = raw[1:-1] if raw[:1] in "[(" and raw[-1:] in "])" and raw else raw
            return tuple(_parse_text(part, inner, key) for part in body.split(",") if part.strip())
        if tp is str:
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
                return raw[1:-1]
            return raw
        if tp is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError
        if tp is int:
            return int(raw.replace("_", ""))
        if tp is float:
            value = float(raw.replace("_", ""))
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(f"override {key}={text!r}: expected {_type_name(tp)}") from None
    raise TypeError(f"unsupported config field type {tp!r}")


# -------------------------------------------------------------------------------------------------- loading

def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(raw: Mapping[str, Any], where: str) -> None:
    """Refuse unknown sections and keys, naming them and the file."""
    for top, value in raw.items():
        if top == "extends" or top in TOP_LEVEL_SCALARS:
            continue
        if top not in SECTIONS:
            known = list(SECTIONS) + list(TOP_LEVEL_SCALARS) + ["extends"]
            raise ConfigError(f"unknown section or key {top!r} in {where}{_suggest(top, known)} "
                              f"(sections: {', '.join(SECTIONS)})")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{top!r} in {where} must be a table ([{top}]), got {type(value).__name__}")
        known_keys = _field_types(top)
        for key in value:
            if key not in known_keys:
                raise ConfigError(f"unknown key '{top}.{key}' in {where}{_suggest(key, known_keys)} "
                                  f"(keys of [{top}]: {', '.join(known_keys)})")


def _read_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, raw dict)] from the root of the ``extends`` chain down to ``path``."""
    path = path.expanduser().resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"'extends' forms a cycle: {cycle}")
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        hint = f" (extended by {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} not found{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    _check_keys(raw, str(path))
    parent = raw.get("extends")
    if parent is None:
        return [(path, raw)]
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"'extends' in {path} must be a file name (a string), got {parent!r}")
    return _read_layers(path.parent / parent, (*chain, path)) + [(path, raw)]


def _build(layers: list[tuple[str, Mapping[str, Any]]], overrides: Mapping[tuple[str, str], Any]) -> TrainConfig:
    """Merge raw layers key by key (later wins), apply typed overrides, construct and validate."""
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    top: dict[str, Any] = {}
    for where, raw in layers:
        for name in TOP_LEVEL_SCALARS:
            if name in raw:
                top[name] = _typed(raw[name], str, name, where)
        for section in SECTIONS:
            types_ = _field_types(section)
            for key, value in raw.get(section, {}).items():
                values[section][key] = _typed(value, types_[key], f"{section}.{key}", where)
    for (section, key), value in overrides.items():
        values[section][key] = value
    try:
        sections = {section: SECTIONS[section](**kwargs) for section, kwargs in values.items()}
        return TrainConfig(**top, **sections)
    except ConfigError as exc:
        origin = " / ".join(where for where, _ in layers) or "<defaults>"
        raise ConfigError(f"{exc} (config: {origin})") from None


def parse_overrides(items: Iterable[str]) -> dict[tuple[str, str], Any]:
    """``["optim.lr=1e-4", "train.seeds=0,1"]`` -> {("optim", "lr"): 1e-4, ("train", "seeds"): (0, 1)}."""
    parsed: dict[tuple[str, str], Any] = {}
    for item in items:
        dotted, sep, text = item.partition("=")
        dotted = dotted.strip()
        if not sep or "." not in dotted:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
        section, _, key = dotted.partition(".")
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}{_suggest(section, SECTIONS)} "
                              f"(sections: {', '.join(SECTIONS)})")
        types_ = _field_types(section)
        if key not in types_:
            raise ConfigError(f"override {item!r}: unknown key '{section}.{key}'{_suggest(key, types_)} "
                              f"(keys of [{section}]: {', '.join(types_)})")
        parsed[(section, key)] = _parse_text(text, types_[key], dotted)
    return parsed


def load_config(path: Path | str, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a TOML config (following ``extends``), then apply ``section.key=value`` overrides.

    A bare name such as ``"busi_paper"`` finds ``training/configs/busi_paper.toml``.
    Raises :class:`ConfigError` (a ValueError) for every problem, naming the key and the file.
    """
    path = Path(path)
    if not path.suffix and not path.exists() and (CONFIGS_DIR / f"{path.name}.toml").is_file():
        path = CONFIGS_DIR / f"{path.name}.toml"
    layers = [(str(p), raw) for p, raw in _read_layers(path)]
    return _build(layers, parse_overrides(overrides))


def config_from_dict(data: Mapping[str, Any], where: str = "<dict>") -> TrainConfig:
    """The inverse of :func:`to_dict` (also accepts partial dicts: missing keys take their defaults)."""
    raw = dict(data)
    if "extends" in raw:
        raise ConfigError(f"'extends' is only understood in files, not in {where}")
    _check_keys(raw, where)
    return _build([(where, raw)], {})


def apply_overrides(config: TrainConfig, overrides: Iterable[str]) -> TrainConfig:
    """A copy of ``config`` with ``section.key=value`` overrides applied and validated."""
    return _build([("<config>", to_dict(config))], parse_overrides(overrides))


# ------------------------------------------------------------------------------------------ saving, hashing

def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain, JSON-serialisable nested dict (tuples become lists)."""
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    out: dict[str, Any] = {name: getattr(config, name) for name in TOP_LEVEL_SCALARS}
    for section in SECTIONS:
        obj = getattr(config, section)
        out[section] = {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: TrainConfig) -> str:
    """The fully resolved config as TOML text (every field, no ``extends``); ``load_config`` reads it back."""
    data = to_dict(config)
    lines = [f"# Resolved busi-train configuration, hash {config_hash(config)}"]
    lines += [f"{name} = {_toml_value(data[name])}" for name in TOP_LEVEL_SCALARS]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in data[section].items()]
    return "\n".join(lines) + "\n"


def config_hash(config: TrainConfig) -> str:
    """16 hex digits of the SHA-256 of the recipe: every field except name/description, ENVIRONMENT_KEYS,
    EXPORT_ONLY_KEYS and ADDED_LATER_KEYS fields that hold their default."""
    data = to_dict(config)
    for name in TOP_LEVEL_SCALARS:
        data.pop(name)
    for section, key in ENVIRONMENT_KEYS | EXPORT_ONLY_KEYS:
        data[section].pop(key)
    defaults = to_dict(TrainConfig())
    for section, key in ADDED_LATER_KEYS:
        if data[section][key] == defaults[section][key]:
            data[section].pop(key)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
