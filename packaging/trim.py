"""What the frozen app leaves out of PyInstaller's collection, and what those pieces alone pulled in.

Used by busi-viewer.spec after the analysis. PyInstaller gathers a library's dependencies before a spec can drop
the library, so dropping, say, Qt's GTK 3 theme plugin would leave behind the system libraries only it needed
(cairo, pango, gdk-pixbuf, ...) and the top-level links PyInstaller made to dropped Qt libraries (dangling links
in the app). :func:`trim` drops the unused pieces, then those orphans, then the links left pointing nowhere.

Entries are PyInstaller TOC tuples ``(dest, src, typecode)``; for ``SYMLINK`` entries ``src`` is the link's
target, relative to the app's contents folder.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath

# Matched case-insensitively against the start of the destination path (Qt spells EglFS and EglFs both ways).
UNUSED_QT = (
    # Back ends for embedded boards (EGLFS, Linux framebuffer), VNC and Vulkan displays, and the libraries
    # only they use: a workstation runs xcb or wayland, the smoke test offscreen.
    "PySide6/Qt/plugins/egldeviceintegrations/",
    "PySide6/Qt/plugins/platforms/libqvnc", "PySide6/Qt/plugins/platforms/libqeglfs",
    "PySide6/Qt/plugins/platforms/libqlinuxfb", "PySide6/Qt/plugins/platforms/libqminimalegl",
    "PySide6/Qt/plugins/platforms/libqvkkhrdisplay",
    "PySide6/Qt/lib/libQt6EglFS",  # EglFSDeviceIntegration, EglFsKmsSupport, EglFsKmsGbmSupport
    # Input plugins loaded only on request (QT_QPA_GENERIC_PLUGINS, or by eglfs / linuxfb): evdev, TUIO.
    "PySide6/Qt/plugins/generic/",
    # Qt Network: only the plugins above link it; the app opens no connection.
    "PySide6/Qt/lib/libQt6Network",
    # The GTK 3 theme plugin needs the system's GTK 3, which PyInstaller does not bundle, and would load it
    # beside the build machine's glib / cairo / pango copies: it cannot load without GTK and risks symbol clashes
    # with it. Without it Qt uses its own widgets' look (and the XDG portal's file dialogs where one runs).
    "PySide6/Qt/plugins/platformthemes/libqgtk3",
    # Image formats Qt would read for QImage / QPixmap from files: the app reads images through Pillow, OpenCV
    # and pydicom, and Qt only its own and pyqtgraph's PNG / SVG icons (PNG is built in). JPEG stays: Qt's PDF
    # writer compresses the report's pictures with it.
    "PySide6/Qt/plugins/imageformats/libqtiff", "PySide6/Qt/plugins/imageformats/libqwebp",
    "PySide6/Qt/plugins/imageformats/libqicns", "PySide6/Qt/plugins/imageformats/libqico",
    "PySide6/Qt/plugins/imageformats/libqgif", "PySide6/Qt/plugins/imageformats/libqtga",
    "PySide6/Qt/plugins/imageformats/libqwbmp",
)


def _posix(dest: str) -> str:
    return dest.replace("\\", "/")


def matches(dest: str, prefixes: Iterable[str]) -> bool:
    """True when ``dest`` starts with one of ``prefixes``, ignoring case and path separator style."""
    dest = _posix(dest).lower()
    return any(dest.startswith(_posix(prefix).lower()) for prefix in prefixes)


def elf_needed(path: str) -> list[str]:
    """The DT_NEEDED names of an ELF file (readelf), [] for anything else or where readelf is missing."""
    readelf = shutil.which("readelf")
    if readelf is None:
        return []
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"\x7fELF":
                return []
    except OSError:
        return []
    out = subprocess.run([readelf, "-d", path], capture_output=True, text=True, check=False).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line and "[" in line]


def trim(binaries: list[tuple], datas: list[tuple], prefixes: Iterable[str] = UNUSED_QT,
         needed: Callable[[str], list[str]] = elf_needed) -> tuple[list[tuple], list[tuple], list[str]]:
    """Drop the binaries matching ``prefixes``, the libraries only they needed, and links to what was dropped.

    Returns (binaries, datas, dropped destination paths). A library counts as needed only by dropped binaries
    when it is a plain ``BINARY`` (never a Python extension, which is imported, nor a plugin, which nothing
    links) named in the DT_NEEDED of a dropped binary and of no kept one; repeated until nothing changes.
    """
    prefixes = tuple(prefixes)
    kept = [entry for entry in binaries if entry[2] == "SYMLINK" or not matches(entry[0], prefixes)]
    dropped = [entry for entry in binaries if entry not in kept]
    cache: dict[str, list[str]] = {}

    def needs(entry: tuple) -> list[str]:
        if entry[1] not in cache:
            cache[entry[1]] = needed(entry[1])
        return cache[entry[1]]

    while True:
        wanted_by_dropped = {name for entry in dropped for name in needs(entry)}
        wanted_by_kept = {name for entry in kept if entry[2] != "SYMLINK" for name in needs(entry)}
        orphans = [entry for entry in kept
                   if entry[2] == "BINARY" and PurePosixPath(_posix(entry[0])).name in wanted_by_dropped
                   and PurePosixPath(_posix(entry[0])).name not in wanted_by_kept]
        if not orphans:
            break
        kept = [entry for entry in kept if entry not in orphans]
        dropped += orphans
    links: list[tuple] = []
    while True:  # a link may point at a link
        present = {_normalise(_posix(entry[0])) for entry in kept + datas}
        broken = [entry for entry in kept + datas if entry[2] == "SYMLINK" and _target(entry) not in present]
        if not broken:
            break
        links += broken
        kept = [entry for entry in kept if entry not in broken]
        datas = [entry for entry in datas if entry not in broken]
    return kept, datas, sorted(_posix(entry[0]) for entry in dropped + links)


def _target(link: tuple) -> str:
    """A SYMLINK entry's target as a destination path (targets are relative to the link's folder)."""
    return _normalise(str(PurePosixPath(_posix(link[0])).parent / _posix(link[1])))


def _normalise(path: str) -> str:
    """``a/./b/../c`` -> ``a/c`` without touching the file system (link targets are relative)."""
    parts: list[str] = []
    for part in PurePosixPath(path).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)
