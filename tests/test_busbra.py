"""BUS-BRA as a second ultrasound source: bus_data.csv checks, the index, two-source splits that keep patients
and near-duplicate groups whole, and the partial-label loss that keeps "normal" a BUSI-only lesson."""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.busbra import PUBLISHED_COUNTS, BusbraError, counts, read_bus_data
from training.config import load_config
from training.data import index_busbra, index_busi, index_dataset
from training.partial_labels import PartialLabelCrossEntropy, encode_targets, label_sets
from training.pipeline import make_splits
from training.splits import SplitError, read_split_manifest, write_split_manifest

from tests.helpers.datasets import DEVICES, write_busbra, write_busi

@pytest.fixture(scope="module")
def busbra_root(tmp_path_factory) -> Path:
    return write_busbra(tmp_path_factory.mktemp("busbra"))


@pytest.fixture(scope="module")
def busi_root(tmp_path_factory) -> Path:
    return write_busi(tmp_path_factory.mktemp("busi"), {"benign": 8, "malignant": 6, "normal": 6})


def test_bus_data_rows_patients_and_masks(busbra_root):
    images = read_bus_data(busbra_root)
    assert len(images) == 20  # 8 patients with two views, 4 with one
    first = images[0]
    assert (first.id, first.case, first.patient, first.pathology) == ("bus_0001-l", 1, "case-0001", "malignant")
    assert first.mask_relpath == "Masks/mask_0001-l.png" and first.scanner == "GE Logiq 5"
    assert counts(images) == {"images": 20, "patients": 12, "benign": 10, "malignant": 10}


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_listed_file_missing_or_an_unlisted_image_is_an_error(busbra_root, tmp_path):
    missing_mask = _copy(busbra_root, tmp_path / "a")
    (missing_mask / "Masks" / "mask_0002-r.png").unlink()
    with pytest.raises(BusbraError, match="mask_0002-r.png"):
        read_bus_data(missing_mask)
    extra = _copy(busbra_root, tmp_path / "b")
    Image.new("L", (8, 8)).save(extra / "Images" / "bus_9999-l.png")
    with pytest.raises(BusbraError, match="not listed.*bus_9999-l.png"):
        read_bus_data(extra)


def test_unknown_pathology_and_repeated_id_are_errors(busbra_root, tmp_path):
    for name, edit, message in (("p", lambda r: r[1].__setitem__(3, "normal"), "neither benign nor malignant"),
                                ("d", lambda r: r.append(list(r[1])), "listed twice")):
        folder = _copy(busbra_root, tmp_path / name)
        rows = list(csv.reader((folder / "bus_data.csv").open()))
        edit(rows)
        with (folder / "bus_data.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
        with pytest.raises(BusbraError, match=message):
            read_bus_data(folder)


def test_index_keeps_classes_patients_and_scanners(busbra_root):
    index = index_busbra(busbra_root, "three-class")
    assert index.class_counts() == {"benign": 10, "malignant": 10, "normal": 0}
    assert {s.source for s in index} == {"bus-bra"} and index[0].patient == "case-0001"
    assert index[0].mask_paths == (busbra_root / "Masks" / "mask_0001-l.png",)
    assert {s.device for s in index} == {"GE Logiq 7", "GE Logiq 5", "Toshiba Aplio 300"}
    assert index_busbra(busbra_root, "benign-vs-malignant").class_names == ("benign", "malignant")


def test_two_sources_are_prefixed_and_split_source_by_source(busi_root, busbra_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    config = load_config(Path(__file__).parents[1] / "training/configs/busi_busbra.toml",
                         ["split.strategy=stratified_random"])
    index = index_dataset("busi+bus-bra", None, "three-class", roots={"busi": busi_root, "bus-bra": busbra_root})
    assert len(index) == 20 + 20 and dict(index.roots)["bus-bra"] == str(busbra_root)
    assert index.relpaths[0] == "busi/benign/benign (1).png" and index.relpaths[-1] == "bus-bra/Images/bus_0012-s.png"
    assert index.manifest_sha256() != index_busi(busi_root).manifest_sha256()
    # a source is split exactly as it would be alone
    alone = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset="busi"))
    busi_alone, _ = make_splits(alone, index_dataset("busi", busi_root, "three-class"), None)
    both, _ = make_splits(config, index, None)
    for name in ("train", "val", "test"):
        assert np.array_equal(both[name][both[name] < 20], busi_alone[name])


def test_grouped_two_source_split_never_separates_a_patient_or_a_group(busi_root, busbra_root, tmp_path,
                                                                       monkeypatch):
    # BUSI's audit groups: images 1 and 2 of each class are one lesion
    audit = tmp_path / "audit"
    audit.mkdir()
    busi = index_busi(busi_root)
    with (audit / "groups.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "class", "group_id", "group_size", "conflicting"])
        for k, sample in enumerate(busi):
            stem_number = int(sample.path.stem.split("(")[1].rstrip(")"))
            group = f"{sample.class_name}-pair" if stem_number <= 2 else f"single-{k}"
            writer.writerow([sample.relpath, sample.class_name, group, 2 if stem_number <= 2 else 1, "false"])
    monkeypatch.setenv("BUSI_AUDIT", str(audit))
    # BUS-BRA's audit: case 1's left view repeats case 3's only view (both malignant), and case 2's left view
    # (benign) repeats case 5's (malignant): one scan filed under two patients and two pathologies
    busbra_groups = tmp_path / "busbra-groups.csv"
    near = {"Images/bus_0001-l.png": "g13", "Images/bus_0003-s.png": "g13",
            "Images/bus_0002-l.png": "g25", "Images/bus_0005-l.png": "g25"}
    with busbra_groups.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "class", "group_id", "group_size", "conflicting"])
        for k, sample in enumerate(index_busbra(busbra_root, "three-class")):
            group = near.get(sample.relpath, f"single-{k}")
            writer.writerow([sample.relpath, sample.class_name, group, 2 if group != f"single-{k}" else 1,
                             "true" if group == "g25" else "false"])
    # the shipped lesion links name real BUSI files, which this synthetic folder does not have
    config = load_config(Path(__file__).parents[1] / "training/configs/busi_busbra.toml",
                         ["split.lesion_links=", f"split.join_patients={busbra_groups}"])
    index = index_dataset("busi+bus-bra", None, "three-class", roots={"busi": busi_root, "bus-bra": busbra_root})
    for seed in range(4):
        config = dataclasses.replace(config, split=dataclasses.replace(config.split, seed=seed))
        parts, groups = make_splits(config, index, None)
        side = {}
        for name, positions in parts.items():
            for i in positions:
                assert side.setdefault(groups[i], name) == name, f"group {groups[i]} on two sides (seed {seed})"
        assert groups[0] == "busi:benign-pair" and groups[-1] == "bus-bra:case-0012"
        group_of = dict(zip(index.relpaths, groups))
        # patients 1 and 3 are one group (all three images), 2 and 5 another, which never reaches val or test
        assert {group_of[f"bus-bra/Images/bus_000{k}.png"] for k in ("1-l", "1-r", "3-s")} == {"bus-bra:case-0001"}
        assert {group_of[f"bus-bra/Images/bus_000{k}.png"] for k in ("2-l", "2-r", "5-l", "5-r")} == \
            {"bus-bra:case-0002"}
        assert side["bus-bra:case-0002"] == "train"
        assert group_of["bus-bra/Images/bus_0004-l.png"] == "bus-bra:case-0004"
        assert side["bus-bra:case-0001"] in ("train", "val", "test")
        sources = index.sources
        for name in ("train", "val", "test"):
            assert {"busi", "bus-bra"} <= set(sources[parts[name]])


def test_joining_patients_without_the_audit_names_the_command_to_run(busi_root, busbra_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_AUDIT", str(tmp_path / "no-audit"))
    config = load_config(Path(__file__).parents[1] / "training/configs/busi_busbra.toml",
                         ["split.lesion_links=", f"split.join_patients={tmp_path / 'missing.csv'}"])
    index = index_dataset("bus-bra", busbra_root, "three-class")
    with pytest.raises(SplitError, match="busi-train audit --dataset bus-bra"):
        make_splits(config, index, None)


def test_manifest_lists_the_source_of_every_image(tmp_path):
    path = tmp_path / "split_manifest.csv"
    write_split_manifest(path, ["busi/a.png", "bus-bra/b.png"], ["1" * 64, "2" * 64], ["busi:0", "bus-bra:case-0001"],
                         ["train", "test"], sources=["busi", "bus-bra"])
    rows = read_split_manifest(path)
    assert [(r.file, r.source, r.split) for r in rows] == [("busi/a.png", "busi", "train"),
                                                           ("bus-bra/b.png", "bus-bra", "test")]
    write_split_manifest(path, ["a.png"], ["1" * 64], ["0"], ["train"], sources=["busi"])
    assert path.read_text().splitlines()[0] == "file,sha256,group,split"  # one source: the old format


# ------------------------------------------------------------------------------------------ partial labels

def test_label_sets_exclude_normal_for_busbra_only():
    codes, allowed = label_sets(["busi", "bus-bra", "busi", "bus-bra"], ("benign", "malignant", "normal"))
    assert codes.tolist() == [0, 1, 0, 1]
    assert allowed.tolist() == [[True, True, True], [True, True, False]]
    codes, allowed = label_sets(["busi", "bus-bra"], ("benign", "malignant"))
    assert codes.tolist() == [0, 0] and allowed.shape == (1, 2)  # nothing to restrict in benign vs malignant
    assert encode_targets(np.array([1, 0]), np.array([0, 1]), 3).tolist() == [1, 3]


def test_partial_label_loss_matches_torch_and_a_hand_computed_value():
    allowed = np.array([[True, True, True], [True, True, False]])
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.3, 1.2, 4.0]])
    plain = torch.tensor([0, 2])
    for smoothing in (0.0, 0.1):
        ours = PartialLabelCrossEntropy(allowed, label_smoothing=smoothing)(logits, plain)
        reference = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, plain)
        assert ours.item() == pytest.approx(reference.item(), abs=1e-6)
    weight = torch.tensor([1.0, 2.0, 0.5])
    ours = PartialLabelCrossEntropy(allowed, weight=weight)(logits, plain)
    assert ours.item() == pytest.approx(torch.nn.CrossEntropyLoss(weight=weight)(logits, plain).item(), abs=1e-6)

    # a BUS-BRA malignant image (target 1 + 3 * 1): softmax over benign and malignant only, normal ignored.
    # By hand: -log(e^1.2 / (e^0.3 + e^1.2)) = log(1 + e^-0.9) = 0.341154; with smoothing 0.1 over the two
    # allowed classes: 0.95 * 0.341154 + 0.05 * (0.341154 + 0.9) = 0.386154.
    target = torch.tensor([1 + 3])
    assert PartialLabelCrossEntropy(allowed)(logits[1:], target).item() == pytest.approx(0.341154, abs=1e-5)
    smoothed = PartialLabelCrossEntropy(allowed, label_smoothing=0.1)(logits[1:], target).item()
    assert smoothed == pytest.approx(0.386154, abs=1e-5)
    # and the normal logit gets no gradient from it, however large
    z = logits[1:].clone().requires_grad_(True)
    PartialLabelCrossEntropy(allowed, label_smoothing=0.1)(z, target).backward()
    assert z.grad[0, 2].item() == 0.0 and z.grad[0, 1].item() < 0 < z.grad[0, 0].item()


# ------------------------------------------------------------------------------------------ the real data

def _real_busbra() -> Path | None:
    candidates = [os.environ.get("BUSBRA_DATA", ""), str(Path(__file__).parents[2] / "data" / "BUSBRA")]
    return next((Path(c) for c in candidates if c and (Path(c) / "bus_data.csv").is_file()), None)


@pytest.mark.skipif(_real_busbra() is None,
                    reason="BUS-BRA not present (set BUSBRA_DATA; see README, 'Pointing it at BUS-BRA')")
def test_real_busbra_has_the_published_counts():
    images = read_bus_data(_real_busbra())
    assert counts(images) == PUBLISHED_COUNTS
    by_case: dict[int, set[str]] = {}
    for image in images:
        by_case.setdefault(image.case, set()).add(image.pathology)
    assert all(len(p) == 1 for p in by_case.values())  # a patient's images share one pathology


def test_audit_of_both_sources_finds_a_copy_across_them(busi_root, busbra_root, tmp_path):
    from training.audit import index_items, run_audit

    busbra = _copy(busbra_root, tmp_path / "busbra")
    # BUS-BRA "patient 99" is a re-encoded copy of a BUSI image: the audit must group them across the sources
    pixels = np.asarray(Image.open(busi_root / "benign" / "benign (3).png").convert("L"))
    Image.fromarray(pixels).save(busbra / "Images" / "bus_0099-s.png", compress_level=9)
    Image.fromarray(np.zeros_like(pixels)).save(busbra / "Masks" / "mask_0099-s.png")
    with (busbra / "bus_data.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(["bus_0099-s", 99, "fibroadenoma", "benign", 3, DEVICES[0], 1, 1, "single", ""])
    index = index_dataset("busi+bus-bra", None, "three-class", roots={"busi": busi_root, "bus-bra": busbra})
    result = run_audit(index.root, tmp_path / "audit", progress=False, items=index_items(index), title="busi+bus-bra")
    pair = {(result.entries[p.a].relative, result.entries[p.b].relative, p.kind) for p in result.pairs}
    assert ("busi/benign/benign (3).png", "bus-bra/Images/bus_0099-s.png", "exact") in pair
    manifest = {row["file"]: row for row in csv.DictReader((tmp_path / "audit" / "manifest.csv").open())}
    assert manifest["bus-bra/Images/bus_0001-l.png"]["mask_files"] == "bus-bra/Masks/mask_0001-l.png"
    assert manifest["busi/malignant/malignant (1).png"]["mask_files"] == (
        "busi/malignant/malignant (1)_mask.png;busi/malignant/malignant (1)_mask_1.png")
    assert (tmp_path / "audit" / "summary.md").read_text().startswith("# Data audit: busi+bus-bra")
