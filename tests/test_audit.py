"""busi-train audit: duplicates, near-duplicates, groups, burned-in annotations, outputs (synthetic and real)."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from busi_viewer.core.phantoms import draw_caliper, make_phantom, plant_duplicates, write_phantom_dataset
from training import near_duplicates as nd
from training.annotations import colour_info, detect_calipers, detect_text
from training.audit import run_audit

COUNTS = {"benign": 10, "malignant": 10, "normal": 10}
OUTPUTS = ("manifest.csv", "duplicate_pairs.csv", "review_pairs.csv", "groups.csv", "annotations.csv", "summary.md",
           "duplicate_examples.png", "caliper_examples.png")


def _hard_lookalike(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Phantom A and an image C with A's low frequencies but another phantom's structure: hashes close, not a copy."""
    a, _ = make_phantom(seed, "benign")
    b, _ = make_phantom(seed + 50, "benign")
    low = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), 6)  # noqa: E731
    c = np.clip(low(a) + b.astype(np.float32) - low(b), 0, 255).astype(np.uint8)
    return a, c


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A planted phantom dataset (30 + 5 images, 128x160), one look-alike pair, and its audit."""
    root = tmp_path_factory.mktemp("phantoms")
    info = write_phantom_dataset(root, COUNTS, seed=0)
    truth = plant_duplicates(root, seed=0)
    a, c = _hard_lookalike(1003)  # anatomy seeds of the dataset are 1..13: this one is new
    for name, image in (("normal (11).png", a), ("normal (12).png", c)):
        cv2.imwrite(str(root / "normal" / name), image)
        cv2.imwrite(str(root / "normal" / name.replace(".png", "_mask.png")), np.zeros_like(image))
    truth["lookalike"] = ("normal/normal (11).png", "normal/normal (12).png")
    out = tmp_path_factory.mktemp("audit")
    result = run_audit(root, out, progress=False)
    return root, info, truth, result


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------- synthetic audit
def test_every_planted_copy_is_grouped_with_its_source(synthetic):
    _, _, truth, result = synthetic
    kinds = {}
    for p in result.pairs:
        kinds[frozenset((result.entries[p.a].relative, result.entries[p.b].relative))] = p.kind
    for kind, expected in (("exact", "exact"), ("conflict", "exact"), ("resized", "near"), ("recropped", "near"),
                           ("frame", "near")):
        (source, copy), = truth[kind]
        assert result.group_of(source) == result.group_of(copy), kind
        assert kinds.get(frozenset((source, copy))) == expected, kind


def test_no_false_groups_between_different_phantoms(synthetic):
    _, _, truth, result = synthetic
    planted = {frozenset(pair) for kind in ("exact", "resized", "recropped", "frame", "conflict")
               for pair in truth[kind]}
    multi = [m for m in result.groups.values() if len(m) > 1]
    assert {frozenset(result.entries[i].relative for i in m) for m in multi} == planted
    assert len(result.groups) == len(result.entries) - len(planted)


def test_verification_is_what_rejects_lookalikes(synthetic):
    """The look-alike pair is a hash candidate (so hashing alone would group it); only verification stops it."""
    _, _, truth, result = synthetic
    a, c = (result.index_of(x) for x in truth["lookalike"])
    entries = result.entries
    assert (entries[a].phash ^ entries[c].phash).bit_count() <= nd.CANDIDATE_MAX_PHASH
    assert result.group_ids[a] != result.group_ids[c]
    # And every candidate pair of two different phantoms exists and is rejected, not just never compared.
    phashes = np.array([e.phash for e in entries], np.uint64)
    candidates = nd.candidate_pairs(phashes, np.array([e.dhash for e in entries], np.uint64))
    assert len(candidates) > len(result.pairs) + 20


def test_cross_class_copy_is_a_conflicting_group(synthetic):
    _, _, truth, result = synthetic
    (source, copy), = truth["conflict"]
    group = result.group_of(source)
    assert result.conflicting_groups == [group]
    rows = {r["file"]: r for r in _read(result.out_dir / "groups.csv")}
    assert rows[source]["conflicting"] == rows[copy]["conflicting"] == "true"
    assert rows[source]["group_classes"] == "benign+malignant"
    assert sum(r["conflicting"] == "true" for r in rows.values()) == 2


def test_calipers_and_colour_are_flagged_only_where_planted(synthetic):
    _, _, truth, result = synthetic
    rows = {r["file"]: r for r in _read(result.out_dir / "annotations.csv")}
    for relative, count in truth["calipers"].items():
        assert rows[relative]["calipers"] == "true"
        assert 3 <= int(rows[relative]["caliper_count"]) <= count, relative
    clean = [r for f, r in rows.items() if f not in truth["calipers"]]
    assert clean and all(r["calipers"] == "false" for r in clean)
    assert [f for f, r in rows.items() if r["colour"] == "true"] == truth["colour"]
    assert rows[truth["colour"][0]]["colour_box"] == "true"
    assert not any(r["text"] == "true" for r in rows.values())


def test_outputs_exist_and_are_well_formed(synthetic):
    root, _, _, result = synthetic
    n = len(result.entries)
    assert n == sum(COUNTS.values()) + 5 + 2
    for name in OUTPUTS:
        assert (result.out_dir / name).is_file() and result.files[name] == result.out_dir / name
    manifest = _read(result.out_dir / "manifest.csv")
    assert len(manifest) == n
    assert {r["mode"] for r in manifest} == {"L", "RGB"}
    for row in manifest:
        assert row["sha256"] == hashlib.sha256((root / row["file"]).read_bytes()).hexdigest()
        assert row["mask_files"] == row["file"].replace(".png", "_mask.png")
        assert row["mask_empty"] == ("true" if row["class"] == "normal" else "false")
        assert int(row["width"]) > 0 and int(row["height"]) > 0 and not row["error"]
    groups = _read(result.out_dir / "groups.csv")
    assert [r["file"] for r in groups] == [r["file"] for r in manifest]
    sizes = {}
    for r in groups:
        sizes.setdefault(r["group_id"], []).append(r["file"])
    assert all(int(r["group_size"]) == len(sizes[r["group_id"]]) for r in groups)
    pairs = _read(result.out_dir / "duplicate_pairs.csv")
    assert {r["kind"] for r in pairs} == {"exact", "near"} and len(pairs) == 5
    assert all(float(r["score"]) >= nd.NEAR_MIN_SCORE for r in pairs)
    for name in ("duplicate_examples.png", "caliper_examples.png"):
        image = cv2.imread(str(result.out_dir / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
    summary = (result.out_dir / "summary.md").read_text(encoding="utf-8")
    assert "Conflicting groups (one scan in several class folders): 1" in summary
    assert "benign/benign (3).png" in summary and "Exact duplicate groups" in summary


def test_reencoded_png_counts_as_exact(tmp_path):
    image, mask = make_phantom(1, "benign", (64, 80))
    (tmp_path / "benign").mkdir()
    cv2.imwrite(str(tmp_path / "benign" / "benign (1).png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    cv2.imwrite(str(tmp_path / "benign" / "benign (2).png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    other, _ = make_phantom(2, "benign", (64, 80))
    cv2.imwrite(str(tmp_path / "benign" / "benign (3).png"), other)
    for n in (1, 2, 3):
        cv2.imwrite(str(tmp_path / "benign" / f"benign ({n})_mask.png"), mask.astype(np.uint8) * 255)
    result = run_audit(tmp_path, tmp_path / "out", progress=False)
    a, b = result.entries[0], result.entries[1]
    assert a.sha256 != b.sha256 and a.pixel_sha256 == b.pixel_sha256
    assert [(p.a, p.b, p.kind) for p in result.pairs] == [(0, 1, "exact")]


def test_unreadable_image_is_reported_not_fatal(tmp_path):
    write_phantom_dataset(tmp_path, {"benign": 2, "normal": 1}, seed=3, size=(64, 80))
    (tmp_path / "benign" / "benign (3).png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # truncated
    result = run_audit(tmp_path, tmp_path / "out", progress=False)
    rows = {r["file"]: r for r in _read(tmp_path / "out" / "manifest.csv")}
    assert len(rows) == 4 and rows["benign/benign (3).png"]["error"]
    assert not rows["benign/benign (1).png"]["error"]
    assert len(result.groups) == 4 and result.pairs == []


def test_empty_folder_gives_empty_tables(tmp_path):
    result = run_audit(tmp_path, tmp_path / "out", progress=False)
    assert result.entries == [] and _read(tmp_path / "out" / "groups.csv") == []
    assert (tmp_path / "out" / "duplicate_examples.png").is_file()


def test_missing_folder_raises(tmp_path):
    with pytest.raises(ValueError):
        run_audit(tmp_path / "nope", tmp_path / "out", progress=False)


# ------------------------------------------------------------------------------------------- building blocks
def test_hashes_and_hamming():
    image, _ = make_phantom(4, "malignant")
    smaller = cv2.resize(image, (128, 102), interpolation=cv2.INTER_AREA)
    other, _ = make_phantom(5, "normal")
    hashes = np.array([nd.phash(image), nd.phash(smaller), nd.phash(other)], np.uint64)
    distances = nd.hamming_matrix(hashes)
    assert distances[0, 0] == 0 and distances[0, 1] <= 4 and distances[0, 2] > 12
    assert distances[0, 2] == (int(hashes[0]) ^ int(hashes[2])).bit_count()
    assert nd.dhash(image) == nd.dhash(image.copy())


def test_candidates_include_nearest_neighbours():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=20, dtype=np.uint64)
    pairs = nd.candidate_pairs(hashes, hashes, neighbours=2, max_phash=0)
    assert all(i < j for i, j, _, _ in pairs)
    found = {(i, j) for i, j, _, _ in pairs}
    d = nd.hamming_matrix(hashes).astype(float)
    np.fill_diagonal(d, np.inf)
    for i in range(20):
        j = int(np.argmin(d[i]))
        assert (min(i, j), max(i, j)) in found
    assert nd.candidate_pairs(hashes[:1], hashes[:1]) == []
    # two images are always each other's nearest neighbour: a folder of two is checked too
    a, b = np.array([0b1011, 0b0110], dtype=np.uint64), np.array([0b1, 0b11], dtype=np.uint64)
    assert nd.candidate_pairs(a, b, neighbours=1, max_phash=0) == [(0, 1, 3, 1)]  # popcounts of 1101 and 10


def test_decision_rule_thresholds_by_hand():
    """The grouping rule in numbers written here, not read from the module: near-duplicate from a median cell NCC
    of 0.46 on; 0.38-0.46 only with the layout agreeing (pHash within 18 bits), else listed for review; below 0.38
    or with less than 60 % shared field of view, nothing. Moving any threshold fails one line below."""
    v = lambda score, overlap=0.9: nd.Verification(score, score, 1.0, overlap)  # noqa: E731
    assert nd.decide(v(0.9), 30) == "near"
    assert nd.decide(v(0.465), 30) == "near"
    assert nd.decide(v(0.455), 30) == "review"
    assert nd.decide(v(0.42), 18) == "near"
    assert nd.decide(v(0.42), 19) == "review"
    assert nd.decide(v(0.385), 30) == "review"
    assert nd.decide(v(0.375), 0) is None
    assert nd.decide(v(0.9, overlap=0.61), 30) == "near"
    assert nd.decide(v(0.9, overlap=0.59), 0) is None  # a narrow crop matched inside a wide image
    # each threshold itself belongs to the side above it
    assert nd.decide(v(0.46), 30) == "near" and nd.decide(v(0.38), 30) == "review"
    assert nd.decide(v(0.9, overlap=0.6), 30) == "near"


def test_nearest_neighbour_is_by_phash_then_dhash():
    """Image 0's one nearest neighbour: by pHash distance first (1 beats 2, whatever dHash says), and dHash only
    between equal pHash distances."""
    phashes = np.array([0b000, 0b001, 0b011], dtype=np.uint64)  # pHash distances from 0: 1 and 2
    dhashes = np.array([0, 0b1111111111, 0], dtype=np.uint64)  # dHash distances from 0: 10 and 0
    pairs = {(i, j) for i, j, _, _ in nd.candidate_pairs(phashes, dhashes, neighbours=1, max_phash=0)}
    assert (0, 1) in pairs and (0, 2) not in pairs
    # pHash ties everywhere (0-1, 0-2, 1-3 one bit apart): dHash decides, 0 -> 2 and 1 -> 3, never 0 - 1
    tied = np.array([0b0000, 0b0001, 0b0010, 0b1001], dtype=np.uint64)
    ten = 0b1111111111
    pairs = {(i, j) for i, j, _, _ in nd.candidate_pairs(tied, np.array([0, ten, 0, ten], dtype=np.uint64),
                                                         neighbours=1, max_phash=0)}
    assert pairs == {(0, 2), (1, 3)}
    # and every pair within max_phash bits is verified, whatever the neighbour ranks
    far = np.array([0, 0b111, 0b111 << 10, 0b111 << 20], dtype=np.uint64)  # 3, 6, 6 bits from 0; 6 between others
    within = {(i, j) for i, j, _, _ in nd.candidate_pairs(far, far, neighbours=1, max_phash=6)}
    assert within == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}


def _other_frame(gain_amplitude: float, gain_base: float, centre: tuple[float, float], noise: float) -> np.ndarray:
    """Frame 2 of phantom 9's sweep (3 px on) under another gain map, a bright blob at ``centre`` (another layout
    for the hashes), plus speckle-like noise (lower local agreement)."""
    frame, _ = make_phantom(9, "benign", frame=2, shift=(3, 2))
    h, w = frame.shape
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-(((xx - centre[0] * w) / (0.3 * w)) ** 2 + ((yy - centre[1] * h) / (0.3 * h)) ** 2))
    noisy = frame * (gain_base + gain_amplitude * blob) + np.random.default_rng(1).normal(0, noise, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


# (other frame, expected grouping, what it pins): scores and pHash distances measured once and written here
SAME_LESION_PAIRS = [
    pytest.param(_other_frame(1.2, 0.3, (0.8, 0.8), 45), True, id="score-0.53-layout-22-bits-must-group"),
    pytest.param(_other_frame(1.2, 0.5, (0.8, 0.2), 85), True, id="score-0.44-layout-18-bits-must-group"),
    pytest.param(_other_frame(1.2, 0.3, (0.8, 0.8), 60), False, id="score-0.43-layout-22-bits-review-only"),
]


@pytest.mark.parametrize(("other_frame", "grouped"), SAME_LESION_PAIRS)
def test_frames_of_one_lesion_in_the_threshold_bands(tmp_path, other_frame, grouped):
    """Through the whole audit: the first pair groups on local agreement alone (raising the 0.46 threshold to
    0.55 or more ungroups it), the second only because its layout agrees (lowering the 18-bit limit ungroups it),
    the third is a near miss that is listed for review but never grouped."""
    source, _ = make_phantom(9, "benign")
    folder = tmp_path / "data" / "benign"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "benign (1).png"), source)
    cv2.imwrite(str(folder / "benign (2).png"), other_frame)
    for number, seed in ((3, 20), (4, 21)):  # unrelated images: the candidates are nearest neighbours
        cv2.imwrite(str(folder / f"benign ({number}).png"), make_phantom(seed, "benign")[0])
    result = run_audit(tmp_path / "data", tmp_path / "audit", progress=False)
    groups = {r["file"]: r["group_id"] for r in _read(result.out_dir / "groups.csv")}
    assert (groups["benign/benign (1).png"] == groups["benign/benign (2).png"]) is grouped
    assert len(set(groups.values())) == (3 if grouped else 4)
    review = _read(result.out_dir / "review_pairs.csv")
    assert len(review) == (0 if grouped else 1)


def test_connected_groups():
    assert nd.connected_groups(6, [(4, 5), (1, 3), (3, 4)]) == [0, 1, 2, 1, 1, 1]
    assert nd.connected_groups(3, []) == [0, 1, 2]


def test_verification_accepts_copies_and_frames_and_rejects_strangers():
    image, _ = make_phantom(9, "benign")
    f = nd.match_features(image)
    h, w = image.shape
    resized = cv2.resize(image, (round(w * 0.8), round(h * 0.8)), interpolation=cv2.INTER_AREA)
    cropped = image[4:h - 3, 6:w - 5]
    frame, _ = make_phantom(9, "benign", frame=2, shift=(3, 2))
    distance = lambda x: (nd.phash(image) ^ nd.phash(x)).bit_count()  # noqa: E731
    for copy, scale in ((resized, 0.8), (cropped, 1.0), (frame, 1.0)):
        result = nd.verify_pair(f, nd.match_features(copy))
        assert nd.decide(result, distance(copy)) == "near" and result.score > 0.7, result
        assert result.scale == pytest.approx(scale, abs=0.04)
    for seed in range(20, 24):
        stranger, _ = make_phantom(seed, "benign")
        result = nd.verify_pair(f, nd.match_features(stranger))
        assert nd.decide(result, 0) is None and result.score < 0.35, (seed, result)  # even with equal hashes
    a, c = _hard_lookalike(1005)
    assert nd.verify_pair(nd.match_features(a), nd.match_features(c)).score < 0.35
    flat = np.full((100, 100), 7, np.uint8)
    assert nd.verify_pair(f, nd.match_features(flat)).score <= 0  # nothing agrees with a blank image


def test_a_crop_offset_along_one_axis_only_still_aligns():
    """A copy cropped 40 px on the left only: its content sits 40 px right in the original and 0 px down. An
    alignment that mixed up the two offsets would score the pair as strangers."""
    image, _ = make_phantom(9, "benign", size=(160, 200))
    for cropped in (image[:, 40:], image[30:, :]):
        result = nd.verify_pair(nd.match_features(image), nd.match_features(cropped))
        assert result.score > 0.7 and result.overlap > 0.6, result
        assert nd.decide(result, 30) == "near"


def test_caliper_detector_finds_crosses_but_not_letters():
    image, _ = make_phantom(11, "normal", (200, 260))
    assert detect_calipers(image) == []
    marked = image.copy()
    for x, y in ((60, 80), (180, 120)):
        draw_caliper(marked, x, y, arm=7, thickness=2)
    found = detect_calipers(marked)
    assert len(found) == 2 and all(abs(fx - x) <= 1 and abs(fy - y) <= 1
                                   for (fx, fy), (x, y) in zip(found, ((60, 80), (180, 120))))
    cut = image.copy()
    draw_caliper(cut, 2, 100, arm=7)  # half outside the crop: not enough visible arms
    assert detect_calipers(cut) == []
    lettered = image.copy()
    cv2.putText(lettered, "ltc RT AXILLA 3-4 +", (20, 180), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)
    lines = detect_text(lettered)
    assert len(lines) >= 1 and detect_calipers(lettered, lines) == []


def test_colour_flags():
    grey, _ = make_phantom(2, "normal")
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    assert colour_info(rgb) == colour_info(grey) and not colour_info(rgb).colour
    boxed = rgb.copy()
    cv2.rectangle(boxed, (40, 30), (120, 90), (200, 190, 60), 1)
    info = colour_info(boxed)
    assert info.colour and info.colour_box and not info.colour_flow
    cv2.circle(boxed, (70, 60), 8, (220, 30, 20), -1)
    assert colour_info(boxed).colour_flow


# ------------------------------------------------------------------------------------------- real BUSI
REAL_SUBSET = {
    # byte-identical cross-class pair (found by SHA-256 over the whole dataset)
    "benign/benign (433).png": "exact", "malignant/malignant (145).png": "exact",
    # the same scan saved twice, once ~83 % smaller
    "benign/benign (238).png": "resized", "benign/benign (300).png": "resized",
    # a benign image also filed as normal
    "benign/benign (437).png": "normal-copy", "normal/normal (34).png": "normal-copy",
    # neighbouring frames of one malignant lesion, one of them also filed as benign
    "malignant/malignant (77).png": "frames", "malignant/malignant (78).png": "frames",
    "benign/benign (333).png": "frames",
    # unrelated images
    "benign/benign (9).png": "", "benign/benign (17).png": "", "malignant/malignant (3).png": "",
    "normal/normal (2).png": "", "normal/normal (5).png": "", "benign/benign (323).png": "",
}


def _link_subset(busi: Path, target: Path) -> None:
    for relative in REAL_SUBSET:
        for source in [busi / relative, *sorted((busi / relative).parent.glob(Path(relative).stem + "_mask*.png"))]:
            destination = target / source.relative_to(busi)
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(source, destination)
            except OSError:  # no symlinks here: a temporary copy (outside the repository) does as well
                shutil.copyfile(source, destination)


def test_real_busi_known_duplicates_and_conflicts(busi_dir, tmp_path):
    a, b = (busi_dir / "benign/benign (433).png").read_bytes(), (busi_dir / "malignant/malignant (145).png").read_bytes()
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    _link_subset(busi_dir, tmp_path / "busi")
    result = run_audit(tmp_path / "busi", tmp_path / "out", progress=False)
    by_tag: dict[str, set[int]] = {}
    for relative, tag in REAL_SUBSET.items():
        by_tag.setdefault(tag, set()).add(result.group_of(relative))
    for tag in ("exact", "resized", "normal-copy", "frames"):
        assert len(by_tag[tag]) == 1, tag  # each set of copies is one group ...
    singles = [result.group_of(r) for r, tag in REAL_SUBSET.items() if not tag]
    assert len(set(singles)) == len(singles)
    grouped = {g for tag, groups in by_tag.items() if tag for g in groups}
    assert len(grouped) == 4 and not grouped & set(singles)  # ... and nothing else is grouped
    exact = [p for p in result.pairs if p.kind == "exact"]
    assert [(result.entries[p.a].relative, result.entries[p.b].relative) for p in exact] == \
        [("benign/benign (433).png", "malignant/malignant (145).png")]
    conflicting = {result.group_of(r) for r in ("benign/benign (433).png", "benign/benign (437).png",
                                                 "benign/benign (333).png")}
    assert set(result.conflicting_groups) == conflicting
    flags = {e.relative: e.annotations for e in result.entries}
    assert flags["benign/benign (433).png"].has_calipers and flags["benign/benign (9).png"].has_calipers
    assert not any(flags[r].has_calipers for r in flags if r.startswith("normal/"))
    assert flags["benign/benign (323).png"].colour.colour_box and not flags["benign/benign (238).png"].colour.colour


def _blocks_whose_means_and_centres_disagree(blocks: int) -> np.ndarray:
    """One row of ``blocks`` 4-pixel blocks: block j is [160 - 20 j, 10 j, 10 j, 160 - 20 j], so the block means
    (80 - 5 j) fall from left to right while the centre pixels (10 j) rise."""
    return np.concatenate([[160 - 20 * j, 10 * j, 10 * j, 160 - 20 * j] for j in range(blocks)]).astype(np.float64)


def test_dhash_compares_block_means_and_only_strictly_brighter_pixels():
    # 36 x 32 -> 9 x 8: each thumbnail pixel is the mean of a 4 x 4 block (INTER_AREA). Means fall: no bit set;
    # mirrored they rise: all 64 set. A resize that samples the block centres would give the opposite.
    image = np.tile(_blocks_whose_means_and_centres_disagree(9), (32, 1))
    assert nd.dhash(image) == 0
    assert nd.dhash(image[:, ::-1]) == 2**64 - 1
    # a flat image: no pixel is brighter than its left neighbour
    assert nd.dhash(np.full((32, 36), 90.0)) == 0


def test_work_images_average_what_they_shrink():
    # 640 px of blocks A = [0, 255, 255, 0] and B = [255, 0, 0, 255] shrink 4x to WORK_SIZE 160: every block's mean
    # is 127.5, so the work image is flat and its band-pass is zero; sampling block centres would alternate 255 / 0
    row = np.tile([0, 255, 255, 0, 255, 0, 0, 255], 80).astype(np.float32)
    image = np.tile(row, (640, 1))
    assert nd.WORK_SIZE * 4 == 640
    work = nd.match_features(image).work
    assert work.shape == (160, 160) and np.abs(work).max() < 1e-3
    assert np.allclose(nd._resize(image, 0.25), 127.5)


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.normal(0, 40, (h, w)).astype(np.float32), (0, 0), 1.5)


def test_template_match_searches_the_trimmed_centre_and_refuses_what_it_cannot_score():
    x = _texture(120, 140, 0)
    # a 50 x 60 crop of x at row 30, column 40 whose 12 % margins (6 rows, 7 columns) carry other content, like
    # burned-in labels: only the trimmed centre is searched, so the crop is found exactly, its origin at (40, 30)
    y = x[30:80, 40:100].copy()
    y[:6], y[-6:], y[:, :7], y[:, -7:] = 255, 255, 255, 255
    best, origin = nd._template_match(x, y, 1.0)
    assert best > 0.999 and origin == (40.0, 30.0)

    # searched at the limits: a 20 x 20 crop trims to 16 x 16, and a trimmed centre exactly as large as x
    best, origin = nd._template_match(x, x[50:70, 60:80].copy(), 1.0)
    assert best > 0.999 and origin == (60.0, 50.0)
    best, origin = nd._template_match(x[10:26, 10:26].copy(), x[8:28, 8:28].copy(), 1.0)
    assert best > 0.999 and origin == (-2.0, -2.0)
    # texture of standard deviation exactly 1 (a 0 / 2 checkerboard) is still texture
    board = (np.indices((40, 40)).sum(axis=0) % 2 * 2).astype(np.float32)
    assert nd._template_match(board, board[:20, :20].copy(), 1.0)[0] > 0.999

    refused = (-1.0, (0.0, 0.0))
    assert nd._template_match(x, np.full((50, 60), 90.0, np.float32), 1.0) == refused  # flat: nothing to match
    assert nd._template_match(x, x[:19, :60].copy(), 1.0) == refused  # trimmed to 15 rows: too small to trust
    assert nd._template_match(x, x[:60, :19].copy(), 1.0) == refused  # 15 columns
    assert nd._template_match(x[:30, :60].copy(), x[:50, :60].copy(), 1.0) == refused  # 38 rows > x's 30
    assert nd._template_match(x[:50, :40].copy(), x[:50, :60].copy(), 1.0) == refused  # 46 columns > x's 40


def test_cell_score_overlap_share_and_minimum_overlap_by_hand():
    x = _texture(60, 80, 1)
    # y = x itself at (0, 0): every one of the 4 x 4 cells matches (NCC 1), the overlap is all of x
    ncc, overlap = nd._cell_score(x, x.copy(), 1.0, (0.0, 0.0))
    assert ncc > 0.999 and overlap == 1.0
    # y = x[5:, 10:] placed at (10, 5): overlap 70 x 55 of the larger image's 80 x 60 = 3850 / 4800
    ncc, overlap = nd._cell_score(x, x[5:, 10:].copy(), 1.0, (10.0, 5.0))
    assert ncc > 0.999 and overlap == pytest.approx(3850 / 4800)
    # y = x shifted the other way, origin (-10, -5): y's columns 10.. and rows 5.. lie on x's 0.., 70 x 55 again
    shifted = np.zeros_like(x)
    shifted[5:, 10:] = x[:55, :70]
    ncc, overlap = nd._cell_score(x, shifted, 1.0, (-10.0, -5.0))
    assert ncc > 0.999 and overlap == pytest.approx(3850 / 4800)
    # the overlap must be at least 4 px per cell each way: 16 columns are scored, 15 are not
    assert nd._cell_score(x, x[:, :16].copy(), 1.0, (64.0, 0.0))[1] == pytest.approx(16 * 60 / 4800)
    assert nd._cell_score(x, x[:, :15].copy(), 1.0, (65.0, 0.0)) == (-1.0, 0.0)
    assert nd._cell_score(x, x[:15].copy(), 1.0, (0.0, 45.0)) == (-1.0, 0.0)
    assert nd._cell_score(x, x[:16].copy(), 1.0, (0.0, 44.0))[1] == pytest.approx(16 * 80 / 4800)


def _textured_cells(cells: set[tuple[int, int]]) -> np.ndarray:
    """An 80 x 60 image on _cell_score's 4 x 4 grid at (0, 0) (cells 20 x 15 px): texture inside the listed
    (row, column) cells, 2 px clear of their edges, flat grey elsewhere."""
    image = np.full((60, 80), 90.0, np.float32)
    texture = _texture(60, 80, 2)
    for r, c in cells:
        rows, cols = slice(15 * r + 2, 15 * r + 13), slice(20 * c + 2, 20 * c + 18)
        image[rows, cols] += texture[rows, cols]
    return image


ALL_CELLS = {(r, c) for r in range(4) for c in range(4)}


def test_cell_score_skips_cells_flat_on_both_sides_and_counts_one_flat_side_against():
    x = _textured_cells(ALL_CELLS)
    # y = x with its two left cell columns blanked: 8 cells textured in x only score 0, 8 match (1): median 0.5
    y = x.copy()
    y[:, :40] = 90.0
    assert nd._cell_score(x, y, 1.0, (0.0, 0.0)) == (pytest.approx(0.5, abs=1e-3), 1.0)
    # the left cell column flat in both: no evidence either way, the 12 others decide
    x = _textured_cells({cell for cell in ALL_CELLS if cell[1] > 0})
    assert nd._cell_score(x, x.copy(), 1.0, (0.0, 0.0))[0] > 0.999
    # six textured cells are enough for a score, five are not
    six = {(0, 0), (0, 1), (1, 2), (2, 3), (3, 0), (3, 3)}
    x = _textured_cells(six)
    assert nd._cell_score(x, x.copy(), 1.0, (0.0, 0.0))[0] > 0.999
    x = _textured_cells(six - {(3, 3)})
    assert nd._cell_score(x, x.copy(), 1.0, (0.0, 0.0)) == (-1.0, 1.0)


def test_a_half_size_crop_is_found_at_its_own_pixel_size():
    # b is the central 200 x 200 of a 400 x 400 image, at the same pixel size. In work pixels (160 px longest side)
    # b is 2.5x larger than its place in a: only the scale hypothesis from the two work scales (0.4 / 0.8) finds
    # it; the fixed steps around 1 do not reach it
    a = cv2.GaussianBlur(np.random.default_rng(4).normal(128, 60, (400, 400)).astype(np.float32), (0, 0), 4)
    result = nd.verify_pair(nd.match_features(a), nd.match_features(a[100:300, 100:300].copy()))
    assert result.score > 0.9 and result.ncc > 0.9 and result.scale == pytest.approx(1.0, abs=0.04)
    # the other way round (the crop given first, the image that contains it second): b is scaled by 1 in a too,
    # and a copy shrunk to 0.8 given first holds the original at 1 / 0.8 = 1.25
    assert nd.verify_pair(nd.match_features(a[100:300, 100:300].copy()), nd.match_features(a)).scale == pytest.approx(
        1.0, abs=0.04)
    small = cv2.resize(a, (320, 320), interpolation=cv2.INTER_AREA)
    assert nd.verify_pair(nd.match_features(small), nd.match_features(a)).scale == pytest.approx(1.25, abs=0.05)
