"""mini-MIAS Info.txt: its coordinate origin, entries without coordinates, several findings, patients."""

from __future__ import annotations

import numpy as np
import pytest

from training.mias import MiasError, lesion_crop_box, lesion_mask, parse_info, read_info

SAMPLE = """
NOTES
1) The list is arranged in pairs of films ...
mdb001 G CIRC B 535 425 197
mdb002 G CIRC B 522 280 69
mdb003 D NORM 
mdb004 D NORM 
mdb005 F CIRC B 477 133 30
mdb005 F CIRC B 500 168 26
mdb059 F CIRC B
mdb144 F MISC B 233 994 29
mdb144 F MISC M 313 540 27
mdb216 D CALC M *NOTE 3* 
"""


def _by_reference(text: str = SAMPLE) -> dict:
    return {image.reference: image for image in parse_info(text)}


def test_coordinates_have_their_origin_bottom_left():
    first = _by_reference()["mdb001"].findings[0]
    assert first.centre == (1024 - 425, 535) and first.radius == 197  # (row from the top, column)
    mask = lesion_mask(_by_reference()["mdb001"])
    assert mask.shape == (1024, 1024) and mask[599, 535]
    assert mask[789, 535] and not mask[235, 535]  # inside the flipped circle; inside only an unflipped one
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows.min() == pytest.approx(599 - 197, abs=1) and rows.max() == pytest.approx(599 + 196, abs=1)


def test_entries_without_coordinates_keep_their_label_but_have_no_mask():
    images = _by_reference()
    for reference in ("mdb059", "mdb216"):
        image = images[reference]
        assert image.findings[0].centre is None and not image.localised
        assert not lesion_mask(image).any() and lesion_crop_box(image) is None
    assert images["mdb216"].severity == "malignant" and images["mdb059"].severity == "benign"


def test_several_findings_are_one_image_and_the_worst_severity_wins():
    images = _by_reference()
    assert len(images["mdb005"].findings) == 2 and images["mdb005"].severity == "benign"
    mdb144 = images["mdb144"]
    assert [f.severity for f in mdb144.findings] == ["B", "M"] and mdb144.severity == "malignant"
    mask = lesion_mask(mdb144)
    assert mask[1024 - 994, 233] and mask[1024 - 540, 313]  # both circles
    assert images["mdb003"].severity == "normal" and images["mdb003"].localised


def test_patients_pair_consecutive_films_and_laterality_follows_the_number():
    images = _by_reference()
    assert images["mdb001"].patient == images["mdb002"].patient == 1
    assert images["mdb003"].patient == images["mdb004"].patient == 2 != images["mdb005"].patient
    assert images["mdb001"].laterality == "R" and images["mdb002"].laterality == "L"


def test_masks_scale_to_other_sizes_and_crops_stay_inside():
    image = _by_reference()["mdb001"]
    small = lesion_mask(image, (256, 256))
    assert small.shape == (256, 256) and small[599 // 4, 535 // 4]
    assert abs(small.sum() * 16 - lesion_mask(image).sum()) / lesion_mask(image).sum() < 0.05
    top, left, bottom, right = lesion_crop_box(image)
    assert bottom - top == right - left == round(2 * 1.5 * 197) and 0 <= top and bottom <= 1024 and right <= 1024
    edge = _by_reference()["mdb144"]  # its first finding lies 30 px from the top edge
    top, left, bottom, right = lesion_crop_box(edge)
    assert top == 0 and bottom == 224


def test_malformed_lines_are_refused_with_the_line_number():
    with pytest.raises(MiasError, match="line 2"):
        parse_info("mdb001 G CIRC B 535 425 197\nmdb002 X CIRC B 1 1 1\n")
    with pytest.raises(MiasError, match="outside the image"):
        parse_info("mdb001 G CIRC B 535 1500 10\n")
    with pytest.raises(MiasError, match="unknown abnormality"):
        parse_info("mdb001 G LUMP B 535 425 10\n")


def test_the_real_info_file(mias_dir):
    images = read_info(mias_dir)
    assert len(images) == 322 and [i.number for i in images] == list(range(1, 323))
    counts = {s: sum(i.severity == s for i in images) for s in ("normal", "benign", "malignant")}
    assert counts == {"normal": 207, "benign": 63, "malignant": 52}
    assert sorted(i.reference for i in images if not i.localised) == ["mdb059", "mdb216", "mdb233", "mdb245"]
    several = sorted(i.reference for i in images if len(i.findings) > 1)
    assert several == ["mdb005", "mdb132", "mdb144", "mdb223", "mdb226", "mdb239", "mdb249"]
    assert {i.patient for i in images} == set(range(1, 162))
