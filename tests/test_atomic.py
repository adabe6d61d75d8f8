"""Atomic writes leave either the old file or the complete new one."""

from __future__ import annotations

import pytest

from busi_viewer.core.atomic import atomic_write


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_success_replaces_and_overwrite_false_refuses(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_write(target) as handle:
        handle.write("one")
    assert target.read_text() == "one"
    with pytest.raises(FileExistsError):
        with atomic_write(target, overwrite=False) as handle:
            handle.write("two")
    assert target.read_text() == "one"


def test_unwritable_folder_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        with atomic_write(tmp_path / "missing-folder" / "a.txt") as handle:
            handle.write("x")


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    target = tmp_path / "report.csv"
    with atomic_write(target) as handle:
        handle.write("x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
