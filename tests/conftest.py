"""Shared test fixtures. Tests never touch the real user's settings or data, and never need a network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BUSI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point every platformdirs location at a throw-away folder."""
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path_factory.mktemp("busi-home")))


def _shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set BUSI_SHARED_DATA to where ../shared/data lives)")
    return path


@pytest.fixture
def dicom_dir() -> Path:
    """../shared/data/dicom (real DICOM test files); skips when absent."""
    return _shared("dicom")


@pytest.fixture
def busi_dir() -> Path:
    """../shared/data/busi (the BUSI dataset); skips when absent."""
    return _shared("busi")


@pytest.fixture
def mias_dir() -> Path:
    """../shared/data/mini-mias; skips when absent."""
    return _shared("mini-mias")
