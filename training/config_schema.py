"""The training recipe's schema: one frozen, validated dataclass per TOML section, and :class:`TrainConfig`.

Each section checks its own values in ``__post_init__`` and raises :class:`ConfigError` naming the key;
:mod:`training.config` reads, overrides, writes and hashes these objects.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field

from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.labels import ABNORMAL, CLASS_NAMES, TASKS
from busi_viewer.inference.architectures import OUTPUT_STRIDES, SUPPORTED_ARCHITECTURES
from busi_viewer.inference.model_card import EQUALISATIONS, INTERPOLATIONS, RESIZE_POLICIES, PreprocessSpec
from busi_viewer.inference.pretrained import LITE0_ARCHITECTURE, OFFLINE_ARCHITECTURES, PACKAGED_MEAN, PACKAGED_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRETRAINED_KEYWORDS = ("package", "hub", "none")
DATASETS = ("busi", "bus-bra", "busi+bus-bra", "mini-mias")


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
    :func:`training.augment.apply_mask_overlay`). ``strength`` 0 leaves the image unchanged."""

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
