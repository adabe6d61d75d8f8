"""User folders come from one place and can be redirected; tests never touch the real user's folders."""

from __future__ import annotations

from pathlib import Path

from busi_viewer.core import paths


def test_home_override_redirects_every_user_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    assert paths.user_data_dir() == tmp_path / "home" / "data"
    assert paths.user_config_dir() == tmp_path / "home" / "config"
    assert paths.user_cache_dir() == tmp_path / "home" / "cache"
    assert all(p.is_dir() for p in (paths.user_data_dir(), paths.user_config_dir(), paths.user_cache_dir()))


def test_without_override_platformdirs_decides(monkeypatch, tmp_path):
    monkeypatch.delenv("BUSI_VIEWER_HOME", raising=False)
    monkeypatch.setattr(paths.platformdirs, "user_data_dir", lambda app, author: str(tmp_path / f"{app}-data"))
    assert paths.user_data_dir() == tmp_path / "busi-viewer-data"


def test_resources_default_to_the_repository_and_can_be_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv("BUSI_VIEWER_RESOURCES", raising=False)
    assert paths.resources_dir() == Path(paths.__file__).resolve().parents[2] / "resources"
    monkeypatch.setenv("BUSI_VIEWER_RESOURCES", str(tmp_path))
    assert paths.default_model_dir() == tmp_path / "models" / "busi-us"
