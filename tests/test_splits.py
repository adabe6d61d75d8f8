"""Splits: whole near-duplicate groups only, conflicting groups never in test, stratified, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.splits import (
    SplitError,
    assignment_from_indices,
    grouped_stratified_kfold,
    grouped_stratified_split,
    indices_from_assignment,
    read_audit_groups,
    read_split_manifest,
    stratified_random_split,
    write_split_manifest,
)

FRACTIONS = (0.70, 0.15, 0.15)


@st.composite
def grouped_dataset(draw, allow_conflicts: bool = True):
    """(labels, groups, conflicting): single-class groups of 1-4 samples, plus optional cross-class groups."""
    n_groups = draw(st.integers(3, 60))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_groups, max_size=n_groups))
    classes = draw(st.lists(st.integers(0, 2), min_size=n_groups, max_size=n_groups))
    labels, groups = [], []
    for g, (size, cls) in enumerate(zip(sizes, classes)):
        labels += [cls] * size
        groups += [f"g{g}"] * size
    conflicting = set()
    if allow_conflicts:
        for g in draw(st.lists(st.integers(0, n_groups - 1), max_size=3, unique=True)):
            labels.append((classes[g] + 1) % 3)  # the same lesion filed under another class
            groups.append(f"g{g}")
            conflicting.add(f"g{g}")
    order = draw(st.permutations(range(len(labels))))
    return np.array(labels)[list(order)], np.array(groups)[list(order)], conflicting


def _groups_intact(parts, groups):
    owner = {}
    for p, part in enumerate(parts):
        for i in part:
            if owner.setdefault(groups[i], p) != p:
                return False
    return True


@settings(max_examples=60, deadline=None)
@given(data=grouped_dataset(), seed=st.integers(0, 2**31))
def test_grouped_split_keeps_groups_whole_and_conflicts_out_of_test(data, seed):
    labels, groups, conflicting = data
    parts = grouped_stratified_split(labels, groups, conflicting, FRACTIONS, seed)
    assert sorted(np.concatenate(parts).tolist()) == list(range(labels.size))  # a partition
    assert _groups_intact(parts, groups)
    assert not any(groups[i] in conflicting for i in np.concatenate(parts[1:]))  # never val, never test
    again = grouped_stratified_split(labels, groups, conflicting, FRACTIONS, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@settings(max_examples=60, deadline=None)
@given(data=grouped_dataset(allow_conflicts=False), seed=st.integers(0, 2**31))
def test_grouped_split_class_proportions_within_group_granularity(data, seed):
    labels, groups, _ = data
    parts = grouped_stratified_split(labels, groups, (), FRACTIONS, seed)
    largest = max(np.unique(groups, return_counts=True)[1])
    for cls in range(3):
        n_c = int(np.sum(labels == cls))
        for part, fraction in zip(parts, FRACTIONS):
            # The greedy never overshoots a target by a whole group, so no part misses it by (P-1) groups.
            assert abs(int(np.sum(labels[part] == cls)) - fraction * n_c) < (len(FRACTIONS) - 1) * largest + 1e-9


@settings(max_examples=40, deadline=None)
@given(data=grouped_dataset(), k=st.integers(2, 6), seed=st.integers(0, 2**31), with_val=st.booleans())
def test_grouped_kfold_tests_every_sample_once(data, k, seed, with_val):
    labels, groups, conflicting = data
    folds = grouped_stratified_kfold(labels, groups, k, seed, exclude_from_test=conflicting,
                                     val_fraction=0.2 if with_val else 0.0)
    assert len(folds) == k
    tested = np.concatenate([f.test for f in folds])
    eligible = [i for i in range(labels.size) if groups[i] not in conflicting]
    assert sorted(tested.tolist()) == eligible  # each eligible sample in exactly one test fold
    for fold in folds:
        assert sorted(np.concatenate(fold).tolist()) == list(range(labels.size))
        assert _groups_intact(fold, groups)
        assert not any(groups[i] in conflicting for i in np.concatenate([fold.val, fold.test]))
        if not with_val:
            assert fold.val.size == 0
    again = grouped_stratified_kfold(labels, groups, k, seed, exclude_from_test=conflicting,
                                     val_fraction=0.2 if with_val else 0.0)
    assert all(np.array_equal(a, b) for f, g in zip(folds, again) for a, b in zip(f, g))


def test_busi_sized_grouped_split_is_close_to_the_fractions():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], [437, 210, 133])
    groups = np.arange(labels.size)
    for start in rng.choice(np.arange(0, 770, 5), 60, replace=False):  # near-duplicate pairs and triples
        groups[start + 1: start + rng.integers(2, 4)] = groups[start]
    groups[3], conflicting = groups[500], {groups[500]}  # a benign image that is also a malignant one
    parts = grouped_stratified_split(labels, groups, conflicting, FRACTIONS, seed=0)
    assert 3 in parts[0] and 500 in parts[0]
    for part, fraction in zip(parts, FRACTIONS):
        per_class = np.bincount(labels[part], minlength=3) / np.bincount(labels)
        assert np.all(np.abs(per_class - fraction) < 0.015), per_class
    folds = grouped_stratified_kfold(labels, groups, 5, seed=0, exclude_from_test=conflicting)
    for fold in folds:
        per_class = np.bincount(labels[fold.test], minlength=3) / np.bincount(labels)
        assert np.all(np.abs(per_class - 0.2) < 0.015), per_class


def test_grouped_functions_refuse_without_groups():
    labels = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(SplitError, match="groups.*refusing to fall back to a random split"):
        grouped_stratified_split(labels, None, (), FRACTIONS, 0)
    with pytest.raises(SplitError, match="refusing"):
        grouped_stratified_kfold(labels, None, 3, 0)
    with pytest.raises(SplitError, match="every sample needs exactly one group"):
        grouped_stratified_split(labels, ["a", "b"], (), FRACTIONS, 0)
    with pytest.raises(SplitError, match="fractions"):
        grouped_stratified_split(labels, list("abcdef"), (), (0.5, 0.6), 0)


def test_stratified_random_split_counts_and_determinism():
    labels = np.repeat([0, 1, 2], [437, 210, 133])
    train, val, test = stratified_random_split(labels, FRACTIONS, seed=42)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(labels.size))
    assert np.bincount(labels[train]).tolist() == [306, 147, 93]
    assert np.bincount(labels[val]).tolist() == [66, 32, 20]
    assert np.bincount(labels[test]).tolist() == [65, 31, 20]
    again = stratified_random_split(labels, FRACTIONS, seed=42)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = stratified_random_split(labels, FRACTIONS, seed=43)
    assert not np.array_equal(test, other[2])


def test_split_manifest_round_trip(tmp_path):
    files = ["benign/benign (1).png", "malignant/malignant (1).png", "normal/normal, 1.png"]
    parts = {"train": [0], "val": [2], "test": [1]}
    assignment = assignment_from_indices(3, parts)
    assert assignment == ["train", "test", "val"]
    assert indices_from_assignment(assignment, "test").tolist() == [1]
    path = tmp_path / "split.csv"
    write_split_manifest(path, files, ["aa", "bb", "cc"], ["g1", "g2", "g3"], assignment)
    rows = read_split_manifest(path)
    assert [(r.file, r.sha256, r.group, r.split) for r in rows] == [
        (files[0], "aa", "g1", "train"), (files[1], "bb", "g2", "test"), (files[2], "cc", "g3", "val")]
    with pytest.raises(SplitError, match="both"):
        assignment_from_indices(3, {"train": [0, 1], "test": [1]})


def test_read_audit_groups_matches_by_path_or_unique_name(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text(
        "file,class,group_id,group_size,conflicting\n"
        "benign/benign (1).png,benign,0,2,1\n"
        "malignant (4).png,malignant,0,2,true\n"
        "normal/normal (1).png,normal,7,1,0\n"
    )
    files = ["benign/benign (1).png", "malignant/malignant (4).png", "normal/normal (1).png"]
    groups, conflicting = read_audit_groups(path, files)
    assert groups == ["0", "0", "7"] and conflicting == {"0"}
    with pytest.raises(SplitError, match="no group for 1 image"):
        read_audit_groups(path, files + ["normal/normal (2).png"])
    (tmp_path / "bad.csv").write_text("file,group\n")
    with pytest.raises(SplitError, match="missing column"):
        read_audit_groups(tmp_path / "bad.csv", files)
