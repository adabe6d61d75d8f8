"""The demo folder a fresh install reviews: redistributable phantoms with masks and pydicom's US samples."""

from __future__ import annotations

import pytest

from busi_viewer.cli.predict import main as predict_main
from busi_viewer.core.demo import PHANTOM_COUNTS, demo_folder
from busi_viewer.core.loader import load_image
from busi_viewer.core.masks import mask_for_image
from busi_viewer.core.scan import scan_folder


def test_demo_folder_holds_loadable_phantoms_with_masks_and_dicom(tmp_path):
    folder = demo_folder(tmp_path / "demo")
    images = scan_folder(folder).images
    phantoms = [p for p in images if p.suffix == ".png"]
    assert len(phantoms) == sum(PHANTOM_COUNTS.values())
    for path in phantoms:
        record = load_image(path)
        mask = mask_for_image(path, record.shape)
        assert mask is not None and mask.any() == ("normal" not in path.name)
    dicoms = [p for p in images if p.suffix == ".dcm"]
    assert dicoms, "pydicom ships ultrasound samples; the demo must include them"
    assert all(load_image(p).modality == "US" for p in dicoms)
    assert demo_folder(tmp_path / "demo") == folder  # reused, not rebuilt


def test_predict_needs_exactly_one_of_folder_and_demo(tmp_path):
    with pytest.raises(SystemExit):
        predict_main([])
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path), "--demo"])
