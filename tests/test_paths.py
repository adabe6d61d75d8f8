"""User folders come from one place and can be redirected; tests never touch the real user's folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

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


def test_folders_that_cannot_be_created_are_replaced_by_temporary_ones(tmp_path, home_is_a_file, caplog):
    home = home_is_a_file
    with caplog.at_level("WARNING", logger=paths.__name__):
        folders = {sub: getattr(paths, f"user_{sub}_dir")() for sub in ("data", "config", "cache")}
        assert {sub: getattr(paths, f"user_{sub}_dir")() for sub in folders} == folders  # the same all session
    for sub, folder in folders.items():
        assert folder.is_dir() and folder.parent == tmp_path / "tmp" and sub in folder.name
        (folder / "written").write_text("ok")
    assert paths.onnx_export_cache_dir().parent == folders["cache"]
    problems = paths.user_dir_problems()
    assert len(problems) == 3 and all(str(home) in p for p in problems)
    assert [r.getMessage().count(str(home)) for r in caplog.records] == [1, 1, 1]  # one warning per folder
    assert home.read_text() == "not a folder"


def test_usable_folders_raise_no_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("BUSI_VIEWER_HOME", str(tmp_path / "home"))
    assert paths.user_cache_dir() == tmp_path / "home" / "cache" and paths.user_dir_problems() == []


_FOLDERS_AS_USER = """
import os
from busi_viewer.core import paths  # before giving up root: the interpreter lives in root's folders
if os.geteuid() == 0:  # root ignores file permissions: look at the folders as an ordinary user would
    os.setgid(65534)
    os.setuid(65534)
print(paths.user_data_dir(), paths.user_config_dir(), paths.user_cache_dir(), sep="\\n")
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX file permissions")
def test_a_read_only_home_gets_temporary_folders_and_a_read_only_cache_is_replaced():
    # A folder of its own under the system temp dir: pytest's tmp_path sits under a 0700 folder of root's.
    root = Path(tempfile.mkdtemp(prefix="busi-ro-home-"))
    try:
        home, temp = root / "home", root / "tmp"
        (home / ".cache" / "busi-viewer").mkdir(parents=True)  # an old cache, now read-only with the rest
        (home / ".local" / "share" / "busi-viewer").mkdir(parents=True)
        temp.mkdir()
        for folder in (root, temp):
            folder.chmod(0o777)
        for folder in (home, *home.rglob("*")):
            folder.chmod(0o555)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "BUSI_VIEWER_HOME"))}
        env.update(HOME=str(home), TMPDIR=str(temp))
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(_FOLDERS_AS_USER)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        data, config, cache = map(Path, result.stdout.split())
        assert data == home / ".local" / "share" / "busi-viewer"  # existing user data is never hidden
        assert config.parent == temp and "config" in config.name  # could not be created
        assert cache.parent == temp and "cache" in cache.name  # exists but cannot be written: worthless
        assert f"cannot use the config folder {home / '.config' / 'busi-viewer'}" in result.stderr
        assert f"cannot use the cache folder {home / '.cache' / 'busi-viewer'}" in result.stderr
        assert not cache.exists()  # a temporary cache goes with the process
    finally:
        for folder in (root, *root.rglob("*")):
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(root)
