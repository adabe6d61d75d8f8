"""Where the out-of-scope images come from (see :mod:`training.scope_sets`): a catalogue of image files shipped
inside packages, the readers that turn each into uint8 frames, and the sorting of a DICOM folder by modality.

Nothing here downloads: a package file is used only when it is on disk, a pydicom test file only when pydicom or
the pydicom-data package holds it locally.
"""

from __future__ import annotations

import gzip
import importlib.util
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.scope_documents import render_documents

SET_NAMES = ("photographs", "documents", "ct_mr", "mammograms", "other_ultrasound")
DOCUMENT_PAGES = 24
MAX_US_FRAMES = 10
MAX_SLICES = 4
CT_AIR_HU = -1024

# (package, file inside it, licence as the package states it)
PACKAGE_PHOTOS = [
    ("skimage", "data/astronaut.png", "public domain (NASA)"),
    ("skimage", "data/camera.png", "CC0 (Lav Varshney)"),
    ("skimage", "data/chelsea.png", "CC0 (Stefan van der Walt)"),
    ("skimage", "data/coffee.png", "CC0 (Rachel Michetti)"),
    ("skimage", "data/rocket.jpg", "public domain (SpaceX)"),
    ("skimage", "data/motorcycle_left.png", "Middlebury 2014 stereo benchmark (cite Scharstein et al. 2014)"),
    ("skimage", "data/hubble_deep_field.jpg", "public domain (NASA)"),
    ("skimage", "data/moon.png", "none stated (scikit-image sample, BSD-3 package)"),
    ("skimage", "data/coins.png", "no known copyright restrictions"),
    ("skimage", "data/clock_motion.png", "public domain (Stefan van der Walt)"),
    ("skimage", "data/text.png", "public domain"),
    ("skimage", "data/brick.png", "CC0 (CC0Textures)"),
    ("skimage", "data/grass.png", "CC0 (CC0Textures)"),
    ("skimage", "data/gravel.png", "CC0 (CC0Textures)"),
    ("skimage", "data/retina.jpg", "CC0 (Häggström)"),
    ("skimage", "data/microaneurysms.png", "CC0 (Andreas Maier)"),
    ("skimage", "data/ihc.png", "no known copyright restrictions"),
    ("skimage", "data/cell.png", "CC0"),
    ("sklearn", "datasets/images/china.jpg", "CC BY 2.0 (danielbuechele, Flickr)"),
    ("sklearn", "datasets/images/flower.jpg", "CC BY 2.0 (vultilion, Flickr)"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "public domain (US Navy photograph)"),
]
PACKAGE_DOCUMENTS = [("skimage", "data/page.png", "none stated (scikit-image sample, BSD-3 package)")]
# pydicom test files by name: the first of each tuple that is on disk (pydicom itself, or the pydicom-data
# package) is used, so one image never comes twice in two encodings.
PYDICOM_PHOTOS = [("OT-PAL-8-face.dcm",)]
PYDICOM_CT_MR = [
    ("CT_small.dcm",), ("693_UNCI.dcm", "693_J2KI.dcm"), ("J2K_pixelrep_mismatch.dcm",), ("bad_sequence.dcm",),
    ("explicit_VR-UN.dcm",), ("eCT_Supplemental.dcm",), ("MR_small.dcm",), ("emri_small.dcm",), ("MR2_UNCI.dcm",),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "examples_overlay.dcm"), ("RG1_UNCI.dcm",), ("RG3_UNCI.dcm",),
    ("JPEG2000_UNC.dcm", "JPEG2000.dcm"),
]
PYDICOM_ULTRASOUND = [
    ("US1_UNCR.dcm", "examples_rgb_color.dcm"), ("OBXXXX1A.dcm",), ("gdcm-US-ALOKA-16.dcm",), ("examples_palette.dcm",),
    ("examples_ybr_color.dcm",), ("JPGLosslessP14SV1_1s_1f_8b.dcm",), ("color-pl.dcm",),
]  # not color3d_jpeg_baseline.dcm: the cine of examples_ybr_color.dcm again, at twice the size
NIBABEL_VOLUMES = [("nibabel", "tests/data/example4d.nii.gz", "MIT (nibabel test data)")]
MATPLOTLIB_MRI = [("matplotlib", "mpl-data/sample_data/s1045.ima.gz", "matplotlib licence (sample data)")]
# Shared DICOM files not used as their Modality says, and why.
SHARED_EXCLUDED = {"US_Explicit_Big_RGB.dcm": "its on-screen preset reads BREAST"}
SHARED_REROUTED = {"MG_Explicit_Little.dcm": "documents"}  # an MG calibration page of text, not a mammogram
MODALITY_SETS = {"US": "other_ultrasound", "MG": "mammograms"} | dict.fromkeys(
    ("CT", "MR", "DX", "CR", "OT", "NM", "PT", "XA", "RF"), "ct_mr")

Frames = Iterator[tuple[str, np.ndarray]]  # (origin suffix such as "#frame3", uint8 image)


@dataclass(frozen=True)
class Source:
    """Where images come from: ``load()`` yields them lazily, so an unreadable source fails only itself."""

    origin: str
    licence: str
    load: Callable[[], Frames]


def window_percentiles(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Grey values mapped to uint8 with ``low``..``high`` percentiles as black..white. Values in the lowest
    tenth of the range, when they fill over a quarter of the image, are background (air, padding outside the
    scanned field): they are left out of the percentiles so as not to squeeze the anatomy into a few greys."""
    data = np.nan_to_num(values.astype(np.float32))
    background = data <= data.min() + 0.1 * (data.max() - data.min())
    lo, hi = np.percentile(data[~background] if 0.25 < background.mean() < 1.0 else data, [low, high])
    if hi <= lo:
        lo, hi = float(data.min()), float(data.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip(np.rint((data - lo) * scale), 0, 255).astype(np.uint8)


def spaced(count: int, cap: int) -> list[int]:
    """Up to ``cap`` indices evenly spread over 0..count-1 (ends included)."""
    return sorted({int(i) for i in np.linspace(0, count - 1, min(count, cap)).round()})


def read_raster(path: Path) -> Frames:
    """An image file as (H, W) grey (16-bit and float kept: windowed when written) or (H, W, 3) RGB."""
    with Image.open(path) as im:
        mode = im.mode if im.mode in ("L", "I", "I;16", "F") else "L" if im.mode in ("1", "LA") else "RGB"
        image = np.asarray(im if mode == im.mode else im.convert(mode))
    yield "", image


def read_dicom(path: Path, max_frames: int, percentile_window: bool) -> Frames:
    """Spaced frames of a DICOM file through the app's own loader: greyscale windowed to its 1st..99th
    percentiles when ``percentile_window`` (MONOCHROME1 inverted), else the loader's own rendering."""
    from busi_viewer.core.loader import load_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on non-conformant test files
        record = load_image(path)
        for index in spaced(record.n_frames, max_frames):
            suffix = f"#frame{index}" if record.n_frames > 1 else ""
            if percentile_window and record.pixels.ndim == 2:
                native = record.frame(index)
                if record.modality == "CT" and native.min() < CT_AIR_HU:  # padding outside the scan circle
                    native = np.maximum(native, CT_AIR_HU)
                grey = window_percentiles(native)
                yield suffix, 255 - grey if record.photometric == "MONOCHROME1" else grey
            else:
                yield suffix, record.rgb_frame(index)


def read_volume(path: Path) -> Frames:
    """:data:`MAX_SLICES` axial slices spread over the middle half of a NIfTI volume (first volume of a 4-D one)."""
    import nibabel

    data = np.asanyarray(nibabel.load(path).dataobj)
    data = data[..., 0] if data.ndim == 4 else data
    for z in sorted({int(round(f * (data.shape[2] - 1))) for f in np.linspace(0.25, 0.75, MAX_SLICES)}):
        yield f"#z{z}", window_percentiles(np.rot90(data[:, :, z]))


def read_matplotlib_mri(path: Path) -> Frames:
    """matplotlib's ``s1045.ima.gz``: one 256 x 256 little-endian uint16 MR slice, no header."""
    with gzip.open(path) as fh:
        yield "", window_percentiles(np.frombuffer(fh.read(), "<u2").reshape(256, 256))


def package_file(package: str, relative: str) -> Path | None:
    """A data file shipped inside an installed package (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def _package_sources(entries, reader: Callable[[Path], Frames], notes: list[str]) -> list[Source]:
    sources = []
    for package, relative, licence in entries:
        path = package_file(package, relative)
        if path is None:
            notes.append(f"{package}:{relative} not on disk (package not installed?)")
        else:
            sources.append(Source(f"{package}:{relative}", licence, lambda p=path: reader(p)))
    return sources


def _pydicom_sources(alternatives: list[tuple[str, ...]], max_frames: int, window: bool,
                     notes: list[str]) -> list[Source]:
    """Local pydicom test files (pydicom's own, else the pydicom-data package): never downloaded."""
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        notes.append("pydicom not installed")
        return []
    sources = []
    for names in alternatives:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = next((Path(p) for p in (get_testdata_file(n, download=False) for n in names) if p), None)
        if found is None:
            notes.append(f"pydicom test file {' / '.join(names)} not on disk (pip install pydicom-data)")
            continue
        package = "pydicom-data" if "data_store" in found.parts else "pydicom"
        sources.append(Source(f"{package}:{found.name}", f"MIT ({package} test data)",
                              lambda p=found: read_dicom(p, max_frames, window)))
    return sources


def shared_set_for(modality: str, body_part: str) -> str | None:
    """The set a DICOM file of the shared folder goes to; None for breast ultrasound and unknown modalities.
    Breast X-ray is a mammogram whatever its Modality says (MG1 is a Secondary Capture with Modality RG)."""
    if body_part == "BREAST" and modality == "US":
        return None
    if body_part == "BREAST" and modality in ("MG", "RG", "DX", "CR", "OT"):
        return "mammograms"
    return MODALITY_SETS.get(modality)


def shared_dicom_sources(folder: Path, notes: list[str]) -> dict[str, list[Source]]:
    """Every DICOM image under ``folder``, sorted into sets by its Modality."""
    import pydicom

    by_set: dict[str, list[Source]] = {name: [] for name in SET_NAMES}
    if not folder.is_dir():
        notes.append(f"shared DICOM folder {folder} is absent")
        return by_set
    licences = sorted(p.name for p in folder.glob("LICENSE*"))
    licence = "see " + ", ".join(licences) if licences else "see the shared DICOM folder"
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".txt")):
        name = path.relative_to(folder).as_posix()
        if path.name in SHARED_EXCLUDED:
            notes.append(f"{name} left out: {SHARED_EXCLUDED[path.name]}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            is_image = int(header.get("Rows") or 0) > 0
        except Exception:
            is_image = False
        if not is_image:
            notes.append(f"{name} is not a DICOM image")
            continue
        modality = str(header.get("Modality", "") or "OT").strip().upper()
        body_part = str(header.get("BodyPartExamined", "") or "").strip().upper()
        set_name = SHARED_REROUTED.get(path.name) or shared_set_for(modality, body_part)
        if set_name is None:
            notes.append(f"{name}: {modality} {body_part or '(no body part)'} fits no set: left out")
            continue
        frames = MAX_US_FRAMES if set_name == "other_ultrasound" else MAX_SLICES
        by_set[set_name].append(Source(f"shared_dicom:{name}", licence,
                                       lambda p=path, n=frames, w=set_name == "ct_mr": read_dicom(p, n, w)))
    return by_set


def _rendered_pages() -> Frames:
    for index, (layout, page) in enumerate(render_documents(DOCUMENT_PAGES)):
        yield f":{layout}-{index:02d}", page


def sources_for(set_name: str, shared: dict[str, list[Source]], notes: list[str]) -> list[Source]:
    """Every source of one set, shared-folder files first (their exact duplicates elsewhere are then dropped).
    ``shared`` is :func:`shared_dicom_sources`' answer; what is missing goes to ``notes``."""
    if set_name == "photographs":
        return _package_sources(PACKAGE_PHOTOS, read_raster, notes) + _pydicom_sources(PYDICOM_PHOTOS, 1, False, notes)
    if set_name == "documents":
        rendered = Source("rendered", "generated (training.scope_documents)", _rendered_pages)
        return [rendered, *_package_sources(PACKAGE_DOCUMENTS, read_raster, notes), *shared["documents"]]
    if set_name == "ct_mr":
        return (shared["ct_mr"] + _pydicom_sources(PYDICOM_CT_MR, MAX_SLICES, True, notes)
                + _package_sources(NIBABEL_VOLUMES, read_volume, notes)
                + _package_sources(MATPLOTLIB_MRI, read_matplotlib_mri, notes))
    if set_name == "other_ultrasound":
        return shared["other_ultrasound"] + _pydicom_sources(PYDICOM_ULTRASOUND, MAX_US_FRAMES, False, notes)
    return shared["mammograms"]
