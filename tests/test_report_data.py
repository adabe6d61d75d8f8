"""Report entries: de-identified by default, identifiers only when asked, scale only when calibrated."""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from busi_viewer.core.agreement import agreement
from busi_viewer.core.image_record import ImageRecord, UltrasoundRegion
from busi_viewer.core.labels import CLASS_NAMES
from busi_viewer.core.report_data import (
    ReviewSection,
    burned_in_risk,
    case_id,
    folder_counts,
    image_entry,
    scale_for,
)

SHA = hashlib.sha256(b"an image").hexdigest()
IDENTIFIERS = {"PatientName": "Doe^Jane", "PatientID": "PID-0042", "PatientBirthDate": "19700101",
               "AccessionNumber": "ACC-77", "InstitutionName": "Saint Example Hospital"}


def _record(**changes) -> ImageRecord:
    pixels = np.zeros((40, 60), np.uint8)
    record = ImageRecord(path=Path("/clinic/Doe_Jane_2026-11-30.dcm"), format="DICOM", modality="US",
                         pixels=pixels, rgb=np.zeros((40, 60, 3), np.uint8), identifiers=dict(IDENTIFIERS))
    return dataclasses.replace(record, **changes)


def _entry(record: ImageRecord, **kwargs):
    return image_entry(record, SHA, class_names=CLASS_NAMES, probabilities=(0.2, 0.7, 0.1), predicted="malignant",
                       low_confidence=False, decision_rule="arg-max", **kwargs)


def test_case_id_comes_from_the_hash_and_rejects_anything_else():
    assert case_id(SHA) == "case-" + SHA[:10]
    for bad in ("", SHA[:-1], SHA.upper(), "Doe^Jane" * 8):
        with pytest.raises(ValueError):
            case_id(bad)


def test_entries_hold_no_identifier_unless_asked():
    hidden = _entry(_record())
    text = repr(hidden)
    assert hidden.source_name == "" and dict(hidden.identifiers) == {}
    for value in [*IDENTIFIERS.values(), "Doe_Jane"]:
        assert value not in text
    shown = _entry(_record(), include_identifiers=True)
    assert shown.source_name == "Doe_Jane_2026-11-30.dcm" and dict(shown.identifiers) == IDENTIFIERS
    assert hidden.case_id == shown.case_id == case_id(SHA)


@pytest.mark.parametrize(("flag", "modality", "risk"), [
    ("YES", "MG", True), ("NO", "US", False), (None, "US", True), (None, "MG", False), (" yes ", "OT", True),
])
def test_burned_in_risk(flag, modality, risk):
    assert burned_in_risk(flag, modality) is risk
    assert _entry(_record(burned_in_annotation=flag, modality=modality)).burned_in_risk is risk


def test_scale_bar_only_for_square_calibrated_pixels():
    assert scale_for(_record()) is None  # no calibration
    small = UltrasoundRegion(0, 0, 9, 9, (0.2, 0.2))
    large = UltrasoundRegion(10, 5, 59, 39, (0.26, 0.26))
    scale = scale_for(_record(ultrasound_regions=(small, large)))
    assert scale.mm_per_pixel == 0.26 and scale.region == (10, 5, 59, 39)  # the largest calibrated region
    assert scale_for(_record(ultrasound_regions=(UltrasoundRegion(0, 0, 59, 39, None),))) is None
    assert scale_for(_record(ultrasound_regions=(UltrasoundRegion(0, 0, 59, 39, (0.2, 0.3)),))) is None
    whole = scale_for(_record(pixel_spacing_mm=(0.1, 0.1)))
    assert whole.mm_per_pixel == 0.1 and whole.region == (0, 0, 59, 39)


def test_entry_checks_its_numbers_and_folder_counts():
    with pytest.raises(ValueError, match="one probability per class"):
        image_entry(_record(), SHA, class_names=CLASS_NAMES, probabilities=(1.0,), predicted="benign",
                    low_confidence=False, decision_rule="")
    with pytest.raises(ValueError, match="not one of"):
        image_entry(_record(), SHA, class_names=CLASS_NAMES, probabilities=(0.2, 0.7, 0.1), predicted="cyst",
                    low_confidence=False, decision_rule="")
    heat = np.zeros((40, 60), np.float32)
    heat[10:20, 10:20] = 1.0
    heat[15, 15] = 2.0  # the peak, inside the lesion
    mask = np.zeros((40, 60), bool)
    mask[12:22, 12:22] = True
    scored = _entry(_record(), agreement=agreement(heat, mask), review=ReviewSection("disagree", "benign", "cyst?"))
    assert scored.agreement.pointing_hit and scored.review.reviewed
    counts = folder_counts([scored, _entry(_record())], CLASS_NAMES)
    assert counts.per_class == {"benign": 0, "malignant": 2, "normal": 0}
    assert (counts.reviewed, counts.unreviewed) == (1, 1)
