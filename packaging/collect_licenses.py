"""Write THIRD_PARTY_NOTICES for the one-folder app: who made each file in it, under which licence, with the texts.

Called by busi-viewer.spec after COLLECT with every entry PyInstaller put in the app (TOC tuples ``(dest, src,
typecode)``), and run in the build environment, whose installed distributions own most of them. Each source file
is traced to its owner:

* a Python distribution (its RECORD lists the file): its licence files, each under its own path inside the
  distribution (``numpy/random/LICENSE.md`` and ``numpy/ma/LICENSE`` are two texts, not one), or, for wheels
  that ship none (PySide6-Essentials, shiboken6, flatbuffers), the standard text of the licence its metadata
  names, from ``packaging/licenses/``;
* the Python runtime (the interpreter's own prefix, and the standard library PyInstaller zips): its LICENSE.txt;
* a system library (Debian: ``dpkg -S``): the package's ``/usr/share/doc/<package>/copyright``, plus the
  ``/usr/share/common-licenses`` texts those files refer to, appended once;
* this project (its checkout, PyInstaller's work folder): LICENSE at the app's root.

Every shared library is named by its path in the app, so a reader (and tests/test_packaging.py) can find each
one. A file whose owner cannot be found is listed as such; ``check_app.py`` fails the build on it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Build tools in the build environment are listed like any other owner when a file of theirs is in the app
# (PyInstaller's bootloader and run-time hooks are).
PROJECT = "busi-viewer"
LICENCE_WORDS = ("license", "licence", "copying", "notice", "authors")
# Named like a licence but code or data (OpenCV's haarcascade_license_plate_*.xml).
NOT_LICENCE_SUFFIXES = (".py", ".pyc", ".pyi", ".xml", ".json", ".so", ".c", ".h")
# Standard texts (from Debian's /usr/share/common-licenses) for wheels that ship none: PySide6 and shiboken6
# (LGPL-3.0, with GPL as alternatives), flatbuffers (Apache-2.0).
STANDARD_TEXTS = Path(__file__).resolve().parent / "licenses"
STANDARD_NAMES = {"lgpl-3.0": "LGPL-3.0.txt", "gpl-3.0": "GPL-3.0.txt", "gpl-2.0": "GPL-2.0.txt",
                  "apache": "Apache-2.0.txt"}
COMMON_LICENSES = Path("/usr/share/common-licenses")
UNIDENTIFIED = "origin not identified"
SHARED_LIBRARY = re.compile(r"(\.so(\.[0-9][0-9.]*)?|\.pyd|\.dll|\.dylib)$", re.IGNORECASE)
RULE = "=" * 100


@dataclass
class Owner:
    """One source of files in the app, and what of it is there."""

    kind: str  # "package", "python", "system", "project", "unknown"
    name: str
    version: str = ""
    licence: str = ""
    texts: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    libraries: set[str] = field(default_factory=set)  # shared libraries and executables, by path in the app
    other_files: int = 0


def is_shared_library(dest: str) -> bool:
    return bool(SHARED_LIBRARY.search(dest))


def bootloader_path() -> str:
    """PyInstaller's bootloader that becomes the app's executable (called from the spec)."""
    from PyInstaller import HOMEPATH, PLATFORM

    name = "run.exe" if os.name == "nt" else "run"
    return str(Path(HOMEPATH) / "PyInstaller" / "bootloader" / PLATFORM / name)


def _real(path: str | Path) -> str:
    return os.path.realpath(path)


def licence_name(dist: importlib.metadata.Distribution) -> str:
    meta = dist.metadata
    expression = meta.get("License-Expression") or ""
    if expression:
        return expression
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    text = (meta.get("License") or "").strip().splitlines()
    return ", ".join(classifiers) or (text[0][:80] if text else "see the texts below")


def licence_files(dist: importlib.metadata.Distribution) -> list[tuple[str, Path]]:
    """(path inside the distribution, file) of each licence-like file it installed, one per distinct text."""
    found, seen = [], set()
    for entry in sorted(dist.files or [], key=lambda e: (len(e.parts), str(e))):
        name = entry.name.lower()
        if any(word in name for word in LICENCE_WORDS) and not name.endswith(NOT_LICENCE_SUFFIXES):
            path = Path(dist.locate_file(entry))
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest not in seen:  # numpy ships some texts both in the package and in its dist-info
                    seen.add(digest)
                    found.append((entry.as_posix(), path))
    return found


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").rstrip() + "\n"


def dpkg_owner(path: str) -> tuple[str, str] | None:
    """(Debian package, version) that installed ``path``, trying /lib and /usr/lib spellings (merged /usr)."""
    if shutil.which("dpkg-query") is None:
        return None
    candidates = []
    for spelling in (path, _real(path)):
        candidates.append(spelling)
        if spelling.startswith("/usr/"):
            candidates.append(spelling[4:])
        else:
            candidates.append("/usr" + spelling)
    for candidate in dict.fromkeys(candidates):
        result = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True, check=False)
        if result.returncode == 0 and ":" in result.stdout:
            package = result.stdout.split(": ", 1)[0].split(",")[0].strip()
            version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                                     text=True, check=False).stdout.strip()
            return package, version
    return None


def _python_prefixes() -> list[str]:
    paths = {sys.base_prefix, sys.base_exec_prefix, sysconfig.get_paths()["stdlib"]}
    return sorted({_real(p) for p in paths if p})


def python_licence() -> Path | None:
    for folder in (sysconfig.get_paths()["stdlib"], sys.base_prefix):
        candidate = Path(folder) / "LICENSE.txt"
        if candidate.is_file():
            return candidate
    return None


class Collector:
    """Traces source paths to owners (see the module's docstring)."""

    def __init__(self, distributions: Iterable[importlib.metadata.Distribution], *, project_roots: Iterable[Path],
                 python_prefixes: Iterable[str], system_owner: Callable[[str], tuple[str, str] | None] = dpkg_owner,
                 python_licence_file: Path | None = None, foreign_roots: Iterable[str] = (),
                 doc_root: Path = Path("/usr/share/doc"), common_licenses: Path = COMMON_LICENSES):
        self.files: dict[str, importlib.metadata.Distribution] = {}
        for dist in distributions:
            for entry in dist.files or []:
                self.files[_real(dist.locate_file(entry))] = dist
        self.project_roots = [_real(root) for root in project_roots]
        # Inside the project's folder but not the project's: the build venv (its files belong to distributions).
        self.foreign_roots = [_real(root) for root in foreign_roots]
        self.python_prefixes = list(python_prefixes)
        self.system_owner = system_owner
        self.python_licence_file = python_licence_file
        self.doc_root, self.common_licenses = doc_root, common_licenses
        self.owners: dict[tuple[str, str], Owner] = {}

    def _within(self, path: str, roots: list[str]) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)

    def owner_of(self, dest: str, src: str, typecode: str) -> Owner:
        real = _real(src) if src else ""
        dist = self.files.get(real) or self.files.get(os.path.abspath(src)) if src else None
        if dist is not None:
            name = dist.metadata["Name"]
            if name.lower() == PROJECT:
                return self._owner("project", PROJECT)
            return self._package(dist)
        if dest == "base_library.zip" or self._within(real, self.python_prefixes):
            return self._python()
        if self._within(real, self.project_roots) and not self._within(real, self.foreign_roots):
            return self._owner("project", PROJECT)
        found = self.system_owner(src) if src and os.path.isabs(src) else None
        if found:
            return self._system(*found)
        return self._owner("unknown", UNIDENTIFIED)

    def _owner(self, kind: str, name: str) -> Owner:
        return self.owners.setdefault((kind, name), Owner(kind, name))

    def _package(self, dist: importlib.metadata.Distribution) -> Owner:
        name = dist.metadata["Name"]
        if (owner := self.owners.get(("package", name))) is not None:
            return owner
        owner = self._owner("package", name)
        owner.version, owner.licence = dist.version, licence_name(dist)
        files = licence_files(dist)
        owner.texts = [(f"{name} {dist.version}: {inner}", _read(path)) for inner, path in files]
        if not files:
            standard = [text for key, text in STANDARD_NAMES.items() if key in owner.licence.lower()]
            owner.texts = [(f"{name} {dist.version}: no licence file in its wheel; the standard text of {text[:-4]}, "
                            f"which its metadata names, is in part 4", "") for text in standard]
        return owner

    def _python(self) -> Owner:
        owner = self._owner("python", "Python")
        if not owner.version:
            owner.version = sys.version.split()[0]
            owner.licence = "PSF-2.0 (and the licences of the software it incorporates, in the same text)"
            if self.python_licence_file is not None:
                owner.texts = [(f"Python {owner.version}: LICENSE.txt", _read(self.python_licence_file))]
        return owner

    def _system(self, package: str, version: str) -> Owner:
        owner = self._owner("system", package)
        if not owner.version:
            owner.version = version
            copyright_file = self.doc_root / package.split(":")[0] / "copyright"
            if copyright_file.is_file():
                owner.licence = "see its copyright file below"
                owner.texts = [(f"{package} {version}: {copyright_file}", _read(copyright_file))]
            else:
                owner.licence = f"no {copyright_file} on the build machine"
        return owner

    def add(self, entries: Iterable[tuple]) -> None:
        for dest, src, typecode in entries:
            if typecode == "SYMLINK":
                continue  # the file it points at is listed
            owner = self.owner_of(dest, src, typecode)
            if typecode in ("BINARY", "EXTENSION", "EXECUTABLE") or is_shared_library(dest):
                owner.libraries.add(dest.replace("\\", "/"))
            else:
                owner.other_files += 1


def render(collector: Collector, title: str) -> str:
    """The THIRD_PARTY_NOTICES text."""
    groups = {kind: sorted((o for o in collector.owners.values() if o.kind == kind), key=lambda o: o.name.lower())
              for kind in ("package", "python", "system", "unknown")}
    packages, python, system, unknown = groups["package"], groups["python"], groups["system"], groups["unknown"]
    lines = [f"Third-party notices for {title}", RULE, "",
             "BUSI Viewer itself is licensed under the Apache License 2.0 (LICENSE, beside this file). This folder",
             "also contains the software below, each part under its own licence; the full texts follow.",
             "Paths of files in this app are relative to its _internal folder (the executable: to this folder).",
             "Shared libraries stay separate files that a user may replace (as the LGPL provides). The system",
             "libraries are the build machine's Debian 12 packages named below; their sources are published by",
             "Debian for each package and version (https://sources.debian.org).", "",
             f"  1. Python packages ({len(packages)})", "  2. The Python runtime",
             f"  3. System libraries, from the build machine's Debian packages ({len(system)})",
             "  4. Licence texts referred to above", ""]
    if unknown:
        lines += [f"  Files of unidentified origin: {len(unknown[0].libraries) + unknown[0].other_files}", ""]
    lines += ["Summary", "-------", ""]
    for owner in packages + python + system:
        lines.append(f"  {owner.name} {owner.version} | {owner.licence} | "
                     f"{len(owner.libraries)} shared libraries, {owner.other_files} other files")
    lines.append("")

    def section(number: str, owner: Owner) -> None:
        lines.extend([RULE, f"{number} {owner.name} {owner.version}".rstrip(), RULE, f"Licence: {owner.licence}"])
        if owner.libraries:
            lines.append("Shared libraries and executables in this app:")
            lines.extend(f"  {path}" for path in sorted(owner.libraries))
        if owner.other_files:
            lines.append(f"Other files in this app: {owner.other_files} (Python modules and data)")
        for label, text in owner.texts:
            lines.extend(["", f"--- {label}", ""])
            if text:
                lines.append(text)
        lines.append("")

    lines += [RULE, "1. Python packages", ""]
    for index, owner in enumerate(packages, 1):
        section(f"1.{index}", owner)
    lines += [RULE, "2. The Python runtime", ""]
    for owner in python:
        section("2.1", owner)
    lines += [RULE, "3. System libraries (Debian packages of the build machine)", ""]
    for index, owner in enumerate(system, 1):
        section(f"3.{index}", owner)
    lines += [RULE, "4. Licence texts referred to above", ""]
    texts: list[tuple[str, Path]] = []
    for owner in packages:
        if not any(text for _, text in owner.texts):  # no file in the wheel: the standard texts it names
            texts += [(f"{name[:-4]} (standard text)", STANDARD_TEXTS / name)
                      for key, name in STANDARD_NAMES.items() if key in owner.licence.lower()]
    referred = sorted({match for owner in system for _, text in owner.texts
                       for match in re.findall(r"/usr/share/common-licenses/([A-Za-z0-9.+_-]*[A-Za-z0-9+])", text)})
    texts += [(f"/usr/share/common-licenses/{name}", collector.common_licenses / name) for name in referred]
    shown: dict[str, str] = {}
    for label, path in texts:
        if not path.is_file() or label in shown.values():
            continue
        text = _read(path)
        digest = hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
        if digest in shown:  # GPL is GPL-3, the standard GPL-3.0 text is Debian's GPL-3, ...
            lines.extend([f"--- {label}: the same text as {shown[digest]}", ""])
        else:
            shown[digest] = label
            lines.extend([f"--- {label}", "", text])
    if unknown:
        lines += [RULE, f"Files of unidentified origin ({UNIDENTIFIED})", ""]
        lines.extend(f"  {path}" for path in sorted(unknown[0].libraries))
        if unknown[0].other_files:
            lines.append(f"  and {unknown[0].other_files} other files")
    return "\n".join(lines).rstrip() + "\n"


def write_notices(out: Path, entries: Iterable[tuple], *, project_root: Path, workpath: Path | None = None,
                  title: str = "BUSI Viewer") -> Collector:
    """Write ``out`` for the app made of ``entries`` (PyInstaller TOC tuples), using this interpreter's
    distributions, prefix and the build machine's package database."""
    collector = Collector(importlib.metadata.distributions(),
                          project_roots=[project_root, *([workpath] if workpath else [])],
                          python_prefixes=_python_prefixes(), python_licence_file=python_licence(),
                          foreign_roots=[sys.prefix])
    collector.add(entries)
    out.write_text(render(collector, title), encoding="utf-8")
    counts = defaultdict(int)
    for owner in collector.owners.values():
        counts[owner.kind] += 1
    print(f"{out}: {counts['package']} Python packages, the Python runtime, {counts['system']} system packages"
          + (f"; {UNIDENTIFIED}: {sorted(collector.owners[('unknown', UNIDENTIFIED)].libraries)}"
             if counts["unknown"] else ""))
    return collector
