"""Folder scanning: natural order, what is skipped and why, DICOM sniffing, and that nothing is decoded."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from busi_viewer.core.errors import BusiViewerError
from busi_viewer.core.loader import looks_like_dicom
from busi_viewer.core.scan import ScanError, natural_key, scan_folder


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _fake_dicom(path: Path) -> Path:
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00")
    return path


def _rel(result, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in result.images]


def _reasons(result, root: Path) -> dict[str, str]:
    return {s.path.relative_to(root).as_posix(): s.reason for s in result.skipped}


def test_natural_order(tmp_path):
    _touch(tmp_path, "benign (10).png", "benign (2).png", "benign (1).png", "Benign (3).png", "a.png", "C.png")
    assert _rel(scan_folder(tmp_path), tmp_path) == [
        "a.png", "benign (1).png", "benign (2).png", "Benign (3).png", "benign (10).png", "C.png",
    ]


def test_order_by_relative_path_parts(tmp_path):
    _touch(tmp_path, "folder 10/a.png", "folder 2/b.png", "folder 2/a (11).png", "folder 2/a (9).png", "z.png")
    assert _rel(scan_folder(tmp_path), tmp_path) == [
        "folder 2/a (9).png", "folder 2/a (11).png", "folder 2/b.png", "folder 10/a.png", "z.png",
    ]


def test_masks_are_skipped_with_their_image_named(tmp_path):
    _touch(tmp_path, "benign (4).png", "benign (4)_mask.png", "benign (4)_mask_1.png", "orphan_MASK.PNG")
    result = scan_folder(tmp_path)
    assert _rel(result, tmp_path) == ["benign (4).png"]
    reasons = _reasons(result, tmp_path)
    assert reasons["benign (4)_mask.png"] == "lesion mask of benign (4).png"
    assert reasons["benign (4)_mask_1.png"] == "lesion mask of benign (4).png"
    assert reasons["orphan_MASK.PNG"].startswith("lesion mask")


def test_non_images_are_skipped_with_reason(tmp_path):
    _touch(tmp_path, "notes.txt", "x.JPG", "y.Tiff", "scan.dcm", "b.bmp", "p.pgm", "q.ppm", "data.csv")
    result = scan_folder(tmp_path)
    assert _rel(result, tmp_path) == ["b.bmp", "p.pgm", "q.ppm", "scan.dcm", "x.JPG", "y.Tiff"]
    reasons = _reasons(result, tmp_path)
    assert reasons == {"data.csv": "not an image file (.csv)", "notes.txt": "not an image file (.txt)"}


def test_recursion_on_and_off(tmp_path):
    _touch(tmp_path, "top.png", "sub/inner.png", "sub/deeper/deep.png")
    assert _rel(scan_folder(tmp_path), tmp_path) == ["sub/deeper/deep.png", "sub/inner.png", "top.png"]
    flat = scan_folder(tmp_path, recursive=False)
    assert _rel(flat, tmp_path) == ["top.png"]
    assert "recursive" in _reasons(flat, tmp_path)["sub"]


def test_hidden_files_and_folders_are_skipped(tmp_path):
    _touch(tmp_path, ".hidden.png", ".git/objects/a.png", "ok.png", "__MACOSX/._ok.png")
    result = scan_folder(tmp_path)
    assert _rel(result, tmp_path) == ["ok.png"]
    reasons = _reasons(result, tmp_path)
    assert reasons[".hidden.png"] == "hidden file"
    assert reasons[".git"] == "hidden folder"
    assert "__MACOSX" in reasons
    assert not any(path.startswith(".git/") for path in reasons)  # hidden folders are not entered


def test_extensionless_dicom_is_detected(tmp_path):
    _fake_dicom(tmp_path / "IM0001")
    _fake_dicom(tmp_path / "1.2.840.113619.2.55.3.17")  # UID-named file: numeric "suffix"
    (tmp_path / "README").write_text("just text, long enough to pass 132 bytes " * 5)
    (tmp_path / "tiny").write_bytes(b"DICM")
    _fake_dicom(tmp_path / "DICOMDIR")
    result = scan_folder(tmp_path)
    assert _rel(result, tmp_path) == ["1.2.840.113619.2.55.3.17", "IM0001"]
    reasons = _reasons(result, tmp_path)
    assert reasons["README"] == "no file extension and no DICOM signature"
    assert reasons["tiny"] == "no file extension and no DICOM signature"
    assert "DICOMDIR" in reasons["DICOMDIR"]


def test_real_pydicom_file_without_extension(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Modality = "US"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.save_as(tmp_path / "image", enforce_file_format=True)
    assert looks_like_dicom(tmp_path / "image")
    assert _rel(scan_folder(tmp_path), tmp_path) == ["image"]


def test_scanning_decodes_nothing(tmp_path, monkeypatch):
    import cv2
    import PIL.Image
    import pydicom

    def refuse(*args, **kwargs):
        raise AssertionError("scan_folder must not open or decode images")

    monkeypatch.setattr(PIL.Image, "open", refuse)
    monkeypatch.setattr(cv2, "imread", refuse)
    monkeypatch.setattr(pydicom, "dcmread", refuse)
    (tmp_path / "corrupt.png").write_bytes(b"garbage, not a PNG")  # listed: content is not looked at
    _touch(tmp_path, "b.jpg", "b_mask.png")
    _fake_dicom(tmp_path / "noext")

    reads: list[int] = []
    real_open = io.open

    def counting_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "b" in mode and "r" in mode:
            real_read = handle.read
            handle.read = lambda size=-1: reads.append(size) or real_read(size)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.setattr("io.open", counting_open)  # pathlib.Path.open goes through io.open
    result = scan_folder(tmp_path)
    assert _rel(result, tmp_path) == ["b.jpg", "corrupt.png", "noext"]
    assert reads == [132]  # only the extension-less file was read, and only its first 132 bytes


def test_symlink_loop_terminates(tmp_path):
    _touch(tmp_path, "a/x.png")
    try:
        os.symlink(tmp_path / "a", tmp_path / "a" / "loop", target_is_directory=True)
        os.symlink(tmp_path / "a", tmp_path / "second link", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links are not available here")
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    result = scan_folder(tmp_path)
    assert _rel(result, tmp_path) == ["a/x.png"]  # listed once, under the first path in natural order
    reasons = _reasons(result, tmp_path)
    assert "already scanned" in reasons["a/loop"] and "already scanned" in reasons["second link"]
    assert reasons["broken.png"] == "broken link or special file"


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(ScanError, match="not found"):
        scan_folder(tmp_path / "nope")
    (tmp_path / "file.png").touch()
    with pytest.raises(ValueError, match="Not a folder"):
        scan_folder(tmp_path / "file.png")
    assert issubclass(ScanError, BusiViewerError)


def test_empty_folder(tmp_path):
    result = scan_folder(tmp_path)
    assert result.images == [] and result.skipped == []


def test_real_busi_listing(busi_dir):
    result = scan_folder(busi_dir)
    assert len(result.images) == 780
    assert len(result.skipped) == 798 and all(s.reason.startswith("lesion mask of ") for s in result.skipped)
    benign = [p.name for p in result.images if p.parent.name == "benign"]
    assert benign[:3] == ["benign (1).png", "benign (2).png", "benign (3).png"]
    assert benign.index("benign (2).png") < benign.index("benign (10).png")


_NO_DIGITS = st.text(
    st.characters(blacklist_categories=("Nd", "Cs"), blacklist_characters="/\\\0"), max_size=8
)


@given(prefix=_NO_DIGITS, suffix=_NO_DIGITS, a=st.integers(0, 10**6), b=st.integers(0, 10**6),
       pad_a=st.integers(0, 8), pad_b=st.integers(0, 8))
def test_natural_key_orders_numbers_numerically(prefix, suffix, a, b, pad_a, pad_b):
    name_a = f"{prefix}{a:0{pad_a}d}{suffix}"
    name_b = f"{prefix}{b:0{pad_b}d}{suffix}"
    if a < b:
        assert natural_key(name_a) < natural_key(name_b)
    elif a > b:
        assert natural_key(name_a) > natural_key(name_b)


@given(st.lists(st.integers(0, 10_000), unique=True, max_size=30))
def test_natural_sort_of_busi_names(numbers):
    names = [f"benign ({n}).png" for n in numbers]
    assert sorted(names, key=natural_key) == [f"benign ({n}).png" for n in sorted(numbers)]


_FILE_NAMES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\0"), min_size=1, max_size=6
).filter(lambda name: name not in (".", ".."))


@given(st.lists(_FILE_NAMES, max_size=12))
def test_natural_key_is_a_total_deterministic_order(names):
    once = sorted(names, key=natural_key)
    assert sorted(reversed(names), key=natural_key) == once  # ties broken by spelling, not by input order
