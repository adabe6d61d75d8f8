"""Train / validation / test splits and cross-validation folds, as index arrays, plus the split manifest CSV.

Two kinds of split:

* :func:`stratified_random_split`: images drawn at random within each class (the paper's protocol). Copies of
  one lesion can land on both sides, so test scores are optimistic on BUSI.
* :func:`grouped_stratified_split` / :func:`grouped_stratified_kfold`: whole near-duplicate groups (from the
  audit's ``groups.csv``) are assigned, so no group is ever on two sides; groups marked conflicting (one lesion
  filed under two classes) always go to the training part. They refuse to run without groups rather than fall
  back to a random split.

Group assignment is greedy: groups are taken largest first (ties in a seeded random order) and each goes to
the part where it lowers the squared deviation from the per-class targets most, the deviation of class c
measured in units of n_c, so that small classes count as much as large ones. For single-class groups this puts
each group where its class has the largest shortfall, and no part exceeds its target for a class by a whole
group or more.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from busi_viewer.core.atomic import atomic_write
from busi_viewer.core.errors import BusiViewerError

SPLIT_NAMES = ("train", "val", "test")
MANIFEST_COLUMNS = ("file", "sha256", "group", "split")
SOURCE_COLUMN = "source"  # written after MANIFEST_COLUMNS when the images come from several data sets
GROUPS_COLUMNS = ("file", "class", "group_id", "group_size", "conflicting")


class SplitError(BusiViewerError, ValueError):
    """A split cannot be made as asked (bad fractions, missing or inconsistent groups, unreadable manifest)."""


class Fold(NamedTuple):
    """One cross-validation fold: sorted int64 index arrays; ``val`` is empty when no validation was asked."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise SplitError(f"labels must be one-dimensional, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise SplitError("labels must be non-negative integers (class indices)")
    return array.astype(np.int64, copy=False)


def _fractions(fractions: Sequence[float]) -> np.ndarray:
    array = np.asarray(fractions, dtype=np.float64)
    if array.ndim != 1 or array.size < 2 or np.any(array <= 0) or abs(array.sum() - 1.0) > 1e-6:
        raise SplitError(f"fractions must be two or more positive numbers summing to 1, got {list(fractions)}")
    return array / array.sum()


def _quota(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integer counts summing to n, as close to n * fractions as possible (largest remainder; ties: first part)."""
    exact = n * fractions
    counts = np.floor(exact).astype(np.int64)
    remainder = n - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def stratified_random_split(labels: Sequence[int] | np.ndarray, fractions: Sequence[float],
                            seed: int) -> tuple[np.ndarray, ...]:
    """Random per-class split of samples (not groups): one sorted int64 index array per fraction.

    Each class c is split into counts round(n_c * fraction) (largest remainder, so they sum to n_c).
    """
    labels = _labels(labels)
    fractions = _fractions(fractions)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        bounds = np.cumsum(_quota(members.size, fractions))[:-1]
        for part, chunk in zip(parts, np.split(members, bounds)):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64) for p in parts)


def _encode_groups(groups: Sequence[Hashable] | np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        raise SplitError(
            "a grouped split needs near-duplicate groups (run the audit, which writes groups.csv, and pass its "
            "group ids); refusing to fall back to a random split, which would put copies of one lesion on both sides"
        )
    values = list(groups.tolist() if isinstance(groups, np.ndarray) else groups)
    if len(values) != n:
        raise SplitError(f"{len(values)} group ids for {n} samples: every sample needs exactly one group")
    codes: dict[Hashable, int] = {}
    return np.array([codes.setdefault(g, len(codes)) for g in values], dtype=np.int64)


def _assign_groups(labels: np.ndarray, codes: np.ndarray, fractions: np.ndarray, forced: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Part index per group code. ``forced``: bool per group code, True = pinned to part 0."""
    n_groups = int(codes.max()) + 1 if codes.size else 0
    n_classes = int(labels.max()) + 1 if labels.size else 0
    profile = np.zeros((n_groups, n_classes), dtype=np.float64)  # samples of each class in each group
    np.add.at(profile, (codes, labels), 1.0)
    class_sizes = profile.sum(axis=0)
    target = fractions[:, None] * class_sizes[None, :]  # (parts, classes)
    scale = np.where(class_sizes > 0, class_sizes, 1.0)
    assigned = np.zeros_like(target)
    part_of = np.full(n_groups, -1, dtype=np.int64)

    part_of[forced] = 0
    assigned[0] += profile[forced].sum(axis=0)
    free = np.flatnonzero(~forced)
    free = free[rng.permutation(free.size)]  # random tie order, then largest groups first
    free = free[np.argsort(-profile[free].sum(axis=1), kind="stable")]
    for group in free:
        g = profile[group]
        # Increase of sum_c (A - T)^2 / n_c when the group joins part p: sum_c g_c (2 (A - T) + g_c) / n_c.
        cost = ((2.0 * (assigned - target) + g[None, :]) * g[None, :] / scale[None, :]).sum(axis=1)
        best = int(np.argmin(cost))  # ties: the earlier part
        part_of[group] = best
        assigned[best] += g
    return part_of


def grouped_stratified_split(labels: Sequence[int] | np.ndarray, groups: Sequence[Hashable] | np.ndarray | None,
                             conflicting_groups: Collection[Hashable], fractions: Sequence[float],
                             seed: int) -> tuple[np.ndarray, ...]:
    """Split whole groups into parts whose class proportions follow ``fractions``.

    ``labels``: (N,) class indices; ``groups``: (N,) group id per sample (singletons have their own id);
    ``conflicting_groups``: ids that always go to the first part (train), never val or test.
    Returns one sorted int64 index array per fraction. Raises :class:`SplitError` when ``groups`` is None.
    """
    labels = _labels(labels)
    fractions = _fractions(fractions)
    values = list(groups.tolist() if isinstance(groups, np.ndarray) else groups) if groups is not None else None
    codes = _encode_groups(values, labels.size)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    forced = np.zeros(n_groups, dtype=bool)
    conflicting = set(conflicting_groups)
    for code, group in zip(codes, values or ()):
        if group in conflicting:
            forced[code] = True
    part_of = _assign_groups(labels, codes, fractions, forced, np.random.default_rng(seed))
    sample_part = part_of[codes] if codes.size else codes
    return tuple(np.flatnonzero(sample_part == p).astype(np.int64) for p in range(fractions.size))


def grouped_stratified_kfold(labels: Sequence[int] | np.ndarray, groups: Sequence[Hashable] | np.ndarray | None,
                             k: int, seed: int, exclude_from_test: Collection[Hashable] = (),
                             val_fraction: float = 0.0) -> list[Fold]:
    """k folds of whole groups, stratified by class: every sample not in ``exclude_from_test`` is in exactly
    one test fold; excluded groups (the conflicting ones) are in the training part of every fold.

    With ``val_fraction`` > 0, each fold's training part is split again by group (excluded groups stay in
    train) into train and val, val getting about that fraction of it.
    """
    if k < 2:
        raise SplitError(f"k-fold cross-validation needs k >= 2, got {k}")
    if not 0 <= val_fraction < 1:
        raise SplitError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    labels = _labels(labels)
    values = list(groups.tolist() if isinstance(groups, np.ndarray) else groups) if groups is not None else None
    codes = _encode_groups(values, labels.size)
    excluded = set(exclude_from_test)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    forced = np.zeros(n_groups, dtype=bool)
    for code, group in zip(codes, values or ()):
        if group in excluded:
            forced[code] = True
    fold_of = _assign_free(labels, codes, k, forced, np.random.default_rng(seed))
    sample_fold = fold_of[codes] if codes.size else codes
    folds = []
    for fold in range(k):
        test = np.flatnonzero(sample_fold == fold).astype(np.int64)
        train = np.flatnonzero(sample_fold != fold).astype(np.int64)
        val = np.empty(0, np.int64)
        if val_fraction > 0 and train.size:
            sub_groups = [values[i] for i in train]  # type: ignore[index]
            inner_train, inner_val = grouped_stratified_split(
                labels[train], sub_groups, excluded, (1.0 - val_fraction, val_fraction), seed * 1009 + fold)
            train, val = train[inner_train], train[inner_val]
        folds.append(Fold(train, val, test))
    return folds


def _assign_free(labels: np.ndarray, codes: np.ndarray, k: int, forced: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Fold per group code for the groups not pinned; pinned groups get fold -1 (train in every fold)."""
    fold_of = np.full(forced.size, -1, dtype=np.int64)
    free_samples = ~forced[codes]
    if not free_samples.any():
        return fold_of
    sub_codes_raw = codes[free_samples]
    remap = {code: i for i, code in enumerate(dict.fromkeys(sub_codes_raw.tolist()))}
    sub_codes = np.array([remap[c] for c in sub_codes_raw.tolist()], dtype=np.int64)
    sub_parts = _assign_groups(labels[free_samples], sub_codes, np.full(k, 1.0 / k),
                               np.zeros(len(remap), dtype=bool), rng)
    for code, sub in remap.items():
        fold_of[code] = sub_parts[sub]
    return fold_of


# ------------------------------------------------------------------------------------- manifests and audit

@dataclass(frozen=True)
class ManifestRow:
    """One line of a split manifest: ``file`` relative to the data root (POSIX), its SHA-256, group, split, and
    the data set it comes from ("" in single-source manifests, which have no source column)."""

    file: str
    sha256: str
    group: str
    split: str
    source: str = ""


def assignment_from_indices(n: int, parts: Mapping[str, np.ndarray | Sequence[int]]) -> list[str]:
    """Split name per sample from {"train": idx, "val": idx, "test": idx}; "" for samples in no part.

    Raises :class:`SplitError` when a sample is in two parts.
    """
    names = [""] * n
    for name, indices in parts.items():
        for i in np.asarray(indices, dtype=np.int64).tolist():
            if names[i]:
                raise SplitError(f"sample {i} is in both {names[i]!r} and {name!r}")
            names[i] = name
    return names


def indices_from_assignment(assignment: Sequence[str], name: str) -> np.ndarray:
    """Sorted int64 indices of the samples assigned to split ``name``."""
    return np.array([i for i, s in enumerate(assignment) if s == name], dtype=np.int64)


def write_split_manifest(path: Path | str, files: Sequence[str], sha256s: Sequence[str],
                         groups: Sequence[Hashable], splits: Sequence[str],
                         sources: Sequence[str] | None = None) -> None:
    """Write ``file,sha256,group,split`` rows (UTF-8 CSV) atomically; all sequences have one entry per sample.
    With ``sources`` naming more than one data set, a ``source`` column follows."""
    if not len(files) == len(sha256s) == len(groups) == len(splits):
        raise SplitError("files, sha256s, groups and splits must have one entry per sample")
    columns: list[Sequence] = [files, sha256s, groups, splits]
    header = list(MANIFEST_COLUMNS)
    if sources is not None and len(set(sources)) > 1:
        if len(sources) != len(files):
            raise SplitError("sources must have one entry per sample")
        columns.append(sources)
        header.append(SOURCE_COLUMN)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in zip(*columns):
        writer.writerow([str(value) for value in row])
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())


def read_split_manifest(path: Path | str) -> list[ManifestRow]:
    """The rows of a manifest written by :func:`write_split_manifest`; SplitError names a malformed file."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            if header not in (MANIFEST_COLUMNS, (*MANIFEST_COLUMNS, SOURCE_COLUMN)):
                raise SplitError(f"{path}: expected columns {','.join(MANIFEST_COLUMNS)}[,{SOURCE_COLUMN}], "
                                 f"got {','.join(header)}")
            return [ManifestRow(r["file"], r["sha256"], r["group"], r["split"], r.get(SOURCE_COLUMN, ""))
                    for r in reader]
    except OSError as exc:
        raise SplitError(f"cannot read split manifest {path}: {exc.strerror or exc}") from exc


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "y"}


def read_audit_groups(path: Path | str, files: Sequence[str]) -> tuple[list[str], frozenset[str]]:
    """Group id per sample and the conflicting group ids, from the audit's ``groups.csv``.

    ``files``: the samples' paths relative to the data root (POSIX, e.g. "benign/benign (1).png"). Rows are
    matched by relative path, else by file name when that is unique. Every sample must be listed.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(GROUPS_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise SplitError(f"{path}: missing column(s) {', '.join(sorted(missing))} "
                                 f"(expected {','.join(GROUPS_COLUMNS)})")
            rows = list(reader)
    except OSError as exc:
        raise SplitError(f"cannot read audit groups {path}: {exc.strerror or exc}") from exc
    by_path = {PurePosixPath(r["file"].replace("\\", "/")).as_posix(): r for r in rows}
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(PurePosixPath(r["file"].replace("\\", "/")).name, []).append(r)
    groups, conflicting, unlisted = [], set(), []
    for file in files:
        row = by_path.get(PurePosixPath(file).as_posix())
        if row is None:
            candidates = by_name.get(PurePosixPath(file).name, [])
            row = candidates[0] if len(candidates) == 1 else None
        if row is None:
            unlisted.append(file)
            continue
        groups.append(row["group_id"])
        if _truthy(row["conflicting"]):
            conflicting.add(row["group_id"])
    if unlisted:
        raise SplitError(f"{path} lists no group for {len(unlisted)} image(s), e.g. {unlisted[0]!r}: "
                         "re-run the audit on this dataset")
    return groups, frozenset(conflicting)
