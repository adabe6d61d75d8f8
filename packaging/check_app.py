"""Checks of the built one-folder app that build.sh runs before its smoke test (and tests/test_packaging.py when
a build is present): size within budget, no link pointing outside the app or nowhere, no local absolute path in
any text file (nor this build's folders in any file at all), every shared library and Python package named in
THIRD_PARTY_NOTICES. Prints where the size goes.

Usage: python check_app.py dist/busi-viewer [--budget-mb 400]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

NOTICES = "THIRD_PARTY_NOTICES"
CONTENTS = "_internal"
# Absolute paths of a machine (user homes, work and scratch folders, Windows profiles), as text: not preceded by
# a word character, dot or slash, so URLs (https://host/home/...) and relative paths do not count; file:// URLs
# do. Paths that the software itself uses on every machine (/usr/share/..., /etc/...) are not local paths.
LOCAL_PATH = re.compile(
    r"(?:file://|(?<![\w./~-]))/(?:home|work|root|tmp|mnt|Users|srv|scratch|data)/[\w.-]"
    r"|\b[A-Za-z]:(?:\\\\|\\|/)(?:Users|Documents and Settings|home|work|tmp|temp|data)\b",
    re.IGNORECASE)
# Where a text names a path on purpose; each entry: (regular expression of the file's path relative to the
# scanned folder, regular expression of the allowed text).
ALLOWED: tuple[tuple[str, str], ...] = (
    # The package's metadata carries README.md as its description, whose example commands write to /tmp/oos.
    (r"_internal/busi_viewer-[^/]+\.dist-info/METADATA", r"/tmp/oos\b"),
)
# Size groups, first match wins (paths relative to the app folder; "*" = the rest).
COMPONENTS = (
    ("OpenCV (with its FFmpeg and OpenBLAS)", ("_internal/cv2/", "_internal/opencv_python_headless.libs/")),
    ("PySide6 / Qt (ICU included)", ("_internal/PySide6/", "_internal/shiboken6/")),
    ("ONNX Runtime", ("_internal/onnxruntime/",)),
    ("NumPy (with its OpenBLAS)", ("_internal/numpy/", "_internal/numpy.libs/")),
    ("model bundles (ONNX exports) and resources", ("_internal/resources/",)),
    ("Pillow (with its codecs)", ("_internal/PIL/", "_internal/pillow.libs/")),
    ("Python runtime (libpython, extension modules, base library)",
     ("_internal/libpython", "_internal/python3", "_internal/base_library.zip")),
    ("executable (bootloader + compressed Python modules)", ("busi-viewer",)),
    ("DICOM decoders (pylibjpeg) and pydicom data", ("_internal/_libjpeg", "_internal/_openjpeg",
                                                     "_internal/pydicom/")),
    ("system libraries (glib, X11/xcb, fontconfig, OpenSSL, SQLite, ...)", ("_internal/lib",)),
    ("notices and licences", ("THIRD_PARTY_NOTICES", "LICENSE")),
    ("other", ("",)),
)


def files(app: Path) -> list[Path]:
    return sorted(p for p in app.rglob("*") if p.is_file() and not p.is_symlink())


def size_table(app: Path) -> tuple[int, list[tuple[str, int, int]]]:
    """(total bytes, [(component, bytes, files)]) of the regular files in ``app``, largest first."""
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    total = 0
    for path in files(app):
        rel = path.relative_to(app).as_posix()
        name = next(label for label, prefixes in COMPONENTS if rel.startswith(prefixes))
        sizes[name][0] += path.stat().st_size
        sizes[name][1] += 1
        total += path.stat().st_size
    return total, sorted(((k, v[0], v[1]) for k, v in sizes.items()), key=lambda row: -row[1])


def bad_links(app: Path) -> list[str]:
    """Links that point nowhere, or out of the app, or by an absolute path."""
    found = []
    root = app.resolve()
    for path in app.rglob("*"):
        if not path.is_symlink():
            continue
        target = os.readlink(path)
        resolved = path.resolve()
        if os.path.isabs(target) or not resolved.exists() or root not in (resolved, *resolved.parents):
            found.append(f"{path.relative_to(app)} -> {target}")
    return sorted(found)


def is_text(data: bytes) -> bool:
    if b"\0" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def local_paths(folder: Path, markers: tuple[bytes, ...] = ()) -> list[str]:
    """Absolute local paths in ``folder``'s text files, and any of ``markers`` (e.g. this build's checkout
    folder) in any file; ``file: text`` each."""
    found = []
    for path in files(folder):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        for marker in markers:
            if marker in data:
                found.append(f"{rel}: {marker.decode(errors='replace')}")
        if not is_text(data):
            continue
        for match in LOCAL_PATH.finditer(data.decode("utf-8")):
            line = data.decode("utf-8")[max(0, match.start() - 40):match.end() + 40].replace("\n", " ")
            if not any(re.fullmatch(name, rel) and re.search(text, line) for name, text in ALLOWED):
                found.append(f"{rel}: ...{line}...")
    return found


def is_shared_library(path: Path) -> bool:
    """ELF, PE or Mach-O files (by their first bytes), and anything named like a shared library."""
    if re.search(r"\.(so(\.[0-9.]+)?|pyd|dll|dylib)$", path.name):
        return True
    with path.open("rb") as handle:
        head = handle.read(4)
    return head in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe") or head[:2] == b"MZ"


def notices_gaps(app: Path, distributions: list[str] | None = None) -> list[str]:
    """What THIRD_PARTY_NOTICES does not name: shared libraries (by path within _internal, or the app folder
    for the executable), packages whose metadata the app carries, and ``distributions`` (names) if given."""
    notices_file = app / NOTICES
    if not notices_file.is_file():
        return [f"{NOTICES} is missing"]
    notices = notices_file.read_text(encoding="utf-8")
    listed = {line.strip() for line in notices.splitlines() if line.startswith("  ")}
    gaps = []
    contents = app / CONTENTS
    for path in files(app):
        if path.suffix in (".py", ".pyc") or not is_shared_library(path):
            continue
        rel = (path.relative_to(contents) if contents in path.parents else path.relative_to(app)).as_posix()
        if rel not in listed:
            gaps.append(f"shared library {rel}")
    for info in sorted(contents.glob("*.dist-info")):
        name = info.name[:-len(".dist-info")].rsplit("-", 1)[0]
        if not re.search(rf"^\d+\.\d+ {_name_pattern(name)} ", notices, re.MULTILINE | re.IGNORECASE) \
                and name.lower().replace("_", "-") != "busi-viewer":
            gaps.append(f"package {name} (from {info.name})")
    for name in distributions or []:
        if not re.search(rf"^\d+\.\d+ {_name_pattern(name)} ", notices, re.MULTILINE | re.IGNORECASE):
            gaps.append(f"package {name}")
    if re.search(r"^Files of unidentified origin", notices, re.MULTILINE):
        gaps.append("files of unidentified origin (see the end of THIRD_PARTY_NOTICES)")
    return gaps


def _name_pattern(name: str) -> str:
    """Distribution names compare with -, _ and . alike (PEP 503)."""
    return "[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", type=Path)
    parser.add_argument("--budget-mb", type=float, default=400.0, help="largest unpacked size, in MB (10^6 bytes)")
    args = parser.parse_args(argv)
    app = args.app
    total, table = size_table(app)
    print(f"{'component':<66} {'MB':>7} {'files':>6}")
    for name, size, count in table:
        print(f"{name:<66} {size / 1e6:7.1f} {count:6d}")
    print(f"{'total':<66} {total / 1e6:7.1f} {sum(row[2] for row in table):6d}")
    problems = []
    if total > args.budget_mb * 1e6:
        problems.append(f"unpacked size {total / 1e6:.1f} MB is over the budget of {args.budget_mb:g} MB")
    problems += [f"bad link: {link}" for link in bad_links(app)]
    # This build's own folders must appear nowhere, not even in binaries; text files hold no local path at all.
    here = Path(__file__).resolve().parents[1]
    markers = tuple({str(here).encode(), sys.prefix.encode()})
    problems += [f"local path: {hit}" for hit in local_paths(app, markers)]
    problems += [f"not in {NOTICES}: {gap}" for gap in notices_gaps(app)]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(f"checks OK: {total / 1e6:.1f} MB (budget {args.budget_mb:g} MB), no bad links, no local paths, "
              f"every shared library and package in {NOTICES}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
