"""Copy the licence files of every distribution installed in the build environment, and list them.

Usage: python collect_licenses.py OUT_DIR (run with the frozen build's interpreter). Writes
OUT_DIR/<distribution>/<licence files> and OUT_DIR/THIRD_PARTY_LICENSES.md (name, version, licence).
Qt's own licences (LGPLv3 for PySide6 / Qt) travel in PySide6's wheel and so land here too.
"""

import importlib.metadata
import shutil
import sys
from pathlib import Path

# Build tools that end up in the environment but not in the app.
NOT_SHIPPED = {"pip", "setuptools", "wheel", "pyinstaller", "pyinstaller-hooks-contrib", "altgraph",
               "busi-viewer"}
LICENCE_WORDS = ("license", "licence", "copying", "notice", "authors")
# Standard texts (from Debian's /usr/share/common-licenses) for wheels that ship none: PySide6 and shiboken6
# (LGPL-3.0, with GPL as alternatives), flatbuffers (Apache-2.0).
STANDARD_TEXTS = Path(__file__).resolve().parent / "licenses"
STANDARD_NAMES = {"lgpl-3.0": "LGPL-3.0.txt", "gpl-3.0": "GPL-3.0.txt", "gpl-2.0": "GPL-2.0.txt",
                  "apache": "Apache-2.0.txt"}


def _licence_files(dist: importlib.metadata.Distribution) -> list[Path]:
    found = []
    for entry in dist.files or []:
        name = entry.name.lower()
        if any(word in name for word in LICENCE_WORDS) and not name.endswith((".py", ".pyc")):
            path = Path(dist.locate_file(entry))
            if path.is_file():
                found.append(path)
    return found


def _licence_name(dist: importlib.metadata.Distribution) -> str:
    meta = dist.metadata
    expression = meta.get("License-Expression") or ""
    if expression:
        return expression
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    text = (meta.get("License") or "").strip().splitlines()
    return ", ".join(classifiers) or (text[0][:80] if text else "see files")


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rows, missing, standard = [], [], []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"].lower()):
        name = dist.metadata["Name"]
        if name.lower() in NOT_SHIPPED:
            continue
        files = _licence_files(dist)
        target = out / name
        for path in files:
            target.mkdir(exist_ok=True)
            shutil.copy2(path, target / path.name)
        if not files:
            licence = _licence_name(dist).lower()
            files = [STANDARD_TEXTS / text for key, text in STANDARD_NAMES.items() if key in licence]
            for path in files:
                target.mkdir(exist_ok=True)
                shutil.copy2(path, target / path.name)
            if files:
                standard.append(name)
            else:
                missing.append(name)
        rows.append(f"| {name} | {dist.version} | {_licence_name(dist)} | {len(files)} |")
    table = ["# Third-party components of the BUSI Viewer build", "",
             "| distribution | version | licence | files copied |", "|---|---|---|---|", *rows]
    if standard:
        table += ["", "No licence file inside the wheel of " + ", ".join(standard) + "; the standard text of the "
                  "licence its metadata names was copied instead."]
    if missing:
        table += ["", "No licence file shipped inside the wheel of: " + ", ".join(missing) + " (see each "
                  "project's repository; the licence named in its metadata is in the table)."]
    (out / "THIRD_PARTY_LICENSES.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    print(f"{len(rows)} distributions, {len(rows) - len(missing)} with licence texts, written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
