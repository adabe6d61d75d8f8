"""The demo folder: images the project may redistribute, so a fresh install has something to review.

Synthetic ultrasound phantoms with lesion masks (this project's own, see :mod:`busi_viewer.core.phantoms`) and
the ultrasound DICOM samples that ship inside the installed pydicom package. Never BUSI images.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from busi_viewer.core.paths import user_cache_dir
from busi_viewer.core.phantoms import write_phantom_dataset

DEMO_VERSION = 1
PHANTOM_COUNTS = {"benign": 4, "malignant": 4, "normal": 2}
PYDICOM_ULTRASOUND_SAMPLES = ("examples_palette.dcm", "examples_ybr_color.dcm")


def demo_folder(root: Path | None = None) -> Path:
    """The demo folder (built on first use under the user cache, then reused); returns its path.

    Layout: ``phantoms/<class>/<class> (<n>).png`` with ``_mask.png`` beside each, and ``dicom/`` with the
    pydicom ultrasound samples that are installed (their absence is not an error).
    """
    folder = Path(root) if root is not None else user_cache_dir() / f"demo-v{DEMO_VERSION}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_phantom_dataset(staging / "phantoms", PHANTOM_COUNTS, seed=7, size=(300, 380))
    dicom = staging / "dicom"
    dicom.mkdir(parents=True)
    for name in PYDICOM_ULTRASOUND_SAMPLES:
        sample = _pydicom_sample(name)
        if sample is not None:
            shutil.copy2(sample, dicom / name)
    (staging / ".complete").write_text("ok\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def _pydicom_sample(name: str) -> Path | None:
    try:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name, download=False)
    except Exception:  # noqa: BLE001 - samples are optional extras of the demo
        return None
    return Path(found) if found else None
