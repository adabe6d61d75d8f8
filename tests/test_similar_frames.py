"""Other frames of one lesion: structure agreement, candidate pairs, reviewed links joining split groups."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.datasets import write_busi
from training.config import load_config
from training.data import index_busi
from training.pipeline import make_splits, split_groups
from training.similar_frames import (
    LesionShape,
    LinksError,
    candidate_pairs,
    merge_links,
    read_links,
    structure_agrees,
)

CONFIGS = Path(__file__).parents[1] / "training" / "configs"


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def test_lesion_shape_in_relative_coordinates():
    mask = np.zeros((100, 200), bool)
    mask[20:40, 50:90] = True  # rows 20..39, columns 50..89
    shape = LesionShape.of(mask)
    assert shape.centre == pytest.approx((69.5 / 200, 29.5 / 100))
    assert shape.box == pytest.approx((40 / 200, 20 / 100)) and shape.shape.all()
    assert LesionShape.of(np.zeros((5, 5), bool)) is None


def test_structure_agrees_on_shape_position_and_size():
    base = LesionShape.of(_ellipse(200, 300, 80, 120, 20, 40))
    moved_a_little = LesionShape.of(_ellipse(200, 300, 84, 126, 20, 40))  # centre moves by (6/300, 4/200): 0.028
    assert structure_agrees(base, moved_a_little)
    moved_far = LesionShape.of(_ellipse(200, 300, 80, 150, 20, 40))  # 30 px of 300 = 0.1 of the width
    assert not structure_agrees(base, moved_far)
    larger = LesionShape.of(_ellipse(200, 300, 80, 120, 30, 60))  # 1.5 x the box: beyond 1.35
    assert not structure_agrees(base, larger)
    square = np.zeros((200, 300), bool)
    square[60:101, 80:161] = True  # same box as the ellipse, other shape: IoU on the 48 px grid ~ 0.79
    other_shape = LesionShape.of(square)
    assert structure_agrees(base, other_shape)
    assert not structure_agrees(base, other_shape, min_shape_iou=0.85)


def test_candidates_are_feature_neighbours_in_other_groups_with_agreeing_lesions():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 256))
    features[1] = features[0] + 0.05 * rng.normal(size=256)  # 0 ~ 1: near in features
    features[3] = features[2] + 0.05 * rng.normal(size=256)  # 2 ~ 3: near, but their lesions differ
    lesion = LesionShape.of(_ellipse(100, 100, 50, 50, 10, 20))
    elsewhere = LesionShape.of(_ellipse(100, 100, 20, 80, 10, 20))
    shapes = [lesion, lesion, lesion, elsewhere, lesion]
    pairs = candidate_pairs(features, ["a", "b", "c", "d", "e"], shapes, neighbours=1)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert candidate_pairs(features, ["a", "a", "c", "d", "e"], shapes, neighbours=1) == []  # already grouped
    assert candidate_pairs(features, list("abcde"), [lesion, None, lesion, elsewhere, lesion], neighbours=1) == []


def test_same_links_join_groups_and_mixed_classes_make_them_conflicting():
    files = ["b1", "b2", "m1", "m2", "n1"]
    groups = ["10", "11", "12", "12", "13"]
    classes = ["benign", "benign", "malignant", "malignant", "normal"]
    links = [("b1", "b2", "same"), ("b2", "m1", "different"), ("m2", "n1", "different")]
    merged, conflicting = merge_links(files, groups, frozenset(), classes, links)
    assert merged == ["10", "10", "12", "12", "13"] and conflicting == frozenset()
    merged, conflicting = merge_links(files, groups, frozenset({"13"}), classes, [*links, ("b2", "m2", "same")])
    assert merged == ["10", "10", "10", "10", "13"]
    assert conflicting == frozenset({"10", "13"})  # benign and malignant in one lesion; 13 stays conflicting
    with pytest.raises(LinksError, match="'x9'"):
        merge_links(files, groups, frozenset(), classes, [("b1", "x9", "same")])


def test_links_file_is_checked(tmp_path):
    good = tmp_path / "links.csv"
    good.write_text("# a comment\nfile_a,file_b,verdict\na.png,b.png,same\nc.png,d.png,different\n")
    assert read_links(good) == [("a.png", "b.png", "same"), ("c.png", "d.png", "different")]
    bad = tmp_path / "bad.csv"
    bad.write_text("file_a,file_b,verdict\na.png,b.png,maybe\n")
    with pytest.raises(LinksError, match="maybe"):
        read_links(bad)
    with pytest.raises(LinksError, match="cannot read"):
        read_links(tmp_path / "absent.csv")


def test_the_shipped_links_name_busi_files_and_both_verdicts():
    rows = read_links(CONFIGS / "busi_same_lesion.csv")
    assert {v for _, _, v in rows} == {"same", "different"}
    assert all(f.split("/")[0] in ("benign", "malignant", "normal") and f.endswith(".png") for r in rows for f in r[:2])
    # the known leak of issue #15: benign (435) is another frame of the lesion filed as benign (433) / malignant (145)
    assert ("benign/benign (433).png", "benign/benign (435).png", "same") in rows


def test_split_keeps_linked_images_on_one_side(tmp_path, monkeypatch):
    root = write_busi(tmp_path / "busi", {"benign": 8, "malignant": 6, "normal": 4})
    index = index_busi(root)
    audit = tmp_path / "audit"
    audit.mkdir()
    with (audit / "groups.csv").open("w", newline="") as handle:  # every image its own group
        writer = csv.writer(handle)
        writer.writerow(["file", "class", "group_id", "group_size", "conflicting"])
        for k, sample in enumerate(index):
            writer.writerow([sample.relpath, sample.class_name, str(k), 1, "false"])
    links = tmp_path / "links.csv"
    links.write_text("file_a,file_b,verdict\nbenign/benign (1).png,benign/benign (5).png,same\n"
                     "benign/benign (2).png,malignant/malignant (3).png,same\n")
    monkeypatch.setenv("BUSI_AUDIT", str(audit))
    config = load_config(CONFIGS / "busi_smoke.toml", [f"split.lesion_links={links}"])
    groups, conflicting = split_groups(config, index)
    position = {s.relpath: i for i, s in enumerate(index)}
    assert groups[position["benign/benign (1).png"]] == groups[position["benign/benign (5).png"]]
    joined = groups[position["malignant/malignant (3).png"]]
    assert joined == groups[position["benign/benign (2).png"]] and conflicting == frozenset({joined})
    for seed in range(5):
        parts, _ = make_splits(dataclasses.replace(config, split=dataclasses.replace(config.split, seed=seed)),
                               index, None)
        side = {i: name for name, positions in parts.items() for i in positions}
        assert side[position["benign/benign (1).png"]] == side[position["benign/benign (5).png"]]
        assert side[position["benign/benign (2).png"]] == "train"  # benign and malignant at once: training only
