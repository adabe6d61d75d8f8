"""``busi-train fit``: from a config to a run folder holding the best weights and every prediction needed later.

A run folder holds: ``config.toml`` (the resolved recipe), ``split_manifest.csv`` (file, sha256, group, split),
``epochs.csv`` / ``last.pt`` / ``best.pt`` (the fit loop's), ``predictions_<split>.npz`` (files, labels, logits
of the best weights on validation and test, and for the paper protocol also on mask-overlaid test images)
and ``fit.json`` (timings, best epoch, data and cache facts). ``evaluate`` and ``export`` read only this folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from busi_viewer.core.atomic import atomic_write
from busi_viewer.inference.device import configure_threads, describe_device, select_device
from training.config import CONFIGS_DIR, TrainConfig, config_hash, to_toml
from training.data import BusiDataset, BusiIndex, index_dataset, load_or_build_cache, make_datasets
from training.balancing import balanced_sample_weights
from training.engine import FitSettings, fit, init_distributed, seed_everything
from training.evidence import EvidenceAlignedLoss, lesion_classes
from training.partial_labels import encode_targets, label_sets
from training.recipe import build_loss, build_model, build_optimizer, build_scheduler, steps_per_batch
from training.similar_frames import merge_links, read_links
from training.splits import (
    SPLIT_NAMES,
    assignment_from_indices,
    grouped_stratified_kfold,
    grouped_stratified_split,
    SplitError,
    read_audit_groups,
    stratified_random_split,
    write_split_manifest,
)

AUDIT_DIR_ENV = "BUSI_AUDIT"
RUNS_DIR = Path(__file__).resolve().parents[1] / "runs"


@dataclass
class Predictions:
    """Logits of one model on one set of images. ``files`` relative to the data root; ``logits`` (N, K)."""

    files: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    groups: np.ndarray

    def save(self, path: Path) -> None:
        with atomic_write(path, "wb") as handle:
            np.savez(handle, files=self.files.astype(np.str_), labels=self.labels, logits=self.logits,
                     groups=self.groups.astype(np.str_))

    @classmethod
    def load(cls, path: Path) -> "Predictions":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["files"], data["labels"], data["logits"], data["groups"])


def default_audit_dir() -> Path:
    """Where ``busi-train audit`` writes and the grouped splits read: ``$BUSI_AUDIT``, else ``runs/audit``."""
    override = os.environ.get(AUDIT_DIR_ENV)
    return Path(override) if override else RUNS_DIR / "audit"


def audit_groups_csv(config: TrainConfig) -> Path:
    """The near-duplicate groups a config's splits (and its duplicate-free evaluation) are built on."""
    return Path(config.split.groups_csv) if config.split.groups_csv else default_audit_dir() / "groups.csv"


def source_audit_dir(source: str) -> Path:
    """Where ``busi-train audit --dataset <source>`` writes by default (BUSI: :func:`default_audit_dir`)."""
    return default_audit_dir() if source == "busi" else RUNS_DIR / f"audit-{source}"


def split_groups(config: TrainConfig, index: BusiIndex) -> tuple[list[str], frozenset[str]]:
    """(group of every sample, groups that must stay in training) for a grouped split: the patient where the
    dataset knows it (mini-MIAS: the two films of one woman; BUS-BRA: its Case), joined across patients by the
    audit's near-duplicates when ``split.join_patients`` says so, else the audit's near-duplicate groups (BUSI).
    In a multi-source index every group is prefixed with its source ("bus-bra:case-0001")."""
    multi = bool(index.roots)
    unknown = [i for i, sample in enumerate(index.samples) if not sample.patient]
    groups = [sample.patient for sample in index.samples]
    held_in_training: set[int] = set()  # samples whose group is conflicting
    if config.split.join_patients:
        groups, held_in_training = _join_patients(config, index, groups)
    if unknown:
        files = [_within_source(index.samples[i].relpath, multi) for i in unknown]
        audit, conflicting = read_audit_groups(audit_groups_csv(config), files)
        if config.split.lesion_links:
            audit, conflicting = merge_links(files, audit, conflicting,
                                             [index.samples[i].class_name for i in unknown],
                                             read_links(lesion_links_path(config)))
        for i, group in zip(unknown, audit):
            groups[i] = group
        held_in_training |= {i for i, group in zip(unknown, audit) if group in conflicting}
    if multi:
        groups = [f"{source}:{group}" for source, group in zip(index.sources, groups)]
    return groups, frozenset(groups[i] for i in held_in_training)


def _join_patients(config: TrainConfig, index: BusiIndex, groups: list[str]) -> tuple[list[str], set[int]]:
    """``groups`` with the patients of each patient-grouped source joined wherever the source's audit groups
    their images as near-duplicates, and the samples of joined groups that hold more than one class (one scan
    under two pathologies: they stay out of test). Patients no near-duplicate joins are left as they were."""
    multi = bool(index.roots)
    sources = index.sources
    patient_sources = list(dict.fromkeys(s for s, sample in zip(sources.tolist(), index.samples) if sample.patient))
    setting = config.split.join_patients
    if setting != "audit" and len(patient_sources) > 1:
        raise SplitError(f"split.join_patients names one groups file, but {', '.join(patient_sources)} are all "
                         "grouped by patient: use \"audit\" (each source's own audit)")
    joined = list(groups)
    conflicting: set[int] = set()
    for source in patient_sources:
        members = [i for i, sample in enumerate(index.samples) if sample.patient and sources[i] == source]
        path = source_audit_dir(source) / "groups.csv" if setting == "audit" else Path(setting).expanduser()
        if not path.is_file():
            raise SplitError(f"split.join_patients needs the near-duplicate groups of {source} ({path} is missing): "
                             f"run `busi-train audit --dataset {source}`")
        files = [_within_source(index.samples[i].relpath, multi) for i in members]
        audit, _ = read_audit_groups(path, files)
        links = _same_group_links(files, audit)
        patients = [groups[i] for i in members]
        merged, mixed = merge_links(files, patients, frozenset(), [index.samples[i].class_name for i in members],
                                    links)
        parts: dict[str, set[str]] = {}
        for root, patient in zip(merged, patients):
            parts.setdefault(root, set()).add(patient)
        for i, root in zip(members, merged):
            joined[i] = root
            if root in mixed and len(parts[root]) > 1:
                conflicting.add(i)
    return joined, conflicting


def _same_group_links(files: list[str], audit_groups: list[str]) -> list[tuple[str, str, str]]:
    """("same" links chaining the files of each audit group): what :func:`merge_links` joins."""
    first: dict[str, str] = {}
    links = []
    for file, group in zip(files, audit_groups):
        if group in first:
            links.append((first[group], file, "same"))
        else:
            first[group] = file
    return links


def lesion_links_path(config: TrainConfig) -> Path:
    """The reviewed lesion-links file a config names: a path, or a file name in training/configs."""
    given = Path(config.split.lesion_links).expanduser()
    shipped = CONFIGS_DIR / given
    return shipped if not given.is_absolute() and shipped.is_file() else given


def _within_source(relpath: str, multi_source: bool) -> str:
    """A multi-source index prefixes relpaths with the source; the audit of one source lists them without."""
    return relpath.split("/", 1)[1] if multi_source else relpath


def make_splits(config: TrainConfig, index: BusiIndex, fold: int | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Index arrays per split name, and the group id of every sample ("" when the protocol has no groups).

    A multi-source index is split source by source, each exactly as it would be alone, and the parts are joined:
    every part holds each source's classes in proportion, and a source's split (BUSI's held-out test images, its
    CV folds) is the one its single-source models used, so their numbers compare on the same images.
    """
    split = config.split
    grouped = split.strategy != "stratified_random"
    groups, conflicting = split_groups(config, index) if grouped else ([""] * len(index), frozenset())
    sources = index.sources
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for source in dict.fromkeys(sources.tolist()):
        members = np.flatnonzero(sources == source)
        labels = index.labels[members]
        if not grouped:
            chosen = stratified_random_split(labels, split.fractions, split.seed)
        elif fold is None or split.folds == 0:
            chosen = grouped_stratified_split(labels, [groups[i] for i in members], conflicting, split.fractions,
                                              split.seed)
        else:
            val_share = split.fractions[1] / (split.fractions[0] + split.fractions[1])
            folds = grouped_stratified_kfold(labels, [groups[i] for i in members], split.folds, split.seed,
                                             exclude_from_test=conflicting, val_fraction=val_share)
            chosen = (folds[fold].train, folds[fold].val, folds[fold].test)
        for name, positions in zip(SPLIT_NAMES, chosen):
            parts[name].append(members[positions])
    return {name: np.sort(np.concatenate(p)).astype(np.int64) for name, p in parts.items()}, groups


def index_for(config: TrainConfig, roots: dict[str, str] | None = None) -> BusiIndex:
    """The index a config trains on: its data set's folders from ``roots`` (a run's fit.json ``data_roots``, by
    source) when given, else from the config (data.root, data.busbra_root), else the environment variables."""
    data = config.data
    if roots:
        return index_dataset(data.dataset, roots.get(data.dataset), data.task, data.lesion_crops, roots=roots)
    by_source = {"busi": data.root or None, "bus-bra": data.busbra_root or None}
    return index_dataset(data.dataset, data.root or None, data.task, data.lesion_crops, roots=by_source)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, dataset: BusiDataset, device: torch.device, batch_size: int = 32,
                   tta_hflip: bool = False) -> np.ndarray:
    """(N, K) float32 logits of ``dataset``'s items in order; with ``tta_hflip`` the mean with the mirror image."""
    model.eval()
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))]).to(device)
        logits = model(batch)
        if tta_hflip:
            logits = (logits + model(torch.flip(batch, dims=[3]))) / 2
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.num_classes), np.float32)


def run_fit(config: TrainConfig, out_dir: Path, *, seed: int | None = None, fold: int | None = None,
            progress: bool = True) -> dict:
    """Train one model as ``config`` says and write its run folder (see module docstring). Returns fit.json."""
    started = time.perf_counter()
    seed = config.train.seeds[0] if seed is None else seed
    device = select_device(None if config.train.device == "auto" else config.train.device)
    threads = configure_threads(config.train.num_threads or None)
    distributed = init_distributed(device.type)
    if distributed.enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
        torch.cuda.set_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    index = index_for(config)
    spec = config.preprocess_spec()
    cache = load_or_build_cache(index, spec, config.data.cache_dir or None, threads=config.data.decode_threads,
                                progress=progress and distributed.is_main)
    splits, groups = make_splits(config, index, fold)
    classes = len(config.class_names)
    set_codes, allowed = label_sets(list(index.sources), config.class_names)
    datasets = make_datasets(cache, splits, config, seed, encode_targets(index.labels, set_codes, classes))
    shas = index.sha256s()
    if distributed.is_main:
        (out_dir / "config.toml").write_text(to_toml(config), encoding="utf-8")
        write_split_manifest(out_dir / "split_manifest.csv", index.relpaths, shas, groups,
                             assignment_from_indices(len(index), splits), sources=list(index.sources))

    seed_everything(seed)
    model, load_report, freezing = build_model(config.model, classes)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer)
    train_labels = datasets["train"].labels
    loss_fn = build_loss(config, train_labels, classes, device, allowed)
    if config.loss.evidence_weight > 0:
        loss_fn = EvidenceAlignedLoss(loss_fn, model, lesion_classes(config.class_names),
                                      config.loss.evidence_weight, config.loss.evidence_sharpness)
    settings = FitSettings(
        max_epochs=config.train.max_epochs, batch_size=config.train.batch_size, out_dir=out_dir,
        patience=config.train.patience if config.train.early_stopping else None, min_delta=config.train.min_delta,
        seed=seed, num_workers=config.train.num_workers, device=device, progress=progress,
        sample_weights=balanced_sample_weights(train_labels) if config.balance.sampler == "balanced" else None,
        grad_clip_norm=config.optim.grad_clip_norm or None, scheduler_per_batch=steps_per_batch(config),
    )
    fit_started = time.perf_counter()
    result = fit(model, datasets["train"], datasets["val"], optimizer, loss_fn, settings, scheduler=scheduler,
                 distributed=distributed, on_epoch_start=datasets["train"].set_epoch)
    fit_seconds = time.perf_counter() - fit_started
    model.load_state_dict(result.best_state)
    model.to(device)

    summary = {}
    if distributed.is_main:
        tta = config.eval.tta_hflip
        sets = {name: datasets[name] for name in ("val", "test") if splits[name].size}
        if config.overlay.enabled and splits["test"].size:  # what the paper's pipeline effectively tested on
            sets["test_overlaid"] = BusiDataset(cache, splits["test"], spec, overlay_strength=config.overlay.strength)
        for name, dataset in sets.items():
            positions = splits["test" if name == "test_overlaid" else name]
            Predictions(
                files=np.array([index.relpaths[i] for i in positions]), labels=index.labels[positions],
                logits=predict_logits(model, dataset, device, tta_hflip=tta),
                groups=np.array([groups[i] for i in positions]),
            ).save(out_dir / f"predictions_{name}.npz")
        summary = {
            "config": config.name, "config_hash": config_hash(config), "seed": seed, "fold": fold,
            "device": describe_device(device), "threads": threads, "world_size": distributed.world_size,
            "torch": torch.__version__, "data_root": str(index.root), "data_roots": dict(index.roots),
            "data_manifest_sha256": index.manifest_sha256(),
            "images_per_source": {str(k): int(v) for k, v in zip(*np.unique(index.sources, return_counts=True))},
            "n_images": len(index), "split_sizes": {k: int(v.size) for k, v in splits.items()},
            "train_items_per_epoch": len(datasets["train"]),
            "pretrained": None if load_report is None else load_report.source,
            "freezing": dataclasses.asdict(freezing),
            "cache": {"path": str(cache.path), "built": cache.built, "seconds": round(cache.seconds, 2)},
            "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "fit_seconds": round(fit_seconds, 1),  # this process only: a resumed run started earlier
            "epochs_seconds": round(sum(row["seconds"] for row in result.history), 1),  # every epoch, resumes too
            # training items per second of the epochs' wall time (validation passes included; across resumes)
            "train_images_per_second": round(len(datasets["train"]) * len(result.history)
                                             / max(sum(row["seconds"] for row in result.history), 1e-9), 2),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        with atomic_write(out_dir / "fit.json", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return summary
